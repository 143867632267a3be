"""The hardened monitor: after set-up, karn confines its own process (docs/security.md).

jail       what the monitor may still touch; confine() does it all, in order (Jail: the
           run plug-in that calls it)
landlock   host paths (and TCP bind ports) it may still use, unprivileged
threads    per-thread settings applied to every thread of the process
privileges as root: capabilities dropped, a private network when the guest has none
seccomp    the host system-call filter, built from allowlist (data)
probe      a test hook: a confined monitor tries what it must not do
"""

from karn.sandbox.jail import Confinement, Jail, allowed_syscall_count, confine

__all__ = ["Confinement", "Jail", "allowed_syscall_count", "confine"]
