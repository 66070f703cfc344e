"""The pure parts of the scale bench (bench/scale_model.py: layout, helpers; scale_report.py)
and its in-process attach measurement on a small table (real NameTable and Resolver, no
sockets)."""

from __future__ import annotations

import ipaddress
import math
import random
from datetime import UTC, datetime

import pytest
from dnslib import RR, A, DNSRecord

from bench.errors import Invalid
from bench.scale import attach_in_process, stopping_line, wire_resolver
from bench.scale_model import (
    AttachResult,
    Layout,
    MemoryResult,
    ThroughputConfig,
    ThroughputResult,
    loopback_addresses,
    quantiles,
    query_bytes,
    reply_addresses,
    rss_bytes,
    throughput_configs,
)
from bench.scale_report import ScaleReport, render
from drivers.model import EndpointAttached, SandboxCreated
from resolver.names import NameTable
from resolver.server import run


def test_layout_puts_each_container_on_its_networks_subnet_with_a_unique_address() -> None:
    layout = Layout(networks=10, containers=50)
    addresses = [layout.address(k) for k in range(60)]
    assert len(set(addresses)) == 60
    for k, address in enumerate(addresses):
        subnet = layout.subnet(layout.network_index(k))
        assert address in subnet
        # never the network address nor the gateway
        assert address not in (subnet.network_address, subnet[1])


def test_layout_querier_is_the_first_container_on_the_same_network() -> None:
    layout = Layout(networks=10, containers=50)
    for k in (0, 7, 13, 49, 55):
        querier = layout.querier(k)
        assert querier == layout.sandbox_id(k % 10)


def test_layout_events_create_every_network_then_every_container() -> None:
    layout = Layout(networks=3, containers=6)
    events = list(layout.events())
    assert len(events) == 3 + 2 * 6
    attached = [e.endpoint for e in events if isinstance(e, EndpointAttached)]
    assert [e.network_id for e in attached] == ["net-0", "net-1", "net-2"] * 2
    sandboxes = {e.sandbox.id for e in events if isinstance(e, SandboxCreated)}
    assert {e.sandbox_id for e in attached} == sandboxes


def test_layout_refuses_a_slot_past_its_subnet_and_too_few_containers() -> None:
    layout = Layout(networks=2, containers=2)
    with pytest.raises(Invalid, match="slot"):
        layout.address(2 * 250)
    with pytest.raises(Invalid, match="networks"):
        Layout(networks=10, containers=5)


def test_loopback_addresses_are_distinct_and_away_from_the_well_known_ones() -> None:
    addresses = loopback_addresses(2000, random.Random(1))
    assert len(set(addresses)) == 2000
    for text in addresses:
        address = ipaddress.IPv4Address(text)
        assert address in ipaddress.IPv4Network("127.0.0.0/8")
        assert address not in ipaddress.IPv4Network("127.0.0.0/16")
        assert address.packed[3] not in (0, 1, 255)
    with pytest.raises(Invalid):
        loopback_addresses(0, random.Random(1))


def test_rss_bytes_reads_vmrss_in_kib_and_refuses_a_missing_line() -> None:
    assert rss_bytes("Name:\tpython\nVmRSS:\t   2048 kB\nVmSwap:\t0 kB\n") == 2048 * 1024
    assert rss_bytes() > 0
    with pytest.raises(Invalid):
        rss_bytes("Name:\tpython\n")


def test_reply_addresses_reads_the_a_records_of_a_reply() -> None:
    data = query_bytes("c1", random.Random(2))
    reply = DNSRecord.parse(data).reply()
    reply.add_answer(RR("c1", rdata=A("10.128.0.2")), RR("c1", rdata=A("10.128.0.3")))
    assert reply_addresses(reply.pack()) == ("10.128.0.2", "10.128.0.3")
    assert reply_addresses(DNSRecord.parse(data).reply().pack()) == ()


def test_quantiles_are_nearest_rank_and_nan_when_empty() -> None:
    p50, p99, worst = quantiles([float(n) for n in range(100, 0, -1)])
    assert (p50, p99, worst) == (50.0, 99.0, 100.0)
    assert all(math.isnan(v) for v in quantiles([]))


def test_stopping_line_takes_the_servers_last_counters() -> None:
    text = "bench.serve: other\nbench.serve: stopping: 5 udp and 0 tcp queries, hot path 5\n"
    assert stopping_line(text) == "5 udp and 0 tcp queries, hot path 5"
    assert stopping_line("nothing here\n") == ""


def test_throughput_configs_separate_table_size_from_working_set() -> None:
    assert throughput_configs(10_000) == (
        ThroughputConfig(100, 100),
        ThroughputConfig(10_000, 10_000),
        ThroughputConfig(10_000, 100),
    )
    assert throughput_configs(100) == (ThroughputConfig(100, 100),)


def test_attach_in_process_answers_every_new_name_after_a_cached_nxdomain() -> None:
    layout = Layout(networks=5, containers=20)
    table = NameTable()
    resolver = wire_resolver(table)
    table.apply_all(layout.events())
    result = run(attach_in_process(resolver, layout, 20, 10, random.Random(3)))
    assert len(result.latencies) == 10
    assert all(0 < t < 1.0 for t in result.latencies)
    assert result.wrong == 0
    assert result.stale_before == 0
    # After the slow path answered, the next ask comes from the hot cache.
    assert result.hot_after == 10


def test_render_marks_a_missed_target_and_shows_every_section() -> None:
    report = ScaleReport(Layout(networks=10, containers=100))
    report.in_process = AttachResult(latencies=[0.001] * 98 + [0.009, 0.01])
    report.memory = MemoryResult(100, 300 * 1024, 100 * 1024, (("names.py:1 `x`", 1024, 3),))
    config = ThroughputConfig(100, 100)
    report.throughput = [ThroughputResult(config, (1.0, 3.0, 2.0), (0, 0, 0), "counters")]
    text = render(report, {"cpu": "test"}, datetime(2026, 1, 2, 3, 4, tzinfo=UTC))
    assert "**missed**" in text  # p99 9 ms > 5 ms and 3,072 B per endpoint > 2 KiB
    assert "3,072 B per endpoint" in text
    assert "| 100 | 100 | 1, 3, 2 | 2 | 0 | 1.00x | counters |" in text
    assert "- cpu: test" in text
