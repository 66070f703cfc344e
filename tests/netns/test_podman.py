"""Podman itself (4.3, netavark 1.4) with netdns-aardvark in place of aardvark-dns: found by
netavark as `aardvark-dns` in the lab's helper_binaries_dir (bench/labs/podman.py: private
storage, runroot, containers.conf, network config dir and mount namespace, all removed after).

Clients are real: busybox nslookup inside the containers (through the resolv.conf podman
wrote: the network's gateway), and dig run in a container's network namespace. The scenario
(bench/podman_dns.py) is the one docs/PODMAN.md's table comes from, run through netdns and
through podman's own aardvark-dns."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bench.labs.podman import Container, Podman, podman_available
from bench.podman_dns import Cell, dig, scenario

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: podman runs containers as root"),
    pytest.mark.skipif(bool(podman_available()), reason=podman_available() or "podman present"),
]


@pytest.fixture
def podman() -> Iterator[Podman]:
    with Podman(dns="netdns") as lab:
        yield lab
        if lab.log_text():
            print(lab.log_text())  # shown when the test fails


def nslookup(lab: Podman, client: Container, name: str) -> list[str]:
    """The addresses busybox nslookup prints for NAME inside CLIENT (its own resolv.conf)."""
    done = lab.exec(client, "nslookup", name)
    lines = done.stdout.splitlines()
    # The server's own "Address: GW:53" line comes first; answers follow a "Name:" line.
    answers = [
        line.split()[-1] for line in lines if line.startswith("Address:") and ":53" not in line
    ]
    return sorted(answers)


def test_podman_containers_resolve_each_other_through_netdns(podman: Podman) -> None:
    net = podman.network()
    web = podman.run("web", net, "--network-alias", "www")
    client = podman.run("client", net)
    web_ip = podman.address(web, net)
    assert nslookup(podman, client, web.name) == [web_ip]
    assert nslookup(podman, client, "www") == [web_ip]
    assert dig(podman, client, net, f"{web.name}.dns.podman") == f"NOERROR {web_ip}"
    assert dig(podman, client, net, web.id[:12]) == f"NOERROR {web_ip}"  # the short id
    # R6: a name with no IPv6 address answers NODATA, not NXDOMAIN.
    assert dig(podman, client, net, "www", "AAAA") == "NOERROR (no records)"
    assert dig(podman, client, net, "ghost.dns.podman") == "NXDOMAIN (no records)"
    # An outside name goes to the lab's upstream (dnsmasq), through netdns's forwarder.
    before = podman.upstream.settled_queries()
    assert nslookup(podman, client, "web.test") == ["10.1.2.3"]
    assert podman.upstream.settled_queries() > before


def answers(cells: list[Cell]) -> dict[str, str]:
    return {c.check: c.answer for c in cells}


def assert_netdns_cells(got: dict[str, str]) -> None:
    for check in ("container name", "network alias", "name in another case", "name.dns.podman",
                  "short id", "over TCP", "outside name (the lab's upstream)"):  # fmt: skip
        assert got[check].startswith("NOERROR 10."), (check, got[check])
    for check in ("AAAA of an IPv4-only name", "MX of a container name"):  # R6, R7
        assert got[check] == "NOERROR (no records)", (check, got[check])
    for check in ("unknown name.dns.podman", "unknown single label", "name on a network the "
                  "asker is not on", "outside name that does not exist"):  # fmt: skip
        assert got[check] == "NXDOMAIN (no records)", (check, got[check])
    assert got["PTR of a container address"].startswith("NOERROR nd")  # R8: name.network.
    assert len(got["alias shared by two containers"].split()) == 3  # R4: both addresses
    connected = got["after `network connect`: a name there"]
    assert connected.startswith("NOERROR 10.") and "(after" in connected
    assert "NXDOMAIN" in got["after `network disconnect`: that name"]
    # The upstream gone: the cache answers (R13), a new name fails at once, not by timeout.
    assert got["upstream down: an outside name asked before"].startswith("NOERROR 10.1.2.3")
    assert got["upstream down: a new outside name"].startswith("SERVFAIL")


def test_the_scenario_through_netdns_aardvark_answers_every_cell(podman: Podman) -> None:
    assert_netdns_cells(answers(scenario(podman)))


def test_the_scenario_through_netdns_cni_on_podmans_cni_backend_answers_every_cell() -> None:
    with Podman(backend="cni", dns="netdns-cni") as lab:
        got = answers(scenario(lab))
        assert lab.daemon is not None
        logs = lab.daemon.logs()
    assert_netdns_cells(got)
    assert "Traceback" not in logs


def test_the_same_scenario_through_podmans_aardvark_dns_differs_where_the_docs_say() -> None:
    with Podman(dns="aardvark") as lab:
        got = answers(scenario(lab))
    assert got["container name"].startswith("NOERROR 10.")
    assert got["AAAA of an IPv4-only name"] == "NOERROR (no records)"
    # docs/PODMAN.md's differences: no TCP, no answer when the upstream is down.
    assert got["over TCP"] == "timeout"
    assert got["upstream down: an outside name asked before"].startswith("timeout")


def test_the_same_scenario_through_dnsname_differs_where_the_docs_say() -> None:
    with Podman(backend="cni", dns="dnsname") as lab:
        got = answers(scenario(lab))
    assert got["container name"].startswith("NOERROR 10.")
    # docs/PODMAN.md's differences: a network connected later is not seen; no answer when the
    # upstream is down.
    assert got["after `network connect`: a name there"].endswith("(still)")
    assert got["upstream down: a new outside name"].startswith("timeout")
