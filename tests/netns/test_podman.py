"""Podman itself (4.3, netavark 1.4) with netdns-aardvark in place of aardvark-dns: found by
netavark as `aardvark-dns` in the lab's helper_binaries_dir (bench/labs/podman.py: private
storage, runroot, containers.conf, network config dir and mount namespace, all removed after).

Clients are real: busybox nslookup inside the containers (through the resolv.conf podman
wrote: the network's gateway), and dig run in a container's network namespace."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bench.labs.podman import Container, Podman, podman_available, wait_until

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


def dig(
    lab: Podman, client: Container, network: str, name: str, qtype: str = "A"
) -> tuple[str, list[str]]:
    """(status, answers) of dig at the network's gateway from CLIENT's network namespace."""
    done = lab.in_netns(
        client, "dig", "+tries=1", "+time=3", "+noall", "+comments", "+answer",
        f"@{lab.gateway(network)}", name, qtype,
    )  # fmt: skip
    status = next(
        (line.split("status: ")[1].split(",")[0] for line in done.stdout.splitlines()
         if "status: " in line), "no answer",
    )  # fmt: skip
    answers = [
        line.split()[-1] for line in done.stdout.splitlines() if line and not line.startswith(";")
    ]
    return status, sorted(answers)


def test_podman_containers_resolve_each_other_through_netdns(podman: Podman) -> None:
    net = podman.network()
    web = podman.run("web", net, "--network-alias", "www")
    client = podman.run("client", net)
    web_ip = podman.address(web, net)
    assert nslookup(podman, client, web.name) == [web_ip]
    assert nslookup(podman, client, "www") == [web_ip]
    assert dig(podman, client, net, f"{web.name}.dns.podman") == ("NOERROR", [web_ip])
    assert dig(podman, client, net, web.id[:12]) == ("NOERROR", [web_ip])  # the short id
    # R6: a name with no IPv6 address answers NODATA, not NXDOMAIN.
    assert dig(podman, client, net, "www", "AAAA") == ("NOERROR", [])
    assert dig(podman, client, net, "ghost.dns.podman")[0] == "NXDOMAIN"
    # An outside name goes to the lab's upstream (dnsmasq), through netdns's forwarder.
    before = podman.upstream.settled_queries()
    assert nslookup(podman, client, "web.test") == ["10.1.2.3"]
    assert podman.upstream.settled_queries() > before


def test_connect_and_disconnect_show_at_once_and_two_networks_see_both(podman: Podman) -> None:
    front, back = podman.network("f"), podman.network("b")
    web = podman.run("web", front)
    db = podman.run("db", back)
    both = podman.run("both", front)
    podman.podman("network", "connect", back, both.name)
    web_ip, db_ip = podman.address(web, front), podman.address(db, back)
    # netavark sends SIGHUP before `podman network connect` returns; the reload follows it.
    took = wait_until(lambda: dig(podman, both, front, db.name) == ("NOERROR", [db_ip]), 2.0)
    assert took < 1.0
    assert dig(podman, both, back, web.name) == ("NOERROR", [web_ip])  # either gateway
    assert dig(podman, web, front, db.name)[0] == "NXDOMAIN"  # web is on front only
    podman.podman("network", "disconnect", back, both.name)
    wait_until(lambda: dig(podman, both, front, db.name)[0] == "NXDOMAIN", 2.0)
    assert dig(podman, both, front, web.name) == ("NOERROR", [web_ip])
