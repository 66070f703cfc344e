"""The model that netavark's files describe, and the events between two readings of them.

Each network file is a netdns network (its name is its id); each container id a sandbox; each
line an endpoint of that sandbox on that network, its first name the container's name and the
others (network aliases, the short id) its aliases. netdns holds one IPv4 and one IPv6 address
per endpoint: a line with more keeps the first of each (logged). The events go in the order
the daemon's would: networks and sandboxes first, detaches before the removals they allow."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

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
    Sandbox,
    SandboxCreated,
    SandboxRemoved,
)
from netdns.aardvark.config import NetworkFile

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Model:
    networks: dict[str, Network] = field(default_factory=dict)
    sandboxes: dict[str, Sandbox] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)

    def sandbox_by_address(self) -> dict[str, str]:
        """Every container address (as text) -> its sandbox id: who is asking."""
        return {str(a): e.sandbox_id for e in self.endpoints.values() for a in e.addresses}


def model_of(files: Mapping[str, NetworkFile]) -> Model:
    model = Model()
    for name, network_file in sorted(files.items()):
        model.networks[name] = Network(
            id=name, name=name, driver=Driver.BRIDGE, dns_servers=network_file.dns_servers
        )
        for entry in network_file.containers:
            if len(entry.ipv4) > 1 or len(entry.ipv6) > 1:
                log.warning(
                    "container %s on %s has %d IPv4 and %d IPv6 addresses; netdns answers the "
                    "first of each", entry.id[:12], name, len(entry.ipv4), len(entry.ipv6),
                )  # fmt: skip
            held = model.sandboxes.get(entry.id)
            if held is None or (not held.dns_servers and entry.dns_servers):
                model.sandboxes[entry.id] = Sandbox(
                    id=entry.id, name=entry.names[0], dns_servers=entry.dns_servers
                )
            endpoint_id = f"{entry.id}@{name}"
            model.endpoints[endpoint_id] = Endpoint(
                id=endpoint_id, network_id=name, sandbox_id=entry.id, name=entry.names[0],
                aliases=entry.names[1:], ipv4=entry.ipv4[0] if entry.ipv4 else None,
                ipv6=entry.ipv6[0] if entry.ipv6 else None,
            )  # fmt: skip
    return model


def changes(old: Model, new: Model) -> list[Event]:
    """The events that take a table built from `old` to `new`."""
    events: list[Event] = []
    events += [NetworkCreated(n) for i, n in new.networks.items() if old.networks.get(i) != n]
    events += [SandboxCreated(s) for i, s in new.sandboxes.items() if old.sandboxes.get(i) != s]
    events += [EndpointDetached(e) for i, e in old.endpoints.items() if i not in new.endpoints]
    for endpoint_id, endpoint in new.endpoints.items():
        before = old.endpoints.get(endpoint_id)
        if before is None:
            events.append(EndpointAttached(endpoint))
        elif before != endpoint:
            events.append(EndpointUpdated(endpoint))
    events += [SandboxRemoved(s) for i, s in old.sandboxes.items() if i not in new.sandboxes]
    events += [NetworkRemoved(n) for i, n in old.networks.items() if i not in new.networks]
    return events
