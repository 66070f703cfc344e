"""The cni driver: a netdns network that stands for a CNI network (see docs/CNI.md).

Linux objects: none. The CNI plugins of the runtime's network configuration (for example
`bridge` with `host-local`) make the container's interface and pick its addresses; the
`netdns-cni` chained plugin (netdns/cni_plugin.py) then registers the container with the addresses
they chose, and netdns gives its namespace the embedded resolver as for any adopted namespace.
So create/remove/join/leave change nothing, and netdns never picks an address on such a
network: every container comes with --ip (and --ip6 when the network has IPv6), which the
DriverCore checks through `check_addresses` before anything changes. Services are refused:
their tasks are namespaces netdns makes, which no CNI plugin would ever wire.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar

from drivers.base import NoPlumbing
from drivers.errors import Invalid
from drivers.model import Driver, Network

NO_SERVICES = (
    "network {network!r} is a CNI network: its containers are wired by the CNI plugins, so it "
    "cannot hold service tasks; put the service on a bridge or overlay network"
)


def check_addresses(network: Network, ipv4: IPv4Address | None, ipv6: IPv6Address | None) -> None:
    """Invalid unless the attachment brings every address the network's families need."""
    if ipv4 is None:
        raise Invalid(
            f"network {network.name!r} is a CNI network: netdns does not pick addresses on it; "
            "give the address the CNI plugins assigned with --ip (netdns-cni does so from "
            "the prevResult)"
        )
    has_ipv6 = any(c.subnet.version == 6 for c in network.ipam)
    if has_ipv6 and ipv6 is None:
        raise Invalid(
            f"network {network.name!r} is a CNI network with IPv6: netdns does not pick "
            "addresses on it; give the IPv6 address the CNI plugins assigned with --ip6"
        )


class CniDriver(NoPlumbing):
    kind: ClassVar[Driver] = Driver.CNI
