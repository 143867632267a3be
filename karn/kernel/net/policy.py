"""The network policy: what `--publish` exposes and what `--network` lets out.

Default-deny. `none` (the default): the guest has a loopback of its own and nothing
else. `egress=CIDR[:PORTS],...`: outbound connections and datagrams to those
destinations reach the host's network. `host`: sockets pass straight through.
`--publish [HOSTIP:]HOSTPORT:GUESTPORT[/udp]` puts a guest listener on the host.
"""

from __future__ import annotations

import errno

from karn.hints import TYPE_CHECKING

if TYPE_CHECKING:
    import ipaddress

    from karn.kernel.net.addr import InetAddr

    Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# ipaddress is imported where an address is parsed: every run imports this module, most
# with no --publish or egress rule, and ipaddress costs ~1 ms to import.
MODES = ("none", "host")


class PolicyError(ValueError):
    """A bad --publish or --network spec (the message is for the user)."""


# Plain classes, not NamedTuples: every run imports this module, and a NamedTuple costs
# ~40 µs more to create.
class Publish:
    """One --publish: a host address and port that reach a guest port."""

    __slots__ = ("host_ip", "host_port", "guest_port", "proto", "spec")

    def __init__(self, host_ip: str, host_port: int, guest_port: int, proto: str,
                 spec: str) -> None:
        self.host_ip = host_ip
        self.host_port = host_port
        self.guest_port = guest_port
        self.proto = proto  # "tcp" or "udp"
        self.spec = spec

    def __str__(self) -> str:
        return self.spec


class EgressRule:
    """One --network egress= item: a network and a port range it may reach."""

    __slots__ = ("network", "low", "high")

    def __init__(self, network: Network, low: int, high: int) -> None:
        self.network = network
        self.low = low
        self.high = high

    def allows(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        return ip.version == self.network.version and ip in self.network \
            and self.low <= port <= self.high


def _port(text: str, what: str, spec: str, zero: bool = False) -> int:
    if not text.isdigit() or not (0 if zero else 1) <= int(text) <= 65535:
        raise PolicyError(f"invalid {what} {text!r} in {spec!r} (1-65535)")
    return int(text)


def _split_host(text: str, spec: str) -> tuple[str | None, str]:
    """'[v6]:rest' / 'v4:rest' / 'rest' -> (host or None, rest)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]:")
        if not sep:
            raise PolicyError(f"invalid address in {spec!r}")
        return host, rest
    return None, text


def parse_publish(spec: str) -> Publish:
    """[HOSTIP:]HOSTPORT:GUESTPORT[/tcp|/udp]; an IPv6 HOSTIP goes in brackets."""
    body, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise PolicyError(f"invalid protocol {proto!r} in --publish {spec!r} (tcp or udp)")
    host, rest = _split_host(body, spec)
    parts = rest.split(":")
    if host is None and len(parts) == 3:
        host, parts = parts[0], parts[1:]
    if len(parts) != 2:
        raise PolicyError(f"invalid --publish {spec!r} (use [HOSTIP:]HOSTPORT:GUESTPORT[/udp])")
    host = host or "127.0.0.1"
    import ipaddress
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise PolicyError(f"invalid host address {host!r} in --publish {spec!r}") from None
    return Publish(str(ip), _port(parts[0], "host port", spec),
                   _port(parts[1], "guest port", spec), proto, spec)


def _parse_rule(item: str, spec: str) -> EgressRule:
    host, ports = _split_host(item, spec)
    if host is None:
        if "/" in item:
            host, _, tail = item.partition("/")
            prefix, _, ports = tail.partition(":")
            host = f"{host}/{prefix}"
        elif item.count(":") <= 1:
            host, _, ports = item.partition(":")
        else:
            raise PolicyError(f"put the IPv6 address in brackets in --network {spec!r}: "
                              f"[{item}]:PORTS")
    import ipaddress
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        raise PolicyError(f"invalid network {host!r} in --network {spec!r}") from None
    if not ports or ports == "*":
        return EgressRule(network, 1, 65535)
    low, _, high = ports.partition("-")
    lo = _port(low, "port", spec)
    hi = _port(high, "port", spec) if high else lo
    if hi < lo:
        raise PolicyError(f"invalid port range {ports!r} in --network {spec!r}")
    return EgressRule(network, lo, hi)


class NetPolicy:
    """The decisions; shared read-only by every socket of the process."""

    def __init__(self, mode: str = "none", egress: tuple[EgressRule, ...] = (),
                 publish: tuple[Publish, ...] = ()) -> None:
        self.mode = mode
        self.egress = egress
        self.publish = publish

    @classmethod
    def parse(cls, network: str | None, publish: list[str] | tuple[str, ...] = ()) -> NetPolicy:
        mode, rules = "none", tuple[EgressRule, ...]()
        if network:
            if network.startswith("egress="):
                items = [i for i in network.removeprefix("egress=").split(",") if i]
                if not items:
                    raise PolicyError("--network egress= needs at least one CIDR[:PORTS]")
                mode, rules = "egress", tuple(_parse_rule(i, network) for i in items)
            elif network in MODES:
                mode = network
            else:
                raise PolicyError(f"invalid --network {network!r} "
                                  "(use none, host or egress=CIDR[:PORTS],...)")
        pubs = tuple(parse_publish(p) for p in publish)
        seen: set[tuple[str, int]] = set()
        hosts: set[tuple[str, str, int]] = set()
        for p in pubs:
            if (p.proto, p.guest_port) in seen:
                raise PolicyError(f"guest port {p.guest_port}/{p.proto} published twice")
            if (p.proto, p.host_ip, p.host_port) in hosts:
                raise PolicyError(f"host port {p.host_ip}:{p.host_port}/{p.proto} "
                                  "published twice")
            seen.add((p.proto, p.guest_port))
            hosts.add((p.proto, p.host_ip, p.host_port))
        return cls(mode, rules, pubs)

    @property
    def passthrough(self) -> bool:
        return self.mode == "host"

    def published(self, proto: str, guest_port: int) -> Publish | None:
        for p in self.publish:
            if p.proto == proto and p.guest_port == guest_port:
                return p
        return None

    def egress_allowed(self, dest: InetAddr) -> bool:
        if self.mode == "host":
            return True
        ip = dest.ip()
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(rule.allows(ip, dest.port) for rule in self.egress)

    def denial(self, dest: InetAddr) -> int:
        """The errno Linux would give: loopback with nothing listening -> ECONNREFUSED;
        an address some rule covers (port denied) -> ECONNREFUSED, as a firewall's
        reject; anything else -> ENETUNREACH (the guest has no route there)."""
        if dest.is_loopback():
            return errno.ECONNREFUSED
        ip = dest.ip()
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip.version == r.network.version and ip in r.network for r in self.egress):
            return errno.ECONNREFUSED
        return errno.ENETUNREACH

    def describe(self) -> str:
        if self.mode == "egress":
            return "--network egress=" + ",".join(
                f"{r.network}:{r.low}-{r.high}" for r in self.egress)
        return f"--network {self.mode}"
