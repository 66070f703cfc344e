"""Service VIPs that route: nftables DNAT inside each sandbox, from a VIP to the tasks.

A service in `vip` mode has one IPv4 virtual IP per network; no interface holds it. Every
sandbox attached to that network gets, in a table of its own (`ip netdns_vip`), a nat chain on
the `output` hook that rewrites connections to VIP[:port] into one of the tasks' addresses,
picked by `numgen random` per new connection (conntrack keeps the rest of the connection on the
same task and rewrites the replies back to the VIP). Only locally made packets go to the VIP,
so the output hook is the one place to rewrite them, and the client side does the balancing:
no hairpin through a bridge, and macvlan/ipvlan sandboxes work as bridge ones do.

`vip_ruleset` (pure) builds the whole table for one sandbox; `NftVipRoutes.apply` loads it
with `nsenter --net=PATH nft -f -`, replacing the table in one nft transaction, so applying
the same routes twice changes nothing and applying none removes the table.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Protocol

from drivers.errors import Invalid
from drivers.model import ServicePort
from drivers.nft import run_nft

log = logging.getLogger(__name__)

NFT_TABLE = "netdns_vip"  # family ip; ours alone (the port-53 redirect has `ip netdns`)
PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True, slots=True)
class VipRoute:
    """Traffic to `vip` (on `ports`, or on every port when there are none) goes to one of
    `backends`. No backends (a service scaled to 0): no rule, the VIP answers nothing."""

    vip: IPv4Address
    ports: tuple[ServicePort, ...] = ()
    backends: tuple[IPv4Address, ...] = ()


class VipRoutes(Protocol):
    """What the DriverCore needs to make VIPs route inside a sandbox's namespace."""

    def apply(self, netns: str, routes: Sequence[VipRoute]) -> None:
        """Make the sandbox at `netns` route exactly `routes` (none: remove our table)."""
        ...


def _target(backends: Sequence[IPv4Address]) -> str:
    if len(backends) == 1:
        return str(backends[0])
    spread = ", ".join(f"{n} : {address}" for n, address in enumerate(backends))
    return f"numgen random mod {len(backends)} map {{ {spread} }}"


def vip_rules(route: VipRoute) -> list[str]:
    """The nft rules of one route (no backends: none)."""
    if not route.backends:
        return []
    target = _target(route.backends)
    if not route.ports:
        return [f"ip daddr {route.vip} dnat to {target}"]
    rules = []
    for port in route.ports:
        if port.protocol not in PROTOCOLS:
            raise Invalid(f"port {port.port}/{port.protocol}: protocol must be tcp or udp")
        if not 0 < port.port < 65536:
            raise Invalid(f"port {port.port}/{port.protocol}: port must be 1-65535")
        rules.append(f"ip daddr {route.vip} {port.protocol} dport {port.port} dnat to {target}")
    return rules


def vip_ruleset(routes: Sequence[VipRoute]) -> str:
    """The nft script that replaces our table with `routes` (none: just removes it).

    `add` before `delete` makes the delete succeed when the table is missing; nft applies the
    script as one transaction, so connections never see a half-written table. Routes are
    sorted by VIP so the same routes give the same text.
    """
    script = f"add table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n"
    rules = [rule for route in sorted(routes, key=lambda r: r.vip) for rule in vip_rules(route)]
    if not rules:
        return script
    body = "".join(f"    {rule}\n" for rule in rules)
    return (
        f"{script}"
        f"table ip {NFT_TABLE} {{\n"
        "  chain output {\n"
        # -100 is NF_IP_PRI_NAT_DST, as the port-53 redirect (resolver/netns.py) uses.
        "    type nat hook output priority -100; policy accept;\n"
        f"{body}"
        "  }\n"
        "}\n"
    )


class NftVipRoutes:
    """VipRoutes with the real nft, run inside the namespace through nsenter."""

    def apply(self, netns: str, routes: Sequence[VipRoute]) -> None:
        run_nft(netns, vip_ruleset(routes), purpose="service VIPs (or use --endpoint-mode dnsrr)")
        log.debug("VIP routes in %s: %d", netns, len(routes))
