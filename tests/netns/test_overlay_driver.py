"""The overlay driver against the real kernel: two "hosts" joined by VXLAN (root only).

Each host is a named namespace; a veth pair between them is the underlay, addressed from a
random 198.18.X.0/24. Each host's driver runs with the calling thread switched into that host's
namespace (resolver.netns.in_netns), as a daemon started there would. One container namespace
per host joins the same overlay network, and each host gets the other's endpoint as a peer, as
the cluster layer would program it. All traffic stays on these links.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, TypeVar

import pytest

from drivers.errors import Conflict, Invalid, NotFound, Unsupported
from drivers.model import Driver, Endpoint, IPAMConfig, Network, Sandbox, Scope
from drivers.overlay import (
    OPT_MTU,
    OPT_VNI,
    VXLAN_PORT,
    OverlayDriver,
    bridge_name,
    vxlan_name,
)
from resolver.netns import in_netns

if TYPE_CHECKING:
    from tests.netns.conftest import Lab

T = TypeVar("T")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and links")


# --- the two-host lab -----------------------------------------------------------------------


@dataclass
class Host:
    netns: str  # /run/netns/NAME: the host's namespace
    underlay: IPv4Address  # its VTEP address
    driver: OverlayDriver
    container: Sandbox
    endpoint: Endpoint  # as join returned it (MAC filled in)

    def run(self, fn: Callable[[], T]) -> T:
        return in_netns(self.netns, fn)

    @property
    def name(self) -> str:
        return os.path.basename(self.netns)


@dataclass
class Cluster:
    network: Network
    a: Host
    b: Host

    def peer_b_on_a(self) -> None:
        self.a.run(lambda: self.a.driver.add_peer(self.network, *peer_of(self.b)))

    def peer_a_on_b(self) -> None:
        self.b.run(lambda: self.b.driver.add_peer(self.network, *peer_of(self.a)))


def peer_of(host: Host) -> tuple[IPv4Address, str, IPv4Address]:
    assert host.endpoint.ipv4 is not None
    return host.endpoint.ipv4, host.endpoint.mac, host.underlay


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30)


def ping(container: Sandbox, address: object, attempts: int = 1) -> bool:
    """ping -c1 -W1 from inside the container; ATTEMPTS tries for the first ARP exchange."""
    name = os.path.basename(container.netns)
    for _ in range(attempts):
        if run("ip", "netns", "exec", name, "ping", "-c1", "-W1", str(address)).returncode == 0:
            return True
    return False


def json_of(*argv: str) -> list[dict]:
    done = run(*argv)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def overlay_network(lab: Lab, subnet: IPv4Network, vni: int, mtu: str = "") -> Network:
    options = [(OPT_VNI, str(vni))]
    if mtu:
        options.append((OPT_MTU, mtu))
    return Network(
        id=lab.unique() + "0" * 40,
        name=lab.unique("ov-"),
        driver=Driver.OVERLAY,
        scope=Scope.GLOBAL,
        ipam=(IPAMConfig(subnet=subnet, gateway=subnet[1]),),
        options=tuple(options),
    )


def make_host(lab: Lab, network: Network, underlay: IPv4Address, netns: str, slot: int) -> Host:
    """Create NETWORK on the host at NETNS and join a fresh container to it at subnet[SLOT]."""
    driver = OverlayDriver(advertise=underlay)
    in_netns(netns, lambda: driver.create_network(network))
    container = Sandbox(id=lab.unique() + "f" * 40, name=lab.unique("c-"), netns=lab.netns())
    endpoint = Endpoint(
        id=lab.unique() + "e" * 40,
        network_id=network.id,
        sandbox_id=container.id,
        name=container.name,
        ipv4=network.ipam[0].subnet[slot],
    )
    joined = in_netns(netns, lambda: driver.join(network, endpoint, container))
    return Host(netns, underlay, driver, container, joined)


@pytest.fixture
def cluster(lab: Lab) -> Iterator[Cluster]:
    """Hosts a and b on one underlay link, the overlay network created and joined on both,
    each with the other's endpoint as a peer. The lab fixture deletes every namespace after."""
    host_a, host_b = lab.netns(), lab.netns()
    end_a, end_b = lab.unique(), lab.unique()
    underlay = IPv4Network(f"198.18.{random.randint(0, 255)}.0/24")
    ip_a, ip_b = underlay[1], underlay[2]
    a_name, b_name = os.path.basename(host_a), os.path.basename(host_b)
    for argv in (
        ("ip", "-n", a_name, "link", "add", end_a, "type", "veth", "peer", end_b, "netns", b_name),
        ("ip", "-n", a_name, "addr", "add", f"{ip_a}/24", "dev", end_a),
        ("ip", "-n", b_name, "addr", "add", f"{ip_b}/24", "dev", end_b),
        ("ip", "-n", a_name, "link", "set", end_a, "up"),
        ("ip", "-n", b_name, "link", "set", end_b, "up"),
    ):
        done = run(*argv)
        assert done.returncode == 0, f"{argv}: {done.stderr}"
    network = overlay_network(lab, lab.ipv4_subnet(), vni=random.randint(1, 2**24 - 1))
    made = Cluster(
        network=network,
        a=make_host(lab, network, ip_a, host_a, slot=10),
        b=make_host(lab, network, ip_b, host_b, slot=20),
    )
    made.peer_b_on_a()
    made.peer_a_on_b()
    yield made


# --- traffic --------------------------------------------------------------------------------


@needs_root
def test_containers_on_two_hosts_reach_each_other_over_vxlan(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    assert ping(a.container, b.endpoint.ipv4, attempts=3)
    assert ping(b.container, a.endpoint.ipv4, attempts=3)


@needs_root
def test_network_devices_are_vxlan_without_learning_on_an_addressless_bridge(
    cluster: Cluster,
) -> None:
    net, a = cluster.network, cluster.a
    (vxlan,) = json_of("ip", "-n", a.name, "-j", "-d", "link", "show", vxlan_name(net))
    data = vxlan["linkinfo"]["info_data"]
    assert vxlan["linkinfo"]["info_kind"] == "vxlan"
    assert data["id"] == int(net.option(OPT_VNI))
    assert data["local"] == str(a.underlay)
    assert data["port"] == VXLAN_PORT
    assert data["learning"] is False
    assert data["proxy"] is True
    assert vxlan["master"] == bridge_name(net)
    assert vxlan["mtu"] == 1450
    assert "UP" in vxlan["flags"]
    (bridge,) = json_of("ip", "-n", a.name, "-j", "addr", "show", bridge_name(net))
    assert bridge["mtu"] == 1450
    assert "UP" in bridge["flags"]
    assert [i for i in bridge["addr_info"] if i["family"] == "inet"] == []


@needs_root
def test_sandbox_gets_its_address_and_mtu_but_no_default_route(cluster: Cluster) -> None:
    name = os.path.basename(cluster.a.container.netns)
    (eth0,) = json_of("ip", "-n", name, "-j", "addr", "show", "eth0")
    assert eth0["mtu"] == 1450
    assert eth0["address"] == cluster.a.endpoint.mac
    assert [
        f"{i['local']}/{i['prefixlen']}" for i in eth0["addr_info"] if i["family"] == "inet"
    ] == [f"{cluster.a.endpoint.ipv4}/24"]
    assert json_of("ip", "-n", name, "-j", "-4", "route", "show", "default") == []


@needs_root
def test_add_peer_programs_static_fdb_and_neighbour_entries(cluster: Cluster) -> None:
    net, a, b = cluster.network, cluster.a, cluster.b
    fdb = run("bridge", "-n", a.name, "fdb", "show", "dev", vxlan_name(net)).stdout
    assert f"{b.endpoint.mac} dst {b.underlay} self permanent" in fdb
    neigh = run("ip", "-n", a.name, "neigh", "show", "dev", vxlan_name(net)).stdout
    assert f"{b.endpoint.ipv4} lladdr {b.endpoint.mac} PERMANENT" in neigh
    assert a.run(lambda: a.driver.peers(net)) == {peer_of(b)}


@needs_root
def test_remove_peer_cuts_the_path_and_add_peer_restores_it(cluster: Cluster) -> None:
    net, a, b = cluster.network, cluster.a, cluster.b
    assert ping(a.container, b.endpoint.ipv4, attempts=3)
    a.run(lambda: a.driver.remove_peer(net, *peer_of(b)))
    assert a.run(lambda: a.driver.peers(net)) == set()
    assert not ping(a.container, b.endpoint.ipv4)
    cluster.peer_b_on_a()
    assert ping(a.container, b.endpoint.ipv4, attempts=3)


# --- idempotency and replacement ----------------------------------------------------------


@needs_root
def test_create_network_and_add_peer_twice_change_nothing(cluster: Cluster) -> None:
    net, a, b = cluster.network, cluster.a, cluster.b
    a.run(lambda: a.driver.create_network(net))  # a restart finds its devices and peers
    cluster.peer_b_on_a()
    assert a.run(lambda: a.driver.peers(net)) == {peer_of(b)}
    fdb = run("bridge", "-n", a.name, "fdb", "show", "dev", vxlan_name(net)).stdout
    assert fdb.count(f"{b.endpoint.mac} dst") == 1
    assert ping(a.container, b.endpoint.ipv4, attempts=3)


@needs_root
def test_removing_what_is_missing_is_fine(cluster: Cluster, lab: Lab) -> None:
    net, a, b = cluster.network, cluster.a, cluster.b
    stranger = (net.ipam[0].subnet[99], "02:00:00:00:00:99", IPv4Address("198.18.0.99"))
    a.run(lambda: a.driver.remove_peer(net, *stranger))
    a.run(lambda: a.driver.remove_peer(net, *peer_of(b)))
    a.run(lambda: a.driver.remove_peer(net, *peer_of(b)))
    assert a.run(lambda: a.driver.peers(net)) == set()
    a.run(lambda: a.driver.leave(net, a.endpoint, a.container))
    a.run(lambda: a.driver.leave(net, a.endpoint, a.container))
    a.run(lambda: a.driver.remove_network(net))
    a.run(lambda: a.driver.remove_network(net))
    gone = run("ip", "-n", a.name, "link", "show", vxlan_name(net))
    assert gone.returncode != 0
    assert run("ip", "-n", a.name, "link", "show", bridge_name(net)).returncode != 0
    # Without its network, peers are none and remove_peer still is fine.
    assert a.run(lambda: a.driver.peers(net)) == set()
    a.run(lambda: a.driver.remove_peer(net, *peer_of(b)))


@needs_root
def test_add_peer_replaces_a_changed_mac_and_vtep(cluster: Cluster) -> None:
    net, a, b = cluster.network, cluster.a, cluster.b
    address, old_mac, vtep = peer_of(b)
    a.run(lambda: a.driver.add_peer(net, address, "02:11:22:33:44:55", vtep))
    assert a.run(lambda: a.driver.peers(net)) == {(address, "02:11:22:33:44:55", vtep)}
    fdb = run("bridge", "-n", a.name, "fdb", "show", "dev", vxlan_name(net)).stdout
    assert old_mac not in fdb  # the old MAC's entry went with it
    other = IPv4Address(int(vtep) + 50)
    a.run(lambda: a.driver.add_peer(net, address, "02:11:22:33:44:55", other))
    assert a.run(lambda: a.driver.peers(net)) == {(address, "02:11:22:33:44:55", other)}
    # A late removal naming the old VTEP leaves the new entries alone.
    a.run(lambda: a.driver.remove_peer(net, address, "02:11:22:33:44:55", vtep))
    assert a.run(lambda: a.driver.peers(net)) == {(address, "02:11:22:33:44:55", other)}
    cluster.peer_b_on_a()
    assert a.run(lambda: a.driver.peers(net)) == {peer_of(b)}
    assert ping(a.container, b.endpoint.ipv4, attempts=3)


@needs_root
def test_moving_one_address_keeps_a_mac_another_address_still_uses(cluster: Cluster) -> None:
    net, a, b = cluster.network, cluster.a, cluster.b
    address, mac, vtep = peer_of(b)
    second = IPv4Address(int(address) + 1)
    a.run(lambda: a.driver.add_peer(net, second, mac, vtep))  # two addresses behind one MAC
    a.run(lambda: a.driver.add_peer(net, second, "02:11:22:33:44:66", vtep))
    assert a.run(lambda: a.driver.peers(net)) == {
        (address, mac, vtep),
        (second, "02:11:22:33:44:66", vtep),
    }
    assert ping(a.container, b.endpoint.ipv4, attempts=3)


@needs_root
def test_restart_with_another_advertise_address_remakes_the_vxlan(cluster: Cluster) -> None:
    net, a = cluster.network, cluster.a
    moved = IPv4Address(int(a.underlay) + 100)
    a.run(lambda: OverlayDriver(advertise=moved).create_network(net))
    (vxlan,) = json_of("ip", "-n", a.name, "-j", "-d", "link", "show", vxlan_name(net))
    assert vxlan["linkinfo"]["info_data"]["local"] == str(moved)
    assert vxlan["master"] == bridge_name(net)


@needs_root
def test_join_and_add_peer_before_create_network_are_not_found(lab: Lab) -> None:
    host = lab.netns()
    net = overlay_network(lab, lab.ipv4_subnet(), vni=4242)
    driver = OverlayDriver(advertise=IPv4Address("198.18.0.1"))
    box = Sandbox(id=lab.unique() + "f" * 40, name=lab.unique("c-"), netns=lab.netns())
    endpoint = Endpoint(
        id=lab.unique() + "e" * 40,
        network_id=net.id,
        sandbox_id=box.id,
        name=box.name,
        ipv4=net.ipam[0].subnet[5],
    )
    with pytest.raises(NotFound, match=bridge_name(net)):
        in_netns(host, lambda: driver.join(net, endpoint, box))
    with pytest.raises(NotFound, match=vxlan_name(net)):
        in_netns(
            host,
            lambda: driver.add_peer(
                net, net.ipam[0].subnet[6], "02:00:00:00:00:06", IPv4Address("198.18.0.2")
            ),
        )


@needs_root
def test_a_vni_held_by_another_network_on_the_host_is_a_conflict(lab: Lab) -> None:
    host = lab.netns()
    driver = OverlayDriver(advertise=IPv4Address("198.18.0.1"))
    first = overlay_network(lab, lab.ipv4_subnet(), vni=777)
    second = overlay_network(lab, lab.ipv4_subnet(), vni=777)
    in_netns(host, lambda: driver.create_network(first))
    with pytest.raises(Conflict, match=f"777.*{vxlan_name(first)}"):
        in_netns(host, lambda: driver.create_network(second))


# --- validation (no root needed) ------------------------------------------------------------


def plain_network(options: tuple[tuple[str, str], ...], ipv6: bool = False) -> Network:
    return Network(
        id="ab" * 32,
        name="ov-test",
        driver=Driver.OVERLAY,
        scope=Scope.GLOBAL,
        ipv6=ipv6,
        ipam=(IPAMConfig(subnet=IPv4Network("10.77.0.0/24")),),
        options=options,
    )


def test_names_come_from_the_network_id() -> None:
    net = plain_network(((OPT_VNI, "7"),))
    assert vxlan_name(net) == "vx-" + "ab" * 5
    assert bridge_name(net) == "ov-" + "ab" * 5


def test_validate_accepts_one_vni_and_an_mtu() -> None:
    OverlayDriver().validate(plain_network(((OPT_VNI, "16777215"), (OPT_MTU, "1400"))))
    OverlayDriver().validate(plain_network(((OPT_VNI, "1"),)))


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ((), OPT_VNI),
        (((OPT_VNI, ""),), OPT_VNI),
        (((OPT_VNI, "abc"),), OPT_VNI),
        (((OPT_VNI, "0"),), OPT_VNI),
        (((OPT_VNI, "16777216"),), OPT_VNI),
        (((OPT_VNI, "256,257"),), OPT_VNI),
        (((OPT_VNI, "-5"),), OPT_VNI),
        (((OPT_VNI, "7"), (OPT_MTU, "10")), OPT_MTU),
        (((OPT_VNI, "7"), (OPT_MTU, "big")), OPT_MTU),
        (((OPT_VNI, "7"), ("com.docker.network.bridge.name", "x")), "bridge.name"),
    ],
)
def test_validate_rejects_missing_or_bad_options(
    options: tuple[tuple[str, str], ...], named: str
) -> None:
    with pytest.raises(Invalid, match=named):
        OverlayDriver(advertise=IPv4Address("198.18.0.1")).validate(plain_network(options))


def test_validate_rejects_ipv6_networks() -> None:
    with pytest.raises(Unsupported, match="IPv4 only"):
        OverlayDriver().validate(plain_network(((OPT_VNI, "7"),), ipv6=True))


def test_create_network_without_advertise_address_is_unsupported() -> None:
    with pytest.raises(Unsupported, match="--store etcd://HOST:PORT --advertise-addr"):
        OverlayDriver(advertise=None).create_network(plain_network(((OPT_VNI, "7"),)))


@pytest.mark.parametrize(
    "mac", ["", "02:00:00:00:00", "zz:00:00:00:00:01", "00:00:00:00:00:00", "01:00:5e:00:00:01"]
)
def test_add_peer_rejects_a_mac_that_is_not_unicast(mac: str) -> None:
    with pytest.raises(Invalid, match="unicast MAC"):
        OverlayDriver(advertise=IPv4Address("198.18.0.1")).add_peer(
            plain_network(((OPT_VNI, "7"),)),
            IPv4Address("10.77.0.5"),
            mac,
            IPv4Address("198.18.0.2"),
        )


def test_add_peer_rejects_an_address_outside_the_network() -> None:
    with pytest.raises(Invalid, match=r"10\.78\.0\.5"):
        OverlayDriver(advertise=IPv4Address("198.18.0.1")).add_peer(
            plain_network(((OPT_VNI, "7"),)),
            IPv4Address("10.78.0.5"),
            "02:00:00:00:00:05",
            IPv4Address("198.18.0.2"),
        )
