"""The event log behind `GET /v1/events` and `netdns events`: every state change, numbered.

The daemon appends each DriverCore event once the loop has applied it (so a reader that sees
`container.create` can already query the name). An `EventLog` is a ring buffer of the last
`capacity` records, each with a sequence number that only grows (`seq`, from 1 at daemon start;
the start replays the stored state as events, so the log opens with it), an RFC 3339 UTC time,
a `type` ("network.create", "endpoint.attach", ...), short fields naming what changed
(container, network, addresses, host for another cluster host's endpoint) and the object itself
as stored (drivers/local_store.py `to_json`). Each record is encoded to its JSON line once.

Readers hold a cursor, not a queue: `stream()` replays what the buffer still holds after a
given seq (or time), then follows. A reader that asks for events the buffer has dropped, or
that falls more than `max_backlog` records behind while following, first gets a gap line
(`{"type": "gap", "from": A, "to": B, "reason": ...}`: events A..B are lost to it) and goes on
from there; it never holds memory of its own, and appending never waits for a reader.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drivers.errors import Invalid
from drivers.local_store import to_json
from drivers.model import (
    EndpointAttached,
    EndpointDetached,
    EndpointUpdated,
    Event,
    NetworkCreated,
    NetworkRemoved,
    SandboxCreated,
    SandboxRemoved,
    ServiceRemoved,
    ServiceUpdated,
)

DEFAULT_CAPACITY = 10_000
# How far a following reader may fall behind the newest record before it is moved on (with a
# gap line): a window over the ring, so its cost is a number, not a queue.
DEFAULT_MAX_BACKLOG = 1_000

EVENT_TYPES: dict[type, str] = {
    NetworkCreated: "network.create",
    NetworkRemoved: "network.remove",
    SandboxCreated: "container.create",
    SandboxRemoved: "container.remove",
    EndpointAttached: "endpoint.attach",
    EndpointDetached: "endpoint.detach",
    EndpointUpdated: "endpoint.update",
    ServiceUpdated: "service.update",
    ServiceRemoved: "service.remove",
}


class GapReason:
    EVICTED = "evicted"  # older than what the buffer still holds
    SLOW_READER = "slow reader"  # fell more than max_backlog behind while following
    RESTART = "restart"  # asked for a seq the log never reached: the daemon restarted


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    time: float  # seconds since the epoch
    type: str
    line: bytes  # the JSON object and a newline


def rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def gap_line(first: int, last: int, reason: str) -> bytes:
    return json.dumps({"type": "gap", "from": first, "to": last, "reason": reason}).encode() + b"\n"


# -- the since/until arguments ---------------------------------------------------------------

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


@dataclass(frozen=True, slots=True)
class Bound:
    """A point in the log: a sequence number, or a time (seconds since the epoch)."""

    seq: int | None = None
    time: float | None = None


def parse_bound(text: str, what: str, now: float | None = None) -> Bound:
    """`42` (a seq), `2026-01-02T03:04:05Z` (RFC 3339) or `10m`, `1h30m`, `45s` (that long ago)."""
    text = text.strip()
    # ASCII digits only (str.isdigit takes '²'), and few enough for int() and for a sequence.
    if re.fullmatch(r"[0-9]{1,18}", text):
        return Bound(seq=int(text))
    match = _DURATION.match(text)
    if match and any(match.groups()):
        hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
        ago = hours * 3600 + minutes * 60 + seconds
        return Bound(time=(time.time() if now is None else now) - ago)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise Invalid(
            f"{what} {text!r}: expected a sequence number (42), an RFC 3339 time "
            "(2026-01-02T03:04:05Z) or a duration ago (10m, 1h30m, 45s)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # the log speaks UTC; so does a bare time
    return Bound(time=parsed.timestamp())


# -- describing an event ---------------------------------------------------------------------


class EventLog:
    """The last `capacity` events, numbered; see the module docstring."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        *,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1 or max_backlog < 1:
            raise Invalid("EventLog: capacity and max_backlog must be at least 1")
        self.capacity = capacity
        self.max_backlog = min(max_backlog, capacity)
        self.clock = clock
        self.last_seq = 0
        self.counts: collections.Counter[str] = collections.Counter()  # by type, for metrics
        self.closed = False
        self._records: collections.deque[Record] = collections.deque(maxlen=capacity)
        self._network_names: dict[str, str] = {}
        self._new = asyncio.Event()

    @property
    def first_seq(self) -> int:
        """The oldest seq still held (last_seq + 1 when empty)."""
        return self._records[0].seq if self._records else self.last_seq + 1

    def __len__(self) -> int:
        return len(self._records)

    def append(self, event: Event) -> Record:
        """Number and keep `event`, and wake the readers that follow. On the loop's thread."""
        kind = EVENT_TYPES[type(event)]
        when = self.clock()
        self.last_seq += 1
        fields: dict[str, Any] = {"seq": self.last_seq, "time": rfc3339(when), "type": kind}
        fields.update(self._describe(event))
        record = Record(self.last_seq, when, kind, json.dumps(fields).encode() + b"\n")
        self._records.append(record)
        self.counts[kind] += 1
        self._wake()
        return record

    def close(self) -> None:
        """End every stream (the daemon is stopping)."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        new, self._new = self._new, asyncio.Event()
        new.set()

    def _network_name(self, network_id: str) -> str:
        return self._network_names.get(network_id, network_id[:12])

    def _describe(self, event: Event) -> dict[str, Any]:
        """The short fields of an event's line, then the object (`to_json`) under its kind."""
        match event:
            case NetworkCreated(network) | NetworkRemoved(network):
                if isinstance(event, NetworkRemoved):
                    # Its endpoints were detached first (drivers/core/), so no later event
                    # names it; kept, the names of every network ever removed would pile up.
                    self._network_names.pop(network.id, None)
                else:
                    self._network_names[network.id] = network.name
                return {
                    "network": network.name,
                    "driver": network.driver.value,
                    "id": network.id,
                    "object": to_json(network),
                }
            case SandboxCreated(sandbox) | SandboxRemoved(sandbox):
                return {"container": sandbox.name, "id": sandbox.id, "object": to_json(sandbox)}
            case (
                EndpointAttached(endpoint) | EndpointDetached(endpoint) | EndpointUpdated(endpoint)
            ):
                fields: dict[str, Any] = {
                    "container": endpoint.name,
                    "network": self._network_name(endpoint.network_id),
                    "addresses": [str(a) for a in endpoint.addresses],
                }
                if endpoint.aliases:
                    fields["aliases"] = list(endpoint.aliases)
                if endpoint.task is not None:
                    fields["service"] = endpoint.task.service_name
                if endpoint.host:
                    fields["host"] = endpoint.host  # learnt from another cluster host
                return {**fields, "id": endpoint.id, "object": to_json(endpoint)}
            case ServiceUpdated(service) | ServiceRemoved(service):
                return {
                    "service": service.name,
                    "networks": [self._network_name(n) for n in service.networks],
                    "vips": [str(v.address) for v in service.vips],
                    "replicas": service.replicas,
                    "id": service.id,
                    "object": to_json(service),
                }
        raise TypeError(f"not an event: {event!r}")

    # -- reading -----------------------------------------------------------------------------

    def records(self, since: Bound = Bound(), until: Bound = Bound()) -> list[Record]:
        """What the buffer holds after `since` and up to `until` (no gap lines)."""
        return [r for r in self._records if _after(r, since) and not _past(r, until)]

    async def stream(
        self,
        since: Bound = Bound(),
        until: Bound = Bound(),
        *,
        follow: bool = True,
        max_backlog: int | None = None,
    ) -> AsyncIterator[bytes]:
        """JSON lines: the buffered records after `since`, then (with `follow`) each new one,
        until `until`, the log is closed, or the reader stops. Gap lines where records are
        lost to this reader (see the module docstring)."""
        backlog = self.max_backlog if max_backlog is None else max(1, max_backlog)
        cursor, gap = self._start(since)
        if gap is not None:
            yield gap
        # The backlog window bounds only what arrived after the stream began: a replay of
        # the whole buffer is not falling behind.
        live_from = self.last_seq
        while True:
            waiter = self._new  # taken before reading: an append after this wakes it
            lost_to = self.first_seq - 1
            reason = GapReason.EVICTED
            if follow and self.last_seq - max(cursor, live_from) > backlog:
                lost_to, reason = max(lost_to, self.last_seq - backlog), GapReason.SLOW_READER
            if cursor < lost_to:
                if cursor < self.first_seq - 1:
                    reason = GapReason.EVICTED
                yield gap_line(cursor + 1, lost_to, reason)
                cursor = lost_to
            behind = False
            for record in self._after_seq(cursor):
                if _past(record, until):
                    return
                cursor = record.seq
                yield record.line
                if follow and self.last_seq - max(cursor, live_from) > backlog:
                    behind = True  # fell behind while the reader was writing: re-check
                    break
            if behind:
                continue
            if not follow or self.closed:
                return
            if until.seq is not None and cursor >= until.seq:
                return
            timeout = None
            if until.time is not None:
                timeout = until.time - self.clock()
                if timeout <= 0:
                    return
            try:
                async with asyncio.timeout(timeout):
                    await waiter.wait()
            except TimeoutError:
                return

    def _after_seq(self, cursor: int) -> list[Record]:
        """The records after seq `cursor`, in order: a slice of the ring by position."""
        start = max(0, cursor + 1 - self.first_seq)
        return list(itertools.islice(self._records, start, None))

    def _start(self, since: Bound) -> tuple[int, bytes | None]:
        """The cursor a stream begins at (the last seq it has seen), and its first gap line."""
        first = self.first_seq
        if since.seq is None:
            if since.time is None:
                return first - 1, None
            older = [r.seq for r in self._records if r.time < since.time]
            return (older[-1] if older else first - 1), None
        if since.seq > self.last_seq:
            # A seq this log never gave: the reader's is from before a daemon restart.
            return first - 1, gap_line(1, first - 1, GapReason.RESTART)
        if since.seq + 1 < first:
            return first - 1, gap_line(since.seq + 1, first - 1, GapReason.EVICTED)
        return since.seq, None


def _after(record: Record, since: Bound) -> bool:
    if since.seq is not None and record.seq <= since.seq:
        return False
    return since.time is None or record.time >= since.time


def _past(record: Record, until: Bound) -> bool:
    if until.seq is not None and record.seq > until.seq:
        return True
    return until.time is not None and record.time > until.time
