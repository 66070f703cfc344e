"""The Resolver: one query's way from bytes in to bytes out, for one sandbox's view.

Parses (R16), asks the name table (R1-R8, R12, R12b), builds the local answer or hands the
query to the forwarder (R11, R13, R14), and fits UDP replies to the client's size (R15). The
listener (server.py) owns transport; this module owns the decision.

`fast` is the same decision without parsing: the hot cache (resolver/hot.py) answers from
encoded replies the slow path left there, and the name table's events drop them (R18). `start`
takes the UDP queries the hot cache missed that go upstream (R11) the same way: the question
read from the bytes, the answer cache asked with them, the forward driven by callbacks
(resolver/forward/forwarder.py), the reply fitted (R15) and sent through the listener's
`respond`; no dnslib, no task. What it declines (local names not hot yet, odd questions,
upstreams reached from a sandbox's namespace) takes `handle`.

Both count what they answer into `stats` (resolver/stats.py: the hot path only times itself,
the hot cache counts hits per entry) and, when `query_sample` is not 0, log that share of
queries (resolver/logs.py); off, that costs one attribute check per query.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter_ns

from dnslib import CLASS, DNSRecord

from resolver.answer import bad_edns_version, fit_udp, fit_udp_bytes, local_reply, parse_query
from resolver.forward import Forwarder
from resolver.forward.forwarder import ForwardResult, Query
from resolver.hot import DEFAULT_MAX_ENTRIES, HotCache
from resolver.logs import log_query
from resolver.lookup import Lookup, Outcome, Upstreams
from resolver.names import NameTable
from resolver.server import Respond
from resolver.stats import UNKNOWN_TYPE, QueryPath, QueryStats, rcode_name, type_name
from resolver.wire import EDNS, Question, parse_question, text_name

log = logging.getLogger(__name__)

Opener = Callable[[int, int], socket.socket]
# Given a sandbox id, the socket opener for upstreams named for that sandbox or its network:
# they are queried from inside the sandbox's namespace (R11).
SandboxOpeners = Callable[[str], Opener | None]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the resolver did with one query, for `netdns resolve` and metrics."""

    lookup: Lookup
    reply: bytes
    path: QueryPath  # LOCAL, CACHE, UPSTREAM, SERVFAIL or OVERLOAD
    upstream: str = ""
    elapsed: float = 0.0


class Resolver:
    def __init__(
        self,
        table: NameTable,
        forwarder: Forwarder,
        *,
        local_ttl: int = 5,
        rng: random.Random | None = None,
        sandbox_openers: SandboxOpeners | None = None,
        hot_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self.table = table
        self.forwarder = forwarder
        self.local_ttl = local_ttl
        self.rng = rng or random.Random()
        self.sandbox_openers = sandbox_openers
        self.stats = QueryStats()
        # Share of queries logged to netdns.query: 0 off, 1 every one (PUT /v1/querylog).
        self.query_sample = 0.0
        # hot_entries=0: no hot cache, every query takes the slow path.
        self.hot: HotCache | None = None
        if hot_entries > 0:
            self.hot = HotCache(hot_entries, default_upstreams=forwarder.default_servers)
            table.watch(self.hot.invalidate)

    def fast(self, sandbox_id: str, data: bytes, tcp: bool = False) -> bytes | None:
        """The reply from the hot cache, synchronously, or None: then `handle` answers."""
        hot = self.hot
        if hot is None:
            return None
        started = perf_counter_ns()
        reply = hot.answer(sandbox_id, data, tcp)
        if reply is not None:
            # Histogram.observe_ns inlined: this runs for most queries.
            elapsed = perf_counter_ns() - started
            latency = self.stats.hot
            latency.counts[elapsed.bit_length()] += 1
            latency.sum_ns += elapsed
            if self.query_sample:
                self._sample_hot(sandbox_id, data, reply, elapsed)
        return reply

    def start(self, sandbox_id: str, data: bytes, tcp: bool, respond: Respond) -> bool:
        """Take a UDP query that goes upstream: its reply goes to `respond` (now or later);
        False leaves the query to `handle` (see the module docstring)."""
        if tcp:
            return False  # TCP queries go upstream over TCP, in a task of their own anyway
        started = perf_counter_ns()
        hot = self.hot
        missed = hot.missed if hot is not None else None
        question = missed[1] if missed is not None and missed[0] is data else parse_question(data)
        if question is None:
            return False
        name = text_name(question[3])
        if name is None:
            return False
        qtype = question[2]
        lookup = self.table.lookup(sandbox_id, name, qtype)
        if lookup.outcome is not Outcome.FORWARD or lookup.upstreams.from_sandbox:
            return False
        generation = hot.generation if hot is not None else 0

        def done(result: ForwardResult) -> None:
            respond(self._forwarded(sandbox_id, data, question, name, result, started, generation))

        query = Query(data, question[3], question[1] + question[3][-4:], question[4])
        now = self.forwarder.start(
            query, lookup.upstreams, tcp=False, sandbox_id=sandbox_id, done=done
        )
        if now is not None:
            done(now)
        return True

    def _forwarded(
        self,
        sandbox_id: str,
        data: bytes,
        question: Question,
        name: str,
        result: ForwardResult,
        started: int,
        generation: int,
    ) -> bytes:
        """The reply to a query `start` took, fitted to UDP (R15), counted and maybe logged."""
        if result.path is QueryPath.CACHE and self.hot is not None:
            self.hot.put_forwarded(
                sandbox_id, data, result.reply, generation=generation,
                upstreams=tuple(self.forwarder.default_servers()),
            )  # fmt: skip
        edns = bool(question[4] & EDNS)
        reply = fit_udp_bytes(result.reply, data, question[3], edns, question[5])
        elapsed = perf_counter_ns() - started
        self.stats.record(question[2], reply[3] & 0x0F, result.path, elapsed)
        if self._sampled():
            self._log(sandbox_id, name, question[2], reply, result.path, result.upstream, elapsed)
        return reply

    async def handle(self, sandbox_id: str, data: bytes, tcp: bool) -> bytes | None:
        """The listener's handler: reply bytes, or None to drop the packet (R16)."""
        started = perf_counter_ns()
        parsed = parse_query(data)
        if parsed is None:
            self.stats.dropped += 1
            return None
        if isinstance(parsed, bytes):
            elapsed = perf_counter_ns() - started
            self.stats.record(UNKNOWN_TYPE, parsed[3] & 0x0F, QueryPath.INVALID, elapsed)
            if self._sampled():
                self._log(sandbox_id, "", UNKNOWN_TYPE, parsed, QueryPath.INVALID, "", elapsed)
            return parsed
        generation = self.hot.generation if self.hot is not None else 0
        decision = await self.decide(sandbox_id, parsed, data, tcp=tcp)
        if self.hot is not None:
            self._keep_hot(self.hot, sandbox_id, data, decision, generation)
        reply = decision.reply if tcp else fit_udp(decision.reply, parsed)
        elapsed = perf_counter_ns() - started
        qtype = parsed.q.qtype
        self.stats.record(qtype, reply[3] & 0x0F, decision.path, elapsed)
        if self._sampled():
            name = str(parsed.q.qname)
            self._log(sandbox_id, name, qtype, reply, decision.path, decision.upstream, elapsed)
        return reply

    # -- the sampled query log -------------------------------------------------------------

    def _sampled(self) -> bool:
        """Whether this query goes to the log (0: off, at the cost of one comparison)."""
        return self.query_sample > 0 and random.random() < self.query_sample

    def _sample_hot(self, sandbox_id: str, data: bytes, reply: bytes, elapsed: int) -> None:
        if random.random() >= self.query_sample:
            return
        try:
            question = DNSRecord.parse(data).q
            name, qtype = str(question.qname), question.qtype
        except Exception:  # the hot cache took it, so it parses; never fail a reply for a log
            name, qtype = "", UNKNOWN_TYPE
        self._log(sandbox_id, name, qtype, reply, QueryPath.HOT, "", elapsed)

    def _log(
        self,
        sandbox_id: str,
        name: str,
        qtype: int,
        reply: bytes,
        path: str,
        upstream: str,
        elapsed: int,
    ) -> None:
        log_query(
            container=self.table.view(sandbox_id).sandbox.name if sandbox_id else "",
            qname=name, qtype=type_name(qtype), rcode=rcode_name(reply[3] & 0x0F),
            path=str(path), upstream=upstream, elapsed_us=elapsed // 1000,
        )  # fmt: skip

    def _keep_hot(
        self, hot: HotCache, sandbox_id: str, data: bytes, decision: Decision, generation: int
    ) -> None:
        """Leave the answer in the hot cache when the next query for it can be served from there.

        Local answers are kept at once. Forwarded ones only when the answer cache served them,
        so a name asked once (W5: many unknown names) costs no second encoding.
        """
        if decision.path is QueryPath.LOCAL:
            hot.put_local(
                sandbox_id, data, decision.lookup, ttl=self.local_ttl, rng=self.rng,
                generation=generation,
            )  # fmt: skip
        elif decision.path is QueryPath.CACHE:
            own = decision.lookup.upstreams.servers
            hot.put_forwarded(
                sandbox_id, data, decision.reply, generation=generation,
                upstreams=None if own else tuple(self.forwarder.default_servers()),
            )  # fmt: skip

    async def decide(
        self, sandbox_id: str, request: DNSRecord, data: bytes, *, tcp: bool
    ) -> Decision:
        lookup = self.lookup(sandbox_id, request)
        if lookup.outcome is not Outcome.FORWARD:
            reply = bad_edns_version(request) or local_reply(
                request, lookup, ttl=self.local_ttl, rng=self.rng
            )
            return Decision(lookup, reply.pack(), QueryPath.LOCAL)
        opener, scope = None, ""
        if lookup.upstreams.from_sandbox:
            # The same address named by two sandboxes may be two servers, one in each namespace:
            # they share neither cache entries nor health memory.
            scope = sandbox_id
            if self.sandbox_openers is not None:
                opener = self.sandbox_openers(sandbox_id)
        result = await self.forwarder.forward(
            request, data, lookup.upstreams, tcp=tcp, opener=opener, cache_scope=scope,
            sandbox_id=sandbox_id,
        )  # fmt: skip
        return Decision(lookup, result.reply, result.path, result.upstream, result.elapsed)

    def lookup(self, sandbox_id: str, request: DNSRecord) -> Lookup:
        qname = request.q.qname
        if request.q.qclass != CLASS.IN or any(b"." in label for label in qname.label):
            # Container names exist only in class IN, and never hold a dot inside one label
            # (`web\.appnet` is not `web.appnet`): such questions belong to the upstream.
            return self.table.not_local(sandbox_id, str(qname), request.q.qtype)
        return self.table.lookup(sandbox_id, str(request.q.qname), request.q.qtype)


__all__ = ["Decision", "Opener", "Resolver", "Upstreams"]
