"""Forwarder: a query that is not local, answered by the cache or an upstream (R11, R13, R14).

The query goes upstream as the client wrote it (EDNS OPT included) under a fresh id, and the
upstream's answer comes back unchanged but for the id. When there is no upstream, all fail or
the budget runs out, the client gets a SERVFAIL of ours. At most `max_inflight` forwards are in
flight; beyond that a query gets SERVFAIL at once (R14) and a rate-limited log line says so.

Within that cap each sandbox holds at most `max_inflight_per_sandbox` (by default a quarter of
it, at least 8): one sandbox flooding names that go upstream, say to a dead server, fills only
its own share and gets the immediate SERVFAIL beyond it, while the others keep room to forward.
And a sandbox with nothing in flight may always forward one query, even when several flooding
sandboxes fill the whole cap between them: the cap is overshot by at most one per sandbox.
"""

from __future__ import annotations

import collections
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dnslib import RCODE, DNSRecord

from drivers.errors import Invalid
from resolver.answer import base_reply
from resolver.forward.cache import AnswerCache, cache_key
from resolver.forward.policy import MAX_UPSTREAMS, Health, ask, moves_on, rcode_of, try_timeout
from resolver.forward.pool import UdpPool
from resolver.forward.upstream import Opener, Server, UpstreamFailed, parse_server
from resolver.logs import LogThrottle
from resolver.names import Upstreams

log = logging.getLogger(__name__)

OVERLOAD_LOG_INTERVAL = 10.0
MIN_SANDBOX_SHARE = 8  # the default per-sandbox share never goes below this many in flight


def default_sandbox_share(max_inflight: int) -> int:
    """Forwards one sandbox may have in flight when not told: a quarter of the cap, at least 8,
    so three sandboxes flooding at once still leave a quarter of the cap to the others."""
    return max(MIN_SANDBOX_SHARE, max_inflight // 4)


@dataclass(frozen=True, slots=True)
class ForwardResult:
    reply: bytes
    path: str  # "cache" | "upstream" | "servfail" | "overload"
    upstream: str = ""  # the server that answered
    elapsed: float = 0.0
    tries: tuple[str, ...] = ()  # what was tried, e.g. "127.1.2.3:53 timeout"


@functools.lru_cache(maxsize=256)
def _server(text: str) -> Server:
    return parse_server(text)


def servfail(request: DNSRecord) -> bytes:
    """Our own SERVFAIL: QR, RA, RD and the question copied, EDNS echoed when asked (R10)."""
    return base_reply(request, RCODE.SERVFAIL).pack()


class Forwarder:
    def __init__(
        self,
        *,
        default_servers: Callable[[], Sequence[str]],
        budget: float = 4.0,
        max_inflight: int = 1024,
        max_inflight_per_sandbox: int | None = None,
        cache: AnswerCache | None = None,
        health: Health | None = None,
        udp_pool: UdpPool | None = None,
    ) -> None:
        share = default_sandbox_share(max_inflight)
        if max_inflight_per_sandbox is not None:
            share = max_inflight_per_sandbox
        if max_inflight < 1 or share < 1:
            raise Invalid(
                f"max_inflight {max_inflight} and max_inflight_per_sandbox {share}: "
                "both must be at least 1"
            )
        self.default_servers = default_servers
        self.budget = budget
        self.max_inflight = max_inflight
        self.max_inflight_per_sandbox = share
        self.cache = cache
        self.health = health or Health()
        # Shared UDP sockets for upstreams reached without an opener (see pool.py).
        self.udp_pool = udp_pool or UdpPool()
        # Counters for metrics.
        self.inflight = 0
        self.failovers = 0  # tries that failed and moved on to another upstream
        self.overloaded = 0  # queries refused by the in-flight cap
        self.sandbox_overloaded = 0  # queries refused by their sandbox's share of the cap
        self.inflight_peak = 0  # the most forwards ever in flight at once
        self.sandbox_inflight_peak = 0  # the most one sandbox ever had in flight at once
        self.upstream_failures: collections.Counter[str] = collections.Counter()  # by server
        self.upstream_answers: collections.Counter[str] = collections.Counter()
        self._overload_log = LogThrottle(OVERLOAD_LOG_INTERVAL)
        self._share_log = LogThrottle(OVERLOAD_LOG_INTERVAL)
        # Only sandboxes with forwards in flight have an entry: the dict stays as small as that.
        self._inflight_by_sandbox: dict[str, int] = {}

    def servers_for(self, upstreams: Upstreams) -> tuple[Server, ...]:
        """The upstreams to try (at most MAX_UPSTREAMS), unusable entries skipped with a log."""
        texts = upstreams.servers or tuple(self.default_servers())
        servers: list[Server] = []
        for text in texts:
            try:
                servers.append(_server(text))
            except Invalid as exc:
                log.warning("skipping upstream: %s", exc)
            if len(servers) == MAX_UPSTREAMS:
                break
        return tuple(servers)

    async def forward(
        self,
        request: DNSRecord,
        query: bytes,
        upstreams: Upstreams,
        *,
        tcp: bool,
        opener: Opener | None = None,
        cache_scope: str = "",
        sandbox_id: str | None = None,
    ) -> ForwardResult:
        """Answer `request` (raw bytes `query`) from the cache or `upstreams` (R11, R13, R14).

        `cache_scope` tells apart equal addresses that mean different servers: upstreams named
        for a sandbox are reached from its namespace, so pass the sandbox id for them (it keys
        the cache and the health memory). Cache hits do not count against `max_inflight`.
        `sandbox_id`, when given, is whose share of the cap the forward counts against; without
        it only the global cap applies.
        """
        started = time.monotonic()
        servers = self.servers_for(upstreams)
        if not servers:
            return ForwardResult(servfail(request), "servfail", tries=("no upstream servers",))
        key = None
        if self.cache is not None:
            key = cache_key((cache_scope, *map(str, servers)), request)
            cached = self.cache.get(key, request)
            if cached is not None:
                return ForwardResult(cached, "cache", elapsed=time.monotonic() - started)
        by_sandbox = self._inflight_by_sandbox
        if self.inflight >= self.max_inflight and (sandbox_id is None or sandbox_id in by_sandbox):
            self._log_overload()
            return ForwardResult(servfail(request), "overload")
        if sandbox_id is not None:
            held = by_sandbox.get(sandbox_id, 0)
            if held >= self.max_inflight_per_sandbox:
                self._log_share_overload(sandbox_id)
                return ForwardResult(servfail(request), "overload")
            by_sandbox[sandbox_id] = held + 1
            if held >= self.sandbox_inflight_peak:
                self.sandbox_inflight_peak = held + 1
        self.inflight += 1
        if self.inflight > self.inflight_peak:
            self.inflight_peak = self.inflight
        try:
            result = await self._ask_upstreams(request, query, servers, tcp, opener, cache_scope)
        finally:
            self.inflight -= 1
            if sandbox_id is not None:
                left = by_sandbox[sandbox_id] - 1
                if left:
                    by_sandbox[sandbox_id] = left
                else:
                    del by_sandbox[sandbox_id]
        if self.cache is not None and key is not None and result.path == "upstream":
            self.cache.put(key, result.reply)
        return result

    async def _ask_upstreams(
        self,
        request: DNSRecord,
        query: bytes,
        servers: tuple[Server, ...],
        tcp: bool,
        opener: Opener | None,
        cache_scope: str,
    ) -> ForwardResult:
        started = time.monotonic()
        deadline = started + self.budget
        ordered = self.health.order([(cache_scope, server) for server in servers])
        tries: list[str] = []
        for index, health_key in enumerate(ordered):
            server = health_key[1]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tries.append(f"{server} not tried: budget spent")
                continue
            timeout = try_timeout(remaining, len(ordered) - index)
            try:
                reply = await ask(
                    server, query, tcp=tcp, timeout=timeout, opener=opener, pool=self.udp_pool
                )
            except UpstreamFailed as failure:
                tries.append(f"{server} {failure.reason}")
            else:
                rcode_name = RCODE.get(rcode_of(reply), str(rcode_of(reply)))
                tries.append(f"{server} {rcode_name}")
                if not moves_on(reply):
                    self.health.succeeded(health_key)
                    self.upstream_answers[str(server)] += 1
                    return ForwardResult(
                        query[:2] + reply[2:],
                        "upstream",
                        str(server),
                        time.monotonic() - started,
                        tuple(tries),
                    )
            self.health.failed(health_key)
            self.upstream_failures[str(server)] += 1
            if index + 1 < len(ordered):
                self.failovers += 1
        log.debug("all upstreams failed for %s: %s", request.q.qname, "; ".join(tries))
        return ForwardResult(
            servfail(request), "servfail", elapsed=time.monotonic() - started, tries=tuple(tries)
        )

    def upstream_health(self) -> dict[str, bool]:
        """Whether each upstream known here is up: the default ones and every one asked.

        Down means it failed `Health.max_failures` times in a row; an address named for
        several sandboxes (each reached from its own namespace) is down when one of them is."""
        down = {str(key[1]) for key in self.health.down() if isinstance(key, tuple)}
        known = {str(s) for s in self.servers_for(Upstreams())}
        known.update(self.upstream_answers, self.upstream_failures)
        return {server: server not in down for server in known}

    def sandbox_inflight(self, sandbox_id: str) -> int:
        """Forwards `sandbox_id` has in flight now (counted against its share)."""
        return self._inflight_by_sandbox.get(sandbox_id, 0)

    def close(self) -> None:
        """Close the pooled upstream sockets; forwards still waiting on them fail."""
        self.udp_pool.close()

    def _log_overload(self) -> None:
        self.overloaded += 1
        refused = self._overload_log.due(time.monotonic())
        if refused is None:
            return
        log.warning(
            "%d forwarded queries in flight (--max-inflight %d): answered %d with SERVFAIL "
            "at once since the last message",
            self.inflight,
            self.max_inflight,
            refused,
        )

    def _log_share_overload(self, sandbox_id: str) -> None:
        self.sandbox_overloaded += 1
        refused = self._share_log.due(time.monotonic())
        if refused is None:
            return
        log.warning(
            "sandbox %s has %d forwarded queries in flight, its share of the cap "
            "(--max-inflight-per-sandbox %d of --max-inflight %d): answered %d queries of "
            "sandboxes over their share with SERVFAIL at once since the last message",
            sandbox_id[:12],
            self._inflight_by_sandbox.get(sandbox_id, 0),
            self.max_inflight_per_sandbox,
            self.max_inflight,
            refused,
        )
