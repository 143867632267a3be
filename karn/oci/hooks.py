"""The hooks config.json names, run on the host with the container's state on stdin
(runtime-spec config.md, POSIX-platform hooks). createContainer and startContainer
would run inside the container's namespaces, which a unikernel does not have: spec.py
refuses them."""

from __future__ import annotations

import json
import subprocess

from karn import log
from karn.errors import UsageError
from karn.hints import Any


def run_hooks(stage: str, hooks: list[dict[str, Any]], state: dict[str, Any],
              must_succeed: bool = True) -> None:
    """Run the hooks of one stage in order; a failure is an error (a warning for
    poststop, whose failures the spec lets the lifecycle go on past)."""
    data = json.dumps(state).encode()
    for hook in hooks:
        path = hook.get("path")
        args = hook.get("args") or [path]
        try:
            done = subprocess.run(args, executable=path, input=data, env=_env(hook),
                                  timeout=hook.get("timeout"), capture_output=True)
            failure = f"exit status {done.returncode}" if done.returncode else None
            detail = done.stderr.decode(errors="replace").strip()
        except (OSError, subprocess.TimeoutExpired) as err:
            failure, detail = str(err), ""
        if failure is None:
            continue
        message = f"{stage} hook {path}: {failure}" + (f": {detail}" if detail else "")
        if must_succeed:
            raise UsageError(message)
        log.warning("%s", message)


def _env(hook: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in hook.get("env") or [] if "=" in item)
