"""The peers' configuration writers (bench/peers/aardvark.py, bench/peers/dnsmasq.py) and the
lab's plan (bench/netlab.py): the same names and addresses for every peer, in each one's format."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path

import pytest

from bench.errors import Invalid
from bench.netlab import plan
from bench.peers import Peer, parse_peers
from bench.peers.aardvark import (
    PID_FILE,
    ContainerEntry,
    bench_entries,
    config_text,
    write_config,
)
from bench.peers.dnsmasq import host_records
from bench.serve import CLIENT_ID, CLIENT_NAME, container_id
from bench.workloads import SHARED_MEMBERS, SHARED_NAME, Zone


def test_aardvark_config_has_gateways_first_then_one_line_per_container() -> None:
    entries = [
        ContainerEntry("abc123", (IPv4Address("10.0.0.2"),), (), ("web", "db")),
        ContainerEntry(
            "def456",
            (IPv4Address("10.0.0.3"), IPv4Address("10.0.1.3")),
            (IPv6Address("fd00::3"),),
            ("api",),
        ),
    ]
    text = config_text([IPv4Address("10.0.0.1"), IPv6Address("fd00::1")], entries)
    assert text == (
        "10.0.0.1,fd00::1\n"
        "abc123 10.0.0.2  web,db\n"  # no IPv6: the field is empty, the spaces stay
        "def456 10.0.0.3,10.0.1.3 fd00::3 api\n"
    )


def test_aardvark_config_without_a_listen_address_is_invalid() -> None:
    with pytest.raises(Invalid, match="listen address"):
        config_text([], [])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (ContainerEntry("abc", (IPv4Address("10.0.0.2"),), (), ()), "no name"),
        (ContainerEntry("abc", (), (), ("web",)), "no address"),
        (ContainerEntry("abc", (IPv4Address("10.0.0.2"),), (), ("we b",)), "space or comma"),
        (ContainerEntry("abc", (IPv4Address("10.0.0.2"),), (), ("a,b",)), "space or comma"),
        (ContainerEntry("", (IPv4Address("10.0.0.2"),), (), ("web",)), "empty"),
    ],
)
def test_aardvark_entry_that_would_break_the_line_format_is_invalid(
    entry: ContainerEntry, message: str
) -> None:
    with pytest.raises(Invalid, match=message):
        entry.line()


def test_aardvark_bench_entries_hold_every_container_the_shared_alias_and_the_client() -> None:
    zone = Zone(names=12)
    client = IPv4Address("10.7.8.11")
    entries = list(bench_entries(zone, client))
    assert len(entries) == 12 + 1
    first = entries[0]
    assert first.id == container_id("c0")
    assert first.ipv4 == (zone.container_address(0),)
    assert first.names == ("c0", SHARED_NAME)
    carrying = [e for e in entries if SHARED_NAME in e.names]
    assert len(carrying) == SHARED_MEMBERS
    assert entries[11].names == ("c11",)
    # aardvark knows its clients by source address: the client namespace is a container line.
    assert entries[-1] == ContainerEntry(CLIENT_ID, (client,), (), (CLIENT_NAME,))
    lines = config_text([IPv4Address("10.7.8.1")], entries).splitlines()
    assert lines[0] == "10.7.8.1"
    assert lines[1] == f"{container_id('c0')} {zone.container_address(0)}  c0,{SHARED_NAME}"
    assert lines[-1] == f"{CLIENT_ID} 10.7.8.11  {CLIENT_NAME}"


def test_aardvark_config_file_is_named_after_the_network(tmp_path: Path) -> None:
    path = write_config(tmp_path / "conf", "benchnet", "10.0.0.1\n")
    assert path == tmp_path / "conf" / "benchnet"
    assert path.read_text() == "10.0.0.1\n"
    for bad in ("", "a/b", "..", PID_FILE):
        with pytest.raises(Invalid, match="config file"):
            write_config(tmp_path, bad, "x\n")


def test_dnsmasq_host_records_name_the_container_first_so_ptr_answers_it() -> None:
    zone = Zone(names=11)
    records = list(host_records(zone))
    assert len(records) == 11
    assert records[0] == f"host-record=c0,{SHARED_NAME},{zone.container_address(0)}\n"
    assert records[10] == f"host-record=c10,{zone.container_address(10)}\n"
    assert sum(SHARED_NAME in r for r in records) == SHARED_MEMBERS


def test_lab_plan_gives_short_unique_names_and_addresses_clear_of_the_zone() -> None:
    peers = [(p.value, p.tag) for p in Peer]
    net = plan(peers, suffix="a1b2c3", subnet=IPv4Network("10.9.8.0/24"))
    assert net.host_netns == "ndh-a1b2c3"
    assert net.bridge == "br-nda1b2c3"
    assert (net.gateway, net.upstream, net.resolver) == (
        IPv4Address("10.9.8.1"),
        IPv4Address("10.9.8.2"),
        IPv4Address("10.9.8.3"),
    )
    assert [c.netns for c in net.clients] == [
        "ndc-nd-a1b2c3",
        "ndc-aa-a1b2c3",
        "ndc-dm-a1b2c3",
        "ndc-ce-a1b2c3",
    ]
    assert net.client(Peer.AARDVARK).address == IPv4Address("10.9.8.11")
    names = [net.bridge, *(c.veth for c in net.clients)]
    assert all(len(n) <= 15 for n in names), names  # Linux interface names
    assert len(set(names)) == len(names)
    # A random plan never overlaps the zone's container (10.128/9) or forwarded (10.64/10) data.
    for _ in range(200):
        subnet = plan(peers).subnet
        assert not subnet.overlaps(IPv4Network("10.64.0.0/10"))
        assert not subnet.overlaps(IPv4Network("10.128.0.0/9"))


def test_lab_plan_rejects_repeated_tags_and_bad_suffixes() -> None:
    with pytest.raises(Invalid, match="repeat"):
        plan([("a", "x"), ("b", "x")])
    with pytest.raises(Invalid, match="suffix"):
        plan([("a", "x")], suffix="bad/one")


def test_parse_peers_takes_short_names_in_order_without_repeats() -> None:
    assert parse_peers("dnsmasq, aardvark,netdns,aardvark-dns") == [
        Peer.DNSMASQ,
        Peer.AARDVARK,
        Peer.NETDNS,
    ]
    with pytest.raises(Invalid, match="unknown peer 'bind'"):
        parse_peers("netdns,bind")
    with pytest.raises(Invalid, match="no peer"):
        parse_peers(" , ")
