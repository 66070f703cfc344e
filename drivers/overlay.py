"""The overlay driver: one layer-2 segment per network across hosts, over VXLAN.

Linux objects, in the namespace of the calling thread (the host's, where the daemon runs):
- network: a bridge `ov-<network id[:10]>` with a VXLAN device `vx-<network id[:10]>` enslaved
  to it, both up with the network's MTU (default 1450: 1500 less the VXLAN overhead). The VXLAN
  device carries the network's VNI (option com.docker.network.driver.overlay.vxlanid_list, set
  by the cluster layer), sends from this host's advertise address to UDP port 4789, and has
  learning off and ARP proxy on. The bridge carries no address: nothing in the host answers
  for the network, and sandboxes get no default route through it (only the segment itself).
- endpoint: a veth pair as with the bridge driver: the host end `vnd<endpoint id[:10]>` on the
  bridge, the other end in the sandbox as the next free ethN, tagged with the endpoint id, with
  the endpoint's addresses and no default route.
- peer (a sandbox on another host, told by the cluster layer): a static FDB entry on the VXLAN
  device (its MAC is behind that host's VTEP address) and a permanent neighbour entry (its
  address has that MAC), from which the device answers ARP itself. Nothing is flooded or
  learnt, so a peer is reachable exactly while it is programmed.

Promises: sandboxes on the same overlay network on different hosts reach each other by address
once each host has the other's endpoints as peers; everything made is found again after a
restart, and removing or re-adding it is idempotent. IPv4 only.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable
from ipaddress import IPv4Address
from typing import ClassVar

from pyroute2 import IPRoute

from drivers import links, vxlan
from drivers.bridge import join_bridge, leave_bridge
from drivers.errors import Conflict, Invalid, NotFound, Unsupported
from drivers.model import Driver, Endpoint, Network, Sandbox

log = logging.getLogger(__name__)

OPT_VNI = "com.docker.network.driver.overlay.vxlanid_list"
OPT_MTU = "com.docker.network.driver.mtu"
OPTIONS = (OPT_VNI, OPT_MTU)

VXLAN_PORT = 4789
MAX_VNI = 2**24 - 1
DEFAULT_MTU = 1450  # 1500 less the 50 bytes of outer Ethernet, IP, UDP and VXLAN headers

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

Peer = tuple[IPv4Address, str, IPv4Address]  # (sandbox address, its MAC, its host's VTEP)


def vxlan_name(network: Network) -> str:
    return links.derived_name("vx-", network.id, 10)


def bridge_name(network: Network) -> str:
    return links.derived_name("ov-", network.id, 10)


def vni_of(network: Network) -> int:
    value = network.option(OPT_VNI).strip()
    if not value:
        raise Invalid(
            f"overlay network {network.name!r} has no option {OPT_VNI}: the cluster layer "
            "allocates the VXLAN id when it creates the network; create it through a daemon "
            "started with --store"
        )
    if not value.isdigit() or not 1 <= int(value) <= MAX_VNI:
        raise Invalid(
            f"option {OPT_VNI}={value!r} is not one VXLAN id; give a single number from 1 to "
            f"{MAX_VNI}"
        )
    return int(value)


def mtu_of(network: Network) -> int:
    value = network.option(OPT_MTU).strip()
    if not value:
        return DEFAULT_MTU
    if not value.isdigit() or not 68 <= int(value) <= 65535:
        raise Invalid(f"option {OPT_MTU}={value!r} is not an MTU; give a number from 68 to 65535")
    return int(value)


def _mac(mac: str) -> str:
    normal = mac.strip().lower()
    # A zero MAC is the VXLAN device's default destination (flooding) and a group MAC is no
    # sandbox's: programming either would send traffic for everyone to one host.
    if not _MAC_RE.match(normal) or normal == "00:00:00:00:00:00" or int(normal[:2], 16) & 1:
        raise Invalid(
            f"peer MAC address {mac!r} is not a unicast MAC; give six hex pairs such as "
            "02:42:0a:00:00:02"
        )
    return normal


def _ipv4(value: object, what: str) -> IPv4Address:
    try:
        return IPv4Address(str(value))
    except ValueError:
        raise Invalid(f"{what} {value!r} is not an IPv4 address") from None


class OverlayDriver:
    kind: ClassVar[Driver] = Driver.OVERLAY

    def __init__(self, advertise: IPv4Address | None = None) -> None:
        """ADVERTISE: this host's VTEP address on the underlay, where other hosts send to."""
        self.advertise = advertise

    def check_supported(self) -> None:
        links.require_link_kind("vxlan")
        links.require_link_kind("bridge")
        links.require_link_kind("veth")

    def validate(self, network: Network) -> None:
        links.check_option_keys(network, OPTIONS)
        if network.ipv6:
            raise Unsupported(
                f"overlay network {network.name!r} asks for IPv6; overlay networks carry IPv4 "
                "only here, create it without --ipv6"
            )
        vni_of(network)
        mtu_of(network)
        vxlan_name(network)
        bridge_name(network)

    def create_network(self, network: Network) -> None:
        """Make (or find again, after a restart) the bridge and VXLAN device of NETWORK.

        The bridge gets no address, so sandboxes on an overlay network get no default route
        through it here: they reach the other sandboxes of the network and nothing else.
        """
        if self.advertise is None:
            raise Unsupported(
                "overlay networks need the cluster store: start the daemon with "
                "--store etcd://HOST:PORT --advertise-addr IP"
            )
        self.validate(network)
        mtu = mtu_of(network)
        with links.netlink() as host:
            bridge = self._ensure_bridge(host, network, mtu)
            device = self._ensure_vxlan(host, network, self.advertise, mtu)
            links.enslave(host, device, bridge)
            links.set_up(host, device)
            links.set_up(host, bridge)
        log.info(
            "network %s: vxlan %s (vni %d, local %s) on bridge %s up",
            network.name,
            vxlan_name(network),
            vni_of(network),
            self.advertise,
            bridge_name(network),
        )

    def remove_network(self, network: Network) -> None:
        with links.netlink() as host:
            device = links.index_of(host, vxlan_name(network))
            if device is not None and links.link_kind(host, device) == "vxlan":
                links.delete_index(host, device)
            bridge = links.index_of(host, bridge_name(network))
            if bridge is not None and links.link_kind(host, bridge) == "bridge":
                links.delete_index(host, bridge)
        log.info("network %s: overlay devices removed", network.name)

    def join(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> Endpoint:
        # No default route: the bridge has no address to route through (see create_network).
        interface = dataclasses.replace(
            links.sandbox_interface(network, endpoint), default_routes=()
        )
        return join_bridge(
            bridge_name(network), network, endpoint, sandbox, interface, mtu_of(network)
        )

    def leave(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> None:
        leave_bridge(endpoint, sandbox)

    # --- remote endpoints (called by the cluster layer) ---------------------------------------

    def add_peer(self, network: Network, address: IPv4Address, mac: str, vtep: IPv4Address) -> None:
        """Reach the remote sandbox ADDRESS (with MAC) through the host at VTEP (see
        update_peers)."""
        self.update_peers(network, add=[(address, mac, vtep)])

    def remove_peer(
        self, network: Network, address: IPv4Address, mac: str, vtep: IPv4Address
    ) -> None:
        """Forget the remote sandbox ADDRESS; missing is fine (see update_peers)."""
        self.update_peers(network, remove=[(address, mac, vtep)])

    def update_peers(
        self, network: Network, *, add: Iterable[Peer] = (), remove: Iterable[Peer] = ()
    ) -> None:
        """Remove, then add, remote peers with one netlink socket. Each peer costs a few
        lookups and writes of its own entries, whatever the number of peers programmed; only an
        add that moves an address to another MAC reads the device's tables (to know whether
        the old MAC is still used).

        Adding the same peer again changes nothing; a new MAC or VTEP for an address replaces
        the old one (the old MAC's forwarding entry goes when no address uses it any more).
        A removal only takes entries that still say MAC at VTEP: one that arrives after the
        address or MAC was re-added elsewhere (a moved or re-created endpoint) leaves the new
        entries alone. Removing what is missing is fine.
        """
        adds = [self._checked(network, *peer) for peer in add]
        removes = [self._checked(network, *peer, in_subnet=False) for peer in remove]
        if not adds and not removes:
            return
        with links.netlink() as host:
            device = links.index_of(host, vxlan_name(network))
            if device is None:
                if adds:
                    self._require_vxlan(host, network)  # raises NotFound naming the device
                return
            for address, mac, vtep in removes:
                # The kernel deletes a MAC's entry whatever remote the request names, so a
                # MAC that moved to another VTEP must be looked up, not just deleted.
                behind = vxlan.fdb_remote(host, device, mac)
                if behind is not None and behind != vtep:
                    log.debug("network %s: peer %s %s is behind %s now", network.name, mac,
                              address, behind)  # fmt: skip
                    continue
                if vxlan.neighbour_mac(host, device, address) == mac:
                    vxlan.neigh_delete(host, device, address)
                vxlan.fdb_delete(host, device, mac, vtep)
            moved = [
                (address, old)
                for address, mac, _ in adds
                if (old := vxlan.neighbour_mac(host, device, address)) not in (None, mac)
            ]
            for address, mac, vtep in adds:
                vxlan.fdb_replace(host, device, mac, vtep)
                vxlan.neigh_replace(host, device, address, mac)
            if moved:
                self._drop_unused_macs(host, device, {old for _, old in moved})
        log.debug("network %s: %d peers added, %d removed", network.name, len(adds), len(removes))

    @staticmethod
    def _drop_unused_macs(host: IPRoute, device: int, macs: set[str]) -> None:
        """Delete the forwarding entries of those MACS that no neighbour entry uses any more."""
        used = set(vxlan.permanent_neighbours(host, device).values())
        for mac in macs - used:
            if (vtep := vxlan.fdb_remote(host, device, mac)) is not None:
                vxlan.fdb_delete(host, device, mac, vtep)

    @staticmethod
    def _checked(
        network: Network, address: object, mac: object, vtep: object, *, in_subnet: bool = True
    ) -> Peer:
        address, vtep, mac = _ipv4(address, "peer address"), _ipv4(vtep, "peer VTEP"), _mac(mac)
        if in_subnet and not any(address in config.subnet for config in network.ipam):
            raise Invalid(
                f"peer address {address} is in none of the subnets of overlay network "
                f"{network.name!r}"
            )
        return address, mac, vtep

    def peers(self, network: Network) -> set[Peer]:
        """The (address, MAC, VTEP) peers programmed now; none when the network is not here."""
        with links.netlink() as host:
            device = links.index_of(host, vxlan_name(network))
            if device is None:
                return set()
            neighbours = vxlan.permanent_neighbours(host, device)
            remotes = vxlan.fdb_remotes(host, device)
        return {
            (address, mac, vtep)
            for address, mac in neighbours.items()
            for remote_mac, vtep in remotes
            if remote_mac == mac
        }

    # --- helpers ------------------------------------------------------------------------------

    def _ensure_bridge(self, host: IPRoute, network: Network, mtu: int) -> int:
        name = bridge_name(network)
        index = links.index_of(host, name)
        if index is not None and links.link_kind(host, index) != "bridge":
            raise Conflict(
                f"interface {name!r} exists and is not a bridge, but overlay network "
                f"{network.name!r} needs that name; remove it (ip link del {name})"
            )
        index = links.create_bridge(host, name, mtu)
        vxlan.set_mtu(host, index, mtu)  # a restart may bring a changed MTU
        return index

    def _ensure_vxlan(self, host: IPRoute, network: Network, local: IPv4Address, mtu: int) -> int:
        name, vni = vxlan_name(network), vni_of(network)
        wanted = vxlan.VxlanSettings(
            vni=vni, local=local, port=VXLAN_PORT, learning=False, proxy=True
        )
        index = links.index_of(host, name)
        if index is not None:
            found = vxlan.vxlan_settings(host, index)
            if found is None:
                raise Conflict(
                    f"interface {name!r} exists and is not a VXLAN device, but overlay network "
                    f"{network.name!r} needs that name; remove it (ip link del {name})"
                )
            if found == wanted:
                vxlan.set_mtu(host, index, mtu)
                return index
            # The name comes from the network id, so the device is ours, made with other
            # settings (another advertise address): remake it. Its peers go with it.
            log.warning(
                "network %s: %s has %s, remaking it with %s", network.name, name, found, wanted
            )
            links.delete_index(host, index)
        self._check_vni_free(host, network, vni)
        return vxlan.create_vxlan(host, name, vni, local, VXLAN_PORT, mtu)

    def _check_vni_free(self, host: IPRoute, network: Network, vni: int) -> None:
        # The kernel refuses a second device with the same VNI and port with EEXIST, which
        # would read as "interface exists"; name the device that holds it instead.
        for link in host.link("dump"):
            if link.get(("linkinfo", "kind")) != "vxlan":
                continue
            found = vxlan.vxlan_settings(host, int(link["index"]))
            if found is not None and found.vni == vni and found.port == VXLAN_PORT:
                raise Conflict(
                    f"VXLAN id {vni} of overlay network {network.name!r} is already used by "
                    f"interface {link.get('ifname')!r} on this host; remove that network or "
                    "give this one another id"
                )

    def _require_vxlan(self, host: IPRoute, network: Network) -> int:
        index = links.index_of(host, vxlan_name(network))
        if index is None:
            raise NotFound(
                f"VXLAN device {vxlan_name(network)!r} of overlay network {network.name!r} does "
                "not exist; the network must be created on this host before its peers are added"
            )
        return index
