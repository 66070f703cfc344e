"""Forwarder: a query that is not local, answered by the cache or an upstream (R11, R13, R14).

The query goes upstream as the client wrote it (EDNS OPT included) under a fresh id, and the
upstream's answer comes back unchanged but for the id. `start` does it without a task or a
future: the question was read from the bytes, the cache is asked with them, and each try's
reply or failure (from the pool's socket reader or the try's timer, resolver/forward/pool.py)
moves the query on; only TCP, a UDP answer truncated (asked again over TCP) and upstreams
reached from a sandbox's namespace take a task. `forward` is the same, awaited. When there is
no upstream, all fail or the budget runs out, the client gets a SERVFAIL of ours. At most
`max_inflight` forwards are in flight; beyond that a query gets SERVFAIL at once (R14) and a
rate-limited log line says so.

Within that cap each sandbox holds at most `max_inflight_per_sandbox` (by default a quarter of
it, at least 8): one sandbox flooding names that go upstream, say to a dead server, fills only
its own share and gets the immediate SERVFAIL beyond it, while the others keep room to forward.
And a sandbox with nothing in flight may always forward one query, even when several flooding
sandboxes fill the whole cap between them: the cap is overshot by at most one per sandbox.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from dnslib import RCODE, DNSRecord

from drivers.errors import Invalid
from resolver.answer import base_reply, reply_of_query
from resolver.forward.cache import AnswerCache, CacheKey, request_bits
from resolver.forward.policy import MAX_UPSTREAMS, Health, ask, moves_on, try_timeout
from resolver.forward.pool import UdpPool
from resolver.forward.upstream import Opener, Server, UpstreamFailed, exchange_tcp, parse_server
from resolver.logs import LogThrottle
from resolver.lookup import Upstreams
from resolver.stats import QueryPath
from resolver.wire import EDNS, HEADER_SIZE, TC_BIT, question_of, rcode_of

log = logging.getLogger(__name__)

OVERLOAD_LOG_INTERVAL = 10.0
MAX_PLANS = 256  # upstream lists whose parsed form `start` keeps
_RCODE_NAMES = {code: str(RCODE.get(code)) for code in range(16)}  # 11-15: the number
MIN_SANDBOX_SHARE = 8  # the default per-sandbox share never goes below this many in flight


def default_sandbox_share(max_inflight: int) -> int:
    """Forwards one sandbox may have in flight when not told: a quarter of the cap, at least 8,
    so three sandboxes flooding at once still leave a quarter of the cap to the others."""
    return max(MIN_SANDBOX_SHARE, max_inflight // 4)


@dataclass(frozen=True, slots=True)
class ForwardResult:
    reply: bytes
    path: QueryPath  # CACHE, UPSTREAM, SERVFAIL or OVERLOAD
    upstream: str = ""  # the server that answered
    elapsed: float = 0.0
    tries: tuple[str, ...] = ()  # what was tried, e.g. "127.1.2.3:53 timeout"


Done = Callable[[ForwardResult], None]


@functools.lru_cache(maxsize=256)
def _server(text: str) -> Server:
    return parse_server(text)


def servfail(request: DNSRecord) -> bytes:
    """Our own SERVFAIL: QR, RA, RD and the question copied, EDNS echoed when asked (R10)."""
    return base_reply(request, RCODE.SERVFAIL).pack()


@dataclass(frozen=True, slots=True)
class Query:
    """A query to forward, read from its bytes once (by resolver/wire.py or from dnslib)."""

    data: bytes  # as the client sent it
    question: bytes  # as the client wrote it (uncompressed): the name, type and class
    match: bytes  # the same with the name lowercased (question_of): the cache's key, and what
    # a reply's question must be
    bits: int  # cache.EDNS | DO | CD | AD

    def servfail(self) -> bytes:
        return reply_of_query(self.data, self.question, bool(self.bits & EDNS), RCODE.SERVFAIL)


def query_of(request: DNSRecord, data: bytes) -> Query | None:
    """The Query of a query the slow path parsed; None when its question is compressed."""
    data = bytes(data)  # dnslib packs into a bytearray
    question = question_of(data)
    if question is None:
        return None
    written = data[HEADER_SIZE : HEADER_SIZE + len(question)]
    return Query(data, written, question, request_bits(request))


@dataclass(frozen=True, slots=True)
class _Plan:
    order: tuple[tuple[str, Server], ...]  # health keys of the upstreams to try, as given
    scope: tuple[str, ...]  # the answer cache's key for them: (cache scope, "IP:PORT", ...)


@dataclass(slots=True, eq=False)
class _Flight:
    """One forwarded query on its way through its upstreams, driven by callbacks: each try's
    reply or failure moves it on (R11) until it is done."""

    forwarder: Forwarder
    query: Query
    order: list[tuple[str, Server]]  # health keys, in the order to try them
    tcp: bool
    opener: Opener | None
    sandbox_id: str | None
    key: CacheKey | None
    done: Done
    started: float
    deadline: float
    index: int = -1
    tries: list[str] = field(default_factory=list)

    def next(self) -> None:
        """Try the next upstream in the time left, or end with SERVFAIL."""
        forwarder = self.forwarder
        while True:
            self.index += 1
            if self.index >= len(self.order) or forwarder.closed:
                self.finish(None, "")
                return
            server = self.order[self.index][1]
            remaining = self.deadline - time.monotonic()
            if remaining > 0:
                break
            self.tries.append(f"{server} not tried: budget spent")
        forwarder.send(
            self, self.index, server, try_timeout(remaining, len(self.order) - self.index)
        )

    def send_udp(self, index: int, server: Server, timeout: float) -> None:
        self.forwarder.udp_pool.send(
            server, self.query.data, self.query.match, timeout=timeout,
            on_reply=lambda reply: self.replied(index, reply),
            on_failure=lambda reason: self.failed(index, reason),
        )  # fmt: skip

    async def ask(self, index: int, server: Server, timeout: float) -> None:
        """A try over TCP, or over UDP from a sandbox's namespace (a socket of its own)."""
        try:
            reply = await ask(
                server, self.query.data, tcp=self.tcp, timeout=timeout, opener=self.opener
            )
        except UpstreamFailed as failure:
            self.failed(index, failure.reason)
        else:
            self.replied(index, reply, retried=True)

    def replied(self, index: int, reply: bytes, *, retried: bool = False) -> None:
        if reply[2] & TC_BIT and not retried:
            # Truncated over UDP: asked again over TCP in this try's time left (R11).
            server = self.order[index][1]
            left = self.deadline - time.monotonic()
            share = try_timeout(left, len(self.order) - index)
            self.forwarder.spawn(self._retry_tcp(index, server, reply, share))
            return
        server = self.order[index][1]
        rcode = rcode_of(reply)
        self.tries.append(f"{server.text} {_RCODE_NAMES[rcode]}")
        if moves_on(reply):
            self._moved_on(index)
            return
        self.forwarder.health.succeeded(self.order[index])
        self.forwarder.upstream_answers[server.text] += 1
        self.finish(reply, server.text)

    async def _retry_tcp(
        self, index: int, server: Server, truncated: bytes, timeout: float
    ) -> None:
        try:
            reply = await exchange_tcp(server, self.query.data, timeout=timeout)
        except UpstreamFailed:
            reply = truncated  # the client can retry over TCP itself
        self.replied(index, reply, retried=True)

    def failed(self, index: int, reason: str) -> None:
        self.tries.append(f"{self.order[index][1]} {reason}")
        self._moved_on(index)

    def _moved_on(self, index: int) -> None:
        forwarder = self.forwarder
        forwarder.health.failed(self.order[index])
        forwarder.upstream_failures[self.order[index][1].text] += 1
        if index + 1 < len(self.order):
            forwarder.failovers += 1
        self.next()

    def finish(self, reply: bytes | None, upstream: str) -> None:
        forwarder = self.forwarder
        forwarder.landed(self.sandbox_id)
        elapsed = time.monotonic() - self.started
        if reply is None:
            log.debug("all upstreams failed for a query: %s", "; ".join(self.tries))
            result = ForwardResult(
                self.query.servfail(), QueryPath.SERVFAIL, elapsed=elapsed, tries=tuple(self.tries)
            )
        else:
            if forwarder.cache is not None and self.key is not None:
                forwarder.cache.put(self.key, reply)
            answer = self.query.data[:2] + reply[2:]
            result = ForwardResult(answer, QueryPath.UPSTREAM, upstream, elapsed, tuple(self.tries))
        try:
            self.done(result)
        except Exception:
            log.exception("a forwarded query's reply could not be delivered")


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
        self._tasks: set[asyncio.Task[None]] = set()  # TCP tries and sandbox-namespace ones
        self._plans: dict[tuple[str, tuple[str, ...]], _Plan] = {}  # by (scope, upstreams)
        self.closed = False

    def servers_for(self, upstreams: Upstreams) -> tuple[Server, ...]:
        """The upstreams to try (at most MAX_UPSTREAMS), unusable entries skipped with a log."""
        return self._servers(upstreams.servers or tuple(self.default_servers()))

    def _servers(self, texts: Sequence[str]) -> tuple[Server, ...]:
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
        """Answer `request` (raw bytes `query`) from the cache or `upstreams` (R11, R13, R14):
        `start`, awaited, for a query the slow path parsed."""
        parsed = query_of(request, query)
        if parsed is None:
            return ForwardResult(
                servfail(request), QueryPath.SERVFAIL, tries=("query has no question",)
            )
        # The result may come before `start` returns (an upstream that fails at once): a loop
        # and a future are only needed when it does not.
        results: list[ForwardResult] = []
        waiting: list[asyncio.Future[ForwardResult]] = []

        def done(result: ForwardResult) -> None:
            if waiting:
                if not waiting[0].done():
                    waiting[0].set_result(result)
            else:
                results.append(result)

        now = self.start(
            parsed, upstreams, tcp=tcp, opener=opener, cache_scope=cache_scope,
            sandbox_id=sandbox_id, done=done,
        )  # fmt: skip
        if now is not None:
            return now
        if results:
            return results[0]
        waiting.append(asyncio.get_running_loop().create_future())
        return await waiting[0]

    def start(
        self,
        query: Query,
        upstreams: Upstreams,
        *,
        tcp: bool,
        done: Done,
        opener: Opener | None = None,
        cache_scope: str = "",
        sandbox_id: str | None = None,
    ) -> ForwardResult | None:
        """Answer QUERY from the cache or `upstreams` (R11, R13, R14): the result at once when
        there is one (a cache hit, no upstream, over the cap), else None and `done(result)`
        later, from the event loop.

        `cache_scope` tells apart equal addresses that mean different servers: upstreams named
        for a sandbox are reached from its namespace, so pass the sandbox id for them (it keys
        the cache and the health memory). Cache hits do not count against `max_inflight`.
        `sandbox_id`, when given, is whose share of the cap the forward counts against; without
        it only the global cap applies.
        """
        started = time.monotonic()
        plan = self._plan(upstreams, cache_scope)
        if not plan.order:
            return ForwardResult(
                query.servfail(), QueryPath.SERVFAIL, tries=("no upstream servers",)
            )
        key = None
        if self.cache is not None:
            key = CacheKey(plan.scope, query.match, query.bits)
            cached = self.cache.answer(key, query.data, query.question)
            if cached is not None:
                return ForwardResult(cached, QueryPath.CACHE, elapsed=time.monotonic() - started)
        by_sandbox = self._inflight_by_sandbox
        if self.inflight >= self.max_inflight and (sandbox_id is None or sandbox_id in by_sandbox):
            self._log_overload()
            return ForwardResult(query.servfail(), QueryPath.OVERLOAD)
        if sandbox_id is not None:
            held = by_sandbox.get(sandbox_id, 0)
            if held >= self.max_inflight_per_sandbox:
                self._log_share_overload(sandbox_id)
                return ForwardResult(query.servfail(), QueryPath.OVERLOAD)
            by_sandbox[sandbox_id] = held + 1
            if held >= self.sandbox_inflight_peak:
                self.sandbox_inflight_peak = held + 1
        self.inflight += 1
        if self.inflight > self.inflight_peak:
            self.inflight_peak = self.inflight
        order = self.health.order(plan.order)
        flight = _Flight(
            self, query, order, tcp, opener, sandbox_id, key, done, started, started + self.budget
        )
        flight.next()
        return None

    def _plan(self, upstreams: Upstreams, cache_scope: str) -> _Plan:
        """The upstreams' parsed form, made once per list (not per query): their health keys
        in the order given, and the answer cache's scope for them."""
        texts = upstreams.servers or tuple(self.default_servers())
        plan = self._plans.get((cache_scope, texts))
        if plan is None:
            servers = self._servers(texts)
            plan = _Plan(
                tuple((cache_scope, server) for server in servers),
                (cache_scope, *(server.text for server in servers)),
            )
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            self._plans[cache_scope, texts] = plan
        return plan

    def landed(self, sandbox_id: str | None) -> None:
        """A forward counted by `start` is over: its room under the cap is free again."""
        self.inflight -= 1
        if sandbox_id is not None:
            by_sandbox = self._inflight_by_sandbox
            left = by_sandbox[sandbox_id] - 1
            if left:
                by_sandbox[sandbox_id] = left
            else:
                del by_sandbox[sandbox_id]

    def send(self, flight: _Flight, index: int, server: Server, timeout: float) -> None:
        """Start try INDEX of FLIGHT, to SERVER for at most TIMEOUT seconds: its reply or its
        failure comes back to the flight (`replied`, `failed`). UDP from here goes through
        the pool, the rest in a task."""
        if flight.tcp or flight.opener is not None:
            self.spawn(flight.ask(index, server, timeout))
        else:
            flight.send_udp(index, server, timeout)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        """Close the pooled upstream sockets; forwards still waiting on them fail at once
        (SERVFAIL), and none tries another upstream."""
        self.closed = True
        for task in self._tasks:
            if not task.get_loop().is_closed():
                task.cancel()
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
