"""IP address management: each network's subnets, and which addresses its endpoints hold.

Two parts. `plan_ipam` is a pure function from what the user asked (--subnet, --gateway,
--ip-range, --ipv6) and the subnets other networks already hold to the network's IPAMConfig,
picking default subnets as docker does (the default `bridge` 172.17.0.0/16, user networks the
next free /16 of 172.18-31.0.0, then /20s of 192.168.0.0/16; IPv6 a /64 of a netdns ULA /48).
`Ipam` keeps the live pools: next free address (never the network, broadcast or gateway
address), a requested one, release, and `reserve` to take back what stored endpoints hold when
the daemon starts, so nothing is handed out twice.

Allocation is next-fit, as docker's: after releasing 10.0.0.2 the next container gets 10.0.0.3,
not .2 again, so a client still caching the old owner's name is less likely to reach a stranger.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)

from drivers.errors import Conflict, Invalid
from drivers.model import IPAddress, IPAMConfig, IPNetwork, Network

DEFAULT_BRIDGE_SUBNET = IPv4Network("172.17.0.0/16")
# docker's default-address-pools: (pool, prefix length of each network's subnet).
DEFAULT_V4_POOLS: tuple[tuple[IPv4Network, int], ...] = (
    *((IPv4Network(f"172.{n}.0.0/16"), 16) for n in range(17, 32)),
    (IPv4Network("192.168.0.0/16"), 20),
)
# A fixed ULA /48 ("netdn" in its global id) cut into /64s, for --ipv6 without a v6 --subnet.
DEFAULT_V6_POOLS: tuple[tuple[IPv6Network, int], ...] = ((IPv6Network("fd6e:6574:646e::/48"), 64),)

# The smallest subnets that still leave an address after the reserved ones.
MAX_PREFIX = {4: 30, 6: 126}


def parse_subnet(text: str, what: str = "--subnet") -> IPNetwork:
    try:
        return ip_network(text)
    except ValueError:
        pass
    try:
        loose = ip_network(text, strict=False)
    except ValueError:
        raise Invalid(
            f"{what} {text!r} is not a subnet: use CIDR notation such as 10.1.0.0/24 or fd00:1::/64"
        ) from None
    raise Invalid(f"{what} {text!r} has host bits set: did you mean {loose}?")


def parse_address(text: str, what: str = "--ip", version: int | None = None) -> IPAddress:
    try:
        address = ip_address(text)
    except ValueError:
        raise Invalid(f"{what} {text!r} is not an IP address") from None
    if version is not None and address.version != version:
        hint = "use --ip6 for IPv6" if version == 4 else "use --ip for IPv4"
        raise Invalid(f"{what} {text!r} is not an IPv{version} address: {hint}")
    return address


def overlapping(subnet: IPNetwork, others: Iterable[IPNetwork]) -> IPNetwork | None:
    """The first of `others` that shares an address with `subnet`, if any."""
    for other in others:
        if other.version == subnet.version and subnet.overlaps(other):  # type: ignore[arg-type]
            return other
    return None


def first_host(subnet: IPNetwork) -> IPAddress:
    return subnet.network_address + 1


def default_subnet(
    version: int, taken: Iterable[IPNetwork], pools: Sequence[tuple[IPNetwork, int]] | None = None
) -> IPNetwork:
    """The first subnet of the default pools that overlaps none of `taken` (Conflict if none)."""
    if pools is None:
        pools = DEFAULT_V4_POOLS if version == 4 else DEFAULT_V6_POOLS
    taken = [t for t in taken if t.version == version]
    for pool, prefix in pools:
        for candidate in _subnets_of(pool, prefix):
            if overlapping(candidate, taken) is None:
                return candidate
    raise Conflict(
        f"no free default IPv{version} subnet left in "
        f"{', '.join(str(p) for p, _ in pools)}: give one with --subnet"
    )


def _subnets_of(pool: IPNetwork, prefix: int) -> Iterator[IPNetwork]:
    # ipaddress.subnets() would list 2**(prefix - pool prefix) subnets eagerly for big v6 pools.
    step = 1 << (pool.max_prefixlen - prefix)
    start = int(pool.network_address)
    for n in range(pool.num_addresses // step):
        yield ip_network((start + n * step, prefix))


def plan_ipam(
    subnets: Sequence[str],
    gateway: str | None,
    ip_range: str | None,
    *,
    ipv6: bool,
    taken: Iterable[IPNetwork],
    network_name: str,
) -> tuple[IPAMConfig, ...]:
    """The IPAM configuration of a new network; raises Invalid or Conflict, changes nothing.

    `--gateway` and `--ip-range` apply to the given subnet that contains them. Without an IPv4
    subnet the network gets the next free default one; with --ipv6 and no IPv6 subnet, the next
    free default /64.
    """
    taken = list(taken)
    parsed: list[IPNetwork] = []
    for text in subnets:
        subnet = parse_subnet(text)
        if subnet.prefixlen > MAX_PREFIX[subnet.version]:
            raise Invalid(
                f"--subnet {subnet} is too small to hold an endpoint: use at most "
                f"/{MAX_PREFIX[subnet.version]}"
            )
        if subnet.version == 6 and not ipv6:
            raise Invalid(
                f"--subnet {subnet} is IPv6: add --ipv6 to enable IPv6 on {network_name!r}"
            )
        if (same := overlapping(subnet, parsed)) is not None:
            raise Invalid(f"--subnet {subnet} overlaps --subnet {same}: give subnets that do not")
        if (other := overlapping(subnet, taken)) is not None:
            raise Conflict(
                f"--subnet {subnet} overlaps {other}, which another network uses: "
                "pick a subnet that does not"
            )
        parsed.append(subnet)
    if not parsed and (gateway or ip_range):
        option = "--gateway" if gateway else "--ip-range"
        raise Invalid(f"{option} needs --subnet: give the subnet it belongs to")

    gateway_address = parse_address(gateway, "--gateway") if gateway else None
    range_subnet = parse_subnet(ip_range, "--ip-range") if ip_range else None
    if gateway_address is not None:
        holder = next((s for s in parsed if _contains(s, gateway_address)), None)
        if holder is None:
            raise Invalid(
                f"--gateway {gateway_address} is not inside any --subnet "
                f"({', '.join(map(str, parsed))}): give one inside"
            )
        if gateway_address in _unusable(holder):
            raise Invalid(
                f"--gateway {gateway_address} is the network or broadcast address of {holder}: "
                "pick a host address"
            )
    if range_subnet is not None and not any(_within(range_subnet, s) for s in parsed):
        raise Invalid(
            f"--ip-range {range_subnet} is not inside any --subnet "
            f"({', '.join(map(str, parsed))}): give a range inside one"
        )

    if not any(s.version == 4 for s in parsed):
        parsed.insert(0, default_subnet(4, taken))
    if ipv6 and not any(s.version == 6 for s in parsed):
        parsed.append(default_subnet(6, taken))

    configs = []
    for subnet in parsed:
        own_gateway = gateway_address is not None and _contains(subnet, gateway_address)
        own_range = range_subnet is not None and _within(range_subnet, subnet)
        configs.append(
            IPAMConfig(
                subnet=subnet,
                gateway=gateway_address if own_gateway else first_host(subnet),
                ip_range=range_subnet if own_range else None,
            )
        )
    return tuple(configs)


def _contains(subnet: IPNetwork, address: IPAddress) -> bool:
    return subnet.version == address.version and address in subnet  # type: ignore[operator]


def _within(inner: IPNetwork, outer: IPNetwork) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


def _unusable(subnet: IPNetwork) -> set[IPAddress]:
    """Addresses no endpoint or gateway may take: the network address, and broadcast in IPv4."""
    if subnet.version == 4:
        return {subnet.network_address, subnet.broadcast_address}
    return {subnet.network_address}  # the subnet-router anycast address (RFC 4291)


class Pool:
    """The allocations in one subnet of one network."""

    def __init__(self, config: IPAMConfig, network_name: str) -> None:
        self.config = config
        self.network_name = network_name
        span = config.ip_range or config.subnet
        self.version: int = config.subnet.version
        self._first: int = int(span.network_address)
        self._last: int = int(span.broadcast_address)
        self._unusable = {int(a) for a in _unusable(config.subnet)}
        self._gateway = int(config.gateway) if config.gateway is not None else None
        self._owners: dict[int, str] = {}
        self._cursor = self._first - 1  # next-fit: the search starts after the last one given

    @property
    def subnet(self) -> IPNetwork:
        return self.config.subnet

    def __contains__(self, address: IPAddress) -> bool:
        return _contains(self.config.subnet, address)

    def allocate(self, owner: str) -> IPAddress | None:
        """The next free address in the range after the last one given, or None when full."""
        size = self._last - self._first + 1
        start = self._cursor + 1 - self._first
        for offset in range(size):
            candidate = self._first + (start + offset) % size
            if self._free(candidate):
                return self._take(candidate, owner)
        return None

    def take(self, address: IPAddress, owner: str) -> IPAddress:
        """A requested address: anywhere in the subnet (the --ip-range only bounds automatic
        allocation, as in docker), but not reserved nor held."""
        value = int(address)
        if value in self._unusable:
            raise Invalid(
                f"address {address} is the network or broadcast address of {self.subnet} on "
                f"network {self.network_name!r}: pick a host address"
            )
        if value == self._gateway:
            raise Conflict(
                f"address {address} is the gateway of network {self.network_name!r}: "
                "pick another one"
            )
        if value in self._owners:
            raise Conflict(
                f"address {address} is already in use on network {self.network_name!r} by "
                f"{self._owners[value]!r}: pick another one or leave it out"
            )
        self._owners[value] = owner
        return address

    def release(self, address: IPAddress) -> None:
        self._owners.pop(int(address), None)

    def owner(self, address: IPAddress) -> str | None:
        return self._owners.get(int(address))

    def _free(self, value: int) -> bool:
        return value not in self._owners and value not in self._unusable and value != self._gateway

    def _take(self, value: int, owner: str) -> IPAddress:
        self._owners[value] = owner
        self._cursor = value
        address = IPv4Address(value) if self.version == 4 else IPv6Address(value)
        return address


class Ipam:
    """Live pools of every network, by network id. Not thread safe: the DriverCore locks."""

    def __init__(self) -> None:
        self._pools: dict[str, tuple[Pool, ...]] = {}

    def add_network(self, network: Network) -> None:
        self._pools[network.id] = tuple(Pool(c, network.name) for c in network.ipam)

    def remove_network(self, network_id: str) -> None:
        self._pools.pop(network_id, None)

    def has_family(self, network_id: str, version: int) -> bool:
        return any(p.version == version for p in self._pools.get(network_id, ()))

    def allocate(
        self, network: Network, version: int, owner: str, requested: IPAddress | None = None
    ) -> IPAddress:
        """An address of `version` for `owner` on `network`: `requested` if given, else the next
        free one. Invalid for an address outside the network, Conflict when taken or full."""
        pools = [p for p in self._pools.get(network.id, ()) if p.version == version]
        if not pools:
            raise Invalid(f"network {network.name!r} has no IPv{version} subnet")
        if requested is not None:
            for pool in pools:
                if requested in pool:
                    return pool.take(requested, owner)
            flag = "--ip" if version == 4 else "--ip6"
            raise Invalid(
                f"{flag} {requested} is not in network {network.name!r}'s subnets "
                f"({', '.join(str(p.subnet) for p in pools)}): pick one inside or leave it out"
            )
        for pool in pools:
            address = pool.allocate(owner)
            if address is not None:
                return address
        raise Conflict(
            f"no free IPv{version} address left on network {network.name!r} "
            f"({', '.join(str(p.subnet) for p in pools)}): remove a container or use another "
            "network"
        )

    def reserve(self, network: Network, address: IPAddress, owner: str) -> None:
        """Take back an address a stored endpoint holds (start-up)."""
        self.allocate(network, address.version, owner, address)

    def release(self, network_id: str, address: IPAddress | None) -> None:
        if address is None:
            return
        for pool in self._pools.get(network_id, ()):
            if address in pool:
                pool.release(address)
                return
