"""The macvlan driver: each endpoint a macvlan link on a host parent interface.

Linux objects:
- network: nothing, unless the parent is dotted (`-o parent=eth0.50`): then the 802.1q
  sub-interface eth0.50 on eth0 with VLAN id 50, made if missing, up, tagged (ifalias
  `netdns:<network id>`) so that removing the network deletes it only if netdns made it.
- endpoint: a macvlan link (mode from `-o macvlan_mode=bridge|private|vepa|passthru`, default
  bridge) on the parent, made in the host as `vnd<endpoint id[:10]>`, moved into the sandbox's
  namespace as the next free ethN, with the endpoint's addresses and, unless the network is
  internal, a default route via the gateway.

Promises: in bridge mode, sandboxes on the same parent reach each other by address (the host
itself cannot reach them through the parent: that is how macvlan works). `-o parent` is
required and must name an existing host interface. Nothing is made on the parent itself.

The shared `ParentLinkDriver` below also serves the ipvlan driver (drivers/ipvlan.py).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar

from pyroute2 import IPRoute

from drivers import links
from drivers.errors import Invalid
from drivers.links import SandboxInterface
from drivers.model import Driver, Endpoint, Network, Sandbox

log = logging.getLogger(__name__)

OPT_PARENT = "parent"


@dataclasses.dataclass(frozen=True, slots=True)
class Parent:
    """The host interface endpoints hang off; VLAN set for a dotted parent (`eth0.50`)."""

    name: str
    base: str
    vlan: int | None = None


def parse_parent(network: Network) -> Parent:
    name = network.option(OPT_PARENT)
    if not name:
        raise Invalid(
            f"{network.driver} network {network.name!r} needs -o parent=IFACE naming the host "
            "interface to attach to"
        )
    links.check_ifname(name, what=f"option {OPT_PARENT}")
    base, dot, tag = name.rpartition(".")
    if not dot:
        return Parent(name=name, base=name)
    if not base or not tag.isdigit() or not 1 <= int(tag) <= 4094:
        raise Invalid(
            f"option {OPT_PARENT}={name!r}: a dotted parent is IFACE.VLAN with VLAN from 1 to 4094"
        )
    return Parent(name=name, base=base, vlan=int(tag))


def vlan_tag(network: Network) -> str:
    return f"netdns:{network.id}"


class ParentLinkDriver:
    """Endpoints as links of LINK_KIND on a parent interface, moved into the sandbox."""

    kind: ClassVar[Driver]
    link_kind: ClassVar[str]
    mode_option: ClassVar[str]
    modes: ClassVar[tuple[str, ...]]
    default_mode: ClassVar[str]

    def check_supported(self) -> None:
        links.require_link_kind(self.link_kind, instead="use the bridge or macvlan driver")

    def mode(self, network: Network) -> str:
        mode = network.option(self.mode_option, self.default_mode)
        if mode not in self.modes:
            raise Invalid(
                f"option {self.mode_option}={mode!r} is not a {self.link_kind} mode; "
                f"use one of {', '.join(self.modes)}"
            )
        return mode

    def validate(self, network: Network) -> None:
        links.check_option_keys(network, (OPT_PARENT, self.mode_option))
        parent = parse_parent(network)
        self.mode(network)
        with links.netlink() as host:
            if links.index_of(host, parent.base) is None:
                raise Invalid(
                    f"option {OPT_PARENT}={parent.name!r}: host interface {parent.base!r} does "
                    "not exist; name an existing interface (see `ip link`)"
                )
        if parent.vlan is not None:
            links.require_link_kind(
                "vlan", instead=f"802.1q is missing: use an existing interface as {OPT_PARENT}"
            )

    def create_network(self, network: Network) -> None:
        self.check_supported()
        self.validate(network)
        parent = parse_parent(network)
        if parent.vlan is None:
            return
        with links.netlink() as host:
            index = links.index_of(host, parent.name)
            if index is None:
                base = links.require_index(host, parent.base, "parent interface")
                index = links.create_vlan(host, parent.name, base, parent.vlan)
                links.set_alias(host, index, vlan_tag(network))
                log.info("network %s: made 802.1q interface %s", network.name, parent.name)
            links.set_up(host, index)

    def remove_network(self, network: Network) -> None:
        try:
            parent = parse_parent(network)
        except Invalid:
            return
        if parent.vlan is None:
            return
        with links.netlink() as host:
            index = links.index_of(host, parent.name)
            # Only the sub-interface this network made; one that was there before stays.
            if index is not None and links.index_by_alias(host, vlan_tag(network)) == index:
                links.delete_index(host, index)
                log.info("network %s: removed 802.1q interface %s", network.name, parent.name)

    def sandbox_interface(self, network: Network, endpoint: Endpoint) -> SandboxInterface:
        return links.sandbox_interface(network, endpoint)

    def make_link(self, host: IPRoute, name: str, parent: int, mode: str) -> int:
        raise NotImplementedError

    def join(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> Endpoint:
        self.check_supported()
        if not sandbox.netns:
            raise Invalid(f"sandbox {sandbox.name!r} has no network namespace to join to")
        interface = self.sandbox_interface(network, endpoint)
        parent = parse_parent(network)
        name = links.derived_name("vnd", endpoint.id, 10)
        with links.netlink() as host:
            parent_index = links.require_index(
                host, parent.name, f"parent of network {network.name!r}"
            )
            links.delete_link(host, name)  # a leftover of this very endpoint
            index = self.make_link(host, name, parent_index, self.mode(network))
            try:
                mac = links.plumb_into_sandbox(host, index, sandbox.netns, interface)
            except BaseException:
                links.delete_link(host, name)
                links.unplumb_from_sandbox(sandbox.netns, endpoint.id)
                raise
        log.info(
            "endpoint %s joined %s on %s network %s",
            endpoint.id,
            sandbox.name,
            self.kind,
            network.name,
        )
        return dataclasses.replace(endpoint, mac=mac)

    def leave(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> None:
        links.unplumb_from_sandbox(sandbox.netns, endpoint.id)
        with links.netlink() as host:
            links.delete_link(host, links.derived_name("vnd", endpoint.id, 10))


class MacvlanDriver(ParentLinkDriver):
    kind: ClassVar[Driver] = Driver.MACVLAN
    link_kind: ClassVar[str] = "macvlan"
    mode_option: ClassVar[str] = "macvlan_mode"
    modes: ClassVar[tuple[str, ...]] = ("bridge", "private", "vepa", "passthru")
    default_mode: ClassVar[str] = "bridge"

    def make_link(self, host: IPRoute, name: str, parent: int, mode: str) -> int:
        return links.create_macvlan(host, name, parent, mode)
