"""Running in the background: `karn run -d` and `karn system up -d`.

The parent forks before any VM exists (a KVM VM belongs to the process that made it),
then waits until the child says it is up, and exits. If the child fails to start, the
parent shows its log and exits with its status.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable

from karn.errors import KarnError
from karn.instance.logs import start_writer, wait_for_writer
from karn.instance.options import InstanceOptions
from karn.instance.paths import instances_dir
from karn.instance.registry import LOG, new_id

Started = Callable[[], None]


def run_detached(options: InstanceOptions, run: Callable[[], int]) -> int:
    """`karn run -d`: prints the instance id once the guest runs."""
    options.detached = True
    options.instance_id = new_id()
    directory = os.path.join(instances_dir(), options.instance_id)
    os.makedirs(directory, mode=0o700)

    def body(started: Started) -> int:
        options.on_started = started
        return run()

    status = start_in_background(os.path.join(directory, LOG), body, dated=True)
    if status is None:
        print(options.instance_id)
        return 0
    shutil.rmtree(directory, ignore_errors=True)  # nothing left behind
    return status


def start_in_background(log_path: str, body: Callable[[Started], int],
                        dated: bool = False) -> int | None:
    """Fork a child in its own session (stdin /dev/null, stdout and stderr to log_path;
    dated: through a pipe to a writer that records when output arrived, karn/instance/logs.py)
    that runs body(started). None once the child calls started(); if it ends first, its
    log is copied to stderr and its exit status returned."""
    sys.stdout.flush()
    sys.stderr.flush()
    # opened here: a child that fails may remove the instance directory with its log
    log_r = os.open(log_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        _child(log_path, ready_w, body, dated)
    os.close(ready_w)
    with os.fdopen(log_r, "rb") as log:
        with os.fdopen(ready_r, "rb") as ready:
            if ready.read() == b"ok":
                return None
        _, wait_status = os.waitpid(pid, 0)
        wait_for_writer(log_path)
        sys.stderr.write(log.read().decode(errors="replace"))
    return os.waitstatus_to_exitcode(wait_status) or 125


def _child(log_path: str, ready_w: int, body: Callable[[Started], int], dated: bool) -> None:
    status = 125
    try:
        os.setsid()  # no terminal: the shell's Ctrl-C and hang-up do not reach it
        if dated:
            log = start_writer(log_path)
        else:
            log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)

        def started() -> None:
            os.write(ready_w, b"ok")
            os.close(ready_w)

        status = body(started)
    except KarnError as err:
        sys.stderr.write(f"karn: {err}\n")
        status = err.exit_code
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
