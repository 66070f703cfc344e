"""The network drivers against the real kernel: namespaces, bridges, veths, macvlan (root only).

Values are built straight from drivers/model.py (no DriverCore). Traffic stays on links the
tests make; every address comes from a random subnet the host does not route.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING

import pytest
from pyroute2 import IPRoute

from drivers import links
from drivers.bridge import BridgeDriver, bridge_name
from drivers.errors import Conflict, Invalid, NotFound, Unsupported
from drivers.host import HostDriver
from drivers.ipvlan import IpvlanDriver
from drivers.macvlan import MacvlanDriver
from drivers.model import Driver, Endpoint, IPAMConfig, Network, Sandbox
from drivers.namespaces import is_network_namespace
from drivers.null import NullDriver
from drivers.registry import default_drivers

if TYPE_CHECKING:
    from tests.netns.conftest import Lab

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and links")


# --- helpers --------------------------------------------------------------------------------


def in_netns(path: str, *argv: str) -> subprocess.CompletedProcess:
    if path.startswith("/run/netns/"):
        command = ["ip", "netns", "exec", os.path.basename(path), *argv]
    else:
        command = ["nsenter", f"--net={path}", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def pings(path: str, address: object, attempts: int = 3) -> bool:
    """ping -c1 -W1 from inside the namespace; a few tries for the first ARP/ND exchange."""
    for _ in range(attempts):
        if in_netns(path, "ping", "-c1", "-W1", str(address)).returncode == 0:
            return True
    return False


def links_in(path: str) -> dict[str, dict]:
    """name -> `ip -j addr` entry of every link in the namespace."""
    done = in_netns(path, "ip", "-j", "addr", "show")
    assert done.returncode == 0, done.stderr
    return {entry["ifname"]: entry for entry in json.loads(done.stdout)}


def default_routes(path: str, v6: bool = False) -> list[str]:
    done = in_netns(path, "ip", "-6" if v6 else "-4", "route", "show", "default")
    assert done.returncode == 0, done.stderr
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def host_link(name: str) -> dict | None:
    with IPRoute() as ipr:
        index = links.index_of(ipr, name)
        if index is None:
            return None
        (link,) = ipr.link("get", index=index)
        return {
            "kind": link.get(("linkinfo", "kind")),
            "master": link.get("master"),
            "addresses": [
                f"{a.get('address')}/{a['prefixlen']}" for a in ipr.addr("dump", index=index)
            ],
            "up": bool(link["flags"] & 1),
        }


def network(
    lab: Lab,
    driver: Driver = Driver.BRIDGE,
    subnet: IPv4Network | None = None,
    v6: IPv6Network | None = None,
    internal: bool = False,
    options: tuple[tuple[str, str], ...] = (),
) -> Network:
    subnet = subnet or lab.ipv4_subnet()
    ipam = [IPAMConfig(subnet=subnet, gateway=subnet[1])]
    if v6 is not None:
        ipam.append(IPAMConfig(subnet=v6, gateway=v6[1]))
    return Network(
        id=lab.unique() + "0" * 40,
        name=lab.unique("net-"),
        driver=driver,
        internal=internal,
        ipv6=v6 is not None,
        ipam=tuple(ipam),
        options=options,
    )


def sandbox(lab: Lab, path: str | None = None) -> Sandbox:
    name = lab.unique("c-")
    return Sandbox(id=lab.unique() + "f" * 40, name=name, netns=path or lab.netns())


def endpoint(lab: Lab, net: Network, box: Sandbox, host: int, v6: bool = False) -> Endpoint:
    v4_subnet = net.ipam[0].subnet
    v6_subnet = net.ipam[1].subnet if v6 else None
    return Endpoint(
        id=lab.unique() + "e" * 40,
        network_id=net.id,
        sandbox_id=box.id,
        name=box.name,
        ipv4=v4_subnet[host],  # type: ignore[arg-type]
        ipv6=v6_subnet[host] if v6_subnet is not None else None,  # type: ignore[arg-type]
    )


# --- bridge -----------------------------------------------------------------------------------


def test_bridge_sandboxes_ping_each_other_over_the_bridge(lab: Lab) -> None:
    driver = BridgeDriver()
    net = network(lab)
    driver.create_network(net)
    bridge = host_link(bridge_name(net))
    assert bridge is not None and bridge["kind"] == "bridge" and bridge["up"]
    assert f"{net.ipam[0].gateway}/24" in bridge["addresses"]

    a, b = sandbox(lab), sandbox(lab)
    ep_a = driver.join(net, endpoint(lab, net, a, 2), a)
    ep_b = driver.join(net, endpoint(lab, net, b, 3), b)

    inside = links_in(a.netns)
    assert "eth0" in inside
    assert inside["eth0"]["address"] == ep_a.mac  # join reports the MAC the kernel chose
    assert f"{ep_a.ipv4}" in [i["local"] for i in inside["eth0"]["addr_info"]]
    assert ep_a.mac and ep_b.mac and ep_a.mac != ep_b.mac
    assert pings(a.netns, ep_b.ipv4)
    assert pings(b.netns, ep_a.ipv4)
    assert pings(a.netns, net.ipam[0].gateway)  # the bridge answers for the gateway
    # The host end is enslaved to the bridge; the default route goes via the gateway.
    veth = host_link(links.derived_name("vnd", ep_a.id, 10))
    assert veth is not None and veth["up"] and veth["master"] is not None
    assert default_routes(a.netns) == [f"default via {net.ipam[0].gateway} dev eth0 proto static"]


def test_bridge_ipv6_addresses_ping_and_route_via_v6_gateway(lab: Lab) -> None:
    driver = BridgeDriver()
    net = network(lab, v6=lab.ipv6_subnet())
    driver.create_network(net)
    a, b = sandbox(lab), sandbox(lab)
    ep_a = driver.join(net, endpoint(lab, net, a, 2, v6=True), a)
    ep_b = driver.join(net, endpoint(lab, net, b, 3, v6=True), b)
    assert pings(a.netns, ep_b.ipv6)
    assert pings(b.netns, ep_a.ipv6)
    (route,) = default_routes(a.netns, v6=True)
    assert route.startswith(f"default via {net.ipam[1].gateway} dev eth0")


def test_bridge_second_network_becomes_eth1(lab: Lab) -> None:
    driver = BridgeDriver()
    first, second = network(lab), network(lab, internal=True)
    driver.create_network(first)
    driver.create_network(second)
    box = sandbox(lab)
    ep1 = driver.join(first, endpoint(lab, first, box, 2), box)
    ep2 = driver.join(second, endpoint(lab, second, box, 2), box)
    inside = links_in(box.netns)
    assert inside["eth0"]["address"] == ep1.mac
    assert inside["eth1"]["address"] == ep2.mac
    assert str(ep2.ipv4) in [i["local"] for i in inside["eth1"]["addr_info"]]


def test_bridge_second_routed_network_keeps_the_first_default_route(lab: Lab) -> None:
    driver = BridgeDriver()
    first, second = network(lab), network(lab)
    driver.create_network(first)
    driver.create_network(second)
    box, peer = sandbox(lab), sandbox(lab)
    driver.join(first, endpoint(lab, first, box, 2), box)
    driver.join(second, endpoint(lab, second, box, 2), box)
    ep_peer = driver.join(second, endpoint(lab, second, peer, 3), peer)
    assert default_routes(box.netns) == [
        f"default via {first.ipam[0].gateway} dev eth0 proto static"
    ]
    assert pings(box.netns, ep_peer.ipv4)


def test_r12_internal_network_has_no_default_route_and_no_gateway(lab: Lab) -> None:
    driver = BridgeDriver()
    net = network(lab, internal=True)
    driver.create_network(net)
    a, b = sandbox(lab), sandbox(lab)
    driver.join(net, endpoint(lab, net, a, 2), a)
    ep_b = driver.join(net, endpoint(lab, net, b, 3), b)
    assert default_routes(a.netns) == []
    assert default_routes(a.netns, v6=True) == []
    bridge = host_link(bridge_name(net))
    assert bridge is not None
    assert not [x for x in bridge["addresses"] if not x.startswith("fe80:")]  # nothing routes out
    assert pings(a.netns, ep_b.ipv4)  # but the sandboxes still reach each other
    assert not pings(a.netns, net.ipam[0].gateway, attempts=1)


def test_leave_removes_the_interface_and_the_host_end(lab: Lab) -> None:
    driver = BridgeDriver()
    net = network(lab)
    driver.create_network(net)
    box = sandbox(lab)
    ep = driver.join(net, endpoint(lab, net, box, 2), box)
    host_end = links.derived_name("vnd", ep.id, 10)
    assert "eth0" in links_in(box.netns) and host_link(host_end) is not None
    driver.leave(net, ep, box)
    assert set(links_in(box.netns)) == {"lo"}
    assert host_link(host_end) is None
    driver.leave(net, ep, box)  # again: nothing left, not an error


def test_leave_after_the_sandbox_namespace_is_gone(lab: Lab) -> None:
    driver = BridgeDriver()
    net = network(lab)
    driver.create_network(net)
    box = sandbox(lab)
    ep = driver.join(net, endpoint(lab, net, box, 2), box)
    lab.namespaces.remove(os.path.basename(box.netns))
    driver.leave(net, ep, box)
    assert host_link(links.derived_name("vnd", ep.id, 10)) is None


def test_join_then_rejoin_after_leave_reuses_eth0(lab: Lab) -> None:
    driver = BridgeDriver()
    net = network(lab)
    driver.create_network(net)
    box = sandbox(lab)
    ep = endpoint(lab, net, box, 2)
    driver.leave(net, driver.join(net, ep, box), box)
    driver.join(net, ep, box)
    assert "eth0" in links_in(box.netns)


def test_join_with_address_outside_the_subnet_is_invalid_and_leaves_nothing(lab: Lab) -> None:
    driver = BridgeDriver()
    net = network(lab)
    driver.create_network(net)
    box = sandbox(lab)
    outside = lab.ipv4_subnet()
    ep = Endpoint(
        id=lab.unique() + "e" * 40,
        network_id=net.id,
        sandbox_id=box.id,
        name=box.name,
        ipv4=outside[2],
    )
    with pytest.raises(Invalid, match=str(outside[2])):
        driver.join(net, ep, box)
    assert set(links_in(box.netns)) == {"lo"}
    assert host_link(links.derived_name("vnd", ep.id, 10)) is None


def test_join_fails_cleanly_when_the_bridge_is_missing(lab: Lab) -> None:
    driver = BridgeDriver()
    net = network(lab)
    box = sandbox(lab)
    with pytest.raises(NotFound, match=bridge_name(net)):
        driver.join(net, endpoint(lab, net, box, 2), box)


def test_remove_network_removes_the_bridge(lab: Lab) -> None:
    driver = BridgeDriver()
    net = network(lab)
    driver.create_network(net)
    driver.create_network(net)  # again: finds its own bridge
    assert host_link(bridge_name(net)) is not None
    driver.remove_network(net)
    assert host_link(bridge_name(net)) is None
    driver.remove_network(net)  # missing: not an error


def test_bridge_name_option_names_the_bridge(lab: Lab) -> None:
    driver = BridgeDriver()
    name = lab.unique("br-")
    net = network(lab, options=(("com.docker.network.bridge.name", name),))
    assert bridge_name(net) == name
    driver.create_network(net)
    assert host_link(name) is not None and host_link(name)["kind"] == "bridge"  # type: ignore[index]
    driver.remove_network(net)
    assert host_link(name) is None


def test_bridge_name_option_on_a_non_bridge_is_a_conflict(lab: Lab) -> None:
    name = lab.unique()
    with IPRoute() as ipr:
        links.create_veth(ipr, name, lab.unique())
    net = network(lab, options=(("com.docker.network.bridge.name", name),))
    with pytest.raises(Conflict, match=name):
        BridgeDriver().create_network(net)
    BridgeDriver().remove_network(net)
    assert host_link(name) is not None  # not ours: left alone


def test_default_network_bridge_is_netdns0_and_others_br_id() -> None:
    default = Network(id="a" * 64, name="bridge", driver=Driver.BRIDGE)
    other = Network(id="0123456789abcdef" * 4, name="mynet", driver=Driver.BRIDGE)
    assert bridge_name(default) == "netdns0"
    assert bridge_name(other) == "br-0123456789ab"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ((("com.docker.network.bridge.nmae", "x"),), "com.docker.network.bridge.nmae"),
        ((("com.docker.network.bridge.name", "much-too-long-name"),), "bridge name"),
        ((("com.docker.network.driver.mtu", "big"),), "com.docker.network.driver.mtu"),
    ],
)
def test_bridge_validate_names_the_bad_option(
    lab: Lab, options: tuple[tuple[str, str], ...], named: str
) -> None:
    with pytest.raises(Invalid, match=named):
        BridgeDriver().validate(network(lab, options=options))


def test_bridge_mtu_option_sets_the_mtu(lab: Lab) -> None:
    driver = BridgeDriver()
    net = network(lab, options=(("com.docker.network.driver.mtu", "1280"),))
    driver.create_network(net)
    box = sandbox(lab)
    driver.join(net, endpoint(lab, net, box, 2), box)
    assert links_in(box.netns)["eth0"]["mtu"] == 1280


def test_join_into_an_adopted_namespace_by_proc_path(lab: Lab) -> None:
    process = subprocess.Popen(["unshare", "-n", "sleep", "60"])
    lab.processes.append(process)
    path = f"/proc/{process.pid}/ns/net"
    deadline = time.monotonic() + 5
    while os.readlink(path) == os.readlink("/proc/self/ns/net") and time.monotonic() < deadline:
        time.sleep(0.02)  # until unshare has run
    assert lab.namespaces.adopt(path) == path
    driver = BridgeDriver()
    net = network(lab)
    driver.create_network(net)
    adopted = Sandbox(id=lab.unique(), name="adopted", netns=path)
    named = sandbox(lab)
    ep_adopted = driver.join(net, endpoint(lab, net, adopted, 2), adopted)
    ep_named = driver.join(net, endpoint(lab, net, named, 3), named)
    assert pings(named.netns, ep_adopted.ipv4)
    assert pings(path, ep_named.ipv4)


# --- namespaces -------------------------------------------------------------------------------


def test_namespaces_create_is_like_ip_netns_add_with_loopback_up(lab: Lab) -> None:
    path = lab.netns()
    name = os.path.basename(path)
    assert path == f"/run/netns/{name}"
    assert lab.namespaces.exists(path)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name in listed.split()
    assert "UP" in links_in(path)["lo"]["flags"]
    assert pings(path, "127.0.0.1")
    with pytest.raises(Conflict, match=name):
        lab.namespaces.create(name)


def test_namespaces_remove_and_remove_again(lab: Lab) -> None:
    path = lab.netns()
    lab.namespaces.remove(os.path.basename(path))
    assert not os.path.exists(path)
    assert not lab.namespaces.exists(path)
    lab.namespaces.remove(os.path.basename(path))  # missing is fine


def test_namespaces_rejects_bad_names(lab: Lab) -> None:
    for bad in ("", "../etc", "a/b", "-x"):
        with pytest.raises(Invalid):
            lab.namespaces.create(bad)


def test_namespaces_adopt_ip_netns_add_by_path_and_reject_non_namespaces(lab: Lab) -> None:
    name = lab.unique()
    subprocess.run(["ip", "netns", "add", name], check=True)
    lab.netns_names.append(name)
    assert lab.namespaces.adopt(f"/run/netns/{name}") == f"/run/netns/{name}"
    assert lab.namespaces.exists(f"/run/netns/{name}")
    assert not is_network_namespace("/etc/hostname")
    assert not is_network_namespace("/proc/self/ns/uts")  # a namespace, not a network one
    with pytest.raises(NotFound, match="/nonexistent"):
        lab.namespaces.adopt("/nonexistent/ns")
    with pytest.raises(Invalid):
        lab.namespaces.adopt("relative/path")


# --- macvlan ----------------------------------------------------------------------------------


def parent_veth(lab: Lab) -> str:
    """A veth pair the test owns, both ends up: a parent with carrier for macvlan/ipvlan."""
    name, peer = lab.unique(), lab.unique()
    with IPRoute() as ipr:
        links.create_veth(ipr, name, peer)
        links.set_up(ipr, links.require_index(ipr, name))
        links.set_up(ipr, links.require_index(ipr, peer))
    return name


def test_macvlan_bridge_mode_sandboxes_on_one_parent_ping_each_other(lab: Lab) -> None:
    driver = MacvlanDriver()
    driver.check_supported()
    parent = parent_veth(lab)
    net = network(lab, Driver.MACVLAN, options=(("parent", parent), ("macvlan_mode", "bridge")))
    driver.create_network(net)
    a, b = sandbox(lab), sandbox(lab)
    ep_a = driver.join(net, endpoint(lab, net, a, 2), a)
    ep_b = driver.join(net, endpoint(lab, net, b, 3), b)
    inside = links_in(a.netns)
    assert inside["eth0"]["address"] == ep_a.mac
    assert pings(a.netns, ep_b.ipv4)
    assert pings(b.netns, ep_a.ipv4)
    assert default_routes(a.netns) == [f"default via {net.ipam[0].gateway} dev eth0 proto static"]
    driver.leave(net, ep_a, a)
    assert set(links_in(a.netns)) == {"lo"}
    driver.remove_network(net)
    assert host_link(parent) is not None  # the parent is the user's, never removed


def test_r12_macvlan_internal_network_has_no_default_route(lab: Lab) -> None:
    driver = MacvlanDriver()
    net = network(lab, Driver.MACVLAN, internal=True, options=(("parent", parent_veth(lab)),))
    driver.create_network(net)
    box = sandbox(lab)
    driver.join(net, endpoint(lab, net, box, 2), box)
    assert default_routes(box.netns) == []


def test_macvlan_requires_parent_option(lab: Lab) -> None:
    with pytest.raises(Invalid, match="parent"):
        MacvlanDriver().validate(network(lab, Driver.MACVLAN))


def test_macvlan_parent_must_exist(lab: Lab) -> None:
    missing = lab.unique()
    net = network(lab, Driver.MACVLAN, options=(("parent", missing),))
    with pytest.raises(Invalid, match=missing):
        MacvlanDriver().validate(net)


@pytest.mark.parametrize(
    ("key", "value"), [("macvlan_mode", "bridgey"), ("ipvlan_mode", "l2"), ("mode", "bridge")]
)
def test_macvlan_rejects_bad_mode_and_unknown_keys(lab: Lab, key: str, value: str) -> None:
    net = network(lab, Driver.MACVLAN, options=(("parent", parent_veth(lab)), (key, value)))
    with pytest.raises(Invalid, match=key):
        MacvlanDriver().validate(net)


def test_macvlan_dotted_parent_makes_the_8021q_subinterface(lab: Lab) -> None:
    if not links.link_kind_supported("vlan"):
        with pytest.raises(Unsupported) as raised:
            MacvlanDriver().validate(
                network(lab, Driver.MACVLAN, options=(("parent", f"{parent_veth(lab)}.50"),))
            )
        pytest.skip(str(raised.value))
    driver = MacvlanDriver()
    parent = parent_veth(lab)
    net = network(lab, Driver.MACVLAN, options=(("parent", f"{parent}.50"),))
    driver.create_network(net)
    sub = host_link(f"{parent}.50")
    assert sub is not None and sub["kind"] == "vlan"
    driver.remove_network(net)
    assert host_link(f"{parent}.50") is None


def test_macvlan_dotted_parent_is_unsupported_naming_vlan_without_8021q(lab: Lab) -> None:
    if links.link_kind_supported("vlan"):
        pytest.skip("this kernel has 802.1q vlan links")
    net = network(lab, Driver.MACVLAN, options=(("parent", f"{parent_veth(lab)}.50"),))
    with pytest.raises(Unsupported, match="vlan"):
        MacvlanDriver().create_network(net)


# --- ipvlan -----------------------------------------------------------------------------------


def test_ipvlan_l2_sandboxes_on_one_parent_ping_each_other(lab: Lab) -> None:
    driver = IpvlanDriver()
    try:
        driver.check_supported()
    except Unsupported as error:
        pytest.skip(str(error))
    net = network(lab, Driver.IPVLAN, options=(("parent", parent_veth(lab)), ("ipvlan_mode", "l2")))
    driver.create_network(net)
    a, b = sandbox(lab), sandbox(lab)
    ep_a = driver.join(net, endpoint(lab, net, a, 2), a)
    ep_b = driver.join(net, endpoint(lab, net, b, 3), b)
    assert pings(a.netns, ep_b.ipv4)
    assert pings(b.netns, ep_a.ipv4)


def test_ipvlan_unsupported_names_ipvlan_when_the_kernel_lacks_it(lab: Lab) -> None:
    if links.link_kind_supported("ipvlan"):
        pytest.skip("this kernel has ipvlan")
    with pytest.raises(Unsupported, match="ipvlan"):
        IpvlanDriver().check_supported()
    net = network(lab, Driver.IPVLAN, options=(("parent", parent_veth(lab)),))
    box = sandbox(lab)
    with pytest.raises(Unsupported, match="ipvlan"):
        IpvlanDriver().join(net, endpoint(lab, net, box, 2), box)
    assert set(links_in(box.netns)) == {"lo"}


def test_ipvlan_rejects_bad_mode(lab: Lab) -> None:
    net = network(lab, Driver.IPVLAN, options=(("parent", parent_veth(lab)), ("ipvlan_mode", "l9")))
    with pytest.raises(Invalid, match="ipvlan_mode"):
        IpvlanDriver().validate(net)


# --- host, none, registry, kernel probe -------------------------------------------------------


def test_host_and_null_join_add_nothing_and_take_no_options(lab: Lab) -> None:
    box = sandbox(lab)
    for driver, kind in ((HostDriver(), Driver.HOST), (NullDriver(), Driver.NULL)):
        net = Network(id=lab.unique(), name=str(kind), driver=kind)
        driver.create_network(net)
        ep = Endpoint(id=lab.unique(), network_id=net.id, sandbox_id=box.id, name=box.name)
        assert driver.join(net, ep, box) == ep
        assert set(links_in(box.netns)) == {"lo"}
        driver.leave(net, ep, box)
        with pytest.raises(Invalid, match="parent"):
            driver.validate(Network(id="x", name="x", driver=kind, options=(("parent", "eth0"),)))


def test_null_join_brings_loopback_up_in_an_adopted_namespace(lab: Lab) -> None:
    process = subprocess.Popen(["unshare", "-n", "sleep", "60"])
    lab.processes.append(process)
    path = f"/proc/{process.pid}/ns/net"
    deadline = time.monotonic() + 5
    while os.readlink(path) == os.readlink("/proc/self/ns/net") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "UP" not in links_in(path)["lo"]["flags"]
    box = Sandbox(id=lab.unique(), name="adopted", netns=path)
    net = Network(id="none", name="none", driver=Driver.NULL)
    NullDriver().join(
        net, Endpoint(id=lab.unique(), network_id="none", sandbox_id=box.id, name="a"), box
    )
    assert "UP" in links_in(path)["lo"]["flags"]


def test_registry_has_a_driver_for_each_kind() -> None:
    drivers = default_drivers()
    assert set(drivers) == set(Driver)
    assert all(driver.kind == kind for kind, driver in drivers.items())


def test_kernel_probe_finds_the_link_kinds_this_host_has(lab: Lab) -> None:
    for kind in ("veth", "bridge", "macvlan"):
        assert links.link_kind_supported(kind), kind
    BridgeDriver().check_supported()
    MacvlanDriver().check_supported()
    assert not links.link_kind_supported("no-such-kind")


def test_drivers_run_off_the_event_loop_with_asyncio_to_thread(lab: Lab) -> None:
    # The daemon calls the blocking drivers through asyncio.to_thread while its loop runs.
    driver = BridgeDriver()
    net = network(lab)
    a, b = sandbox(lab), sandbox(lab)

    async def plumb() -> tuple[Endpoint, Endpoint]:
        await asyncio.to_thread(driver.create_network, net)
        return await asyncio.gather(
            asyncio.to_thread(driver.join, net, endpoint(lab, net, a, 2), a),
            asyncio.to_thread(driver.join, net, endpoint(lab, net, b, 3), b),
        )

    ep_a, ep_b = asyncio.run(plumb())
    assert pings(a.netns, ep_b.ipv4)
    assert pings(b.netns, ep_a.ipv4)
