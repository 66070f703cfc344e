"""What this host knows of the cluster store, and the changes between two readings. Pure.

The view maps each etcd key to the record read there and the revision it was written at. A
watch batch or a full re-read turns into `Change`s: (old record, new record) per key. Watch
events at or below the view's revision are skipped, so a batch seen twice (a watch restarted
from an older revision) changes nothing; a full re-read after a disconnect yields exactly the
differences, so nothing is lost and nothing applied twice.

This host's own endpoints and address claims are left out: the DriverCore already has them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drivers.cluster.keys import (
    ENDPOINTS,
    IPAM,
    AddressClaim,
    EndpointRecord,
    HostRecord,
    Record,
    decode,
)
from drivers.model import Network, Service

if TYPE_CHECKING:  # the view reads what the client returns, without needing the client
    from drivers.cluster.etcd_wire import KeyValue, WatchEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Change:
    key: str
    old: Record | None
    new: Record | None


# Additions in this order (a network before the endpoints on it); removals the other way.
_ORDER: tuple[type, ...] = (HostRecord, Network, Service, AddressClaim, EndpointRecord)


def _rank(change: Change) -> int:
    record = change.new if change.new is not None else change.old
    rank = next(i for i, kind in enumerate(_ORDER) if isinstance(record, kind))
    return rank if change.new is not None else len(_ORDER) * 2 - rank


class ClusterView:
    def __init__(self, host: str) -> None:
        self.host = host
        self.revision = 0
        self._records: dict[str, tuple[int, Record]] = {}

    # -- reads ------------------------------------------------------------------------------

    def records(self, kind: type[Record]) -> list[Record]:
        return [r for _, r in self._records.values() if isinstance(r, kind)]

    def hosts(self) -> list[str]:
        """Hosts whose lease is alive, this one included once registered."""
        return sorted(r.name for r in self.records(HostRecord))  # type: ignore[attr-defined]

    def endpoints_on(self, network_id: str) -> list[EndpointRecord]:
        return [
            r
            for r in self.records(EndpointRecord)
            if r.endpoint.network_id == network_id  # type: ignore[attr-defined]
        ]

    # -- changes ----------------------------------------------------------------------------

    def load(self, kvs: Iterable[KeyValue], revision: int) -> list[Change]:
        """A full reading at `revision`: the changes from what the view held before."""
        fresh: dict[str, tuple[int, Record]] = {}
        for kv in kvs:
            record = self._decode(kv.key, kv.value)
            if record is not None:
                fresh[kv.key] = (kv.mod_revision, record)
        changes = [
            Change(key, old, None) for key, (_, old) in self._records.items() if key not in fresh
        ]
        for key, (mod, record) in fresh.items():
            known = self._records.get(key)
            if known is None or known[0] != mod:
                changes.append(Change(key, known[1] if known else None, record))
        self._records, self.revision = fresh, max(self.revision, revision)
        return sorted(changes, key=_rank)

    def apply(self, events: Iterable[WatchEvent]) -> list[Change]:
        """A watch batch, in revision order."""
        changes = []
        # One etcd revision (a transaction) can carry several events: compare with the
        # revision the batch started from, not the one the loop reached.
        floor = self.revision
        for event in events:
            if event.mod_revision <= floor:
                continue  # seen already (in a full reading or an earlier batch)
            self.revision = max(self.revision, event.mod_revision)
            known = self._records.get(event.key)
            if event.kind == "delete":
                if known is not None:
                    del self._records[event.key]
                    changes.append(Change(event.key, known[1], None))
                continue
            record = self._decode(event.key, event.value)
            if record is None:
                if known is not None:  # now unreadable: what it said no longer holds
                    del self._records[event.key]
                    changes.append(Change(event.key, known[1], None))
                continue
            self._records[event.key] = (event.mod_revision, record)
            changes.append(Change(event.key, known[1] if known else None, record))
        return changes

    def own_records(self, kvs: Iterable[KeyValue]) -> list[Record]:
        """This host's endpoints and address claims in a full reading (the view leaves them
        out): what the DriverCore checks against what it holds."""
        own: list[Record] = []
        for kv in kvs:
            if kv.key.startswith((ENDPOINTS, IPAM)):
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    record = decode(kv.key, kv.value)
                    host = record.endpoint.host if isinstance(record, EndpointRecord) else ""
                    if isinstance(record, AddressClaim):
                        host = record.host
                    if host == self.host:
                        own.append(record)  # type: ignore[arg-type]
        return own

    def _decode(self, key: str, value: bytes) -> Record | None:
        try:
            record = decode(key, value)
        except (ValueError, TypeError, KeyError) as exc:
            log.error("cluster store: cannot read %s (%s); ignoring it", key, exc)
            return None
        if isinstance(record, EndpointRecord) and record.endpoint.host == self.host:
            return None
        if isinstance(record, AddressClaim) and record.host == self.host:
            return None
        return record
