"""Docker's standalone-networking tutorial, end to end: real daemon, namespaces, bridges, and
real clients (glibc getent, busybox nslookup, dig, ping) inside the namespaces (R1, R17, R18)."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.labs.daemon import DEFAULT_BRIDGE_GATEWAY, DaemonProcess, running_daemon, suffix

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates namespaces and bridges"),
    pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox (busybox-static)"),
]


class Tutorial:
    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        s = suffix()
        self.net = f"alpine-net-{s}"
        self.a1, self.a2, self.a3, self.a4 = (f"alpine{i}-{s}" for i in range(1, 5))


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tutorial]:
    with running_daemon(tmp_path_factory.mktemp("tutorial")) as daemon:
        t = Tutorial(daemon)
        daemon.network(t.net)
        daemon.container(t.a1, "--network", t.net)
        daemon.container(t.a2, "--network", t.net)
        daemon.container(t.a3)  # the default bridge: no embedded DNS
        daemon.container(t.a4, "--network", t.net)
        daemon.cli("network", "connect", "bridge", t.a4)
        yield t


def address_of(daemon: DaemonProcess, container: str, network: str) -> str:
    inspect = daemon.json("container", "inspect", container)[0]
    return inspect["NetworkSettings"]["Networks"][network]["IPAddress"]


def test_r1_alpine1_resolves_alpine2_with_glibc(tutorial: Tutorial) -> None:
    d = tutorial.daemon
    assert d.getent(tutorial.a1, tutorial.a2) == address_of(d, tutorial.a2, tutorial.net)


def test_r1_alpine1_resolves_alpine4_with_busybox(tutorial: Tutorial) -> None:
    d = tutorial.daemon
    done = d.netns_exec(tutorial.a1, "busybox", "nslookup", tutorial.a4, "127.0.0.11")
    assert done.returncode == 0, done.stdout + done.stderr
    assert address_of(d, tutorial.a4, tutorial.net) in done.stdout


def test_r1_alpine3_on_default_bridge_is_not_resolved(tutorial: Tutorial) -> None:
    d = tutorial.daemon
    assert d.getent(tutorial.a1, tutorial.a3) is None
    assert d.getent(tutorial.a4, tutorial.a3) is None


def test_r1_alpine4_on_both_networks_resolves_alpine_net_names(tutorial: Tutorial) -> None:
    d = tutorial.daemon
    assert d.getent(tutorial.a4, tutorial.a1) == address_of(d, tutorial.a1, tutorial.net)
    assert d.getent(tutorial.a4, tutorial.a2) == address_of(d, tutorial.a2, tutorial.net)


def test_r1_alpine3_has_no_listener_and_host_nameservers(tutorial: Tutorial) -> None:
    d = tutorial.daemon
    done = d.dig(tutorial.a3, tutorial.a1)
    assert done.returncode != 0  # nothing listens on 127.0.0.11 there
    resolv = Path(f"/etc/netns/{tutorial.a3}/resolv.conf").read_text()
    assert "127.0.0.11" not in resolv
    assert f"nameserver {DEFAULT_BRIDGE_GATEWAY}" in resolv  # the daemon's host resolv.conf


def test_r17_resolv_conf_of_a_dns_sandbox(tutorial: Tutorial) -> None:
    resolv = Path(f"/etc/netns/{tutorial.a1}/resolv.conf").read_text()
    assert "nameserver 127.0.0.11" in resolv
    assert "options ndots:0" in resolv


def test_ping_by_name_over_the_bridge(tutorial: Tutorial) -> None:
    d = tutorial.daemon
    done = d.netns_exec(tutorial.a1, "ping", "-c", "1", "-W", "2", tutorial.a2)
    assert done.returncode == 0, done.stdout + done.stderr


def test_r11_outside_names_are_forwarded_to_the_upstream(tutorial: Tutorial) -> None:
    assert tutorial.daemon.getent(tutorial.a1, "outside.test") == "192.0.2.10"


def test_r17_a_process_in_the_sandbox_can_bind_port_53(tutorial: Tutorial) -> None:
    d = tutorial.daemon
    code = (
        "import socket,subprocess\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "s.bind(('0.0.0.0',53))\n"
        f"print(subprocess.run(['getent','hosts','{tutorial.a2}'],capture_output=True,"
        "text=True).stdout)\n"
    )
    done = d.netns_exec(tutorial.a1, "python3", "-c", code)
    assert done.returncode == 0, done.stderr
    assert address_of(d, tutorial.a2, tutorial.net) in done.stdout


def test_r18_disconnect_and_connect_change_answers_before_returning(tutorial: Tutorial) -> None:
    d = tutorial.daemon
    d.cli("network", "disconnect", tutorial.net, tutorial.a2)
    try:
        assert d.getent(tutorial.a1, tutorial.a2) is None
    finally:
        d.cli("network", "connect", "--alias", "second", tutorial.net, tutorial.a2)
    assert d.getent(tutorial.a1, tutorial.a2) == address_of(d, tutorial.a2, tutorial.net)
    assert d.getent(tutorial.a1, "second") == address_of(d, tutorial.a2, tutorial.net)


def test_tcp_and_udp_on_127_0_0_11(tutorial: Tutorial) -> None:
    d = tutorial.daemon
    for transport in ("+notcp", "+tcp"):
        done = d.dig(tutorial.a1, "+short", transport, tutorial.a2)
        assert done.stdout.strip() == address_of(d, tutorial.a2, tutorial.net), transport


def test_resolve_explains_which_rule_answered(tutorial: Tutorial) -> None:
    d = tutorial.daemon
    local = d.json("resolve", "--from", tutorial.a1, tutorial.a2)
    assert local["rule"] == "R2"
    assert local["rcode"] == "NOERROR"
    hidden = d.json("resolve", "--from", tutorial.a1, tutorial.a3)
    assert "bridge" not in hidden["networks_holding"]  # the default bridge has no DNS


def test_no_listener_outside_the_sandboxes(tutorial: Tutorial) -> None:
    """Not an open resolver: nothing of netdns answers on the host's 127.0.0.11:53."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01",
                 ("127.0.0.11", 53))  # fmt: skip
        with pytest.raises(OSError):
            s.recv(512)


def test_cli_errors_are_one_line_and_leave_state(tutorial: Tutorial) -> None:
    d = tutorial.daemon
    before = d.json("network", "ls")
    for args in (
        ("network", "create", tutorial.net),  # duplicate
        ("network", "create", "--subnet", "10.0.0.0/33", f"bad-{suffix()}"),
        ("network", "connect", "no-such-net", tutorial.a1),
        ("network", "connect", tutorial.net, tutorial.a1),  # already connected
        ("network", "rm", tutorial.net),  # has endpoints
    ):
        done = d.cli(*args, check=False)
        assert done.returncode != 0, args
        assert len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
    assert d.json("network", "ls") == before


def test_daemon_restart_keeps_names_addresses_and_listeners(
    tutorial: Tutorial, tmp_path_factory: pytest.TempPathFactory
) -> None:
    d = tutorial.daemon
    a2 = address_of(d, tutorial.a2, tutorial.net)
    assert d.stop() == 0
    from bench.labs.daemon import start_daemon

    new = start_daemon(d.root, d.upstream, bridge=d.bridge)
    tutorial.daemon.process = new.process
    assert d.getent(tutorial.a1, tutorial.a2) == a2
    extra = f"alpine5-{suffix()}"
    d.container(extra, "--network", tutorial.net)
    used = {address_of(d, c, tutorial.net) for c in (tutorial.a1, tutorial.a2, tutorial.a4)}
    assert address_of(d, extra, tutorial.net) not in used
    assert d.getent(tutorial.a1, extra) == address_of(d, extra, tutorial.net)


def test_exec_runs_inside_the_container(tutorial: Tutorial) -> None:
    done = tutorial.daemon.cli("exec", tutorial.a1, "--", "getent", "hosts", tutorial.a2)
    assert tutorial.a2 in done.stdout
