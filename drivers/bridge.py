"""The bridge driver: one Linux bridge per network in the host, a veth pair per endpoint.

Linux objects:
- network: a bridge named `br-<network id[:12]>` (`netdns0` for the default network `bridge`,
  or the name given with `-o com.docker.network.bridge.name=NAME`), up, carrying each subnet's
  gateway address (IPv6 ones only with --ipv6). An internal network's bridge carries no
  address: nothing in the host answers for it and nothing routes out (R12).
- endpoint: a veth pair. The host end `vnd<endpoint id[:10]>` is enslaved to the bridge and up;
  the other end moves into the sandbox's namespace as the next free ethN, tagged with the
  endpoint id (ifalias), with the endpoint's addresses and, unless the network is internal, a
  default route via the gateway.

Promises: sandboxes on one bridge network reach each other by address; removing what was made
is idempotent. It does not touch iptables, nftables or ip_forward: masquerading to the outside
world is left to the host.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar

from drivers import links
from drivers.errors import Invalid, NotFound
from drivers.model import Driver, Endpoint, Network, Sandbox

log = logging.getLogger(__name__)

OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_MTU = "com.docker.network.driver.mtu"
OPTIONS = (OPT_BRIDGE_NAME, OPT_MTU)

DEFAULT_NETWORK_NAME = "bridge"
DEFAULT_BRIDGE = "netdns0"


def bridge_name(network: Network) -> str:
    name = network.option(OPT_BRIDGE_NAME)
    if name:
        return name
    if network.name == DEFAULT_NETWORK_NAME:
        return DEFAULT_BRIDGE
    return links.derived_name("br-", network.id, 12)


def veth_names(endpoint: Endpoint) -> tuple[str, str]:
    """(host end, end that moves into the sandbox) for ENDPOINT."""
    return links.derived_name("vnd", endpoint.id, 10), links.derived_name("cnd", endpoint.id, 10)


def mtu_of(network: Network) -> int | None:
    value = network.option(OPT_MTU)
    if not value:
        return None
    if not value.isdigit() or not 68 <= int(value) <= 65535:
        raise Invalid(f"option {OPT_MTU}={value!r} is not an MTU; give a number from 68 to 65535")
    return int(value)


class BridgeDriver:
    kind: ClassVar[Driver] = Driver.BRIDGE

    def check_supported(self) -> None:
        links.require_link_kind("bridge")
        links.require_link_kind("veth")

    def validate(self, network: Network) -> None:
        links.check_option_keys(network, OPTIONS)
        links.check_ifname(bridge_name(network), what=f"bridge name (option {OPT_BRIDGE_NAME})")
        mtu_of(network)

    def create_network(self, network: Network) -> None:
        self.validate(network)
        name = bridge_name(network)
        with links.netlink() as host:
            index = links.create_bridge(host, name, mtu_of(network))
            if not network.internal:
                for config in network.ipam:
                    if config.gateway is None or (config.subnet.version == 6 and not network.ipv6):
                        continue
                    gateway = links.ip_interface(config.gateway, config.subnet.prefixlen)
                    links.add_address(host, index, gateway)
            links.set_up(host, index)
        log.info("network %s: bridge %s up", network.name, name)

    def remove_network(self, network: Network) -> None:
        name = bridge_name(network)
        with links.netlink() as host:
            index = links.index_of(host, name)
            # Only a bridge: a user-named interface that is something else is not ours.
            if index is not None and links.link_kind(host, index) == "bridge":
                links.delete_index(host, index)
                log.info("network %s: bridge %s removed", network.name, name)

    def join(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> Endpoint:
        interface = links.sandbox_interface(network, endpoint)
        return join_bridge(
            bridge_name(network), network, endpoint, sandbox, interface, mtu_of(network)
        )

    def leave(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> None:
        leave_bridge(endpoint, sandbox)


def join_bridge(
    bridge: str,
    network: Network,
    endpoint: Endpoint,
    sandbox: Sandbox,
    interface: links.SandboxInterface,
    mtu: int | None,
) -> Endpoint:
    """A veth pair from the Linux bridge `bridge` into the sandbox, configured as `interface`
    (the bridge and overlay drivers' join); returns the endpoint with the sandbox end's MAC."""
    if not sandbox.netns:
        raise Invalid(f"sandbox {sandbox.name!r} has no network namespace to join to")
    host_end, sandbox_end = veth_names(endpoint)
    with links.netlink() as host:
        index_of_bridge = links.index_of(host, bridge)
        if index_of_bridge is None:
            raise NotFound(
                f"bridge {bridge!r} of {network.driver} network {network.name!r} does not "
                "exist; the network must be created (or re-created) on this host first"
            )
        # Names come from the endpoint id: a link by that name is a leftover of this endpoint.
        links.delete_link(host, host_end)
        links.delete_link(host, sandbox_end)
        index = links.create_veth(host, host_end, sandbox_end, mtu)
        try:
            links.enslave(host, index, index_of_bridge)
            links.set_up(host, index)
            peer = links.require_index(host, sandbox_end)
            mac = links.plumb_into_sandbox(host, peer, sandbox.netns, interface)
        except BaseException:
            # Deleting either end of a veth deletes both, wherever the peer now is.
            links.delete_link(host, host_end)
            raise
    log.info(
        "endpoint %s joined %s on %s network %s",
        endpoint.id, sandbox.name, network.driver, network.name,
    )  # fmt: skip
    return dataclasses.replace(endpoint, mac=mac)


def leave_bridge(endpoint: Endpoint, sandbox: Sandbox) -> None:
    host_end, sandbox_end = veth_names(endpoint)
    try:
        links.unplumb_from_sandbox(sandbox.netns, endpoint.id)
    finally:
        # Even when the namespace could not be entered: the host end is ours to delete (and a
        # join cut short may have left both ends here), and deleting it deletes its peer.
        with links.netlink() as host:
            links.delete_link(host, host_end)
            links.delete_link(host, sandbox_end)
