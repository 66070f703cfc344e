"""The name table: what each sandbox can resolve locally, and which rule says so.

Built only by applying events (drivers/model.py); never rebuilt wholesale. Each network keeps
its own indices (names, services, tasks, reverse addresses); each sandbox keeps the networks it
is attached to in connect order. `lookup` is pure: it returns a `Lookup` that names the rule
(RESOLUTION.md) and carries the data the answer is built from, so the answer code and
`netdns resolve` share one decision (its vocabulary: resolver/lookup.py). No sockets here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from drivers.model import (
    Endpoint,
    EndpointAttached,
    EndpointDetached,
    EndpointMode,
    EndpointUpdated,
    Event,
    IPAddress,
    Network,
    NetworkCreated,
    NetworkRemoved,
    Sandbox,
    SandboxCreated,
    SandboxRemoved,
    Service,
    ServiceRemoved,
    ServiceUpdated,
)
from resolver.lookup import (
    TASKS_PREFIX,
    Change,
    ChangeWatcher,
    Lookup,
    Outcome,
    Rule,
    SrvTarget,
    View,
    endpoint_names,
    family_matches,
    normalize,
    reverse_address,
)
from resolver.wire import QTYPE_A, QTYPE_AAAA, QTYPE_ANY, QTYPE_PTR, QTYPE_SRV


def _endpoint_change(endpoint: Endpoint) -> Iterator[str]:
    """Every name and reverse name whose answer an endpoint takes part in."""
    yield from endpoint_names(endpoint)
    for address in endpoint.addresses:
        yield address.reverse_pointer
    if endpoint.task is not None:
        service = normalize(endpoint.task.service_name)
        yield from (service, TASKS_PREFIX + service)


def _service_change(service: Service) -> Iterator[str]:
    name = normalize(service.name)
    yield from (name, TASKS_PREFIX + name)
    for vip in service.vips:
        yield vip.address.reverse_pointer


@dataclass(slots=True)
class _NetworkIndex:
    network: Network
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    # name -> endpoint ids in attach order (a dict used as an ordered set)
    endpoints_by_name: dict[str, dict[str, None]] = field(default_factory=dict)
    endpoint_by_address: dict[IPAddress, str] = field(default_factory=dict)
    services_by_name: dict[str, Service] = field(default_factory=dict)
    service_by_vip: dict[IPAddress, Service] = field(default_factory=dict)
    # service id -> task endpoint ids
    tasks_by_service: dict[str, dict[str, None]] = field(default_factory=dict)

    def add_endpoint(self, endpoint: Endpoint) -> None:
        self.endpoints[endpoint.id] = endpoint
        for name in endpoint_names(endpoint):
            self.endpoints_by_name.setdefault(name, {})[endpoint.id] = None
        for address in endpoint.addresses:
            self.endpoint_by_address[address] = endpoint.id
        if endpoint.task is not None:
            self.tasks_by_service.setdefault(endpoint.task.service_id, {})[endpoint.id] = None

    def remove_endpoint(self, endpoint_id: str) -> None:
        endpoint = self.endpoints.pop(endpoint_id, None)
        if endpoint is None:
            return
        for name in endpoint_names(endpoint):
            _discard(self.endpoints_by_name, name, endpoint_id)
        for address in endpoint.addresses:
            if self.endpoint_by_address.get(address) == endpoint_id:
                del self.endpoint_by_address[address]
        if endpoint.task is not None:
            _discard(self.tasks_by_service, endpoint.task.service_id, endpoint_id)

    def put_service(self, service: Service) -> None:
        self.remove_service(service.id)
        self.services_by_name[normalize(service.name)] = service
        for address in service.vips_on(self.network.id):
            self.service_by_vip[address] = service

    def remove_service(self, service_id: str) -> None:
        for name, service in list(self.services_by_name.items()):
            if service.id == service_id:
                del self.services_by_name[name]
        for address, service in list(self.service_by_vip.items()):
            if service.id == service_id:
                del self.service_by_vip[address]

    def task_addresses(self, service: Service) -> tuple[IPAddress, ...]:
        ids = self.tasks_by_service.get(service.id, {})
        return tuple(a for i in ids for a in self.endpoints[i].addresses)

    def addresses_for(self, name: str) -> tuple[Rule, tuple[IPAddress, ...]] | None:
        """Every address `name` stands for on this network, or None if it is not a name here."""
        service = self.services_by_name.get(name)
        if service is not None:
            if service.mode is EndpointMode.VIP:
                return Rule.R5_SERVICE, service.vips_on(self.network.id)
            return Rule.R5_SERVICE, self.task_addresses(service)
        if name.startswith(TASKS_PREFIX):
            service = self.services_by_name.get(name[len(TASKS_PREFIX) :])
            if service is not None:
                return Rule.R5_SERVICE, self.task_addresses(service)
        ids = self.endpoints_by_name.get(name)
        if ids:
            addresses = tuple(a for i in ids for a in self.endpoints[i].addresses)
            return (Rule.R4_SHARED if len(ids) > 1 else Rule.R2_NAME), addresses
        return None

    def ptr_name(self, address: IPAddress) -> str | None:
        endpoint_id = self.endpoint_by_address.get(address)
        if endpoint_id is not None:
            endpoint = self.endpoints[endpoint_id]
            owner = endpoint.task.name if endpoint.task is not None else endpoint.name
            return f"{owner}.{self.network.name}."
        service = self.service_by_vip.get(address)
        if service is not None:
            return f"{service.name}.{self.network.name}."
        return None


@dataclass(frozen=True, slots=True)
class _Scope:
    """One sandbox's view worked out once for its queries, until the next event."""

    view: View
    indices: list[_NetworkIndex]  # its DNS networks' indices, in connect order
    network_names: frozenset[str]  # their names lowercased: the suffixes R3 looks for
    forward: Lookup  # the decision for a name that is not local, when it goes upstream (R11)
    internal_only: bool


def _discard(index: dict[str, dict[str, None]], key: str, member: str) -> None:
    members = index.get(key)
    if members is not None:
        members.pop(member, None)
        if not members:
            del index[key]


class NameTable:
    """Per-network name indices, changed only by `apply(event)`."""

    def __init__(self, *, domains: Iterable[str] = (), keep_single_labels: bool = False) -> None:
        # R3b: zones that stand for every network of the asking sandbox (podman's dns.podman),
        # and whether a single-label name that is not local stays here (NXDOMAIN).
        self.domains = tuple(normalize(d) for d in domains if normalize(d))
        self.keep_single_labels = keep_single_labels
        self._networks: dict[str, _NetworkIndex] = {}
        self._sandboxes: dict[str, Sandbox] = {}
        # sandbox id -> network ids it is attached to, in connect order
        self._attachments: dict[str, dict[str, None]] = {}
        self._services: dict[str, Service] = {}
        self._watchers: list[ChangeWatcher] = []
        self._scopes: dict[str, _Scope] = {}  # by sandbox id; any event may change them

    # -- events ---------------------------------------------------------------------------

    def watch(self, watcher: ChangeWatcher) -> None:
        """Call `watcher` with each event's Change just before the table applies the event."""
        self._watchers.append(watcher)

    def apply(self, event: Event) -> None:
        self._scopes.clear()
        if self._watchers:
            change = self.change_of(event)
            for watcher in self._watchers:
                watcher(change)
        match event:
            case NetworkCreated(network):
                index = self._networks.get(network.id)
                if index is None:
                    self._networks[network.id] = index = _NetworkIndex(network)
                    for service in self._services.values():
                        if network.id in service.networks:
                            index.put_service(service)
                else:
                    index.network = network
            case NetworkRemoved(network):
                self._networks.pop(network.id, None)
                for attached in self._attachments.values():
                    attached.pop(network.id, None)
            case SandboxCreated(sandbox):
                self._sandboxes[sandbox.id] = sandbox
                self._attachments.setdefault(sandbox.id, {})
            case SandboxRemoved(sandbox):
                self._sandboxes.pop(sandbox.id, None)
                for network_id in self._attachments.pop(sandbox.id, {}):
                    index = self._networks.get(network_id)
                    if index is not None:
                        for endpoint in list(index.endpoints.values()):
                            if endpoint.sandbox_id == sandbox.id:
                                index.remove_endpoint(endpoint.id)
            case EndpointAttached(endpoint) | EndpointUpdated(endpoint):
                index = self._networks.get(endpoint.network_id)
                if index is None:
                    raise KeyError(
                        f"endpoint {endpoint.id} on unknown network {endpoint.network_id}"
                    )
                index.remove_endpoint(endpoint.id)
                index.add_endpoint(endpoint)
                if not endpoint.remote:  # another host's sandbox has no view here
                    attached = self._attachments.setdefault(endpoint.sandbox_id, {})
                    attached[endpoint.network_id] = None
            case EndpointDetached(endpoint):
                index = self._networks.get(endpoint.network_id)
                if index is not None:
                    index.remove_endpoint(endpoint.id)
                attached = self._attachments.get(endpoint.sandbox_id)
                if attached is not None:
                    attached.pop(endpoint.network_id, None)
            case ServiceUpdated(service):
                old = self._services.get(service.id)
                self._services[service.id] = service
                stale = set(old.networks) - set(service.networks) if old else set()
                for network_id in stale:
                    if (index := self._networks.get(network_id)) is not None:
                        index.remove_service(service.id)
                for network_id in service.networks:
                    if (index := self._networks.get(network_id)) is not None:
                        index.put_service(service)
            case ServiceRemoved(service):
                self._services.pop(service.id, None)
                for index in self._networks.values():
                    index.remove_service(service.id)
            case _:
                raise TypeError(f"not an event: {event!r}")

    def apply_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.apply(event)

    def change_of(self, event: Event) -> Change:
        """What applying `event` now may change (read before applying: it needs the old state)."""
        names: set[str] = set()
        match event:
            case NetworkCreated(network) if network.id not in self._networks:
                return Change()  # nobody is attached to a network that did not exist
            case NetworkCreated() | NetworkRemoved():
                return Change(everything=True)  # name, flags, members: views of many sandboxes
            case SandboxCreated(sandbox):
                return Change(sandboxes=frozenset({sandbox.id}))
            case SandboxRemoved(sandbox):
                for network_id in self._attachments.get(sandbox.id, {}):
                    if (index := self._networks.get(network_id)) is not None:
                        for endpoint in index.endpoints.values():
                            if endpoint.sandbox_id == sandbox.id:
                                names.update(_endpoint_change(endpoint))
                return Change(frozenset(names), frozenset({sandbox.id}))
            case (
                EndpointAttached(endpoint) | EndpointUpdated(endpoint) | EndpointDetached(endpoint)
            ):
                names.update(_endpoint_change(endpoint))
                if (index := self._networks.get(endpoint.network_id)) is not None and (
                    old := index.endpoints.get(endpoint.id)
                ) is not None:
                    names.update(_endpoint_change(old))
                return Change(frozenset(names), frozenset({endpoint.sandbox_id}))
            case ServiceUpdated(service) | ServiceRemoved(service):
                names.update(_service_change(service))
                if (old_service := self._services.get(service.id)) is not None:
                    names.update(_service_change(old_service))
                return Change(frozenset(names))
        raise TypeError(f"not an event: {event!r}")

    # -- reads ----------------------------------------------------------------------------

    def view(self, sandbox_id: str) -> View:
        """The sandbox's settings and its DNS-enabled networks in connect order (R1, R3)."""
        return self._scope(sandbox_id).view

    def _scope(self, sandbox_id: str) -> _Scope:
        scope = self._scopes.get(sandbox_id)
        if scope is not None:
            return scope
        sandbox = self._sandboxes.get(sandbox_id) or Sandbox(id=sandbox_id, name=sandbox_id)
        indices = [
            index
            for network_id in self._attachments.get(sandbox_id, {})
            if (index := self._networks.get(network_id)) is not None and index.network.dns
        ]
        view = View(sandbox, tuple(index.network for index in indices))
        scope = _Scope(
            view,
            indices,
            frozenset(index.network.name.lower() for index in indices),
            Lookup(Rule.R11_FORWARD, Outcome.FORWARD, upstreams=view.upstreams),
            view.internal_only,
        )
        if sandbox_id in self._sandboxes:  # an unknown id (a probe, a typo) is not kept
            self._scopes[sandbox_id] = scope
        return scope

    def has_dns(self, sandbox_id: str) -> bool:
        """Whether the sandbox needs a listener: it is on at least one DNS network (R1)."""
        return bool(self.view(sandbox_id).networks)

    def networks_holding(self, name: str) -> tuple[str, ...]:
        """Names of all networks where `name` is local, whoever asks (for `netdns resolve`)."""
        key = normalize(name)
        return tuple(
            index.network.name
            for index in self._networks.values()
            if index.network.dns and index.addresses_for(key) is not None
        )

    def lookup(self, sandbox_id: str, qname: str, qtype: int) -> Lookup:
        scope = self._scope(sandbox_id)
        name = normalize(qname)
        if qtype == QTYPE_PTR:
            found = self._lookup_ptr(scope, name)
        elif qtype == QTYPE_SRV:
            found = self._lookup_srv(scope, name)
        else:
            found = self._lookup_name(scope, name, qtype)
        if found is not None:
            return found
        return self._not_local(scope, name, qtype)

    def not_local(self, sandbox_id: str, qname: str, qtype: int) -> Lookup:
        """The decision for a name the table must not answer (another class than IN)."""
        return self._not_local(self._scope(sandbox_id), normalize(qname), qtype)

    def _lookup_name(self, scope: _Scope, name: str, qtype: int) -> Lookup | None:
        for candidate, indices in _qualified_candidates(scope, name, self.domains):
            matches = [(index, hit) for index in indices if (hit := index.addresses_for(candidate))]
            if not matches:
                continue
            if qtype not in (QTYPE_A, QTYPE_AAAA, QTYPE_ANY):
                return Lookup(Rule.R7_OTHER_TYPE, Outcome.NODATA, matches[0][0].network.name)
            for index, (rule, addresses) in matches:
                if qtype == QTYPE_ANY:
                    wanted = addresses
                else:
                    wanted = tuple(a for a in addresses if family_matches(a, qtype))
                if wanted:
                    if len(wanted) > 1 and rule is Rule.R2_NAME:
                        rule = Rule.R4_SHARED
                    return Lookup(rule, Outcome.RECORDS, index.network.name, wanted)
            return Lookup(Rule.R6_NODATA, Outcome.NODATA, matches[0][0].network.name)
        return None

    def _lookup_ptr(self, scope: _Scope, name: str) -> Lookup | None:
        address = reverse_address(name)
        if address is None:
            # `web` PTR: a question about a name, like any other type (R7: NODATA if local).
            return self._lookup_name(scope, name, QTYPE_PTR)
        for index in scope.indices:
            target = index.ptr_name(address)
            if target is not None:
                return Lookup(Rule.R8_PTR, Outcome.RECORDS, index.network.name, ptr=(target,))
        return None

    def _lookup_srv(self, scope: _Scope, name: str) -> Lookup | None:
        labels = name.split(".")
        if len(labels) < 3 or not labels[0].startswith("_") or not labels[1].startswith("_"):
            return self._lookup_name(scope, name, QTYPE_SRV)
        port_name, protocol = labels[0][1:], labels[1][1:]
        for candidate, indices in _qualified_candidates(scope, ".".join(labels[2:]), self.domains):
            for index in indices:
                service = index.services_by_name.get(candidate)
                if service is None:
                    continue
                ports = [p for p in service.ports if p.name == port_name and p.protocol == protocol]
                if not ports:
                    return Lookup(Rule.R7_OTHER_TYPE, Outcome.NODATA, index.network.name)
                task_ids = index.tasks_by_service.get(service.id, {})
                targets = tuple(
                    SrvTarget(port.port, index.endpoints[i].task.name, index.endpoints[i].addresses)  # type: ignore[union-attr]
                    for port in ports
                    for i in task_ids
                )
                return Lookup(Rule.R5_SERVICE, Outcome.RECORDS, index.network.name, srv=targets)
        return self._lookup_name(scope, name, QTYPE_SRV)

    def _not_local(self, scope: _Scope, name: str, qtype: int) -> Lookup:
        if any(name == d or name.endswith("." + d) for d in self.domains) or (
            self.keep_single_labels and "." not in name
        ):
            return Lookup(Rule.R3B_DOMAIN, Outcome.NXDOMAIN)  # never forwarded
        forward = scope.forward
        if scope.internal_only and not forward.upstreams.from_sandbox:
            return Lookup(Rule.R12_INTERNAL, Outcome.NXDOMAIN)
        if (
            qtype in (QTYPE_A, QTYPE_AAAA)
            and scope.view.sandbox.ndots > 0
            and "." not in name
            and scope.indices
        ):
            return Lookup(Rule.R12B_NDOTS, Outcome.NODATA)
        return forward

    # -- introspection (admin API, tests) --------------------------------------------------

    def endpoints(self) -> Iterator[Endpoint]:
        for index in self._networks.values():
            yield from index.endpoints.values()

    def name_count(self) -> int:
        return sum(len(index.endpoints_by_name) for index in self._networks.values())


def _qualified_candidates(
    scope: _Scope, name: str, domains: tuple[str, ...] = ()
) -> Iterator[tuple[str, list[_NetworkIndex]]]:
    """R3: `a.b.c` is tried as `a.b.c` on every network, then `a.b` on `c`, then `a` on `b.c`;
    R3b: `a.<domain>` as `a` on every network."""
    yield name, scope.indices
    for domain in domains:
        if name.endswith("." + domain):
            yield name[: -len(domain) - 1], scope.indices
    labels = name.split(".")
    for cut in range(len(labels) - 1, 0, -1):
        network_name = ".".join(labels[cut:])
        if network_name in scope.network_names:
            yield (
                ".".join(labels[:cut]),
                [i for i in scope.indices if i.network.name.lower() == network_name],
            )
