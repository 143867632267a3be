"""The hardened monitor: after set-up, karn confines its own process (docs/security.md).

jail       what the monitor may still touch; confine() does it all, in order (Jail: the
           run plug-in that calls it)
landlock   host paths (and TCP bind ports) it may still use, unprivileged
threads    per-thread settings applied to every thread of the process
privileges as root: capabilities dropped, a private network when the guest has none
           (made ahead of time on the VM's thread)
seccomp    the host system-call filter, built from allowlist (data)
probe      a test hook: a confined monitor tries what it must not do

Nothing here is imported at package level: a run imports privileges (ahead_of_time) as
soon as its config is resolved, before its VM's thread starts, and the rest later.
"""
