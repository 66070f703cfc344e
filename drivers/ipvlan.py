"""The ipvlan driver: each endpoint an ipvlan link on a host parent interface.

Linux objects: as the macvlan driver (drivers/macvlan.py), with ipvlan links instead
(`-o ipvlan_mode=l2|l3`, default l2), which share the parent's MAC address:
- network: nothing, unless the parent is dotted (`-o parent=eth0.50`): the 802.1q
  sub-interface, made if missing and removed with the network only if netdns made it.
- endpoint: an ipvlan link on the parent, made in the host as `vnd<endpoint id[:10]>`, moved into
  the sandbox's namespace as the next free ethN, with the endpoint's addresses. Unless the
  network is internal, a default route: via the gateway in l2 mode, straight out of the device
  in l3 mode (the parent routes; there is no gateway to reach).

Promises: `check_supported` raises Unsupported when the kernel has no ipvlan (as here);
`-o parent` is required and must name an existing host interface.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from pyroute2 import IPRoute

from drivers import links
from drivers.errors import Invalid
from drivers.links import SandboxInterface
from drivers.macvlan import ParentLinkDriver
from drivers.model import Driver, Endpoint, Network


class IpvlanDriver(ParentLinkDriver):
    kind: ClassVar[Driver] = Driver.IPVLAN
    link_kind: ClassVar[str] = "ipvlan"
    mode_option: ClassVar[str] = "ipvlan_mode"
    modes: ClassVar[tuple[str, ...]] = ("l2", "l3")
    default_mode: ClassVar[str] = "l2"

    def sandbox_interface(self, network: Network, endpoint: Endpoint) -> SandboxInterface:
        if endpoint.mac:
            raise Invalid(
                f"endpoint {endpoint.name!r} asks for MAC address {endpoint.mac}, but ipvlan "
                "links share the parent's MAC; drop the MAC address or use macvlan"
            )
        interface = links.sandbox_interface(
            network, endpoint, device_routes=self.mode(network) == "l3"
        )
        return dataclasses.replace(interface, mac="")

    def make_link(self, host: IPRoute, name: str, parent: int, mode: str) -> int:
        return links.create_ipvlan(host, name, parent, mode)
