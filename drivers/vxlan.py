"""The overlay's VXLAN device and its static forwarding entries (FDB and neighbours), through
pyroute2, in the style of drivers/links.py: every helper takes an open IPRoute."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

from drivers import links

log = logging.getLogger(__name__)

_ENOENT = 2
_NUD_PERMANENT = ndmsg.states["permanent"]
_NUD_NOARP = ndmsg.states["noarp"]
_NTF_SELF = ndmsg.flags["self"]


@dataclass(frozen=True, slots=True)
class VxlanSettings:
    """What a VXLAN device was made with (read back so a restart can tell it is still right)."""

    vni: int
    local: IPv4Address | None
    port: int
    learning: bool
    proxy: bool


def create_vxlan(
    ipr: IPRoute, name: str, vni: int, local: IPv4Address, port: int, mtu: int | None = None
) -> int:
    """A VXLAN device NAME for VNI, sending from LOCAL to UDP PORT; returns its index.

    Learning is off and ARP proxy on: remote MACs and addresses come only from the static
    entries `fdb_replace` and `neigh_replace` add, and the device answers ARP itself.
    """
    extra = {"mtu": mtu} if mtu else {}
    links.add_link(
        ipr,
        name,
        ifname=name,
        kind="vxlan",
        vxlan_id=vni,
        vxlan_local=str(local),
        vxlan_port=port,
        vxlan_learning=0,
        vxlan_proxy=1,
        **extra,
    )
    return links.require_index(ipr, name)


def vxlan_settings(ipr: IPRoute, index: int) -> VxlanSettings | None:
    """The settings of the VXLAN device INDEX; None when INDEX is not a VXLAN device."""
    (link,) = ipr.link("get", index=index)
    if link.get(("linkinfo", "kind")) != "vxlan":
        return None
    data = link.get(("linkinfo", "data"))
    local = data.get("vxlan_local")
    return VxlanSettings(
        vni=int(data.get("vxlan_id")),
        local=IPv4Address(local) if local else None,
        port=int(data.get("vxlan_port") or 0),
        learning=bool(data.get("vxlan_learning")),
        proxy=bool(data.get("vxlan_proxy")),
    )


def set_mtu(ipr: IPRoute, index: int, mtu: int) -> None:
    ipr.link("set", index=index, mtu=mtu)


def fdb_replace(ipr: IPRoute, index: int, mac: str, dst: IPv4Address) -> None:
    """`bridge fdb replace MAC dev INDEX dst DST self permanent`: MAC is behind DST.

    Replace, not append: for a unicast MAC the kernel ignores an append to an existing entry,
    so a MAC that moved to another VTEP would keep the old one.
    """
    ipr.fdb(
        "replace",
        ifindex=index,
        lladdr=mac,
        dst=str(dst),
        state=_NUD_PERMANENT | _NUD_NOARP,
        flags=_NTF_SELF,
    )


def fdb_delete(ipr: IPRoute, index: int, mac: str, dst: IPv4Address) -> None:
    """Delete the entry MAC -> DST of device INDEX; missing (or pointing elsewhere) is fine."""
    try:
        ipr.fdb("del", ifindex=index, lladdr=mac, dst=str(dst))
    except NetlinkError as error:
        if error.code != _ENOENT:
            raise


def fdb_remote(ipr: IPRoute, index: int, mac: str) -> IPv4Address | None:
    """The remote address the static entry MAC of VXLAN device INDEX points at, without a dump
    (`bridge fdb get MAC dev INDEX self`); None when there is no such entry."""
    try:
        entries = ipr.fdb("get", ifindex=index, lladdr=mac, flags=_NTF_SELF)
    except NetlinkError as error:
        if error.code != _ENOENT:
            raise
        return None
    for entry in entries:
        dst = entry.get("dst")
        if dst and ":" not in dst:
            return IPv4Address(dst)
    return None


def fdb_remotes(ipr: IPRoute, index: int) -> set[tuple[str, IPv4Address]]:
    """(MAC, remote address) of each static remote entry of the VXLAN device INDEX.

    The bridge's own entries for the port (no remote address) are left out.
    """
    remotes: set[tuple[str, IPv4Address]] = set()
    for entry in ipr.fdb("dump", ifindex=index):
        dst, mac = entry.get("dst"), entry.get("lladdr")
        if entry.get("ifindex") == index and dst and mac and ":" not in dst:
            remotes.add((mac.lower(), IPv4Address(dst)))
    return remotes


def neigh_replace(ipr: IPRoute, index: int, address: IPv4Address, mac: str) -> None:
    """`ip neigh replace ADDRESS lladdr MAC dev INDEX nud permanent`."""
    ipr.neigh("replace", dst=str(address), lladdr=mac, ifindex=index, state=_NUD_PERMANENT)


def neigh_delete(ipr: IPRoute, index: int, address: IPv4Address) -> None:
    """Delete the neighbour ADDRESS of device INDEX; missing is fine."""
    try:
        ipr.neigh("del", dst=str(address), ifindex=index)
    except NetlinkError as error:
        if error.code != _ENOENT:
            raise


def neighbour_mac(ipr: IPRoute, index: int, address: IPv4Address) -> str | None:
    """The MAC of the permanent neighbour ADDRESS of device INDEX, without a dump."""
    try:
        entries = ipr.neigh("get", dst=str(address), ifindex=index)
    except NetlinkError as error:
        if error.code != _ENOENT:
            raise
        return None
    for entry in entries:
        mac = entry.get("lladdr")
        if entry["state"] & _NUD_PERMANENT and mac:
            return mac.lower()
    return None


def permanent_neighbours(ipr: IPRoute, index: int) -> dict[IPv4Address, str]:
    """ADDRESS -> MAC of each permanent IPv4 neighbour entry of device INDEX."""
    found: dict[IPv4Address, str] = {}
    for entry in ipr.neigh("dump", ifindex=index, family=socket.AF_INET):
        dst, mac = entry.get("dst"), entry.get("lladdr")
        if entry.get("ifindex") == index and entry["state"] & _NUD_PERMANENT and dst and mac:
            found[IPv4Address(dst)] = mac.lower()
    return found
