"""Multi-process programs and what other processes see of them (issue 15): nginx with a
master and two workers, pidfds, /proc/PID of every guest process. Results are compared
with native runs; the host keeps no process once the unikernel has ended.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import BUSYBOX
from helpers import free_port, wait_for
from test_fork import _alive, _descendants

NGINX = "/usr/sbin/nginx"
# What a shell and ps see in /proc of other processes; nothing that depends on pid numbers.
PROC_SCRIPT = r"""
busybox sleep 30 & first=$!
busybox sleep 31 & second=$!
for pid in $first $second; do
  # the child runs the shell's code until its exec: wait for that, not for a time
  until busybox grep -q sleep /proc/$pid/cmdline; do :; done
  echo "comm: $(cat /proc/$pid/comm)"
  echo "cmdline: $(busybox tr '\0' ' ' < /proc/$pid/cmdline)"
  set -- $(cat /proc/$pid/stat)
  echo "stat: pid ok $([ $1 = $pid ] && echo y) name $2 ppid is shell $([ $4 = $$ ] && echo y)"
  echo "status ppid is shell: $(busybox grep -c "^PPid:.$$\$" /proc/$pid/status)"
  echo "exe: $(busybox readlink /proc/$pid/exe)"
  echo "listed: $(ls /proc | busybox grep -cx $pid)"
done
echo "ps sees: $(busybox ps -o pid,args | busybox grep -c 'busybox slee[p] 3')"
kill $first; wait $first; echo "killed: $?"
echo "gone: $([ -e /proc/$first ] || echo y)"
kill $second; wait
"""
# Paths are relative to the prefix (-p): the same file serves the native run and karn's.
NGINX_CONF = """daemon off;
master_process on;
worker_processes 2;
user root;
error_log stderr warn;
pid nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    types { text/html html; }
    server {
        listen PORT;
        root html;
        location = /pid { return 200 "$pid\\n"; }
    }
}
"""


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=20) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def _listening(port: int) -> bool:
    try:
        return _get(port, "/index.html")[0] == 200
    except OSError:
        return False


def _serve_and_stop(command: list[str], port: int, prefix: Path) -> dict[str, object]:
    """Start nginx, load it, stop it with SIGTERM: what a user sees of it."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: proc.poll() is not None or _listening(port), "nginx listening")
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        # the master, then its two workers: host processes under the first
        host = wait_for(lambda: len(found := _descendants(proc.pid)) >= 2 and found,
                        "two workers on the host")
        master = int((prefix / "nginx.pid").read_text())
        pages = [_get(port, p) for p in ("/index.html", "/nope")]
        served_by = {int(_get(port, "/pid")[1]) for _ in range(20)}
        wrk = subprocess.run(["wrk", "-t2", "-c50", "-d4s", f"http://127.0.0.1:{port}/pid"],
                             capture_output=True, text=True, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    wait_for(lambda: not any(_alive(pid) for pid in host), "every nginx process gone")
    requests = int(re.search(r"(\d+) requests in", wrk.stdout).group(1))
    assert requests > 500 and "Non-2xx" not in wrk.stdout, wrk.stdout
    return {"exit": proc.returncode, "pages": pages, "master serves": master in served_by,
            "errors": [line for line in err.decode().splitlines() if "[alert]" in line
                       or "[emerg]" in line]}


@pytest.mark.slow
def test_nginx_master_and_two_workers_as_native(tmp_path):
    results = []
    for where in ("native", "karn"):
        prefix = tmp_path / where
        (prefix / "html").mkdir(parents=True)
        (prefix / "tmp").mkdir()
        (prefix / "html" / "index.html").write_text("hello from nginx\n" * 40)
        port = free_port()
        (prefix / "nginx.conf").write_text(NGINX_CONF.replace("PORT", str(port)))
        if where == "native":
            command = [NGINX, "-p", f"{prefix}/", "-c", "nginx.conf"]
        else:
            command = [sys.executable, "-m", "karn", "run", "-p", f"{port}:{port}",
                       "-v", f"{prefix}:/site", NGINX, "-p", "/site/", "-c", "nginx.conf"]
        results.append(_serve_and_stop(command, port, prefix))
    native, karn = results
    assert native["pages"][0] == (200, ("hello from nginx\n" * 40).encode())
    assert karn == native


@pytest.mark.slow
def test_karn_stop_ends_nginx_and_its_workers(tmp_path, state_env):
    env = state_env
    prefix = tmp_path / "site"
    (prefix / "html").mkdir(parents=True)
    (prefix / "tmp").mkdir()
    (prefix / "html" / "index.html").write_text("detached\n")
    port = free_port()
    (prefix / "nginx.conf").write_text(NGINX_CONF.replace("PORT", str(port)))
    karn = [sys.executable, "-m", "karn"]
    started = subprocess.run([*karn, "run", "-d", "--name", "web", "-p", f"{port}:{port}",
                              "-v", f"{prefix}:/site", NGINX, "-p", "/site/", "-c",
                              "nginx.conf"], env=env, capture_output=True, timeout=60)
    assert started.returncode == 0, started.stderr
    wait_for(lambda: _listening(port), "nginx listening")
    assert _get(port, "/index.html") == (200, b"detached\n")
    master = wait_for(lambda: _monitor_of(port), "the first monitor")
    workers = wait_for(lambda: len(found := _descendants(master)) >= 2 and found,
                       "two workers on the host")
    stopped = subprocess.run([*karn, "stop", "web"], env=env, capture_output=True,
                             timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: not any(_alive(pid) for pid in {master, *workers}),
             "every monitor gone")


def _monitor_of(port: int) -> int | None:
    """The host process running `karn run -d ... -p PORT:...` (the first monitor)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"run" in cmdline and f"{port}:{port}".encode() in cmdline and \
                    _descendants(int(entry)):
                return int(entry)
    return None



@pytest.mark.parametrize("variant", ["static", "dynamic"])
def test_pidfds_as_native(build, karn, native, same, variant):
    """pidfd_open, poll/epoll on a pidfd when its process ends, pidfd_send_signal,
    waitid(P_PIDFD) with PIDFD_NONBLOCK, and the errors of a misused pidfd."""
    probe = build("proc_pidfd", variant)
    expected = native(probe)
    assert b"readable after its end: 1" in expected.stdout, expected.stdout
    same(expected, karn(probe), "proc_pidfd")


def test_files_passed_between_processes(build, karn, native, same):
    """SCM_RIGHTS from a parent to its child of a pipe and a socket made after the fork."""
    probe = build("proc_scm", "dynamic")
    same(native(probe), karn(probe), "proc_scm")


def test_loopback_ports_between_processes(build, karn, native, same):
    """TCP and UDP on the guest's loopback between its processes (programs/proc_loopback.c):
    a listener made after a fork, one a child closed its copy of, a datagram from a chosen
    port and its reply, EADDRINUSE for a port another process holds, a refusal once none
    does, and the port of a child that ended holding it free once it is waited for. Each
    process has its own port table; the run's shared ports join them (net/sharedports.py).
    Before, the listeners were refused, the datagram dropped and the port bound twice."""
    probe = build("proc_loopback", "dynamic")
    same(native(probe), karn(probe), "proc_loopback")


def test_proc_of_other_processes_as_native(karn, native, same, tmp_path):
    """/proc/PID of every guest process: comm, cmdline, stat, status, exe, the listing of
    /proc, busybox ps; an ended process's directory is gone."""
    script = tmp_path / "procs.sh"
    script.write_text(PROC_SCRIPT)
    expected = native(BUSYBOX, "sh", str(script))
    assert b"ps sees: 2" in expected.stdout, expected.stdout
    same(expected, karn("-v", f"{tmp_path}:/data:ro", BUSYBOX, "sh", "/data/procs.sh"),
         "/proc of other processes")


def test_cpu_limit_counts_per_process(build, karn, native):
    """--ulimit cpu (RLIMIT_CPU) in a forked process's monitor: a spinning child dies by
    SIGXCPU as natively; its waiting parent goes on."""
    probe = build("proc_cpulimit", "dynamic")
    expected = native("prlimit", "--cpu=2:3", probe)
    assert expected.stdout == b"spinning child: killed by signal 24\n", expected.stdout
    got = karn("--ulimit", "cpu=2", probe)
    assert got.stdout == expected.stdout, got.stderr
    assert got.returncode == expected.returncode == 0


def test_nothing_of_the_run_outlives_karn_run():
    """pid 1 ends with children still running (as a pid namespace's init): they end with
    it, and `karn run` returns only once every forked monitor is gone from the host, not
    even a zombie left to the host's init (before: the children's monitors ended after
    karn run had returned)."""
    script = "for i in 1 2 3 4; do /bin/busybox sleep 100 & done; echo started"
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "karn", "run", BUSYBOX, "sh", "-c",
                                 script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out == b"started\n", err
        assert b"karn:" not in err, err  # the children end quietly
        try:
            os.killpg(proc.pid, 0)  # karn run's own process group: its monitors
        except ProcessLookupError:
            continue
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("forked monitors outlived karn run")


def test_proc_task_directories_as_native(build, karn, native, same):
    """/proc/self/task/TID for every thread (status with the thread's name and tid,
    stat, comm), /proc/thread-self, the Groups line's form, MSG_CMSG_CLOEXEC handed back
    by recvmsg (Go's syscall.TestSetuidEtc reads every thread's status; /proc/PID/task
    was missing)."""
    probe = build("proc_task", "static", ("-pthread",))
    same(native(probe), karn(probe), "/proc/self/task")
