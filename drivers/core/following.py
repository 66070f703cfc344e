"""Following the cluster store (drivers/cluster): what the other hosts changed becomes this
host's state and events; overlay peers and VIP tables follow, and the tasks a cluster service
places here start or stop."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence

from drivers.cluster.keys import AddressClaim, EndpointRecord, Record
from drivers.cluster.view import Change
from drivers.core.core_base import best_effort
from drivers.core.services import Services, attached
from drivers.core.transaction import Transaction
from drivers.errors import Conflict, Invalid
from drivers.local_store import State
from drivers.model import (
    Driver,
    Endpoint,
    EndpointAttached,
    EndpointDetached,
    EndpointUpdated,
    Event,
    Network,
    NetworkCreated,
    NetworkRemoved,
    Scope,
    Service,
    ServiceRemoved,
    ServiceUpdated,
)

log = logging.getLogger(__name__)

# A remote endpoint to program as an overlay peer (True) or to take out (False).
Peer = tuple[Network, EndpointRecord, bool]


class Following(Services):
    def cluster_endpoints(self) -> list[Endpoint]:
        """This host's endpoints on cluster networks: what it publishes under its lease."""
        state = self._state
        return [
            e
            for e in state.endpoints.values()
            if not e.remote and state.networks[e.network_id].scope is Scope.GLOBAL
        ]

    def apply_cluster(self, changes: Sequence[Change], own: Sequence[Record] | None = None) -> None:
        """Follow what the other hosts changed in the cluster store: their networks, services
        and endpoints become this host's state and events (remote endpoints are held in memory
        only), overlay peers and VIP tables follow, and the tasks a service places here start
        or stop. `own` is given after a full reading: this host's records found in the store,
        so that what it no longer holds (removed while etcd was away) is taken out."""
        with self._lock:
            state = self._state.copy()
            events: list[Event] = []
            removed: list[Endpoint] = []
            peers: list[Peer] = []
            with self._transaction() as txn:
                dirty = False
                for change in changes:
                    record = change.new if change.new is not None else change.old
                    match record:
                        case Network():
                            dirty |= self._follow_network(state, change, events)
                        case Service():
                            dirty |= self._follow_service(state, change, events, removed, txn)
                        case AddressClaim():
                            self._follow_claim(state, change)
                        case EndpointRecord():
                            self._follow_endpoint(state, change, events, peers)
                if dirty:
                    best_effort("save the state", txn.save, state)
                self._release(removed)  # this host's tasks that stopped
                self._state = state
                self._emit(events)
            self._program_peers(peers, full=own is not None)
            self._publish(attached(events))
            if own is not None:
                self._forget_own(own)
            self._route_vips(n for n in networks_touched(events) if self._routes_vips(n))

    def _follow_network(self, state: State, change: Change, events: list[Event]) -> bool:
        new, old = change.new, change.old
        if isinstance(new, Network):
            if state.networks.get(new.id) == new:
                return False  # this host made it
            if new.id not in state.networks:
                driver = self._driver(new.driver)
                if driver is not None:
                    best_effort(f"create network {new.name}", driver.create_network, new)
                self._ipam.add_network(new)
            state.networks[new.id] = new
            events.append(NetworkCreated(new))
            return True
        assert isinstance(old, Network)
        if old.id not in state.networks:
            return False
        on_it = [e for e in state.endpoints.values() if e.network_id == old.id]
        if any(not e.remote for e in on_it):
            log.error(
                "cluster network %s was removed by another host while containers here are on "
                "it; keeping it here until they leave", old.name,
            )  # fmt: skip
            return False
        for endpoint in on_it:
            del state.endpoints[endpoint.id]
            events.append(EndpointDetached(endpoint))
        driver = self._driver(old.driver)
        if driver is not None:
            best_effort(f"remove network {old.name}", driver.remove_network, old)
        self._ipam.remove_network(old.id)
        del state.networks[old.id]
        events.append(NetworkRemoved(old))
        return True

    def _follow_service(
        self,
        state: State,
        change: Change,
        events: list[Event],
        removed: list[Endpoint],
        txn: Transaction,
    ) -> bool:
        new, old = change.new, change.old
        if isinstance(new, Service):
            if state.services.get(new.id) == new:
                return False
            if any(n not in state.networks for n in new.networks):
                log.error("cluster service %s is on a network this host does not know", new.name)
                return False
            state.services[new.id] = new
            events.append(ServiceUpdated(new))
            try:
                with txn.savepoint():
                    started, stopped = self._run_tasks(state, new, txn)
            except Exception:
                log.exception("could not run the tasks of service %s here", new.name)
                return True
            events += started
            removed += stopped
            return True
        assert isinstance(old, Service)
        if old.id not in state.services:
            return False
        stopped_events, stopped = self._stop_tasks(state, old, ())
        events += [*stopped_events, ServiceRemoved(old)]
        removed += stopped
        del state.services[old.id]
        for vip in old.vips:
            self._ipam.release(vip.network_id, vip.address)
        return True

    def _follow_claim(self, state: State, change: Change) -> None:
        if isinstance(change.new, AddressClaim):
            claim = change.new
            network = state.networks.get(claim.network_id)
            if network is not None:
                with contextlib.suppress(Conflict, Invalid):  # marked already
                    self._ipam.reserve(network, claim.address, f"a container on {claim.host}")
        elif isinstance(change.old, AddressClaim):
            self._ipam.release(change.old.network_id, change.old.address)

    def _follow_endpoint(
        self, state: State, change: Change, events: list[Event], peers: list[Peer]
    ) -> None:
        if isinstance(change.new, EndpointRecord):
            endpoint = change.new.endpoint
            network = state.networks.get(endpoint.network_id)
            if network is None:
                log.warning("endpoint %s is on an unknown network; skipped", endpoint.name)
                return
            known = state.endpoints.get(endpoint.id)
            state.endpoints[endpoint.id] = endpoint
            events.append(EndpointUpdated(endpoint) if known else EndpointAttached(endpoint))
            if isinstance(change.old, EndpointRecord):
                peers.append((network, change.old, False))
            peers.append((network, change.new, True))
        elif isinstance(change.old, EndpointRecord):
            endpoint = state.endpoints.pop(change.old.endpoint.id, None)
            network = state.networks.get(change.old.endpoint.network_id)
            if endpoint is not None:
                events.append(EndpointDetached(endpoint))
            if network is not None:
                peers.append((network, change.old, False))

    def _program_peers(self, peers: Iterable[Peer], *, full: bool) -> None:
        """Static FDB/neighbour entries for remote endpoints on overlay networks, one batch
        per network; after a full reading, also drop the kernel's entries no remote endpoint
        accounts for any more."""
        driver = self._drivers.get(Driver.OVERLAY)
        if driver is None or not hasattr(driver, "update_peers"):
            return
        batches: dict[str, tuple[Network, list, list]] = {}
        for network, record, present in peers:
            endpoint = record.endpoint
            if network.driver is not Driver.OVERLAY or endpoint.ipv4 is None or not endpoint.mac:
                continue
            batch = batches.setdefault(network.id, (network, [], []))
            batch[1 if present else 2].append((endpoint.ipv4, endpoint.mac, record.vtep))
        if full:
            wanted = {(e.network_id, e.ipv4, e.mac) for e in self._state.endpoints.values()}
            for network in self._state.networks.values():
                if network.driver is not Driver.OVERLAY:
                    continue
                try:
                    programmed = driver.peers(network)  # type: ignore[attr-defined]
                except Exception:
                    log.exception("could not list the overlay peers of %s", network.name)
                    continue
                stale = [p for p in programmed if (network.id, p[0], p[1]) not in wanted]
                batches.setdefault(network.id, (network, [], []))[2].extend(stale)
        for network, add, remove in batches.values():
            best_effort(
                f"update the overlay peers of {network.name}",
                lambda n=network, a=add, r=remove: driver.update_peers(n, add=a, remove=r),  # type: ignore[attr-defined]
            )

    def _forget_own(self, own: Iterable[Record]) -> None:
        """Take out of the store what this host published or claimed and no longer holds
        (changed while etcd was away, or before a crash)."""
        cluster = self._cluster()
        holders = {e.id for e in self._state.endpoints.values() if not e.remote}
        holders |= set(self._state.services)
        for record in own:
            if isinstance(record, EndpointRecord) and record.endpoint.id not in holders:
                best_effort(f"withdraw {record.endpoint.name}", cluster.withdraw, record.endpoint)
            elif isinstance(record, AddressClaim) and record.owner not in holders:
                best_effort(
                    f"release {record.address}",
                    cluster.release, record.network_id, record.address, record.owner,
                )  # fmt: skip


def networks_touched(events: Iterable[Event]) -> set[str]:
    """The networks whose members or services the events change."""
    touched: set[str] = set()
    for event in events:
        if isinstance(event, EndpointAttached | EndpointDetached | EndpointUpdated):
            touched.add(event.endpoint.network_id)
        elif isinstance(event, ServiceUpdated | ServiceRemoved):
            touched.update(event.service.networks)
    return touched
