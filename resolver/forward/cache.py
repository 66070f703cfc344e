"""AnswerCache: forwarded answers kept per upstream set, as bytes, with TTLs counted down (R13).

Positive answers live for their smallest TTL; NXDOMAIN and NODATA for min(SOA TTL, SOA
MINIMUM) when the authority section has an SOA, else not at all (RFC 2308). Failures,
truncated replies and TTL 0 are never cached. The cache is an LRU bounded in entries.

An entry is the upstream's reply as it came, read once (resolver/wire.py) for its TTLs'
offsets and lifetime; nothing is decoded. A hit is the client's id, the stored flags with the
client's RD bit, the counts, the client's question bytes exactly as written, then the stored
records with every TTL lowered by the time spent here (the lowered copy is kept for the second
it stays right). Owner names compressed to a pointer into the question take the client's
spelling with it; an owner written out in full and equal to the question is overwritten with
the client's spelling, so both read as the client asked (R2). Local names never come here:
they answer from the name table.
"""

from __future__ import annotations

import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from dnslib import QTYPE, DNSBuffer, DNSRecord

from resolver.wire import (
    AD,
    CD,
    DO,
    DO_FLAG,
    EDNS,
    HEADER_SIZE,
    RD_BIT,
    cache_ttl,
    question_end,
    read_records,
)

DEFAULT_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class CacheKey:
    upstreams: tuple[str, ...]  # who answered: the upstream set (and where it is seen from)
    question: bytes  # the question's name on the wire lowercased, then its type and class
    bits: int  # EDNS | DO | CD | AD


def request_bits(request: DNSRecord) -> int:
    """CacheKey.bits of a parsed query (the hot path reads the same bits from the bytes)."""
    opt = next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)
    bits = (CD if request.header.cd else 0) | (AD if request.header.ad else 0)
    if opt is not None:
        bits |= EDNS | (DO if opt.ttl & DO_FLAG else 0)
    return bits


def wire_question(request: DNSRecord) -> bytes:
    """The question of a parsed query as CacheKey.question: lowercased wire name, type, class."""
    name = b"".join(bytes([len(label)]) + label for label in request.q.qname.label) + b"\x00"
    return name.lower() + struct.pack("!HH", request.q.qtype, request.q.qclass)


def cache_key(upstreams: tuple[str, ...], request: DNSRecord) -> CacheKey:
    return CacheKey(upstreams, wire_question(request), request_bits(request))


@dataclass(slots=True)
class _Entry:
    flags: int  # the stored reply's flags, RD clear
    counts: bytes  # QDCOUNT..ARCOUNT
    tail: bytes  # every record after the question, TTLs as stored
    ttl_offsets: tuple[int, ...]  # from the tail's start
    ttls: tuple[int, ...]
    owner_copies: tuple[int, ...]  # uncompressed owners equal to the question, from the tail
    stored_at: float
    expires_at: float
    aged: bytes = b""  # the tail with TTLs lowered by `aged_for` seconds
    aged_for: int = -1

    def tail_after(self, elapsed: int) -> bytes:
        if elapsed != self.aged_for:
            if elapsed == 0:
                self.aged = self.tail
            else:
                tail = bytearray(self.tail)
                for offset, ttl in zip(self.ttl_offsets, self.ttls, strict=True):
                    struct.pack_into("!I", tail, offset, max(0, ttl - elapsed))
                self.aged = bytes(tail)
            self.aged_for = elapsed
        return self.aged


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
            end = question_end(reply)
            records = read_records(reply, end)
        except (ValueError, IndexError, struct.error):
            return False
        ttl = cache_ttl(reply, records)
        if ttl <= 0:
            return False
        now = self.clock()
        self._entries[key] = _Entry(
            flags=(reply[2] & ~RD_BIT) << 8 | reply[3],
            counts=reply[4:HEADER_SIZE],
            tail=reply[end:],
            ttl_offsets=tuple(o - end for o in records.ttl_offsets),
            ttls=records.ttls,
            owner_copies=tuple(o - end for o in records.owner_copies),
            stored_at=now,
            expires_at=now + ttl,
        )
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return True

    def answer(self, key: CacheKey, query: bytes, question: bytes) -> bytes | None:
        """The cached reply for the query QUERY (raw; its id and RD are used) whose question
        bytes, as the client wrote them, are QUESTION; None on a miss."""
        entry = self._entries.get(key)
        now = self.clock()
        if entry is None or now >= entry.expires_at:
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        tail = entry.tail_after(int(now - entry.stored_at))
        if entry.owner_copies:
            name = question[:-4]
            spelled = bytearray(tail)
            for offset in entry.owner_copies:
                spelled[offset : offset + len(name)] = name
            tail = bytes(spelled)
        flags = entry.flags | (query[2] & RD_BIT) << 8
        return query[:2] + flags.to_bytes(2, "big") + entry.counts + question + tail

    def get(self, key: CacheKey, request: DNSRecord) -> bytes | None:
        """The cached reply rebuilt for the parsed query `request`, or None on a miss."""
        buffer = DNSBuffer()
        request.q.pack(buffer)
        head = struct.pack("!HH", request.header.id, request.header.rd << 8)
        return self.answer(key, head, bytes(buffer.data))
