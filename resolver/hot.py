"""The hot path: answers straight from bytes, without parsing a query into objects.

The query's header and question are read by resolver/wire.py's `parse_question` (None for
anything the slow path must see: resolver/resolve.py, dnslib, the rules, the forwarder). What it
returns depends only on the bytes after the id, so the hot cache keeps it for the last
MAX_PARSED queries by those bytes: a query asked again under a new id is not parsed again
(12% more q/s on bench W1).

`HotCache` keeps finished answers encoded once by the slow path, keyed by (sandbox, lowercased
question name on the wire, type, EDNS/DO/CD/AD bits). A reply is the client's own id, the flags
(QR, RA, the client's RD, the rcode), the counts, the client's own question bytes, then the
entry's tail: every record after the question. dnslib writes each answer owner as a pointer to
offset 12, the question name, so the owner takes the client's case (R2) for free; an entry whose
tail points anywhere else inside the question is not kept (it would depend on the case).

Local answers (R2-R8, R12, R12b) live until an event changes a name they depended on or the
view of their sandbox (`NameTable.change_of`), never by time. Shared names (R4) keep a few
orders shuffled in advance and give the next one on each query. Forwarded answers the answer
cache has already served once (R13) are kept too, with their TTLs counted down at precomputed
offsets, until their TTL runs out or the default upstreams change. Replies over the client's UDP
limit are declined: the slow path truncates them (R15). The cache holds at most `max_entries`;
when full, the oldest entry goes first (insertion order, no bookkeeping per hit). Each entry
counts the replies it served (one increment, the only one per hit); the metrics read them by
question type and rcode, and an entry's count outlives it (`hits_by_answer`).
"""

from __future__ import annotations

import logging
import random
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dnslib import DNSRecord

from resolver.answer import local_reply
from resolver.forward.message import parse_message
from resolver.lookup import Change, Lookup, Outcome, lookup_dependencies
from resolver.wire import (
    HEADER_SIZE,
    RD,
    Question,
    cache_ttl,
    parse_question,
    read_records,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES = 20_000  # about 1 KiB each (one order, measured): ~20 MiB at most
SHUFFLED_ORDERS = 8  # R4: orders kept per shared name, given in turn
MAX_PARSED = 4096  # queries whose parsed question is kept (a few hundred bytes each)
DEFAULTS_CHECK_INTERVAL = 1.0  # seconds between looks at the default upstreams


Key = tuple[str, bytes, int, int]  # (sandbox id, lowercased qname on the wire, qtype, bits)


# -- entries ---------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Entry:
    headers: tuple[bytes, bytes]  # flags and counts, for RD clear / RD set
    tails: tuple[bytes, ...]  # everything after the question; R4: one per order
    size: int  # the whole reply's length
    dependencies: tuple[str, ...]
    turn: int = 0
    # Forwarded answers only: TTLs counted down from `stored_at`, gone at `expires_at`.
    forwarded: bool = False
    stored_at: float = 0.0
    expires_at: float = float("inf")
    elapsed: int = 0
    ttl_offsets: tuple[int, ...] = ()  # from the tail's start
    ttls: tuple[int, ...] = ()
    # The daemon-level upstreams it came from; None when the sandbox or network names its own.
    upstreams: tuple[str, ...] | None = None
    hits: int = 0  # replies served from it (metrics: by type and rcode, see hits_by_answer)

    @property
    def rcode(self) -> int:
        return self.headers[0][1] & 0x0F


def _headers(reply: bytes) -> tuple[bytes, bytes]:
    flags = (reply[2] << 8 | reply[3]) & ~RD
    counts = reply[4:12]
    return struct.pack("!H", flags) + counts, struct.pack("!H", flags | RD) + counts


def _lowered(data: bytes, question: Question) -> bytes:
    """The query with its name lowercased: entries are built for every spelling of it at once."""
    name = question[1]
    return data[:HEADER_SIZE] + name + data[HEADER_SIZE + len(name) :]


@dataclass(slots=True)
class HotStats:
    # Hits are counted on each entry instead (one increment either way): HotCache.hits.
    misses: int = 0
    declined: int = 0  # an entry was there but the slow path had to answer (size, expiry)
    stored: int = 0
    evicted: int = 0
    invalidated: int = 0


class HotCache:
    """Encoded answers by (sandbox, lowercased name, type, bits); see the module docstring."""

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        *,
        default_upstreams: Callable[[], Sequence[str]] = tuple,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        # The daemon-level upstreams (R11): forwarded entries made for others are dropped.
        self.default_upstreams = default_upstreams
        self.clock = clock
        self.stats = HotStats()
        # Bumped by every invalidation: an answer worked out before one is not stored after it.
        self.generation = 0
        self._entries: dict[Key, _Entry] = {}
        self._by_name: dict[str, set[Key]] = {}
        self._by_sandbox: dict[str, set[Key]] = {}
        self._defaults: tuple[str, ...] = ()
        self._defaults_checked_at = float("-inf")
        # Hits of entries gone, by (qtype, rcode): kept so the counts only grow.
        self._gone_hits: dict[tuple[int, int], int] = {}
        # The last query missed and its question: the resolver's `start`, which takes that
        # same bytes object next, reads the question from here instead of parsing it again.
        self.missed: tuple[bytes, Question] | None = None
        self._parsed: dict[bytes, Question] = {}  # by the query's bytes after its id

    @property
    def size(self) -> int:
        return len(self._entries)

    def hits_by_answer(self) -> dict[tuple[int, int], int]:
        """Replies served so far by (qtype, rcode): the live entries' hits and the gone ones'."""
        counts = dict(self._gone_hits)
        for key, entry in self._entries.items():
            if entry.hits:
                answer = (key[2], entry.rcode)
                counts[answer] = counts.get(answer, 0) + entry.hits
        return counts

    @property
    def hits(self) -> int:
        return sum(self.hits_by_answer().values())

    # -- the hot path --------------------------------------------------------------------------

    def answer(self, sandbox_id: str, data: bytes, tcp: bool = False) -> bytes | None:
        """The reply to `data` from a ready entry, or None: the slow path answers it."""
        # The question is a pure function of the bytes after the id: a repeated query (the
        # common case: containers ask the same names again and again) is not parsed again.
        after_id = data[2:]
        question = self._parsed.get(after_id)
        if question is None:
            question = parse_question(data)
            if question is None:
                return None
            if len(self._parsed) >= MAX_PARSED:
                self._parsed.clear()
            self._parsed[after_id] = question
        rd, name, qtype, question_bytes, bits, limit = question
        entry = self._entries.get((sandbox_id, name, qtype, bits))
        if entry is None:
            self.stats.misses += 1
            self.missed = (data, question)
            return None
        if entry.forwarded:
            tail = self._aged_tail(entry, (sandbox_id, name, qtype, bits))
            if tail is None:
                self.stats.declined += 1
                return None
        elif len(entry.tails) == 1:
            tail = entry.tails[0]
        else:
            entry.turn = turn = (entry.turn + 1) % len(entry.tails)
            tail = entry.tails[turn]
        if entry.size > limit and not tcp:
            self.stats.declined += 1
            return None
        entry.hits += 1
        return data[:2] + entry.headers[rd] + question_bytes + tail

    def _aged_tail(self, entry: _Entry, key: Key) -> bytes | None:
        now = self.clock()
        if now >= entry.expires_at:
            self._drop(key)
            return None
        if entry.upstreams is not None:
            if now - self._defaults_checked_at >= DEFAULTS_CHECK_INTERVAL:
                self._check_defaults(now)
            if entry.upstreams != self._defaults:
                self._drop(key)
                return None
        elapsed = int(now - entry.stored_at)
        if elapsed != entry.elapsed:
            tail = bytearray(entry.tails[0])
            # The first tail holds the TTLs as stored; only the aged copy changes.
            for offset, ttl in zip(entry.ttl_offsets, entry.ttls, strict=True):
                struct.pack_into("!I", tail, offset, max(0, ttl - elapsed))
            entry.elapsed = elapsed
            entry.tails = (entry.tails[0], bytes(tail))
        return entry.tails[-1]

    def _check_defaults(self, now: float) -> None:
        """Read the default upstreams again (R11: resolv.conf may change), at most once a second.

        Entries made for other upstreams are dropped when next asked for (or evicted)."""
        self._defaults_checked_at = now
        self._defaults = tuple(self.default_upstreams())

    # -- filling (from the slow path) ----------------------------------------------------------

    def put_local(
        self,
        sandbox_id: str,
        data: bytes,
        lookup: Lookup,
        *,
        ttl: int,
        rng: random.Random,
        generation: int,
    ) -> bool:
        """Keep the local answer to `data` (already answered by the slow path); whether kept.

        `generation` is this cache's generation read before the lookup: if an event came
        between, the lookup may be stale and nothing is kept.
        """
        if generation != self.generation or lookup.outcome is Outcome.FORWARD:
            return False
        question = parse_question(data)
        if question is None:
            return False
        request = DNSRecord.parse(_lowered(data, question))
        question_end = HEADER_SIZE + len(question[3])
        records = len(lookup.addresses) + len(lookup.ptr) + len(lookup.srv)
        tails: dict[bytes, None] = {}
        reply = b""
        # R4: a shared name keeps up to SHUFFLED_ORDERS of its orders (all when there are fewer).
        for _ in range(SHUFFLED_ORDERS * 3 if records > 1 else 1):
            reply = bytes(local_reply(request, lookup, ttl=ttl, rng=rng).pack())
            if read_records(reply, question_end).question_pointers:
                return False
            tails[reply[question_end:]] = None
            if len(tails) == SHUFFLED_ORDERS:
                break
        entry = _Entry(
            headers=_headers(reply),
            tails=tuple(tails),
            size=len(reply),
            dependencies=lookup_dependencies(str(request.q.qname), question[2]),
        )
        self._put((sandbox_id, question[1], question[2], question[4]), entry)
        return True

    def put_forwarded(
        self,
        sandbox_id: str,
        data: bytes,
        reply: bytes,
        *,
        upstreams: tuple[str, ...] | None,
        generation: int,
    ) -> bool:
        """Keep a forwarded answer the answer cache served (R13); whether kept.

        Its TTLs count down from now; it goes when the smallest runs out (less a second, as the
        reply's TTLs were already rounded down), or when the default upstreams are no longer
        `upstreams` (pass the defaults it came from, or None for a sandbox's own upstreams).
        """
        if generation != self.generation:
            return False
        question = parse_question(data)
        if question is None:
            return False
        try:
            # Each name decoded once: dnslib's own parse is quadratic on pointer chains.
            record = parse_message(reply)
            if len(record.questions) != 1:
                return False
            lifetime = cache_ttl(reply, read_records(reply, HEADER_SIZE + len(question[3]))) - 1
            if lifetime <= 0:
                return False
            # Re-encoded behind the lowercased question, so that names equal to the question
            # become pointers to it and take each client's spelling.
            lowered = DNSRecord.parse(_lowered(data, question))
            record.header.rd = 0
            record.questions = lowered.questions
            for rr in record.rr:
                if rr.rname == lowered.q.qname:
                    rr.rname = lowered.q.qname
            packed = bytes(record.pack())
            question_end = HEADER_SIZE + len(question[3])
            records = read_records(packed, question_end)
        except Exception as exc:  # whatever dnslib cannot redo stays off the hot path
            log.debug("forwarded reply not kept on the hot path: %s", exc)
            return False
        now = self.clock()
        tail = packed[question_end:]
        entry = _Entry(
            headers=_headers(packed),
            tails=(tail, tail),
            size=len(packed),
            dependencies=lookup_dependencies(str(lowered.q.qname), question[2]),
            forwarded=True,
            stored_at=now,
            expires_at=now + lifetime,
            ttl_offsets=tuple(o - question_end for o in records.ttl_offsets),
            ttls=records.ttls,
            upstreams=upstreams,
        )
        self._put((sandbox_id, question[1], question[2], question[4]), entry)
        return True

    def _put(self, key: Key, entry: _Entry) -> None:
        self._drop(key)
        while len(self._entries) >= self.max_entries:
            self._drop(next(iter(self._entries)))
            self.stats.evicted += 1
        self._entries[key] = entry
        for name in entry.dependencies:
            self._by_name.setdefault(name, set()).add(key)
        self._by_sandbox.setdefault(key[0], set()).add(key)
        self.stats.stored += 1

    def _drop(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        if entry.hits:
            self._forget_hits(key, entry)
        for name in entry.dependencies:
            keys = self._by_name.get(name)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_name[name]
        keys = self._by_sandbox.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_sandbox[key[0]]

    # -- invalidation (NameTable.watch) --------------------------------------------------------

    def invalidate(self, change: Change) -> None:
        """Drop every entry `change` may make wrong; called before the table changes."""
        self.generation += 1
        if change.everything:
            self.stats.invalidated += len(self._entries)
            self.clear()
            return
        doomed: set[Key] = set()
        for name in change.names:
            doomed.update(self._by_name.get(name, ()))
        for sandbox_id in change.sandboxes:
            doomed.update(self._by_sandbox.get(sandbox_id, ()))
        for key in doomed:
            self._drop(key)
        self.stats.invalidated += len(doomed)

    def _forget_hits(self, key: Key, entry: _Entry) -> None:
        answer = (key[2], entry.rcode)
        self._gone_hits[answer] = self._gone_hits.get(answer, 0) + entry.hits

    def clear(self) -> None:
        for key, entry in self._entries.items():
            if entry.hits:
                self._forget_hits(key, entry)
        self._entries.clear()
        self._by_name.clear()
        self._by_sandbox.clear()
