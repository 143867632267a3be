"""`karn run -d`: the monitor continues in the background, in its own session.

The parent forks before any VM exists (a KVM VM belongs to the process that made it),
then waits until the child's guest is running, prints the instance id and exits. If the
child fails to start, the parent shows its error and exits with its status, and nothing
is left behind.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable

from karn.errors import KarnError
from karn.instance.monitor import InstanceOptions
from karn.instance.registry import LOG, instances_dir, new_id


def run_detached(options: InstanceOptions, body: Callable[[], int]) -> int:
    options.detached = True
    options.instance_id = new_id()
    directory = os.path.join(instances_dir(), options.instance_id)
    os.makedirs(directory, mode=0o700)
    sys.stdout.flush()
    sys.stderr.flush()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        _child(options, directory, ready_w, body)
    os.close(ready_w)
    with os.fdopen(ready_r, "rb") as ready:
        started = ready.read() == b"ok"
    if started:
        print(options.instance_id)
        return 0
    _, wait_status = os.waitpid(pid, 0)
    with open(os.path.join(directory, LOG), "rb") as log:
        sys.stderr.write(log.read().decode(errors="replace"))
    shutil.rmtree(directory, ignore_errors=True)
    return os.waitstatus_to_exitcode(wait_status) or 125


def _child(options: InstanceOptions, directory: str, ready_w: int,
           body: Callable[[], int]) -> None:
    status = 125
    try:
        os.setsid()  # no terminal: the shell's Ctrl-C and hang-up do not reach it
        log = os.open(os.path.join(directory, LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                      0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)

        def started() -> None:
            os.write(ready_w, b"ok")
            os.close(ready_w)

        options.on_started = started
        status = body()
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
