"""Guest networking: sockets served by host sockets behind a network policy.

consts   Linux socket numbers (families, types, levels, options, message flags)
addr     guest sockaddr <-> Python host addresses
policy   --publish / --network specs and the allow/deny decisions
stack    per-process state: guest port table, published ports, AF_UNIX names, fd passing
inflight files passed over SCM_RIGHTS and not yet received (the stack's, socket or not)
inet     AF_INET/AF_INET6 sockets; unix: AF_UNIX sockets; base: what both share
etc      /etc/hosts, resolv.conf, nsswitch.conf for guests whose root has none
See docs/networking.md.
"""
