"""What `karn ps`, `karn inspect` and --metrics report about a running unikernel.

Read from another host thread while the guest runs: every value is a snapshot. A thread's
registers are those of its last exit to the monitor (a running vCPU is not stopped).
"""

from __future__ import annotations

import os
import time

from karn.abi.syscalls import SYSCALL_NAMES
from karn.hints import TYPE_CHECKING
from karn.policy import resident_bytes

if TYPE_CHECKING:
    from karn.run.guest import Guest


def stats(guest: Guest) -> dict:
    """The cheap numbers (for ps and metrics)."""
    proc = guest.process
    times = os.times()
    return {
        "uptime": time.monotonic() - proc.start_monotonic,
        "threads": len(proc.tasks),
        "cpu_seconds": times.user + times.system,
        "memory_limit": guest.config.memory,
        "guest_mapped": proc.mm.mapped_bytes,
        "guest_resident": guest.vm.memory.resident_bytes(),
        "monitor_rss": resident_bytes(),
        "syscalls": sum(proc.syscall_counts),
    }


def inspect(guest: Guest) -> dict:
    proc = guest.process
    return {
        "program": guest.manifest.entry,
        "argv": [a.decode(errors="replace") for a in proc.config.argv],
        "stats": stats(guest),
        "threads": threads(guest),
        "fds": [{"fd": fd, "target": f.link_name(), "kind": type(f).__name__}
                for fd, f in sorted(proc.fds.items())],
        "syscalls": syscall_counts(proc.syscall_counts),
        "transport": transport(guest),
        "cpu_gate": proc.gate.snapshot() if proc.gate is not None else None,
        "policy": policy(guest),
    }


def threads(guest: Guest) -> list[dict]:
    symbolize = guest.symbolizer().symbolize
    out = []
    for tid, task in sorted(guest.process.tasks.items()):
        loop, cpu = task.loop, task.cpu
        serving = getattr(loop, "serving", -1)
        state = f"in syscall {SYSCALL_NAMES.get(serving, serving)}" if serving >= 0 \
            else "running"
        entry: dict = {"tid": tid, "state": state}
        if cpu is not None and loop is not None:
            rip = cpu.get_context()["rip"]
            entry["rip"] = f"{rip:#x}"
            entry["symbol"] = symbolize(rip)
        out.append(entry)
    return out


def transport(guest: Guest) -> dict:
    """How the calls travelled: with the fast transport, served in shared memory (fast),
    redone on the exit path because they would block (redone), given up by a stub whose
    server did not take them in time (withdrawn), sent straight to the exit path while the
    server was asleep, busy or off its host core, or backed off (skipped), and every other
    exit (exit); many withdrawn or skipped calls mean the server is short of host CPU."""
    fast = guest.machine.fast
    if fast is None:  # the exit transport, or the fast one before the process is warm
        calls = sum(guest.process.syscall_counts)
        if guest.machine.fast_deferred:
            return {"mode": "fast", "sites_patched": 0, "exit": calls}
        return {"mode": "exit", "exit": calls}
    return {"mode": "fast", "sites_patched": len(fast.patcher.patched),
            **fast.counts()._asdict()}


def syscall_counts(counts: list[int]) -> dict[str, int]:
    named = {SYSCALL_NAMES.get(nr, str(nr)): n for nr, n in enumerate(counts) if n}
    return dict(sorted(named.items(), key=lambda item: -item[1]))


def policy(guest: Guest) -> dict:
    config, net, sandbox = guest.config, guest.net, guest.sandbox
    return {
        "root": f"{config.root or 'collected program files'} (read-only)",
        "volumes": [f"{v.host}:{v.guest}:{'ro' if v.readonly else 'rw'}"
                    for v in config.volumes],
        "network": net.policy.describe(),
        "published": [str(p) for p in net.policy.publish],
        "memory_limit": config.memory,
        "cpus": config.cpus,
        "sandbox": sandbox.describe() if sandbox is not None else "off",
        **config.policy.describe(),
    }
