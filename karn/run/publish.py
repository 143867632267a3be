"""`-p GUESTPORT` and `-P`: guest ports published to free host ports, chosen here, before
the guest starts, so that ps and inspect can show them (docker's behaviour).

A chosen port is free when chosen; the monitor reserves it when it builds the network
(karn/kernel/net/stack.py), so another host program can take it only in between.
"""

from __future__ import annotations

from karn.errors import UsageError


def needs_host_port(spec: str) -> bool:
    """GUESTPORT[/PROTO] or HOSTIP::GUESTPORT[/PROTO]: karn chooses the host port."""
    body = spec.partition("/")[0]
    return body.isdigit() or ("::" in body and body.rpartition("::")[2].isdigit()
                              and not body.startswith("::"))


def with_free_host_port(spec: str) -> str:
    """The spec with a free host port filled in: 80 -> 127.0.0.1:41523:80."""
    import socket  # here: every run imports this module, few publish a port

    body, slash, proto = spec.partition("/")
    host, _, guest = body.rpartition("::") if "::" in body else ("127.0.0.1", "", body)
    ip = host.strip("[]")
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    try:
        with socket.socket(family, kind) as probe:
            probe.bind((ip, 0))
            port = probe.getsockname()[1]
    except (OSError, UnicodeError) as err:
        raise UsageError(f"--publish {spec!r}: no free host port on {ip}: "
                         f"{getattr(err, 'strerror', None) or err}") from None
    return f"{host}:{port}:{guest}{slash}{proto}"


def describe(spec: str) -> str:
    """A full --publish spec as ps shows it: 127.0.0.1:41523:80 -> 127.0.0.1:41523->80/tcp."""
    body, _, proto = spec.partition("/")
    host, _, guest = body.rpartition(":")
    return f"{host}->{guest}/{proto or 'tcp'}"
