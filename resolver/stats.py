"""What the query path counts: plain ints kept where the work happens, read at scrape time.

`QueryStats` is the Resolver's: a latency `Histogram` per path and a count per type, rcode and
path for the slow path; the hot cache counts its hits per entry (resolver/hot.py), the
forwarder and the caches their own counters. A hot-path query costs two perf_counter_ns calls
and one bucket increment here; nothing is locked, labelled or formatted until the program's
collector (netdns/metrics.py) reads them all at scrape time, on the loop's thread like every
writer, so no counter is read half-updated.

Histograms count in power-of-two nanosecond buckets: a duration of `ns` goes to bucket
`ns.bit_length()` (2^(k-1) <= ns < 2^k), one int operation and no search. They are exported
as cumulative buckets at every other power of two (le 1.024 us, 4.096 us, ... 4.29 s); a
duration of exactly 2^k ns counts one bucket up, a 1 ns error.
"""

from __future__ import annotations

import collections
import enum

from dnslib import QTYPE, RCODE

BUCKETS = 65  # bit_length of a non-negative 64-bit int: 0..64
# The exported upper bounds: 2^k ns for every other k from 2^10 (about 1 us) to 2^32 (4.3 s).
EXPORTED_POWERS = tuple(range(10, 33, 2))
UNKNOWN_TYPE = -1  # a query whose type could not be read (FORMERR, NOTIMP)


class QueryPath(enum.StrEnum):
    """How a query was answered: the `path` label (and Decision.path's values)."""

    HOT = "hot"  # the hot cache (resolver/hot.py), local or forwarded, without parsing
    LOCAL = "local"  # the name table (R2-R8, R12)
    CACHE = "cache"  # the forwarded-answer cache (R13)
    UPSTREAM = "upstream"  # forwarded and answered (R11)
    SERVFAIL = "servfail"  # forwarded, no upstream answered: our SERVFAIL
    OVERLOAD = "overload"  # refused by the in-flight cap (R14): our SERVFAIL at once
    INVALID = "invalid"  # malformed or unsupported: FORMERR or NOTIMP (R16)


class Histogram:
    """Durations in power-of-two nanosecond buckets (see the module docstring)."""

    __slots__ = ("counts", "sum_ns")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.sum_ns = 0

    def observe_ns(self, ns: int) -> None:
        # The hot path inlines these two lines instead of calling this.
        self.counts[ns.bit_length()] += 1
        self.sum_ns += ns

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: (upper bound in seconds, observations at or below), +Inf last."""
        buckets: list[tuple[str, float]] = []
        below = 0
        taken = 0
        for power in EXPORTED_POWERS:
            below += sum(self.counts[taken : power + 1])
            taken = power + 1
            buckets.append((repr((1 << power) / 1e9), float(below)))
        buckets.append(("+Inf", float(self.count)))
        return buckets


class QueryStats:
    """What the Resolver counts per query (slow path: per type, rcode and path)."""

    __slots__ = ("counts", "dropped", "hot", "latency")

    def __init__(self) -> None:
        self.hot = Histogram()  # the hot cache's answers (their type and rcode: per entry)
        self.latency: dict[str, Histogram] = collections.defaultdict(Histogram)
        self.counts: collections.Counter[tuple[int, int, str]] = collections.Counter()
        self.dropped = 0  # given no reply at all (a response, too short: R16)

    def record(self, qtype: int, rcode: int, path: str, ns: int) -> None:
        self.counts[(qtype, rcode, path)] += 1
        self.latency[path].observe_ns(ns)


def type_name(qtype: int) -> str:
    return "unknown" if qtype == UNKNOWN_TYPE else str(QTYPE.get(qtype, qtype))


def rcode_name(rcode: int) -> str:
    return str(RCODE.get(rcode, rcode))
