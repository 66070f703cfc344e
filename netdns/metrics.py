"""Prometheus metrics: the counters the query path, the forwarder, the listeners, the driver
core and the event log keep (resolver/stats.py and theirs), turned into Prometheus text only
when `NetdnsCollector.collect()` runs at scrape time.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from resolver.stats import Histogram, QueryPath, rcode_name, type_name

if TYPE_CHECKING:
    from drivers.cluster.store import ClusterStore
    from drivers.core import DriverCore
    from netdns.events import EventLog
    from resolver.listeners import ListenerManager
    from resolver.resolve import Resolver


@dataclass(slots=True)
class Sources:
    """What the collector reads; the daemon gives all of them, a test what it has."""

    resolver: Resolver
    listeners: ListenerManager | None = None
    core: DriverCore | None = None
    cluster: ClusterStore | None = None
    events: EventLog | None = None
    event_lag: Histogram | None = None


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _counter_of(name: str, doc: str, value: float) -> CounterMetricFamily:
    """A counter with one sample and no labels."""
    return CounterMetricFamily(name, doc, value=value)


def _gauge_of(name: str, doc: str, value: float) -> GaugeMetricFamily:
    """A gauge with one sample and no labels."""
    return GaugeMetricFamily(name, doc, value=value)


class NetdnsCollector(Collector):
    """Every netdns_* metric, read from `Sources` at scrape time."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        yield from self._queries()
        yield from self._forwarding()
        yield from self._caches()
        yield from self._state()

    def _queries(self) -> Iterator[Metric]:
        resolver = self.sources.resolver
        stats = resolver.stats
        queries = _counter(
            "netdns_queries",
            "DNS queries answered, by question type, response code and path (hot: the hot "
            "cache; local: the name table; cache: the forwarded-answer cache; upstream: "
            "forwarded; servfail: no upstream answered; overload: the in-flight cap; invalid: "
            "FORMERR/NOTIMP for bad input)",
            ("type", "rcode", "path"),
        )
        totals: collections.Counter[tuple[str, str, str]] = collections.Counter()
        for (qtype, rcode, path), count in stats.counts.items():
            totals[(type_name(qtype), rcode_name(rcode), path)] += count
        if resolver.hot is not None:
            for (qtype, rcode), count in resolver.hot.hits_by_answer().items():
                totals[(type_name(qtype), rcode_name(rcode), QueryPath.HOT.value)] += count
        for labels, count in sorted(totals.items()):
            queries.add_metric(list(labels), count)
        yield queries

        yield _counter_of(
            "netdns_queries_dropped",
            "Messages given no reply: responses, messages shorter than a DNS header (R16)",
            stats.dropped,
        )

        latency = HistogramMetricFamily(
            "netdns_query_duration_seconds",
            "Time from a query's bytes to its reply's bytes inside the resolver, by path",
            labels=["path"],
        )
        histograms = {QueryPath.HOT.value: stats.hot, **stats.latency}
        for path, histogram in sorted(histograms.items()):
            latency.add_metric([path], histogram.cumulative(), histogram.sum_ns / 1e9)
        yield latency

        yield _gauge_of(
            "netdns_querylog_sample",
            "Share of queries logged by the netdns.query logger (0: off, 1: every query)",
            resolver.query_sample,
        )

    def _forwarding(self) -> Iterator[Metric]:
        forwarder = self.sources.resolver.forwarder
        up = _gauge(
            "netdns_upstream_up",
            "1 when the upstream answers, 0 when it failed max_failures times in a row and is "
            "tried last (R11)",
            ("upstream",),
        )
        for server, healthy in sorted(forwarder.upstream_health().items()):
            up.add_metric([server], 1.0 if healthy else 0.0)
        yield up
        failures = _counter(
            "netdns_upstream_failures",
            "Tries of an upstream that failed: timeout, error, SERVFAIL or REFUSED",
            ("upstream",),
        )
        for server, count in sorted(forwarder.upstream_failures.items()):
            failures.add_metric([server], count)
        yield failures
        answers = _counter(
            "netdns_upstream_answers", "Replies from an upstream passed on", ("upstream",)
        )
        for server, count in sorted(forwarder.upstream_answers.items()):
            answers.add_metric([server], count)
        yield answers
        yield _counter_of(
            "netdns_upstream_failovers",
            "Failed tries that moved on to the next upstream",
            forwarder.failovers,
        )
        yield _gauge_of(
            "netdns_forward_inflight",
            "Forwarded queries waiting for an upstream",
            forwarder.inflight,
        )
        yield _gauge_of(
            "netdns_forward_max_inflight",
            "The in-flight cap (--max-inflight, R14)",
            forwarder.max_inflight,
        )
        yield _counter_of(
            "netdns_forward_overloaded",
            "Queries answered SERVFAIL at once by the in-flight cap",
            forwarder.overloaded,
        )
        yield _gauge_of(
            "netdns_forward_max_inflight_per_sandbox",
            "One sandbox's share of the in-flight cap (--max-inflight-per-sandbox, R14)",
            forwarder.max_inflight_per_sandbox,
        )
        yield _counter_of(
            "netdns_forward_sandbox_overloaded",
            "Queries answered SERVFAIL at once because their sandbox had its share in flight",
            forwarder.sandbox_overloaded,
        )

    def _caches(self) -> Iterator[Metric]:
        resolver = self.sources.resolver
        caches: list[tuple[str, int, int, int]] = []  # (cache, entries, hits, misses)
        if resolver.forwarder.cache is not None:
            cache = resolver.forwarder.cache
            caches.append(("answer", cache.size, cache.hits, cache.misses))
        if resolver.hot is not None:
            hot = resolver.hot
            caches.append(("hot", hot.size, hot.hits, hot.stats.misses))
        entries = _gauge(
            "netdns_cache_entries",
            "Entries held (answer: forwarded answers, R13; hot: encoded replies)",
            ("cache",),
        )
        hits = _counter("netdns_cache_hits", "Lookups answered from the cache", ("cache",))
        misses = _counter("netdns_cache_misses", "Lookups the cache could not answer", ("cache",))
        ratio = _gauge(
            "netdns_cache_hit_ratio", "hits / (hits + misses) since the daemon started", ("cache",)
        )
        for name, size, hit, miss in caches:
            entries.add_metric([name], size)
            hits.add_metric([name], hit)
            misses.add_metric([name], miss)
            ratio.add_metric([name], hit / (hit + miss) if hit + miss else 0.0)
        yield from (entries, hits, misses, ratio)

    def _state(self) -> Iterator[Metric]:
        sources = self.sources
        if sources.listeners is not None:
            yield _gauge_of(
                "netdns_listeners_running",
                "Containers served by an embedded DNS listener",
                len(sources.listeners.running),
            )
            yield _counter_of(
                "netdns_listener_failures",
                "Listeners that could not follow an event (start, stop, resolv.conf)",
                sources.listeners.failures,
            )
        if sources.core is not None:
            yield self._endpoints(sources.core)
        if sources.events is not None:
            events = _counter("netdns_events", "State changes applied, by type", ("type",))
            for kind, count in sorted(sources.events.counts.items()):
                events.add_metric([kind], count)
            yield events
            yield _gauge_of(
                "netdns_events_last_seq",
                "The newest event's sequence number",
                sources.events.last_seq,
            )
        if sources.event_lag is not None:
            lag = HistogramMetricFamily(
                "netdns_event_lag_seconds",
                "Time from the driver core emitting an event to the loop having applied it "
                "(name table and listeners)",
            )
            lag.add_metric([], sources.event_lag.cumulative(), sources.event_lag.sum_ns / 1e9)
            yield lag
        if sources.cluster is not None:
            yield _gauge_of(
                "netdns_cluster_connected",
                "1 while the cluster store (etcd) is followed",
                1.0 if sources.cluster.connected else 0.0,
            )
            yield _counter_of(
                "netdns_cluster_resyncs",
                "Full readings of the cluster store (start, reconnect)",
                sources.cluster.resyncs,
            )

    @staticmethod
    def _endpoints(core: DriverCore) -> Metric:
        endpoints = _gauge(
            "netdns_endpoints",
            "Endpoints per network; host is the cluster host running them, empty for this host",
            ("network", "host"),
        )
        names = {network.id: network.name for network in core.networks()}
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        for name in names.values():
            counts[(name, "")] += 0  # every network shows, empty ones as 0
        for endpoint in core.endpoints():
            counts[(names.get(endpoint.network_id, endpoint.network_id[:12]), endpoint.host)] += 1
        for labels, count in sorted(counts.items()):
            endpoints.add_metric(list(labels), count)
        return endpoints


class Metrics:
    """A registry of its own holding the collector; `render()` is the /metrics body."""

    CONTENT_TYPE = CONTENT_TYPE_LATEST

    def __init__(self, sources: Sources) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = NetdnsCollector(sources)
        self.registry.register(self.collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["Metrics", "NetdnsCollector", "Sources"]
