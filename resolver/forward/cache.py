"""AnswerCache: forwarded answers kept per upstream set, with TTLs counted down (R13).

Positive answers live for their smallest TTL; NXDOMAIN and NODATA for min(SOA TTL, SOA
MINIMUM) when the authority section has an SOA, else not at all (RFC 2308). Failures,
truncated replies and TTL 0 are never cached. The cache is an LRU bounded in entries. A hit
is rebuilt for the client: its id, its RD bit, its question exactly as written (case kept, also
on answer owner names equal to the question) and every TTL lowered by the time spent here.
Local names never come here: they answer from the name table.
"""

from __future__ import annotations

import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from dnslib import QTYPE, RCODE, RR, DNSError, DNSHeader, DNSRecord

from resolver.forward.message import parse_message

DEFAULT_MAX_ENTRIES = 10_000
DO_BIT = 0x8000  # in the OPT record's TTL field (RFC 6891)
CACHEABLE_RCODES = frozenset({RCODE.NOERROR, RCODE.NXDOMAIN})


@dataclass(frozen=True, slots=True)
class CacheKey:
    upstreams: tuple[str, ...]  # who answered: the upstream set (and where it is seen from)
    qname: str  # lowercased
    qtype: int
    qclass: int
    edns: bool  # the client sent an OPT record: the reply carries one too
    do: bool  # DNSSEC OK: the reply carries signatures
    cd: bool  # checking disabled: the reply may hold data that failed validation
    ad: bool  # the client understands AD: an upstream sets AD only then (RFC 6840 5.7)


def cache_key(upstreams: tuple[str, ...], request: DNSRecord) -> CacheKey:
    opt = next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)
    return CacheKey(
        upstreams=upstreams,
        qname=str(request.q.qname).lower(),
        qtype=request.q.qtype,
        qclass=request.q.qclass,
        edns=opt is not None,
        do=opt is not None and bool(opt.ttl & DO_BIT),
        cd=bool(request.header.cd),
        ad=bool(request.header.ad),
    )


def _records(reply: DNSRecord) -> list[RR]:
    """Every RR whose TTL means time; the OPT record's TTL field holds flags instead."""
    return [rr for rr in (*reply.rr, *reply.auth, *reply.ar) if rr.rtype != QTYPE.OPT]


def _is_negative(reply: DNSRecord) -> bool:
    """NXDOMAIN, or NODATA: no answer record of the asked type (a CNAME chain may precede it)."""
    if reply.header.rcode == RCODE.NXDOMAIN:
        return True
    if reply.q.qtype == QTYPE.ANY:
        return not reply.rr
    return not any(rr.rtype == reply.q.qtype for rr in reply.rr)


def cache_ttl(reply: DNSRecord) -> int:
    """How long `reply` may be cached, in seconds; 0 when it must not be."""
    if reply.header.tc or reply.header.rcode not in CACHEABLE_RCODES:
        return 0
    ttls = [rr.ttl for rr in _records(reply)]
    if _is_negative(reply):
        soa = next((rr for rr in reply.auth if rr.rtype == QTYPE.SOA), None)
        if soa is None:
            return 0  # RFC 2308: without an SOA a negative answer is not cached
        ttls.append(soa.rdata.times[-1])  # the SOA MINIMUM field
    return max(0, min(ttls, default=0))


@dataclass(slots=True)
class _Entry:
    reply: DNSRecord
    stored_at: float
    expires_at: float


def _aged(rr: RR, elapsed: int, owner: object | None = None) -> RR:
    ttl = rr.ttl if rr.rtype == QTYPE.OPT else max(0, rr.ttl - elapsed)
    return RR(owner or rr.rname, rr.rtype, rr.rclass, ttl, rr.rdata)


class AnswerCache:
    """Bounded LRU of forwarded replies; `hits`, `misses` and `size` are for metrics."""

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()

    @property
    def size(self) -> int:
        return len(self._entries)

    def put(self, key: CacheKey, reply: bytes) -> bool:
        """Keep `reply` under `key` if it may be cached; whether it was."""
        try:
            record = parse_message(reply)
        except (DNSError, ValueError, IndexError, UnicodeDecodeError, struct.error):
            return False
        ttl = cache_ttl(record)
        if ttl <= 0:
            return False
        now = self.clock()
        self._entries[key] = _Entry(record, now, now + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return True

    def get(self, key: CacheKey, request: DNSRecord) -> bytes | None:
        """The cached reply rebuilt for `request`, or None on a miss."""
        entry = self._entries.get(key)
        now = self.clock()
        if entry is None or now >= entry.expires_at:
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return self._rebuild(entry, request, int(now - entry.stored_at)).pack()

    @staticmethod
    def _rebuild(entry: _Entry, request: DNSRecord, elapsed: int) -> DNSRecord:
        stored = entry.reply
        header = DNSHeader(id=request.header.id, bitmap=stored.header.bitmap)
        header.rd = request.header.rd
        qname = request.q.qname
        reply = DNSRecord(header, q=request.q)
        # DNSLabel equality is case-insensitive: owners equal to the question take its spelling.
        reply.rr = [_aged(rr, elapsed, qname if rr.rname == qname else None) for rr in stored.rr]
        reply.auth = [_aged(rr, elapsed) for rr in stored.auth]
        reply.ar = [_aged(rr, elapsed) for rr in stored.ar]
        return reply
