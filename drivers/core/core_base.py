"""What every part of the core shares: the state and the lock that serialises changes, the
store, the drivers, the subscribers, and the reads (which take no lock)."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TypeVar

from drivers.base import NetworkDriver
from drivers.core.specs import Cluster, Namespaces
from drivers.core.transaction import Transaction, transaction
from drivers.errors import Invalid, NotFound, Unsupported
from drivers.ipam import Ipam
from drivers.local_store import Intent, State, Store
from drivers.model import Driver, Endpoint, Event, Network, Sandbox, Service
from drivers.vip import NftVipRoutes, VipRoutes

log = logging.getLogger(__name__)

T = TypeVar("T", Network, Sandbox, Service)


class CoreBase:
    def __init__(
        self,
        store: Store,
        drivers: Mapping[Driver, NetworkDriver],
        namespaces: Namespaces,
        *,
        default_bridge_options: tuple[tuple[str, str], ...] = (),
        vip_routes: VipRoutes | None = None,
    ) -> None:
        # Writes the VIP DNAT tables inside sandboxes (drivers/vip.py); tests pass their own.
        self._vip_routes: VipRoutes = vip_routes if vip_routes is not None else NftVipRoutes()
        # Options of the predefined `bridge` network, e.g. the Linux bridge's name (dockerd -b).
        self._default_bridge_options = default_bridge_options
        self._store = store
        self._drivers = dict(drivers)
        self._namespaces = namespaces
        self._lock = threading.Lock()
        self._subscribe_lock = threading.Lock()
        self._listeners: tuple[Callable[[Event], None], ...] = ()
        self._state = State()
        self._ipam = Ipam()
        self._started = False
        # Set by the daemon before start() when it runs with --store etcd://: overlay networks,
        # cluster services and their addresses go through it.
        self.cluster: Cluster | None = None

    # -- events -----------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call `listener` with every event from now on, synchronously, in order."""
        # Its own lock, not the change lock: a subscriber may subscribe another while an event
        # is being emitted.
        with self._subscribe_lock:
            self._listeners = (*self._listeners, listener)

    def _emit(self, events: Iterable[Event]) -> None:
        for event in events:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:
                    # The change is made and saved; one failing subscriber must not keep the
                    # others from hearing of it.
                    log.exception("event subscriber %r failed on %r", listener, event)

    # -- reads (no lock: a snapshot of the state) ---------------------------------------------

    def network(self, ref: str) -> Network:
        """By name, full id or unique id prefix."""
        return find(self._state.networks, ref, "network")

    def networks(self) -> list[Network]:
        return list(self._state.networks.values())

    def sandbox(self, ref: str) -> Sandbox:
        """By name, full id or unique id prefix."""
        return find(self._state.sandboxes, ref, "container")

    def sandboxes(self) -> list[Sandbox]:
        return list(self._state.sandboxes.values())

    def endpoints(
        self, *, network_id: str | None = None, sandbox_id: str | None = None
    ) -> list[Endpoint]:
        """In connect order."""
        return [
            e
            for e in self._state.endpoints.values()
            if (network_id is None or e.network_id == network_id)
            and (sandbox_id is None or e.sandbox_id == sandbox_id)
        ]

    def service(self, ref: str) -> Service:
        """By name, full id or unique id prefix."""
        return find(self._state.services, ref, "service")

    def services(self) -> list[Service]:
        return list(self._state.services.values())

    # -- shared by the changes --------------------------------------------------------------

    def _transaction(self, intent: Intent | None = None) -> AbstractContextManager[Transaction]:
        return transaction(self._store, intent)

    def _driver(self, kind: Driver) -> NetworkDriver | None:
        return self._drivers.get(kind)

    def _me(self) -> str:
        return self.cluster.host if self.cluster is not None else ""

    def _cluster(self) -> Cluster:
        if self.cluster is None:
            raise Unsupported(
                "this needs the cluster store: start the daemon with --store etcd://HOST:PORT"
            )
        return self.cluster


def new_id() -> str:
    return secrets.token_hex(32)


def unused_id(taken: Mapping[str, object]) -> str:
    while True:
        candidate = new_id()
        if candidate not in taken:
            return candidate


def find(items: Mapping[str, T], ref: str, kind: str) -> T:
    """Docker's order: full id, then exact name, then a unique id prefix."""
    if not ref:
        raise Invalid(f"{kind} name or id is empty")
    if ref in items:
        return items[ref]
    for item in items.values():
        if item.name == ref:
            return item
    prefix = ref.lower()
    matches = [item for key, item in items.items() if key.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise Invalid(
            f"{kind} id prefix {ref!r} matches {len(matches)} {kind}s: give more of the id or "
            "the name"
        )
    raise NotFound(f"no {kind} named {ref!r} or with that id (see `netdns {kind} ls`)")


def best_effort(what: str, fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("could not %s; going on", what)
