"""File-related syscalls: the handlers live by area in karn/kernel/fs/sys_*.py."""

from karn.kernel.fs import memfd, sys_fd, sys_io, sys_names, sys_open, sys_splice, sys_xattr

_AREAS = (sys_io, sys_open, sys_names, sys_fd, sys_xattr, memfd, sys_splice)
HANDLERS = {name: h for m in _AREAS for name, h in m.HANDLERS.items()}
NOTES = {name: note for m in _AREAS for name, note in m.NOTES.items()}

assert len(HANDLERS) == sum(len(m.HANDLERS) for m in _AREAS), "a syscall registered twice"
