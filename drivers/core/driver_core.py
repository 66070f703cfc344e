"""DriverCore: every part of the core in one object, and its start."""

from __future__ import annotations

from drivers.core import recovery
from drivers.core.core_base import best_effort
from drivers.core.following import Following
from drivers.core.networks import Networks
from drivers.model import (
    EndpointAttached,
    NetworkCreated,
    SandboxCreated,
    SandboxRemoved,
    ServiceUpdated,
)


class DriverCore(Following, Networks):
    def start(self) -> None:
        """Load the stored state, replay it to subscribers as events (networks, services,
        sandboxes, endpoints, each in creation order) and create the predefined networks if
        missing."""
        with self._lock:
            if self._started:
                raise RuntimeError("DriverCore.start() called twice")
            self._store.lock()  # before anything is read or changed: one daemon per root
            state = self._store.load()
            intent = self._store.pending()
            settled, gone = (
                recovery.settle(state, intent, self._drivers, self._namespaces)
                if intent
                else (False, [])
            )
            pruned = recovery.prune_vanished(state, self._namespaces)
            ipam = recovery.stored_pools(state)
            if pruned or settled:
                self._store.save(state)
            self._store.end()  # after the save: the intent is settled for good only then
            for network in state.networks.values():
                # After a reboot the bridges are gone; after a restart this finds them as they are.
                driver = self._driver(network.driver)
                if driver is not None:
                    best_effort(f"restore network {network.name}", driver.create_network, network)
            self._state, self._ipam, self._started = state, ipam, True
            self._emit(
                [
                    # Unknown to the subscribers, but a listener tidies up after them (the
                    # resolv.conf of a namespace a removal cut short had already removed).
                    *(SandboxRemoved(s) for s in gone),
                    *(NetworkCreated(n) for n in state.networks.values()),
                    *(ServiceUpdated(s) for s in state.services.values()),
                    *(SandboxCreated(s) for s in state.sandboxes.values()),
                    *(EndpointAttached(e) for e in state.endpoints.values()),
                ]
            )
            self._create_predefined()
            self._restore_services()
