"""Metrics (netdns/metrics.py, over resolver/stats.py): real queries, real listeners, a scrape.

A ServerThread (tests/proto/harness.py) serves the sample table with a real dnsmasq upstream
on a random loopback address; dig and raw UDP packets ask it; the collector's text is parsed
with prometheus_client's own parser and checked count by count.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator

import pytest
from dnslib import DNSRecord
from prometheus_client.parser import text_string_to_metric_families

from bench.labs.upstreams import Dnsmasq, free_loopback_address
from drivers.model import EndpointAttached, NetworkCreated, SandboxCreated
from netdns.events import EventLog
from netdns.metrics import Metrics, NetdnsCollector, Sources
from resolver.forward import AnswerCache
from resolver.stats import Histogram
from tests.proto.harness import CLIENT1, ServerThread, dig, sample_events, sample_table

pytestmark = [
    pytest.mark.skipif(shutil.which("dig") is None, reason="needs dig (bind9-dnsutils)"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: dnsmasq binds port 53"),
]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: ServerThread, **sources: object) -> Samples:
    assert server.resolver is not None
    metrics = Metrics(Sources(server.resolver, **sources))  # type: ignore[arg-type]
    text = server.call(lambda: metrics.render().decode())  # on the loop, as /metrics runs
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def queries(samples: Samples, qtype: str, rcode: str, path: str) -> float:
    return value(samples, "netdns_queries_total", type=qtype, rcode=rcode, path=path)


def udp(server: ServerThread, packet: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(packet, (server.address(CLIENT1), server.port(CLIENT1)))
        return sock.recv(4096)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Dnsmasq]:
    with Dnsmasq() as dnsmasq:
        yield dnsmasq


def with_answer_cache(server: ServerThread) -> None:
    """The daemon's forwarder has an answer cache (R13); the harness's has none."""
    assert server.resolver is not None
    server.resolver.forwarder.cache = AnswerCache()


def test_queries_are_counted_by_type_rcode_and_path_with_latency(upstream: Dnsmasq) -> None:
    with ServerThread(sample_table(), [CLIENT1], upstreams=[upstream.server]) as server:
        server.call(lambda: with_answer_cache(server))
        for _ in range(3):
            assert dig(server, CLIENT1, "web", "A").status == "NOERROR"
        assert dig(server, CLIENT1, "nosuch.test", "A").status == "NXDOMAIN"
        assert dig(server, CLIENT1, "web", "AAAA").status == "NOERROR"  # NODATA (R6)
        for _ in range(3):
            assert dig(server, CLIENT1, "web.test", "A").status == "NOERROR"
        # Two questions in one query: FORMERR (R16); a response: dropped.
        bad = DNSRecord.question("web", "A")
        bad.add_question(*DNSRecord.question("db", "A").questions)
        assert udp(server, bad.pack())[3] & 0x0F == 1
        response = DNSRecord.question("web", "A").reply().pack()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(response, (server.address(CLIENT1), server.port(CLIENT1)))
        udp(server, DNSRecord.question("db", "A").pack())  # after it: the response was seen
        samples = scrape(server)

    # web A: the slow path once, then the hot cache twice; web.test A: see below.
    assert queries(samples, "A", "NOERROR", "local") == 2  # web, then db
    assert queries(samples, "A", "NOERROR", "hot") == 2 + 1
    assert queries(samples, "A", "NXDOMAIN", "upstream") == 1  # dnsmasq knows no nosuch.test
    assert queries(samples, "AAAA", "NOERROR", "local") == 1
    # web.test: upstream, then the answer cache (which puts it on the hot path), then hot.
    assert queries(samples, "A", "NOERROR", "upstream") == 1
    assert queries(samples, "A", "NOERROR", "cache") == 1
    assert queries(samples, "unknown", "FORMERR", "invalid") == 1
    assert value(samples, "netdns_queries_dropped_total") == 1
    hot_count = value(samples, "netdns_query_duration_seconds_count", path="hot")
    assert hot_count == 3  # two web A and one web.test A
    assert value(samples, "netdns_query_duration_seconds_count", path="local") == 3
    inf = value(samples, "netdns_query_duration_seconds_bucket", path="upstream", le="+Inf")
    assert inf == 2
    assert value(samples, "netdns_query_duration_seconds_sum", path="upstream") > 0
    # The answer cache: one miss then one hit; the hot cache served three.
    # The answer cache: two misses (nosuch.test, web.test) then one hit.
    assert value(samples, "netdns_cache_hits_total", cache="answer") == 1
    assert value(samples, "netdns_cache_hit_ratio", cache="answer") == pytest.approx(1 / 3)
    assert value(samples, "netdns_cache_hits_total", cache="hot") == 3
    assert value(samples, "netdns_upstream_up", upstream=upstream.server) == 1
    assert value(samples, "netdns_upstream_answers_total", upstream=upstream.server) == 2
    assert value(samples, "netdns_forward_inflight") == 0
    assert value(samples, "netdns_forward_max_inflight_per_sandbox") == max(8, 1024 // 4)
    assert value(samples, "netdns_forward_sandbox_overloaded_total") == 0


def test_hot_hits_keep_counting_after_their_entry_is_dropped(upstream: Dnsmasq) -> None:
    table = sample_table()
    with ServerThread(table, [CLIENT1], upstreams=[upstream.server]) as server:
        for _ in range(3):
            dig(server, CLIENT1, "db", "A")
        assert server.resolver is not None and server.resolver.hot is not None
        server.call(server.resolver.hot.clear)  # as an event touching `db` would
        dig(server, CLIENT1, "db", "A")
        samples = scrape(server)
    assert queries(samples, "A", "NOERROR", "hot") == 2
    assert queries(samples, "A", "NOERROR", "local") == 2


def test_a_dead_upstream_is_down_with_its_failures_and_failovers(upstream: Dnsmasq) -> None:
    dead = f"{free_loopback_address()}:53"  # nothing listens: port unreachable at once
    with ServerThread(sample_table(), [CLIENT1], upstreams=[dead, upstream.server]) as server:
        for name in ("web.test", "db.test", "txt.test", "mail.test"):
            dig(server, CLIENT1, name, "A")
        samples = scrape(server)
    assert value(samples, "netdns_upstream_up", upstream=dead) == 0
    assert value(samples, "netdns_upstream_up", upstream=upstream.server) == 1
    assert value(samples, "netdns_upstream_failures_total", upstream=dead) >= 3
    assert value(samples, "netdns_upstream_failovers_total") >= 3
    assert value(samples, "netdns_upstream_answers_total", upstream=upstream.server) == 4


def test_state_metrics_come_from_the_sources_given(upstream: Dnsmasq) -> None:
    events = EventLog()
    for event in sample_events()[:6]:
        events.append(event)
    lag = Histogram()
    lag.observe_ns(3_000_000)  # 3 ms
    with ServerThread(sample_table(), [CLIENT1], upstreams=[upstream.server]) as server:
        samples = scrape(server, events=events, event_lag=lag)
    kinds = [type(e) for e in sample_events()[:6]]
    assert value(samples, "netdns_events_total", type="network.create") == kinds.count(
        NetworkCreated
    )
    assert value(samples, "netdns_events_total", type="container.create") == kinds.count(
        SandboxCreated
    )
    assert value(samples, "netdns_events_total", type="endpoint.attach") == kinds.count(
        EndpointAttached
    )
    assert value(samples, "netdns_events_last_seq") == 6
    assert value(samples, "netdns_event_lag_seconds_bucket", le=repr(2**20 / 1e9)) == 0
    assert value(samples, "netdns_event_lag_seconds_bucket", le=repr(2**22 / 1e9)) == 1
    assert value(samples, "netdns_event_lag_seconds_sum") == pytest.approx(0.003)


def test_histogram_buckets_are_cumulative_powers_of_two() -> None:
    histogram = Histogram()
    durations = (500, 1023, 1025, 5_000, 2_000_000_000, 10_000_000_000)
    for ns in durations:
        histogram.observe_ns(ns)
    buckets = dict(histogram.cumulative())
    assert buckets[repr(1024 / 1e9)] == 2  # 500 and 1023
    assert buckets[repr(4096 / 1e9)] == 3
    assert buckets[repr(16384 / 1e9)] == 4
    assert buckets[repr(2**32 / 1e9)] == 5  # 10 s is above the last bound
    assert buckets["+Inf"] == 6
    assert list(buckets.values()) == sorted(buckets.values())
    assert histogram.sum_ns == sum(durations)


def test_every_metric_is_prefixed_and_documented(upstream: Dnsmasq) -> None:
    with ServerThread(sample_table(), [CLIENT1], upstreams=[upstream.server]) as server:
        assert server.resolver is not None
        collector = NetdnsCollector(Sources(server.resolver, events=EventLog()))
        families = server.call(lambda: list(collector.collect()))
    assert families
    for family in families:
        assert family.name.startswith("netdns_"), family.name
        assert len(family.documentation) > 10, family.name
