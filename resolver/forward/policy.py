"""Which upstream to ask, in what order, for how long, and over which transport (R11).

At most MAX_UPSTREAMS are tried, in order. A timeout, SERVFAIL or REFUSED moves on to the
next; any other rcode is the answer. `Health` remembers upstreams that keep failing and puts
them last for a while, then lets one query probe each back. Each try gets an equal share of the
time left, so when every upstream fails the client still gets SERVFAIL within the budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from dnslib import RCODE

from resolver.forward.upstream import Opener, Server, UpstreamFailed, exchange_tcp, exchange_udp
from resolver.wire import TC_BIT, rcode_of

MAX_UPSTREAMS = 3
FAILOVER_RCODES = frozenset({RCODE.SERVFAIL, RCODE.REFUSED})

K = TypeVar("K", bound=Hashable)


def moves_on(reply: bytes) -> bool:
    """Whether this reply sends the query to the next upstream instead of to the client."""
    return rcode_of(reply) in FAILOVER_RCODES


def try_timeout(remaining: float, upstreams_left: int) -> float:
    """An equal share of the time left for each upstream still to try."""
    return max(0.0, remaining) / max(1, upstreams_left)


@dataclass(slots=True)
class _Failing:
    count: int  # failures in a row
    until: float = 0.0  # put last until then (when count reached the limit)


class Health:
    """Failures in a row per upstream; an upstream at `max_failures` is put last for `hold` s.

    When the hold ends, the next query tries it in its own place (a probe) and the hold starts
    again at once, so only one query per hold period pays for a still-dead upstream. A success
    forgets the failures; another failure keeps it last for one more hold.
    """

    def __init__(
        self,
        *,
        max_failures: int = 3,
        hold: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.hold = hold
        self.clock = clock
        self._failing: dict[Hashable, _Failing] = {}

    def order(self, upstreams: Sequence[K]) -> list[K]:
        """Upstreams in the order to try them: healthy (and due probes) first, held ones last."""
        if not self._failing:
            return list(upstreams)  # nothing failing: the order as given, no clock read
        now = self.clock()
        first: list[K] = []
        last: list[K] = []
        for upstream in upstreams:
            failing = self._failing.get(upstream)
            if failing is None or failing.count < self.max_failures:
                first.append(upstream)
            elif now >= failing.until:
                failing.until = now + self.hold  # this query is the probe; others keep it last
                first.append(upstream)
            else:
                last.append(upstream)
        return first + last

    def held(self, upstream: Hashable) -> bool:
        failing = self._failing.get(upstream)
        return (
            failing is not None
            and failing.count >= self.max_failures
            and self.clock() < failing.until
        )

    def down(self) -> set[Hashable]:
        """The upstreams that failed `max_failures` times in a row (held last, or probed)."""
        return {k for k, failing in self._failing.items() if failing.count >= self.max_failures}

    def failed(self, upstream: Hashable) -> None:
        failing = self._failing.setdefault(upstream, _Failing(0))
        failing.count += 1
        if failing.count >= self.max_failures:
            failing.until = self.clock() + self.hold

    def succeeded(self, upstream: Hashable) -> None:
        self._failing.pop(upstream, None)

    def forget(self, scope: Hashable) -> None:
        """Drop what is remembered of the upstreams keyed (SCOPE, server): a sandbox that is
        gone (its own upstreams' failures would otherwise stay until they answered again)."""
        for key in [k for k in self._failing if isinstance(k, tuple) and k[0] == scope]:
            del self._failing[key]


async def ask(
    server: Server,
    query: bytes,
    *,
    tcp: bool,
    timeout: float,
    opener: Opener | None = None,
) -> bytes:
    """One upstream's reply to `query` over the client's transport, or UpstreamFailed.

    A UDP reply with TC set is asked again over TCP in the time left; if that fails, the
    truncated reply is the answer (the client can retry over TCP itself).
    """
    if tcp:
        return await exchange_tcp(server, query, timeout=timeout, opener=opener)
    deadline = time.monotonic() + timeout
    reply = await exchange_udp(server, query, timeout=timeout, opener=opener)
    if not reply[2] & TC_BIT:
        return reply
    try:
        return await exchange_tcp(
            server, query, timeout=max(0.0, deadline - time.monotonic()), opener=opener
        )
    except UpstreamFailed:
        return reply
