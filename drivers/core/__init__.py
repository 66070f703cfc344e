"""The driver core: networks, sandboxes, the endpoints between them and services; the one
source of events. One module per job:

- specs: what a change is asked for, the cluster and namespace protocols, the predefined
  networks;
- transaction: how a change goes (intent, undo, save, end);
- core_base: the state, the lock, the events and the reads every part shares;
- networks, endpoints, sandboxes, services: the changes, each a mixin of DriverCore;
- vip_routing: which VIPs each sandbox reaches (written through drivers/vip.py);
- following: the other hosts' changes from the cluster store;
- recovery: start-up after a crash or a reboot;
- driver_core: DriverCore itself and its start.

Every change goes the same way: validate (nothing has changed if that fails), then the
drivers' plumbing and the namespace, then the new state saved to the store, then the events
handed synchronously to every subscriber before the call returns (R18: the name table has the
change by the time the API answers). When plumbing or the save fails midway, what was done is
undone (addresses released, the interface left, the namespace removed), so the state, the
store and the kernel agree.

State is copy-on-write: a change builds a new `State` and swaps it in once saved, so readers
(`network()`, `endpoints()`, ...) take no lock and see either the old state or the new one.
Changes are serialised by one lock, held while events are emitted so subscribers see them in
the order the changes were made. A subscriber must therefore not call a changing method.
"""

from drivers.core.core_base import new_id
from drivers.core.driver_core import DriverCore
from drivers.core.services import spread
from drivers.core.specs import (
    BRIDGE,
    HOST,
    NONE,
    PREDEFINED,
    Cluster,
    ConnectSpec,
    Namespaces,
    NetworkSpec,
    SandboxSpec,
    ServiceSpec,
)
from drivers.core.vip_routing import vip_routes

__all__ = [
    "BRIDGE",
    "HOST",
    "NONE",
    "PREDEFINED",
    "Cluster",
    "ConnectSpec",
    "DriverCore",
    "Namespaces",
    "NetworkSpec",
    "SandboxSpec",
    "ServiceSpec",
    "new_id",
    "spread",
    "vip_routes",
]
