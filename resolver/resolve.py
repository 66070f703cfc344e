"""The Resolver: one query's way from bytes in to bytes out, for one sandbox's view.

Parses (R16), asks the name table (R1-R8, R12, R12b), builds the local answer or hands the
query to the forwarder (R11, R13, R14), and fits UDP replies to the client's size (R15). The
listener (server.py) owns transport; this module owns the decision.

`fast` is the same decision without parsing: the hot cache (resolver/wire.py) answers from
encoded replies the slow path left there, and the name table's events drop them (R18).
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass

from dnslib import CLASS, DNSRecord

from resolver.answer import bad_edns_version, fit_udp, local_reply, parse_query
from resolver.forward import Forwarder
from resolver.names import Lookup, NameTable, Outcome, Upstreams
from resolver.wire import DEFAULT_MAX_ENTRIES, HotCache

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
    path: str  # "local", "cache", "upstream", "servfail", "overload"
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
        # hot_entries=0: no hot cache, every query takes the slow path.
        self.hot: HotCache | None = None
        if hot_entries > 0:
            self.hot = HotCache(hot_entries, default_upstreams=forwarder.default_servers)
            table.watch(self.hot.invalidate)

    def fast(self, sandbox_id: str, data: bytes, tcp: bool = False) -> bytes | None:
        """The reply from the hot cache, synchronously, or None: then `handle` answers."""
        hot = self.hot
        return None if hot is None else hot.answer(sandbox_id, data, tcp)

    async def handle(self, sandbox_id: str, data: bytes, tcp: bool) -> bytes | None:
        """The listener's handler: reply bytes, or None to drop the packet (R16)."""
        parsed = parse_query(data)
        if parsed is None or isinstance(parsed, bytes):
            return parsed
        generation = self.hot.generation if self.hot is not None else 0
        decision = await self.decide(sandbox_id, parsed, data, tcp=tcp)
        if self.hot is not None:
            self._keep_hot(self.hot, sandbox_id, data, decision, generation)
        return decision.reply if tcp else fit_udp(decision.reply, parsed)

    def _keep_hot(
        self, hot: HotCache, sandbox_id: str, data: bytes, decision: Decision, generation: int
    ) -> None:
        """Leave the answer in the hot cache when the next query for it can be served from there.

        Local answers are kept at once. Forwarded ones only when the answer cache served them,
        so a name asked once (W5: many unknown names) costs no second encoding.
        """
        if decision.path == "local":
            hot.put_local(
                sandbox_id, data, decision.lookup, ttl=self.local_ttl, rng=self.rng,
                generation=generation,
            )  # fmt: skip
        elif decision.path == "cache":
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
            return Decision(lookup, reply.pack(), "local")
        opener, scope = None, ""
        if lookup.upstreams.from_sandbox:
            # The same address named by two sandboxes may be two servers, one in each namespace:
            # they share neither cache entries nor health memory.
            scope = sandbox_id
            if self.sandbox_openers is not None:
                opener = self.sandbox_openers(sandbox_id)
        result = await self.forwarder.forward(
            request, data, lookup.upstreams, tcp=tcp, opener=opener, cache_scope=scope
        )
        return Decision(lookup, result.reply, result.path, result.upstream, result.elapsed)

    def lookup(self, sandbox_id: str, request: DNSRecord) -> Lookup:
        qname = request.q.qname
        if request.q.qclass != CLASS.IN or any(b"." in label for label in qname.label):
            # Container names exist only in class IN, and never hold a dot inside one label
            # (`web\.appnet` is not `web.appnet`): such questions belong to the upstream.
            return self.table.not_local(sandbox_id, str(qname), request.q.qtype)
        return self.table.lookup(sandbox_id, str(request.q.qname), request.q.qtype)


__all__ = ["Decision", "Opener", "Resolver", "Upstreams"]
