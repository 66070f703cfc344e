"""Netlink helpers shared by the drivers: links, addresses and routes, through pyroute2.

Every helper takes an open IPRoute, bound to the namespace it acts in (see `netlink`), so a
driver reads as the sequence of kernel changes it makes. Names of host-side links are derived
from ids (Linux caps them at 15 bytes). The end of the file probes which link kinds this kernel
can make, once per kind. The overlay's VXLAN device and its static FDB and neighbour entries are
in drivers/vxlan.py.

The one composite step, `plumb_into_sandbox`, is what every driver that gives a sandbox its own
interface does after making the link in the host: move it in, rename it ethN, tag it with the
endpoint id (IFLA_IFALIAS, so `leave` finds it again without any state of ours), address it,
set it up and route through the gateway.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Address, IPv6Interface

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from drivers.errors import Conflict, Invalid, NotFound, Unsupported
from drivers.model import Endpoint, IPAddress, Network

log = logging.getLogger(__name__)

IFNAMSIZ = 15  # usable bytes of a Linux interface name
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_IFA_F_NODAD = 0x02  # IPv6 addresses usable at once, not after duplicate address detection
_ENODEV = 19
_EEXIST = 17

IPInterface = IPv4Interface | IPv6Interface


def ip_interface(address: IPAddress, prefixlen: int) -> IPInterface:
    """ADDRESS/PREFIXLEN, keeping the address (not the network) as the host part."""
    if isinstance(address, IPv6Address):
        return IPv6Interface((address, prefixlen))
    return IPv4Interface((address, prefixlen))


# --- names ----------------------------------------------------------------------------------


def derived_name(prefix: str, ident: str, length: int) -> str:
    """A host-side link name: PREFIX + the first LENGTH characters of IDENT."""
    name = prefix + ident[:length]
    check_ifname(name, what="derived interface name")
    return name


def check_ifname(name: str, what: str = "interface name") -> None:
    if not _IFNAME_RE.match(name) or name in (".", ".."):
        raise Invalid(
            f"{what} {name!r} is not a valid Linux interface name: use at most {IFNAMSIZ} "
            "letters, digits, '_', '.' or '-'"
        )


# --- opening netlink --------------------------------------------------------------------------


@contextlib.contextmanager
def netlink(netns_path: str | None = None) -> Iterator[IPRoute]:
    """An IPRoute acting in the namespace at NETNS_PATH, or in this process's own if None."""
    if netns_path is None:
        with IPRoute() as ipr:
            yield ipr
        return
    # flags=0: never let pyroute2 create a namespace at a path that is not there.
    try:
        ipr = IPRoute(netns=netns_path, flags=0)
    except FileNotFoundError:
        raise NotFound(f"network namespace {netns_path} does not exist") from None
    with ipr:
        yield ipr


# --- looking links up -------------------------------------------------------------------------


def index_of(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def require_index(ipr: IPRoute, name: str, what: str = "interface") -> int:
    index = index_of(ipr, name)
    if index is None:
        raise NotFound(f"{what} {name!r} does not exist")
    return index


def link_kind(ipr: IPRoute, index: int) -> str | None:
    (link,) = ipr.link("get", index=index)
    return link.get(("linkinfo", "kind"))


def mac_of(ipr: IPRoute, index: int) -> str:
    (link,) = ipr.link("get", index=index)
    return str(link.get("address") or "")


def index_by_alias(ipr: IPRoute, alias: str) -> int | None:
    """The link whose IFLA_IFALIAS is ALIAS (how drivers tag a sandbox's interface)."""
    for link in ipr.link("dump"):
        if link.get("ifalias") == alias:
            return int(link["index"])
    return None


def next_eth_name(ipr: IPRoute) -> str:
    """The first ethN not taken in the namespace IPR acts in (eth0, eth1, ...)."""
    taken = {link.get("ifname") for link in ipr.link("dump")}
    n = 0
    while f"eth{n}" in taken:
        n += 1
    return f"eth{n}"


# --- making and changing links ----------------------------------------------------------------


def create_veth(ipr: IPRoute, name: str, peer: str, mtu: int | None = None) -> int:
    """A veth pair NAME <-> PEER; returns NAME's index."""
    extra = {"mtu": mtu} if mtu else {}
    peer_spec: dict[str, object] = {"ifname": peer, **extra}
    add_link(ipr, name, ifname=name, kind="veth", peer=peer_spec, **extra)
    return require_index(ipr, name)


def create_bridge(ipr: IPRoute, name: str, mtu: int | None = None) -> int:
    """The bridge NAME, made if missing (so a restart finds its own bridge); returns its index."""
    index = index_of(ipr, name)
    if index is not None:
        if link_kind(ipr, index) != "bridge":
            raise Conflict(
                f"interface {name!r} exists and is not a bridge; "
                "remove it or choose another name with -o com.docker.network.bridge.name=NAME"
            )
        return index
    extra = {"mtu": mtu} if mtu else {}
    add_link(ipr, name, ifname=name, kind="bridge", **extra)
    return require_index(ipr, name)


def create_macvlan(ipr: IPRoute, name: str, parent: int, mode: str) -> int:
    add_link(ipr, name, ifname=name, kind="macvlan", link=parent, macvlan_mode=mode)
    return require_index(ipr, name)


def create_ipvlan(ipr: IPRoute, name: str, parent: int, mode: str) -> int:
    modes = {"l2": 0, "l3": 1, "l3s": 2}
    add_link(ipr, name, ifname=name, kind="ipvlan", link=parent, ipvlan_mode=modes[mode])
    return require_index(ipr, name)


def create_vlan(ipr: IPRoute, name: str, parent: int, vlan_id: int) -> int:
    add_link(ipr, name, ifname=name, kind="vlan", link=parent, vlan_id=vlan_id)
    return require_index(ipr, name)


def delete_link(ipr: IPRoute, name: str) -> bool:
    """Delete the link NAME if it exists; True when something was deleted."""
    index = index_of(ipr, name)
    return index is not None and delete_index(ipr, index)


def delete_index(ipr: IPRoute, index: int) -> bool:
    try:
        ipr.link("del", index=index)
    except NetlinkError as error:
        if error.code == _ENODEV:  # gone already (a veth peer deleted with its namespace, ...)
            return False
        raise
    return True


def enslave(ipr: IPRoute, index: int, bridge: int) -> None:
    ipr.link("set", index=index, master=bridge)


def set_up(ipr: IPRoute, index: int) -> None:
    ipr.link("set", index=index, state="up")


def set_alias(ipr: IPRoute, index: int, alias: str) -> None:
    ipr.link("set", index=index, ifalias=alias)


def set_mac(ipr: IPRoute, index: int, mac: str) -> None:
    try:
        ipr.link("set", index=index, address=mac)
    except (NetlinkError, ValueError) as error:
        raise Invalid(f"MAC address {mac!r} cannot be set: {error}") from None


def rename(ipr: IPRoute, index: int, name: str) -> None:
    """Rename a link (it must be down, as it is right after a move)."""
    ipr.link("set", index=index, ifname=name)


def move_to_netns(ipr: IPRoute, index: int, netns_path: str) -> None:
    """Move a link into the namespace at NETNS_PATH (the file is opened, its fd handed over)."""
    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"network namespace {netns_path} does not exist") from None
    try:
        ipr.link("set", index=index, net_ns_fd=fd)
    finally:
        os.close(fd)


def add_address(ipr: IPRoute, index: int, interface: IPInterface) -> None:
    """Add ADDRESS/PREFIX; already present is fine. IPv6 skips DAD so it answers at once."""
    flags = _IFA_F_NODAD if isinstance(interface, IPv6Interface) else 0
    try:
        ipr.addr(
            "add",
            index=index,
            address=str(interface.ip),
            prefixlen=interface.network.prefixlen,
            flags=flags,
        )
    except NetlinkError as error:
        if error.code != _EEXIST:
            raise


def add_default_route(ipr: IPRoute, index: int, gateway: IPAddress | None, v6: bool) -> None:
    """A default route out of INDEX, via GATEWAY (or straight out of the device if None).

    A sandbox already routed out through another network keeps that route, as with Docker:
    the first network connected with a gateway stays the way out.
    """
    family = socket.AF_INET6 if v6 else socket.AF_INET
    dst = "::/0" if v6 else "0.0.0.0/0"
    spec: dict[str, object] = {"dst": dst, "oif": index, "family": family}
    if gateway is not None:
        spec["gateway"] = str(gateway)
    try:
        ipr.route("add", **spec)
    except NetlinkError as error:
        if error.code != _EEXIST:
            raise


def add_link(ipr: IPRoute, name: str, **spec: object) -> None:
    check_ifname(name)
    try:
        ipr.link("add", **spec)
    except NetlinkError as error:
        if error.code == _EEXIST:
            raise Conflict(f"interface {name!r} already exists") from None
        raise


# --- the sandbox side of an endpoint ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SandboxInterface:
    """What an endpoint's interface inside its sandbox carries."""

    alias: str  # IFLA_IFALIAS: the endpoint id, found again by `leave`
    addresses: tuple[IPInterface, ...] = ()
    # (gateway or None for a device route, is_v6); empty for internal networks (R12).
    default_routes: tuple[tuple[IPAddress | None, bool], ...] = ()
    mac: str = ""


def sandbox_interface(
    network: Network, endpoint: Endpoint, device_routes: bool = False
) -> SandboxInterface:
    """The addresses (with their subnet's prefix) and default routes ENDPOINT gets on NETWORK.

    An internal network gets no default route (R12: no route out). DEVICE_ROUTES routes out of
    the interface without a gateway (ipvlan l3, where there is no gateway to talk to).
    """
    addresses: list[IPInterface] = []
    routes: list[tuple[IPAddress | None, bool]] = []
    for address in endpoint.addresses:
        config = next(
            (
                c
                for c in network.ipam
                if c.subnet.version == address.version and address in c.subnet
            ),
            None,
        )
        if config is None:
            raise Invalid(
                f"address {address} of endpoint {endpoint.name!r} is in none of the subnets of "
                f"network {network.name!r}; pick an address inside one of them"
            )
        is_v6 = isinstance(address, IPv6Address)
        if is_v6 and not network.ipv6:
            raise Invalid(
                f"network {network.name!r} does not have IPv6 enabled; "
                f"drop the IPv6 address {address} or create the network with --ipv6"
            )
        addresses.append(ip_interface(address, config.subnet.prefixlen))
        if network.internal:
            continue
        if device_routes:
            routes.append((None, is_v6))
        elif config.gateway is not None:
            routes.append((config.gateway, is_v6))
    return SandboxInterface(
        alias=endpoint.id,
        addresses=tuple(addresses),
        default_routes=tuple(routes),
        mac=endpoint.mac,
    )


def plumb_into_sandbox(
    host: IPRoute, index: int, netns_path: str, interface: SandboxInterface
) -> str:
    """Move the host link INDEX into the sandbox and set it up there as the next ethN.

    Returns the MAC address the interface has in the sandbox.
    """
    moved_name = host.link("get", index=index)[0].get("ifname")
    set_alias(host, index, interface.alias)
    move_to_netns(host, index, netns_path)
    with netlink(netns_path) as inside:
        inner = require_index(inside, moved_name, "moved interface")
        _rename_to_next_eth(inside, inner)
        if interface.mac:
            set_mac(inside, inner, interface.mac)
        for address in interface.addresses:
            add_address(inside, inner, address)
        set_up(inside, inner)
        for gateway, is_v6 in interface.default_routes:
            add_default_route(inside, inner, gateway, is_v6)
        return mac_of(inside, inner)


def _rename_to_next_eth(ipr: IPRoute, index: int, attempts: int = 5) -> None:
    # Another join into the same sandbox may take the same ethN between looking and renaming.
    for _ in range(attempts - 1):
        try:
            rename(ipr, index, next_eth_name(ipr))
            return
        except NetlinkError as error:
            if error.code != _EEXIST:
                raise
    rename(ipr, index, next_eth_name(ipr))


def unplumb_from_sandbox(netns_path: str, alias: str) -> bool:
    """Delete the sandbox's interface tagged ALIAS; a missing namespace or link is fine."""
    if not netns_path or not os.path.exists(netns_path):
        return False
    try:
        with netlink(netns_path) as inside:
            index = index_by_alias(inside, alias)
            return index is not None and delete_index(inside, index)
    except NotFound:
        return False


# --- what this kernel can make ----------------------------------------------------------------


@functools.cache
def link_kind_supported(kind: str) -> bool:
    """Whether this kernel makes links of KIND (probed once, in a scratch namespace).

    Making one is the only reliable test: the code may be built in (no /sys/module entry) or a
    module the kernel loads on first use.
    """
    scratch = f"/run/netns/ndprobe-{secrets.token_hex(4)}"
    netns.create(scratch)
    try:
        with IPRoute(netns=scratch, flags=0) as ipr:
            ipr.link("add", ifname="probe0", kind="veth", peer="probe1")
            parent = require_index(ipr, "probe0")
            specs: dict[str, dict[str, object]] = {
                "veth": {},
                "bridge": {"ifname": "probe2", "kind": "bridge"},
                "macvlan": {"ifname": "probe2", "kind": "macvlan", "link": parent},
                "ipvlan": {"ifname": "probe2", "kind": "ipvlan", "link": parent, "ipvlan_mode": 0},
                "vlan": {"ifname": "probe2", "kind": "vlan", "link": parent, "vlan_id": 2},
                "vxlan": {"ifname": "probe2", "kind": "vxlan", "vxlan_id": 2},
                "dummy": {"ifname": "probe2", "kind": "dummy"},
            }
            spec = specs.get(kind, {"ifname": "probe2", "kind": kind})
            if spec:
                ipr.link("add", **spec)
        return True
    except NetlinkError as error:
        log.info("this kernel cannot make %s links: %s", kind, error)
        return False
    finally:
        netns.remove(scratch)


def require_link_kind(kind: str, instead: str = "") -> None:
    """Raise Unsupported naming KIND when this kernel cannot make such links."""
    if not link_kind_supported(kind):
        hint = f"; {instead}" if instead else ""
        raise Unsupported(
            f"this kernel cannot make {kind} links (no {kind} support built in or loadable)" + hint
        )


# --- driver options (-o KEY=VALUE) ------------------------------------------------------------


def check_option_keys(network: Network, allowed: tuple[str, ...]) -> None:
    """Raise Invalid naming the first -o key the network's driver does not take."""
    for key, _ in network.options:
        if key not in allowed:
            takes = ", ".join(allowed) if allowed else "no -o options"
            raise Invalid(
                f"option {key!r} is not known to the {network.driver} driver "
                f"(network {network.name!r}); it takes {takes}"
            )
