"""Names through the real daemon, inside real namespaces: aliases, short ids, name.network,
PTR, IPv6, internal networks, macvlan, adopted namespaces, and bad API input (R2, R3, R6, R8,
R12, R17, R18)."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from bench.labs.daemon import OUTSIDE_NAME, DaemonProcess, running_daemon, suffix
from drivers.links import link_kind_supported

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and links")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with running_daemon(tmp_path_factory.mktemp("names")) as d:
        yield d


def subnet() -> str:
    """A random private /24 for a network the test makes (only on its own links)."""
    return f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250)}.0/24"


def ipv4_of(d: DaemonProcess, container: str, network: str) -> str:
    return d.json("container", "inspect", container)[0]["NetworkSettings"]["Networks"][network][
        "IPAddress"
    ]


def short(d: DaemonProcess, container: str, *args: str) -> list[str]:
    return d.dig(container, "+short", *args).stdout.split()


def test_r2_aliases_short_id_hostname_and_name_dot_network(daemon: DaemonProcess) -> None:
    s = suffix()
    net = f"app-{s}"
    daemon.network(net)
    client, web = f"client-{s}", f"web-{s}"
    daemon.container(client, "--network", net)
    web_id = daemon.container(
        web, "--network", net, "--network-alias", f"www-{s}", "--hostname", f"host-{s}"
    )
    address = ipv4_of(daemon, web, net)
    for name in (web, f"www-{s}", web_id[:12], f"host-{s}", f"{web}.{net}", web.upper()):
        assert daemon.getent(client, name) == address, name
    # R3: a network the client is not on does not qualify the name.
    assert short(daemon, client, f"{web}.no-such-net") == []


def test_r8_ptr_answers_name_dot_network(daemon: DaemonProcess) -> None:
    s = suffix()
    net = f"ptr-{s}"
    daemon.network(net)
    a, b = f"a-{s}", f"b-{s}"
    daemon.container(a, "--network", net)
    daemon.container(b, "--network", net)
    assert short(daemon, a, "-x", ipv4_of(daemon, b, net)) == [f"{b}.{net}."]


def test_r6_ipv6_network_answers_aaaa_and_nodata_on_v4_only(daemon: DaemonProcess) -> None:
    s = suffix()
    v6, v4 = f"six-{s}", f"four-{s}"
    daemon.network(v6, "--ipv6", "--subnet", f"fd00:{secrets.randbelow(0xFFFF):x}::/64")
    daemon.network(v4)
    a, b, c = f"a6-{s}", f"b6-{s}", f"c4-{s}"
    daemon.container(a, "--network", v6)
    daemon.container(b, "--network", v6)
    daemon.container(c, "--network", v4)
    daemon.cli("network", "connect", v4, a)
    inspect = daemon.json("container", "inspect", b)[0]["NetworkSettings"]["Networks"][v6]
    assert short(daemon, a, "AAAA", b) == [inspect["GlobalIPv6Address"]]
    nodata = daemon.dig(a, "AAAA", c)
    assert "status: NOERROR" in nodata.stdout and "ANSWER: 0" in nodata.stdout


def test_r12_internal_network_answers_nxdomain_for_outside_names(daemon: DaemonProcess) -> None:
    s = suffix()
    net = f"int-{s}"
    daemon.network(net, "--internal")
    a, b = f"ia-{s}", f"ib-{s}"
    daemon.container(a, "--network", net)
    daemon.container(b, "--network", net)
    assert daemon.getent(a, b) == ipv4_of(daemon, b, net)
    outside = daemon.dig(a, OUTSIDE_NAME)
    assert "status: NXDOMAIN" in outside.stdout, outside.stdout
    route = subprocess.run(
        ["ip", "netns", "exec", a, "ip", "route", "show", "default"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert route.stdout.strip() == ""


def test_r11_user_network_forwards_outside_names(daemon: DaemonProcess) -> None:
    s = suffix()
    net = f"fwd-{s}"
    daemon.network(net)
    a = f"fa-{s}"
    daemon.container(a, "--network", net)
    assert short(daemon, a, OUTSIDE_NAME) == ["192.0.2.10"]


def test_macvlan_containers_resolve_and_reach_each_other(daemon: DaemonProcess) -> None:
    s = suffix()
    parent, peer = f"ndp{s}", f"ndq{s}"
    subprocess.run(["ip", "link", "add", parent, "type", "veth", "peer", "name", peer], check=True)
    try:
        subprocess.run(["ip", "link", "set", parent, "up"], check=True)
        subprocess.run(["ip", "link", "set", peer, "up"], check=True)
        net = f"mac-{s}"
        daemon.network(net, "--driver", "macvlan", "-o", f"parent={parent}", "--subnet", subnet())
        a, b = f"ma-{s}", f"mb-{s}"
        daemon.container(a, "--network", net)
        daemon.container(b, "--network", net)
        assert daemon.getent(a, b) == ipv4_of(daemon, b, net)
        ping = daemon.netns_exec(a, "ping", "-c", "1", "-W", "2", b)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        for name in (b, a):
            daemon.cli("container", "rm", name)
        daemon.cli("network", "rm", net)
    finally:
        subprocess.run(["ip", "link", "del", parent], capture_output=True)


def test_ipvlan_is_refused_with_the_missing_link_type_when_the_kernel_lacks_it(
    daemon: DaemonProcess,
) -> None:
    if link_kind_supported("ipvlan"):
        pytest.skip("this kernel has ipvlan; the refusal path cannot be seen here")
    done = daemon.cli(
        "network", "create", "--driver", "ipvlan", "-o", "parent=lo", f"ipv-{suffix()}",
        check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "ipvlan" in done.stderr


def test_adopted_namespace_gets_the_listener(daemon: DaemonProcess) -> None:
    s = suffix()
    net = f"adopt-{s}"
    daemon.network(net)
    b = f"ab-{s}"
    daemon.container(b, "--network", net)
    holder = subprocess.Popen(["unshare", "--net", "sleep", "120"])
    try:
        path = f"/proc/{holder.pid}/ns/net"
        for _ in range(50):  # until unshare has switched namespaces
            if os.readlink(path) != os.readlink("/proc/self/ns/net"):
                break
            subprocess.run(["sleep", "0.05"])
        name = f"aa-{s}"
        daemon.container(name, "--network", net, "--netns", path)
        done = subprocess.run(
            ["nsenter", f"--net={path}", "dig", "@127.0.0.11", "+short", "+tries=1", "+time=2", b],
            capture_output=True, text=True, timeout=15,
        )  # fmt: skip
        assert done.stdout.split() == [ipv4_of(daemon, b, net)]
        daemon.cli("container", "rm", name)
    finally:
        holder.kill()
        holder.wait()


def test_r18_alias_connect_and_rm_show_before_the_command_returns(daemon: DaemonProcess) -> None:
    s = suffix()
    net = f"live-{s}"
    daemon.network(net)
    a, b = f"la-{s}", f"lb-{s}"
    daemon.container(a, "--network", net)
    daemon.container(b, "--network", "none")
    daemon.cli("network", "connect", "--alias", f"cache-{s}", net, b)
    assert short(daemon, a, f"cache-{s}") == [ipv4_of(daemon, b, net)]
    daemon.cli("container", "rm", b)
    assert short(daemon, a, f"cache-{s}") == []
    assert "NXDOMAIN" in daemon.dig(a, b).stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("network", "connect", "no-such-net-x", "c"), "no-such-net-x"),
        (("network", "create", "--subnet", "300.1.0.0/16", "badnet"), "300.1.0.0/16"),
        (("network", "create", "bad name!"), "bad name!"),
        (("container", "create", "--name", "x", "--network", "nonet-y"), "nonet-y"),
        (("network", "rm", "bridge"), "bridge"),
    ],
)
def test_bad_input_gets_a_clear_error_and_changes_nothing(
    daemon: DaemonProcess, args: tuple[str, ...], message: str
) -> None:
    before = (daemon.json("network", "ls"), daemon.json("container", "ls"))
    done = daemon.cli(*args, check=False)
    assert done.returncode != 0
    assert message in done.stderr
    assert (daemon.json("network", "ls"), daemon.json("container", "ls")) == before


def test_overlapping_subnet_is_a_conflict(daemon: DaemonProcess) -> None:
    s = suffix()
    taken = subnet()
    daemon.network(f"ov1-{s}", "--subnet", taken)
    done = daemon.cli("network", "create", "--subnet", taken, f"ov2-{s}", check=False)
    assert done.returncode == 4, done.stderr  # Conflict
    assert taken in done.stderr
