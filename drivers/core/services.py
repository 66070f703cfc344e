"""Services: N task sandboxes (`<svc>.<slot>.<taskid>`, each made as create_sandbox makes one)
on the service's networks, and a VIP on each network in vip mode. On cluster (overlay)
networks the slots are spread over the live hosts and each host runs its own."""

from __future__ import annotations

import itertools
import logging
import secrets
import string
from collections.abc import Iterable, Sequence
from dataclasses import replace

from drivers import cni, validation
from drivers.core.core_base import best_effort, unused_id
from drivers.core.sandboxes import Sandboxes
from drivers.core.specs import Attachment, ServiceSpec
from drivers.core.transaction import Transaction
from drivers.errors import Conflict, Invalid, Unavailable
from drivers.local_store import State
from drivers.model import (
    Driver,
    Endpoint,
    EndpointAttached,
    EndpointDetached,
    EndpointMode,
    Event,
    Network,
    Sandbox,
    SandboxCreated,
    SandboxRemoved,
    Scope,
    Service,
    ServiceRemoved,
    ServiceUpdated,
    Task,
    VirtualIP,
)

log = logging.getLogger(__name__)

# Docker's task ids: 25 lowercase alphanumerics.
TASK_ID_LENGTH = 25
_TASK_ID_ALPHABET = string.ascii_lowercase + string.digits


class Services(Sandboxes):
    def tasks(self, service_id: str) -> list[tuple[Task, Sandbox]]:
        """A service's tasks and their sandboxes, by slot."""
        return tasks(self._state, service_id)

    def create_service(self, spec: ServiceSpec) -> Service:
        """Allocate the VIPs (mode vip: one IPv4 address per network from its pool) and start
        `replicas` tasks, each a sandbox of its own on every network of the service. On
        cluster (overlay) networks the slots are spread over the live hosts and each host
        starts its own: this one before returning, the others when they see the service."""
        with self._lock:
            name = validation.check_service_name(spec.name)
            for other in self._state.services.values():
                if other.name.lower() == name.lower():
                    raise Conflict(
                        f"service name {name!r} is already in use by service {other.id[:12]}: "
                        "remove it or pick another name"
                    )
            replicas = validation.check_replicas(spec.replicas)
            try:
                mode = EndpointMode(spec.endpoint_mode)
            except ValueError:
                raise Invalid(
                    f"--endpoint-mode {spec.endpoint_mode!r} is not known: use vip or dnsrr"
                ) from None
            ports = validation.parse_ports(spec.publish, spec.port_name)
            networks = self._service_networks(spec.networks, mode)
            service = Service(
                id=unused_id(self._state.services),
                name=name,
                networks=tuple(n.id for n in networks),
                mode=mode,
                ports=ports,
                replicas=replicas,
            )
            clustered = networks[0].scope is Scope.GLOBAL
            if clustered:
                service = replace(service, placement=spread((), replicas, self._cluster().hosts()))
            state = self._state.copy()
            with self._transaction() as txn:
                if mode is EndpointMode.VIP:
                    vips = tuple(
                        VirtualIP(n.id, self._take(n, 4, f"service {name} (VIP)", service.id,
                                                   None, txn))
                        for n in networks
                    )  # fmt: skip
                    service = replace(service, vips=vips)
                if clustered:
                    cluster = self._cluster()
                    cluster.create_service(service)
                    txn.on_undo(f"remove service {name}", lambda: cluster.remove_service(service))
                state.services[service.id] = service
                events, _ = self._run_tasks(state, service, txn)
                txn.save(state)
                self._state = state
                log.info(
                    "service %s (%s) created: %s, %d replicas, VIPs %s",
                    name, service.id[:12], mode.value, replicas,
                    ", ".join(str(v.address) for v in service.vips) or "none",
                )  # fmt: skip
                self._emit([ServiceUpdated(service), *events])
            self._announce(service, events)
            return service

    def scale_service(self, ref: str, replicas: int) -> Service:
        """Start tasks in the lowest free slots, or stop those in the highest slots first."""
        with self._lock:
            service = self.service(ref)
            replicas = validation.check_replicas(replicas)
            if service.placement:
                placement = spread(service.placement, replicas, self._cluster().hosts())
                service = replace(service, replicas=replicas, placement=placement)
                self._cluster().update_service(service)
            else:
                service = replace(service, replicas=replicas)
            return self._update_service(service)

    def remove_service(self, ref: str) -> Service:
        """Stop every task (highest slot first) and give the VIPs back."""
        with self._lock:
            service = self.service(ref)
            if service.placement:
                self._cluster().remove_service(service)
            state = self._state.copy()
            events, removed = self._stop_tasks(state, service, ())
            del state.services[service.id]
            self._store.save(state)
            self._release(removed)
            self._release_vips(service)
            self._state = state
            log.info("service %s (%s) removed", service.name, service.id[:12])
            self._emit([*events, ServiceRemoved(service)])
            self._announce(service, events)
            return service

    def _update_service(self, service: Service) -> Service:
        """Save the changed service and run the tasks it now places here."""
        before = len(tasks(self._state, service.id))
        state = self._state.copy()
        state.services[service.id] = service
        with self._transaction() as txn:
            events, removed = self._run_tasks(state, service, txn)
            txn.save(state)
            self._release(removed)
            self._state = state
            log.info(
                "service %s: %d replicas, %d of them here (%d before)",
                service.name, service.replicas, len(tasks(state, service.id)), before,
            )  # fmt: skip
            self._emit([ServiceUpdated(service), *events])
        self._announce(service, events)
        return service

    def _announce(self, service: Service, events: list[Event]) -> None:
        """After a service change: its new endpoints shown to the other hosts, and the VIP
        tables of its networks rewritten."""
        self._publish(attached(events))
        if service.mode is EndpointMode.VIP:
            self._route_vips(service.networks)

    def _run_tasks(
        self, state: State, service: Service, txn: Transaction
    ) -> tuple[list[Event], list[Endpoint]]:
        """Make `state` run the slots the service places on this host (all of them for a
        local service): start the missing ones, stop the others. Returns the events and the
        endpoints that left (their addresses still held: see _release)."""
        if service.placement:
            wanted = {i for i, host in enumerate(service.placement, 1) if host == self._me()}
        else:
            running = [t.slot for t, _ in tasks(state, service.id)]
            kept = sorted(running)[: service.replicas]
            free = (s for s in itertools.count(1) if s not in running)
            wanted = {*kept, *itertools.islice(free, max(service.replicas - len(running), 0))}
        events, removed = self._stop_tasks(state, service, wanted)
        networks = [state.networks[n] for n in service.networks]
        running_now = {t.slot for t, _ in tasks(state, service.id)}
        for slot in sorted(wanted - running_now):
            events += self._add_task(state, service, networks, slot, txn)
        return events, removed

    def _stop_tasks(
        self, state: State, service: Service, keep: Iterable[int]
    ) -> tuple[list[Event], list[Endpoint]]:
        """Stop the service's tasks outside `keep`, highest slot first. Stopping is not undone
        (a namespace cannot come back): like remove_sandbox, a failed save leaves the stopped
        tasks in the state, and the next start prunes them."""
        keep = set(keep)
        events: list[Event] = []
        removed: list[Endpoint] = []
        for task, sandbox in reversed(tasks(state, service.id)):
            if task.slot not in keep:
                detached = self._dismantle(state, sandbox)
                removed += detached
                events += [*(EndpointDetached(e) for e in detached), SandboxRemoved(sandbox)]
        return events, removed

    def _release_vips(self, service: Service) -> None:
        for vip in service.vips:
            self._ipam.release(vip.network_id, vip.address)
            if service.placement and self.cluster is not None:
                best_effort(
                    f"release VIP {vip.address} in the cluster store",
                    self.cluster.release, vip.network_id, vip.address, service.id,
                )  # fmt: skip

    def _restore_services(self) -> None:
        """At start: bring back tasks whose namespace vanished (a reboot), and the VIP tables
        of every sandbox on a service's network (missing after a reboot)."""
        for service in list(self._state.services.values()):
            if service.placement and self.cluster is None:
                continue  # a cluster service: its tasks come back when the cluster store does
            running = len(tasks(self._state, service.id))
            wanted = service.placement.count(self._me()) if service.placement else service.replicas
            if running != wanted:
                log.warning(
                    "service %s has %d of the %d tasks it runs here; starting the missing ones",
                    service.name, running, wanted,
                )  # fmt: skip
                best_effort(f"restore service {service.name}", self._update_service, service)
            elif service.mode is EndpointMode.VIP:
                self._route_vips(service.networks)

    def _service_networks(self, refs: Iterable[str], mode: EndpointMode) -> list[Network]:
        networks: list[Network] = []
        for ref in refs:
            network = self.network(ref)
            if network in networks:
                raise Invalid(f"--network {ref!r} is given twice")
            if not network.dns:
                raise Invalid(
                    f"network {network.name!r} has no embedded DNS: services need a user-defined "
                    "network (netdns network create NAME)"
                )
            if network.driver is Driver.CNI:
                raise Invalid(cni.NO_SERVICES.format(network=network.name))
            if mode is EndpointMode.VIP and not self._ipam.has_family(network.id, 4):
                raise Invalid(
                    f"network {network.name!r} has no IPv4 subnet for a VIP: use "
                    "--endpoint-mode dnsrr"
                )
            networks.append(network)
        if not networks:
            raise Invalid("a service needs a network: give --network NET")
        if len({n.scope for n in networks}) > 1:
            raise Invalid(
                "a service's networks must be all overlay networks or all local ones: "
                f"{', '.join(f'{n.name} ({n.driver})' for n in networks)}"
            )
        return networks

    def _add_task(
        self, state: State, service: Service, networks: list[Network], slot: int,
        txn: Transaction,
    ) -> list[Event]:  # fmt: skip
        """One task: a sandbox named `<svc>.<slot>.<taskid>` (its own namespace, made as
        create_sandbox makes one) on every network of the service, endpoints marked as tasks."""
        task = Task(service.id, service.name, slot, new_task_id())
        sandbox = Sandbox(id=unused_id(state.sandboxes), name=task.name, hostname=task.name)
        endpoints = [
            replace(self._allocate(Attachment(n), sandbox, txn), task=task) for n in networks
        ]
        txn.intend_task(sandbox, endpoints, task.name)
        path = self._namespaces.create(task.name)
        txn.on_undo(f"remove namespace {path}", lambda: self._namespaces.remove(task.name))
        sandbox = replace(sandbox, netns=path)
        joined = [self._join(n, e, sandbox, txn) for n, e in zip(networks, endpoints, strict=True)]
        state.sandboxes[sandbox.id] = sandbox
        state.made_netns[sandbox.id] = task.name
        for endpoint in joined:
            state.endpoints[endpoint.id] = endpoint
        return [SandboxCreated(sandbox), *(EndpointAttached(e) for e in joined)]


def new_task_id() -> str:
    return "".join(secrets.choice(_TASK_ID_ALPHABET) for _ in range(TASK_ID_LENGTH))


def tasks(state: State, service_id: str) -> list[tuple[Task, Sandbox]]:
    found: dict[str, Task] = {}
    for endpoint in state.endpoints.values():
        if endpoint.task is not None and endpoint.task.service_id == service_id:
            found.setdefault(endpoint.sandbox_id, endpoint.task)
    pairs = [(t, state.sandboxes[sid]) for sid, t in found.items() if sid in state.sandboxes]
    return sorted(pairs, key=lambda pair: pair[0].slot)


def spread(placement: Sequence[str], replicas: int, hosts: Sequence[str]) -> tuple[str, ...]:
    """The host of each slot of a cluster service scaled to `replicas`: the slots that stay
    keep their host; new ones go to the live host with the fewest slots (then by name)."""
    if not hosts:
        raise Unavailable("no live host is registered in the cluster store: is etcd reachable?")
    slots = list(placement[:replicas])
    load = {host: slots.count(host) for host in hosts}
    while len(slots) < replicas:
        host = min(sorted(hosts), key=lambda h: load[h])
        slots.append(host)
        load[host] += 1
    return tuple(slots)


def attached(events: Iterable[Event]) -> list[Endpoint]:
    """This host's endpoints that the events attach."""
    return [e.endpoint for e in events if isinstance(e, EndpointAttached) and not e.endpoint.remote]
