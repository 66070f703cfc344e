"""DriverCore: networks, sandboxes, the endpoints between them and services; the one source of
events.

A service is N task sandboxes (`<svc>.<slot>.<taskid>`, made as create_sandbox makes one)
on its networks; its VIPs route through drivers/vip.py, which the core calls after each change
that alters what a sandbox on a vip service's network should reach (best effort: logged).

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

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import secrets
import string
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol, TypeVar

from drivers import cni, validation
from drivers.base import NetworkDriver
from drivers.cluster.keys import AddressClaim, EndpointRecord, Record
from drivers.cluster.view import Change
from drivers.errors import Conflict, Invalid, NotFound, Unavailable, Unsupported
from drivers.ipam import DEFAULT_BRIDGE_SUBNET, Ipam, parse_address, plan_ipam
from drivers.local_store import Intent, State, Store
from drivers.model import (
    Driver,
    Endpoint,
    EndpointAttached,
    EndpointDetached,
    EndpointMode,
    EndpointUpdated,
    Event,
    IPAddress,
    IPNetwork,
    Network,
    NetworkCreated,
    NetworkRemoved,
    Sandbox,
    SandboxCreated,
    SandboxRemoved,
    Scope,
    Service,
    ServicePort,
    ServiceRemoved,
    ServiceUpdated,
    Task,
    VirtualIP,
)
from drivers.vip import PROTOCOLS, NftVipRoutes, VipRoute, VipRoutes

log = logging.getLogger(__name__)

BRIDGE = "bridge"
HOST = "host"
NONE = "none"
PREDEFINED = (BRIDGE, HOST, NONE)
# Drivers that only the predefined networks use, and that may be absent from the mapping
# (neither makes any Linux object).
_SINGLETON_DRIVERS = {Driver.HOST: HOST, Driver.NULL: NONE}

T = TypeVar("T", Network, Sandbox, Service)

# Services: docker's swarm service-name rule (one DNS label, so `tasks.<svc>` and
# `_<port>._<proto>.<svc>` are names too), docker's task ids (25 lowercase alphanumerics).
SERVICE_NAME_MAX = 63
_SERVICE_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[-_]*[A-Za-z0-9]+)*$")
_PORT_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
TASK_ID_LENGTH = 25
_TASK_ID_ALPHABET = string.ascii_lowercase + string.digits
# Each task is a namespace with listeners: a bound that keeps a typo from making 10^6 of them.
MAX_REPLICAS = 1000
# Picks of a cluster address another host took first, before giving up on one allocation.
CLAIM_TRIES = 64


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    name: str
    driver: str = "bridge"
    subnets: tuple[str, ...] = ()
    gateway: str | None = None
    ip_range: str | None = None
    ipv6: bool = False
    internal: bool = False
    attachable: bool = False
    options: tuple[tuple[str, str], ...] = ()
    dns_servers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    name: str
    hostname: str = ""
    network: str = "bridge"
    aliases: tuple[str, ...] = ()
    ip: str | None = None
    ip6: str | None = None
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    netns: str = ""  # adopt this namespace (/proc/PID/ns/net or a bind mount) instead of making one


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    networks: tuple[str, ...]
    replicas: int = 1
    endpoint_mode: str = "vip"
    publish: tuple[str, ...] = ()  # "PORT/PROTO" (PROTO defaults to tcp)
    # Names every published port in SRV (`_<port_name>._<proto>.<svc>`); default: the port
    # number itself (`_80._tcp.web`), the same on every machine (no /etc/services lookup).
    port_name: str = ""


@dataclass(frozen=True, slots=True)
class ConnectSpec:
    network: str
    container: str
    aliases: tuple[str, ...] = ()
    ip: str | None = None
    ip6: str | None = None


class Cluster(Protocol):
    """What the core needs of the cluster store (drivers/cluster/store.py): blocking calls,
    Conflict when another host holds what is asked for, Unavailable when etcd is away."""

    host: str

    def hosts(self) -> list[str]: ...

    def create_network(self, network: Network) -> Network: ...

    def remove_network(self, network: Network) -> None: ...

    def claim(self, network_id: str, address: IPAddress, owner: str) -> bool: ...

    def release(self, network_id: str, address: IPAddress, owner: str) -> None: ...

    def publish(self, endpoint: Endpoint) -> None: ...

    def withdraw(self, endpoint: Endpoint) -> None: ...

    def create_service(self, service: Service) -> None: ...

    def update_service(self, service: Service) -> None: ...

    def remove_service(self, service: Service) -> None: ...


class Namespaces(Protocol):
    """What the core needs of drivers/namespaces.py."""

    def create(self, name: str) -> str:
        """Make the named namespace; returns its path (/run/netns/NAME)."""
        ...

    def remove(self, name: str) -> None: ...

    def exists(self, path: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Attachment:
    """A validated request to attach one sandbox to one network."""

    network: Network
    aliases: tuple[str, ...]
    ipv4: IPv4Address | None
    ipv6: IPv6Address | None


class _Undo:
    """Steps that reverse what a change did so far, run newest first if the change fails."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, step: Callable[[], object]) -> None:
        self._steps.append((what, step))

    def run(self) -> None:
        for what, step in reversed(self._steps):
            try:
                step()
            except Exception:
                log.exception("could not undo: %s", what)
        self._steps.clear()


def new_id() -> str:
    return secrets.token_hex(32)


class DriverCore:
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
        self._tasks_intent: Intent | None = None  # the service change in flight (_intend_task)
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

    # -- life cycle -------------------------------------------------------------------------

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
            recovered, gone = self._recover(state, intent) if intent else (False, [])
            pruned = self._prune_vanished(state)
            ipam = Ipam()
            for network in state.networks.values():
                ipam.add_network(network)
            for endpoint in state.endpoints.values():
                network = state.networks[endpoint.network_id]
                for address in endpoint.addresses:
                    try:
                        ipam.reserve(network, address, endpoint.name)
                    except (Conflict, Invalid) as exc:
                        log.error("stored endpoint %s: %s", endpoint.id[:12], exc)
            for service in state.services.values():
                for vip in service.vips:
                    try:
                        ipam.reserve(state.networks[vip.network_id], vip.address, service.name)
                    except (Conflict, Invalid, KeyError) as exc:
                        log.error("stored service %s VIP %s: %s", service.name, vip.address, exc)
            if pruned or recovered:
                self._store.save(state)
            self._store.end()  # after the save: the intent is settled for good only then
            for network in state.networks.values():
                # After a reboot the bridges are gone; after a restart this finds them as they are.
                driver = self._driver(network.driver)
                if driver is not None:
                    _best_effort(f"restore network {network.name}", driver.create_network, network)
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
            existing = {n.name for n in state.networks.values()}
            predefined = (
                NetworkSpec(
                    BRIDGE,
                    Driver.BRIDGE,
                    (str(DEFAULT_BRIDGE_SUBNET),),
                    options=self._default_bridge_options,
                ),
                NetworkSpec(HOST, Driver.HOST),
                NetworkSpec(NONE, Driver.NULL),
            )
            for spec in predefined:
                if spec.name not in existing:
                    self._create_network(spec, predefined=True)
            self._restore_services()

    def _recover(self, state: State, intent: Intent) -> tuple[bool, list[Sandbox]]:
        """Settle the change a crash cut short (see store.Intent): finish a removal the state
        still holds, then take out of the kernel whatever of the intent the state does not
        hold. Returns whether `state` changed and the intent's sandboxes that are gone.

        Why an intent rather than a scan for our link and namespace names: namespaces are
        named after containers, and other daemons (other --root) and tools share the host's
        names, so only a record of what this daemon was doing tells its leftovers apart."""
        log.warning(
            "the daemon stopped during %r; %s it", intent.op,
            "finishing" if intent.removing else "rolling back what the state does not hold of",
        )  # fmt: skip
        changed = False
        if intent.removing:
            for endpoint in intent.endpoints:
                changed |= state.endpoints.pop(endpoint.id, None) is not None
            for sandbox in intent.sandboxes:
                changed |= state.sandboxes.pop(sandbox.id, None) is not None
                state.made_netns.pop(sandbox.id, None)
            for network in intent.networks:
                in_use = any(e.network_id == network.id for e in state.endpoints.values())
                if network.id in state.networks and not in_use:
                    del state.networks[network.id]
                    changed = True
        networks = {n.id: n for n in intent.networks} | state.networks
        sandboxes = {s.id: s for s in intent.sandboxes} | state.sandboxes
        for endpoint in intent.endpoints:
            network = networks.get(endpoint.network_id)
            sandbox = sandboxes.get(endpoint.sandbox_id)
            if endpoint.id in state.endpoints or network is None or sandbox is None:
                continue
            driver = self._driver(network.driver)
            if driver is not None:
                _best_effort(
                    f"remove the interface of {endpoint.name} on {network.name}",
                    driver.leave, network, endpoint, sandbox,
                )  # fmt: skip
        kept = set(state.made_netns.values())
        for sandbox_id, name in intent.netns:
            if sandbox_id not in state.sandboxes and name not in kept:
                _best_effort(f"remove namespace {name}", self._namespaces.remove, name)
        for network in intent.networks:
            driver = self._driver(network.driver)
            if network.id not in state.networks and driver is not None:
                _best_effort(f"remove network {network.name}", driver.remove_network, network)
        gone = [s for s in intent.sandboxes if s.id not in state.sandboxes]
        return changed, gone

    def _prune_vanished(self, state: State) -> bool:
        """Drop sandboxes whose namespace is gone (a reboot, or the adopted process exited):
        their interfaces went with it; and endpoints left without their sandbox or network.
        Returns whether anything was dropped."""
        gone = [
            s for s in state.sandboxes.values() if s.netns and not self._namespaces.exists(s.netns)
        ]
        for sandbox in gone:
            log.warning(
                "container %s: namespace %s no longer exists; forgetting the container",
                sandbox.name,
                sandbox.netns,
            )
            del state.sandboxes[sandbox.id]
            state.made_netns.pop(sandbox.id, None)
        orphans = [
            e
            for e in state.endpoints.values()
            if e.sandbox_id not in state.sandboxes or e.network_id not in state.networks
        ]
        for endpoint in orphans:
            if endpoint.sandbox_id in state.sandboxes:  # the vanished ones were logged above
                log.error("stored endpoint %s has no network; dropping it", endpoint.id[:12])
            del state.endpoints[endpoint.id]
        return bool(gone or orphans)

    # -- reads (no lock: a snapshot of the state) ---------------------------------------------

    def network(self, ref: str) -> Network:
        """By name, full id or unique id prefix."""
        return _find(self._state.networks, ref, "network")

    def networks(self) -> list[Network]:
        return list(self._state.networks.values())

    def sandbox(self, ref: str) -> Sandbox:
        """By name, full id or unique id prefix."""
        return _find(self._state.sandboxes, ref, "container")

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

    # -- networks ---------------------------------------------------------------------------

    def create_network(self, spec: NetworkSpec) -> Network:
        with self._lock:
            return self._create_network(spec, predefined=False)

    def _create_network(self, spec: NetworkSpec, *, predefined: bool) -> Network:
        network = self._plan_network(spec, predefined=predefined)
        driver = self._driver(network.driver)
        undo = _Undo()
        try:
            if network.scope is Scope.GLOBAL:
                cluster = self._cluster()
                network = cluster.create_network(network)  # claims name, subnets and a VNI
                undo.push(
                    f"remove cluster network {network.name}",
                    lambda n=network: cluster.remove_network(n),  # type: ignore[misc]
                )
                if driver is not None:
                    driver.validate(network)
            self._store.begin(Intent("network create", networks=(network,)))
            if driver is not None:
                driver.create_network(network)
                undo.push(f"remove network {network.name}", lambda: driver.remove_network(network))
            state = self._state.copy()
            state.networks[network.id] = network
            self._store.save(state)
        except BaseException:
            undo.run()
            self._store.end()
            raise
        self._ipam.add_network(network)
        self._state = state
        log.info("network %s (%s) created: %s", network.name, network.id[:12], _subnets(network))
        self._emit([NetworkCreated(network)])
        self._store.end()
        return network

    def _plan_network(self, spec: NetworkSpec, *, predefined: bool) -> Network:
        validation.check_network_name(spec.name)
        for other in self._state.networks.values():
            if other.name == spec.name:
                raise Conflict(
                    f"network name {spec.name!r} is already in use by network {other.id[:12]}: "
                    "pick another name"
                )
        try:
            kind = Driver(spec.driver)
        except ValueError:
            choices = ", ".join(d.value for d in Driver if d not in _SINGLETON_DRIVERS)
            raise Invalid(f"driver {spec.driver!r} is not known: use one of {choices}") from None
        if kind in _SINGLETON_DRIVERS and not predefined:
            raise Invalid(
                f"driver {kind.value!r} belongs to the predefined network "
                f"{_SINGLETON_DRIVERS[kind]!r} only; use --network {_SINGLETON_DRIVERS[kind]} "
                "when creating a container"
            )
        driver = self._driver(kind)
        if driver is None and kind not in _SINGLETON_DRIVERS:
            raise Unsupported(f"driver {kind.value!r} is not available in this netdns daemon")
        if kind is Driver.OVERLAY and self.cluster is None:
            raise Unsupported(
                "overlay networks need the cluster store: start the daemon with "
                "--store etcd://HOST:PORT --advertise-addr IP"
            )
        for key, _ in spec.options:
            if not key:
                raise Invalid("an -o option has an empty key: use -o KEY=VALUE")
        if kind in _SINGLETON_DRIVERS:
            if spec.subnets or spec.gateway or spec.ip_range or spec.ipv6:
                raise Invalid(f"network {spec.name!r} ({kind.value}) takes no addresses")
            ipam = ()
        else:
            ipam = plan_ipam(
                spec.subnets,
                spec.gateway,
                spec.ip_range,
                ipv6=spec.ipv6,
                taken=self._taken_subnets(include_default_bridge=not predefined),
                network_name=spec.name,
            )
        network = Network(
            id=self._unused_id(self._state.networks),
            name=spec.name,
            driver=kind,
            scope=Scope.GLOBAL if kind is Driver.OVERLAY else Scope.LOCAL,
            dns=not predefined,
            internal=spec.internal,
            attachable=spec.attachable,
            ipv6=spec.ipv6,
            ipam=ipam,
            options=tuple(spec.options),
            dns_servers=validation.check_dns_servers(spec.dns_servers, "network --dns"),
            created=datetime.now(UTC).isoformat(),
        )
        if driver is not None:
            driver.check_supported()
            if network.scope is Scope.LOCAL:  # a cluster network is validated once it has a VNI
                driver.validate(network)
        return network

    def _taken_subnets(self, *, include_default_bridge: bool) -> list[IPNetwork]:
        taken = [c.subnet for n in self._state.networks.values() for c in n.ipam]
        # User networks never take the default bridge's subnet, even before it exists.
        if include_default_bridge:
            taken.append(DEFAULT_BRIDGE_SUBNET)
        return taken

    def remove_network(self, ref: str) -> Network:
        """Conflict for a predefined network or one with endpoints; nothing changes then."""
        with self._lock:
            network = self.network(ref)
            if network.name in PREDEFINED and not network.dns:
                raise Conflict(
                    f"network {network.name!r} is a predefined network and cannot be removed"
                )
            attached = self.endpoints(network_id=network.id)
            if attached:
                containers = ", ".join(e.name for e in attached)
                raise Conflict(
                    f"network {network.name!r} has active endpoints ({containers}): disconnect "
                    "or remove those containers first"
                )
            users = [s.name for s in self._state.services.values() if network.id in s.networks]
            if users:
                raise Conflict(
                    f"network {network.name!r} is used by service(s) {', '.join(users)}: "
                    "remove them first (netdns service rm)"
                )
            if network.scope is Scope.GLOBAL:
                # First: another host's endpoints refuse it while nothing has changed here.
                self._cluster().remove_network(network)
            driver = self._driver(network.driver)
            self._store.begin(Intent("network rm", removing=True, networks=(network,)))
            try:
                if driver is not None:
                    driver.remove_network(network)
                state = self._state.copy()
                del state.networks[network.id]
                try:
                    self._store.save(state)
                except BaseException:
                    if driver is not None:
                        _best_effort(
                            f"re-create network {network.name}", driver.create_network, network
                        )
                    raise
            except BaseException:
                self._store.end()
                raise
            self._ipam.remove_network(network.id)
            self._state = state
            log.info("network %s (%s) removed", network.name, network.id[:12])
            self._emit([NetworkRemoved(network)])
            self._store.end()
            return network

    # -- sandboxes --------------------------------------------------------------------------

    def create_sandbox(self, spec: SandboxSpec) -> Sandbox:
        """Make (or adopt) the sandbox's namespace and connect it to spec.network ("none": no
        endpoint; "host": the host's namespace, no namespace of its own)."""
        with self._lock:
            validation.check_container_name(spec.name)
            for other in self._state.sandboxes.values():
                if other.name == spec.name:
                    raise Conflict(
                        f"container name {spec.name!r} is already in use by container "
                        f"{other.id[:12]}: remove it or pick another name"
                    )
            hostname = validation.check_hostname(spec.hostname) if spec.hostname else spec.name
            sandbox = Sandbox(
                id=self._unused_id(self._state.sandboxes),
                name=spec.name,
                hostname=hostname,
                dns_servers=validation.check_dns_servers(spec.dns),
                dns_search=validation.check_dns_search(spec.dns_search),
                dns_options=validation.check_dns_options(spec.dns_options),
            )
            network = self.network(spec.network)
            on_host = network.driver is Driver.HOST
            on_none = network.driver is Driver.NULL
            if spec.netns:
                if on_host:
                    raise Invalid(
                        "--netns and --network host exclude each other: a host container uses "
                        "the host's namespace"
                    )
                if not spec.netns.startswith("/"):
                    raise Invalid(
                        f"--netns {spec.netns!r} is not an absolute path: pass /proc/PID/ns/net "
                        "or a bind-mounted namespace"
                    )
                if not self._namespaces.exists(spec.netns):
                    raise NotFound(
                        f"--netns {spec.netns} is not a network namespace (missing, or its "
                        "process has exited)"
                    )
            if on_host or on_none:
                if spec.aliases or spec.ip or spec.ip6:
                    raise Invalid(
                        f"--network-alias, --ip and --ip6 need a user-defined network, not "
                        f"{network.name!r}"
                    )
                # host: an endpoint without addresses (`network inspect host` lists it);
                # none: no endpoint at all.
                attachment = _Attachment(network, (), None, None) if on_host else None
            else:
                attachment = self._check_attach(network, sandbox, spec.aliases, spec.ip, spec.ip6)

            undo = _Undo()
            try:
                # Addresses first: they can still be refused (in use, pool full) and are the
                # cheapest to give back.
                endpoint = None
                if attachment is not None:
                    endpoint = self._allocate(attachment, sandbox, undo)
                self._store.begin(
                    Intent(
                        "container create",
                        sandboxes=(replace(sandbox, netns=spec.netns),),
                        endpoints=(endpoint,) if endpoint is not None else (),
                        netns=() if spec.netns or on_host else ((sandbox.id, spec.name),),
                    )
                )
                made = None
                if spec.netns:
                    sandbox = replace(sandbox, netns=spec.netns)
                elif not on_host:
                    path = self._namespaces.create(spec.name)
                    made, sandbox = spec.name, replace(sandbox, netns=path)
                    undo.push(
                        f"remove namespace {path}", lambda: self._namespaces.remove(spec.name)
                    )
                if endpoint is not None:
                    endpoint = self._join(network, endpoint, sandbox, undo)
                state = self._state.copy()
                state.sandboxes[sandbox.id] = sandbox
                if made is not None:
                    state.made_netns[sandbox.id] = made
                if endpoint is not None:
                    state.endpoints[endpoint.id] = endpoint
                self._store.save(state)
            except BaseException:
                undo.run()
                self._store.end()
                raise
            self._state = state
            log.info("container %s (%s) created in %s", sandbox.name, sandbox.id[:12], network.name)
            events: list[Event] = [SandboxCreated(sandbox)]
            if endpoint is not None:
                events.append(EndpointAttached(endpoint))
            self._emit(events)
            self._store.end()  # after the events: see remove_sandbox
            if endpoint is not None:
                self._publish([endpoint])
            if self._routes_vips(network.id):
                self._route_vips_in(sandbox)
            return sandbox

    def remove_sandbox(self, ref: str) -> Sandbox:
        """Disconnect everything (newest first) and remove the namespace netdns made.

        Removal goes on past plumbing errors (logged): the namespace's end takes its
        interfaces with it, and a container that cannot be removed helps no one. Only a
        failed save leaves it in the state (the next start forgets it if its namespace is gone).
        """
        with self._lock:
            sandbox = self.sandbox(ref)
            self._refuse_task(sandbox, "removed")
            state = self._state.copy()
            adopted = sandbox.id not in state.made_netns
            made = state.made_netns.get(sandbox.id)
            self._store.begin(
                Intent(
                    "container rm",
                    removing=True,
                    sandboxes=(sandbox,),
                    endpoints=tuple(self.endpoints(sandbox_id=sandbox.id)),
                    netns=((sandbox.id, made),) if made is not None else (),
                )
            )
            try:
                detached = self._dismantle(state, sandbox)
                self._store.save(state)
            except BaseException:
                self._store.end()
                raise
            self._release(detached)
            self._state = state
            log.info("container %s (%s) removed", sandbox.name, sandbox.id[:12])
            self._emit([*(EndpointDetached(e) for e in detached), SandboxRemoved(sandbox)])
            if adopted and any(self._routes_vips(e.network_id) for e in detached):
                # The namespace lives on with its runtime: take our VIP table out of it.
                _best_effort(
                    f"remove VIP routes of {sandbox.name}",
                    self._vip_routes.apply,
                    sandbox.netns,
                    (),
                )
            # Only now: a kill before the listeners heard of the removal leaves its intent,
            # so the next start tells them (and they remove the namespace's resolv.conf).
            self._store.end()
            return sandbox

    def _dismantle(self, state: State, sandbox: Sandbox) -> list[Endpoint]:
        """Take the sandbox out of `state`: leave every network (newest first) and remove the
        namespace netdns made, going on past plumbing errors (logged). Returns the endpoints
        it had; their addresses are still held (see _release)."""
        detached = [e for e in state.endpoints.values() if e.sandbox_id == sandbox.id]
        detached.reverse()
        for endpoint in detached:
            network = state.networks[endpoint.network_id]
            driver = self._driver(network.driver)
            if driver is not None:
                _best_effort(
                    f"leave {network.name} for {sandbox.name}",
                    driver.leave,
                    network,
                    endpoint,
                    sandbox,
                )
            del state.endpoints[endpoint.id]
        made = state.made_netns.pop(sandbox.id, None)
        if made is not None:
            _best_effort(f"remove namespace {made}", self._namespaces.remove, made)
        del state.sandboxes[sandbox.id]
        return detached

    def _release(self, endpoints: Iterable[Endpoint]) -> None:
        """Give back the addresses of endpoints that left, here and in the cluster store;
        withdraw those on cluster networks from the other hosts' answers."""
        for endpoint in endpoints:
            network = self._state.networks.get(endpoint.network_id)
            for address in endpoint.addresses:
                self._ipam.release(endpoint.network_id, address)
                if network is not None and network.scope is Scope.GLOBAL:
                    _best_effort(
                        f"release {address} in the cluster store",
                        self._cluster().release, network.id, address, endpoint.id,
                    )  # fmt: skip
            if network is not None and network.scope is Scope.GLOBAL:
                _best_effort(f"withdraw {endpoint.name}", self._cluster().withdraw, endpoint)

    def _publish(self, endpoints: Iterable[Endpoint]) -> None:
        """Show this host's new endpoints on cluster networks to the other hosts."""
        for endpoint in endpoints:
            if self._state.networks[endpoint.network_id].scope is Scope.GLOBAL:
                self._cluster().publish(endpoint)

    def _refuse_task(self, sandbox: Sandbox, what: str) -> None:
        task = self._task_of(sandbox.id)
        if task is not None:
            raise Conflict(
                f"container {sandbox.name!r} is a task of service {task.service_name!r} and "
                f"cannot be {what} alone: use `netdns service scale {task.service_name}=N` or "
                f"`netdns service rm {task.service_name}`"
            )

    def _task_of(self, sandbox_id: str) -> Task | None:
        for endpoint in self._state.endpoints.values():
            if endpoint.sandbox_id == sandbox_id and endpoint.task is not None:
                return endpoint.task
        return None

    # -- endpoints --------------------------------------------------------------------------

    def connect(self, spec: ConnectSpec) -> Endpoint:
        """Attach a container to a network; Conflict when it already is."""
        with self._lock:
            network = self.network(spec.network)
            sandbox = self.sandbox(spec.container)
            if network.driver in _SINGLETON_DRIVERS:
                raise Invalid(
                    f"containers join {network.name!r} only when created "
                    f"(--network {network.name}); it cannot be connected later"
                )
            for endpoint in self.endpoints(sandbox_id=sandbox.id):
                if self._state.networks[endpoint.network_id].driver is Driver.HOST:
                    raise Conflict(
                        f"container {sandbox.name!r} uses the host's network stack: it cannot be "
                        "connected to other networks"
                    )
            attachment = self._check_attach(network, sandbox, spec.aliases, spec.ip, spec.ip6)
            undo = _Undo()
            try:
                endpoint = self._allocate(attachment, sandbox, undo)
                self._store.begin(Intent("connect", endpoints=(endpoint,)))
                endpoint = self._join(network, endpoint, sandbox, undo)
                state = self._state.copy()
                state.endpoints[endpoint.id] = endpoint
                self._store.save(state)
            except BaseException:
                undo.run()
                self._store.end()
                raise
            self._state = state
            log.info(
                "container %s connected to %s: %s", sandbox.name, network.name, _addrs(endpoint)
            )
            self._emit([EndpointAttached(endpoint)])
            self._store.end()
            self._publish([endpoint])
            if self._routes_vips(network.id):
                self._route_vips_in(sandbox)
            return endpoint

    def disconnect(self, network_ref: str, container_ref: str) -> Endpoint:
        with self._lock:
            network = self.network(network_ref)
            sandbox = self.sandbox(container_ref)
            endpoint = next(
                (e for e in self.endpoints(sandbox_id=sandbox.id) if e.network_id == network.id),
                None,
            )
            if endpoint is None:
                raise NotFound(
                    f"container {sandbox.name!r} is not connected to network {network.name!r}"
                )
            if network.driver is Driver.HOST:
                raise Invalid(
                    f"container {sandbox.name!r} cannot leave the host network: remove the "
                    "container instead"
                )
            if endpoint.task is not None:
                self._refuse_task(sandbox, "disconnected")
            driver = self._driver(network.driver)
            self._store.begin(Intent("disconnect", removing=True, endpoints=(endpoint,)))
            try:
                if driver is not None:
                    driver.leave(network, endpoint, sandbox)
                state = self._state.copy()
                del state.endpoints[endpoint.id]
                try:
                    self._store.save(state)
                except BaseException:
                    if driver is not None:
                        _best_effort(
                            f"re-join {network.name} for {sandbox.name}",
                            driver.join,
                            network,
                            endpoint,
                            sandbox,
                        )
                    raise
            except BaseException:
                self._store.end()
                raise
            self._release([endpoint])
            self._state = state
            log.info("container %s disconnected from %s", sandbox.name, network.name)
            self._emit([EndpointDetached(endpoint)])
            self._store.end()
            if self._routes_vips(network.id):
                self._route_vips_in(sandbox)
            return endpoint

    def _check_attach(
        self,
        network: Network,
        sandbox: Sandbox,
        aliases: Iterable[str],
        ip: str | None,
        ip6: str | None,
    ) -> _Attachment:
        """Everything that can be said about an attachment before anything changes."""
        for endpoint in self._state.endpoints.values():
            if endpoint.sandbox_id == sandbox.id and endpoint.network_id == network.id:
                raise Conflict(
                    f"container {sandbox.name!r} is already connected to network {network.name!r}"
                )
        if network.driver is Driver.OVERLAY and not network.attachable:
            raise Conflict(
                f"network {network.name!r} is not attachable: create it with --attachable to "
                "connect containers to it"
            )
        checked_aliases = validation.check_aliases(aliases)
        if checked_aliases and not network.dns:
            raise Invalid(
                f"--alias needs a user-defined network: {network.name!r} has no embedded DNS"
            )
        if (ip or ip6) and not network.dns:
            raise Invalid(
                f"--ip and --ip6 need a user-defined network, not {network.name!r}: create one "
                "with --subnet"
            )
        ipv4 = parse_address(ip, "--ip", 4) if ip else None
        ipv6 = parse_address(ip6, "--ip6", 6) if ip6 else None
        if ipv6 is not None and not self._ipam.has_family(network.id, 6):
            raise Invalid(
                f"--ip6 {ipv6}: network {network.name!r} has no IPv6 (create it with --ipv6)"
            )
        if network.driver is Driver.CNI:
            cni.check_addresses(network, ipv4, ipv6)  # the CNI plugins pick them, never netdns
        return _Attachment(network, checked_aliases, ipv4, ipv6)  # type: ignore[arg-type]

    def _allocate(self, attachment: _Attachment, sandbox: Sandbox, undo: _Undo) -> Endpoint:
        """The endpoint with its addresses taken from IPAM (Invalid/Conflict if they cannot
        be); pushes their release."""
        network = attachment.network
        endpoint_id = self._unused_id(self._state.endpoints)
        ipv4 = ipv6 = None
        if self._ipam.has_family(network.id, 4):
            ipv4 = self._take(network, 4, sandbox.name, endpoint_id, attachment.ipv4, undo)
        if network.ipv6 and self._ipam.has_family(network.id, 6):
            ipv6 = self._take(network, 6, sandbox.name, endpoint_id, attachment.ipv6, undo)
        return Endpoint(
            id=endpoint_id,
            network_id=network.id,
            sandbox_id=sandbox.id,
            name=sandbox.name,
            hostname=sandbox.hostname,
            aliases=attachment.aliases,
            ipv4=ipv4,  # type: ignore[arg-type]
            ipv6=ipv6,  # type: ignore[arg-type]
        )

    def _take(
        self,
        network: Network,
        version: int,
        owner: str,
        owner_id: str,
        requested: IPAddress | None,
        undo: _Undo,
    ) -> IPAddress:
        """An address from the network's pool for `owner` (a container name; `owner_id` is the
        endpoint or service id), released by `undo`. On a cluster network the local pool is a
        mirror of every host's claims and each pick is claimed in etcd; a pick another host
        took meanwhile stays marked and the next free one is tried."""
        for _ in range(CLAIM_TRIES):
            address = self._ipam.allocate(network, version, owner, requested)
            if network.scope is Scope.GLOBAL:
                cluster = self._cluster()
                try:
                    claimed = cluster.claim(network.id, address, owner_id)
                except BaseException:
                    self._ipam.release(network.id, address)
                    raise
                if not claimed:
                    self._ipam.release(network.id, address)
                    self._ipam.reserve(network, address, "a container on another host")
                    if requested is not None:
                        raise Conflict(
                            f"address {requested} is already in use on network "
                            f"{network.name!r} by a container on another host: pick another "
                            "one or leave it out"
                        )
                    continue
                undo.push(
                    f"release the claim on {address}",
                    lambda a=address, c=cluster: c.release(network.id, a, owner_id),  # type: ignore[misc]
                )
            undo.push(
                f"release {address}",
                lambda a=address: self._ipam.release(network.id, a),  # type: ignore[misc]
            )
            return address
        raise Conflict(
            f"no free address found on network {network.name!r} after {CLAIM_TRIES} tries: "
            "other hosts are taking them as fast; try again"
        )

    def _join(
        self, network: Network, endpoint: Endpoint, sandbox: Sandbox, undo: _Undo
    ) -> Endpoint:
        """The driver's join; returns the endpoint with the MAC it chose. Pushes the leave."""
        driver = self._driver(network.driver)
        if driver is None:
            return endpoint
        # A join that fails half way may have made the interface: leave tolerates a missing one.
        undo.push(
            f"leave {network.name} for {sandbox.name}",
            lambda: driver.leave(network, endpoint, sandbox),
        )
        joined = driver.join(network, endpoint, sandbox)
        if joined.id != endpoint.id or joined.addresses != endpoint.addresses:
            raise RuntimeError(f"driver {network.driver} changed more than the MAC of {endpoint}")
        return joined

    # -- services ---------------------------------------------------------------------------

    def service(self, ref: str) -> Service:
        """By name, full id or unique id prefix."""
        return _find(self._state.services, ref, "service")

    def services(self) -> list[Service]:
        return list(self._state.services.values())

    def tasks(self, service_id: str) -> list[tuple[Task, Sandbox]]:
        """A service's tasks and their sandboxes, by slot."""
        return _tasks(self._state, service_id)

    def create_service(self, spec: ServiceSpec) -> Service:
        """Allocate the VIPs (mode vip: one IPv4 address per network from its pool) and start
        `replicas` tasks, each a sandbox of its own on every network of the service. On
        cluster (overlay) networks the slots are spread over the live hosts and each host
        starts its own: this one before returning, the others when they see the service."""
        with self._lock:
            name = check_service_name(spec.name)
            for other in self._state.services.values():
                if other.name.lower() == name.lower():
                    raise Conflict(
                        f"service name {name!r} is already in use by service {other.id[:12]}: "
                        "remove it or pick another name"
                    )
            replicas = check_replicas(spec.replicas)
            try:
                mode = EndpointMode(spec.endpoint_mode)
            except ValueError:
                raise Invalid(
                    f"--endpoint-mode {spec.endpoint_mode!r} is not known: use vip or dnsrr"
                ) from None
            ports = parse_ports(spec.publish, spec.port_name)
            networks = self._service_networks(spec.networks, mode)
            service = Service(
                id=self._unused_id(self._state.services),
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
            undo = _Undo()
            try:
                if mode is EndpointMode.VIP:
                    vips = tuple(
                        VirtualIP(n.id, self._take(n, 4, f"service {name} (VIP)", service.id,
                                                   None, undo))
                        for n in networks
                    )  # fmt: skip
                    service = replace(service, vips=vips)
                if clustered:
                    cluster = self._cluster()
                    cluster.create_service(service)
                    undo.push(f"remove service {name}", lambda: cluster.remove_service(service))
                state.services[service.id] = service
                events, _ = self._run_tasks(state, service, undo)
                self._store.save(state)
            except BaseException:
                undo.run()
                self._end_tasks_intent()
                raise
            self._state = state
            log.info(
                "service %s (%s) created: %s, %d replicas, VIPs %s",
                name, service.id[:12], mode.value, replicas,
                ", ".join(str(v.address) for v in service.vips) or "none",
            )  # fmt: skip
            self._emit([ServiceUpdated(service), *events])
            self._end_tasks_intent()
            self._publish(_attached(events))
            if service.mode is EndpointMode.VIP:
                self._route_vips(service.networks)
            return service

    def scale_service(self, ref: str, replicas: int) -> Service:
        """Start tasks in the lowest free slots, or stop those in the highest slots first."""
        with self._lock:
            service = self.service(ref)
            replicas = check_replicas(replicas)
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
            if service.mode is EndpointMode.VIP:
                self._route_vips(service.networks)
            return service

    def _update_service(self, service: Service) -> Service:
        """Save the changed service and run the tasks it now places here."""
        before = len(_tasks(self._state, service.id))
        state = self._state.copy()
        state.services[service.id] = service
        undo = _Undo()
        try:
            events, removed = self._run_tasks(state, service, undo)
            self._store.save(state)
        except BaseException:
            undo.run()
            self._end_tasks_intent()
            raise
        self._release(removed)
        self._state = state
        log.info(
            "service %s: %d replicas, %d of them here (%d before)",
            service.name, service.replicas, len(_tasks(state, service.id)), before,
        )  # fmt: skip
        self._emit([ServiceUpdated(service), *events])
        self._end_tasks_intent()
        self._publish(_attached(events))
        if service.mode is EndpointMode.VIP:
            self._route_vips(service.networks)
        return service

    def _run_tasks(
        self, state: State, service: Service, undo: _Undo
    ) -> tuple[list[Event], list[Endpoint]]:
        """Make `state` run the slots the service places on this host (all of them for a
        local service): start the missing ones, stop the others. Returns the events and the
        endpoints that left (their addresses still held: see _release)."""
        if service.placement:
            wanted = {i for i, host in enumerate(service.placement, 1) if host == self._me()}
        else:
            running = [t.slot for t, _ in _tasks(state, service.id)]
            kept = sorted(running)[: service.replicas]
            free = (s for s in itertools.count(1) if s not in running)
            wanted = {*kept, *itertools.islice(free, max(service.replicas - len(running), 0))}
        events, removed = self._stop_tasks(state, service, wanted)
        networks = [state.networks[n] for n in service.networks]
        running_now = {t.slot for t, _ in _tasks(state, service.id)}
        for slot in sorted(wanted - running_now):
            events += self._add_task(state, service, networks, slot, undo)
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
        for task, sandbox in reversed(_tasks(state, service.id)):
            if task.slot not in keep:
                detached = self._dismantle(state, sandbox)
                removed += detached
                events += [*(EndpointDetached(e) for e in detached), SandboxRemoved(sandbox)]
        return events, removed

    def _release_vips(self, service: Service) -> None:
        for vip in service.vips:
            self._ipam.release(vip.network_id, vip.address)
            if service.placement and self.cluster is not None:
                _best_effort(
                    f"release VIP {vip.address} in the cluster store",
                    self.cluster.release, vip.network_id, vip.address, service.id,
                )  # fmt: skip

    def _restore_services(self) -> None:
        """At start: bring back tasks whose namespace vanished (a reboot), and the VIP tables
        of every sandbox on a service's network (missing after a reboot)."""
        for service in list(self._state.services.values()):
            if service.placement and self.cluster is None:
                continue  # a cluster service: its tasks come back when the cluster store does
            running = len(_tasks(self._state, service.id))
            wanted = service.placement.count(self._me()) if service.placement else service.replicas
            if running != wanted:
                log.warning(
                    "service %s has %d of the %d tasks it runs here; starting the missing ones",
                    service.name, running, wanted,
                )  # fmt: skip
                _best_effort(f"restore service {service.name}", self._update_service, service)
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
        self, state: State, service: Service, networks: list[Network], slot: int, undo: _Undo
    ) -> list[Event]:
        """One task: a sandbox named `<svc>.<slot>.<taskid>` (its own namespace, made as
        create_sandbox makes one) on every network of the service, endpoints marked as tasks."""
        task = Task(service.id, service.name, slot, new_task_id())
        sandbox = Sandbox(id=self._unused_id(state.sandboxes), name=task.name, hostname=task.name)
        endpoints = [
            replace(self._allocate(_Attachment(n, (), None, None), sandbox, undo), task=task)
            for n in networks
        ]
        self._intend_task(sandbox, endpoints, task.name)
        path = self._namespaces.create(task.name)
        undo.push(f"remove namespace {path}", lambda: self._namespaces.remove(task.name))
        sandbox = replace(sandbox, netns=path)
        joined = [self._join(n, e, sandbox, undo) for n, e in zip(networks, endpoints, strict=True)]
        state.sandboxes[sandbox.id] = sandbox
        state.made_netns[sandbox.id] = task.name
        for endpoint in joined:
            state.endpoints[endpoint.id] = endpoint
        return [SandboxCreated(sandbox), *(EndpointAttached(e) for e in joined)]

    def _intend_task(self, sandbox: Sandbox, endpoints: list[Endpoint], netns: str) -> None:
        """Add a task about to be made to the intent of the service change in flight (see
        store.Intent): a kill before that change's save leaves the namespaces and links of
        all its new tasks for the next start to remove."""
        held = self._tasks_intent or Intent("service tasks")
        self._tasks_intent = replace(
            held,
            sandboxes=(*held.sandboxes, sandbox),
            endpoints=(*held.endpoints, *endpoints),
            netns=(*held.netns, (sandbox.id, netns)),
        )
        self._store.begin(self._tasks_intent)

    def _end_tasks_intent(self) -> None:
        """The service change has ended: saved and heard, or undone."""
        if self._tasks_intent is not None:
            self._tasks_intent = None
            self._store.end()

    # -- the cluster (drivers/cluster) --------------------------------------------------------

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
            peers: list[tuple[Network, EndpointRecord, bool]] = []
            dirty = False
            for change in changes:
                record = change.new if change.new is not None else change.old
                match record:
                    case Network():
                        dirty |= self._follow_network(state, change, events)
                    case Service():
                        dirty |= self._follow_service(state, change, events, removed)
                    case AddressClaim():
                        self._follow_claim(state, change)
                    case EndpointRecord():
                        self._follow_endpoint(state, change, events, peers)
            if dirty:
                _best_effort("save the state", self._store.save, state)
            self._release(removed)  # this host's tasks that stopped
            self._state = state
            self._emit(events)
            self._end_tasks_intent()
            self._program_peers(peers, full=own is not None)
            self._publish(_attached(events))
            if own is not None:
                self._forget_own(own)
            self._route_vips(n for n in _networks_touched(events) if self._routes_vips(n))

    def _follow_network(self, state: State, change: Change, events: list[Event]) -> bool:
        new, old = change.new, change.old
        if isinstance(new, Network):
            if state.networks.get(new.id) == new:
                return False  # this host made it
            if new.id not in state.networks:
                driver = self._driver(new.driver)
                if driver is not None:
                    _best_effort(f"create network {new.name}", driver.create_network, new)
                self._ipam.add_network(new)
            state.networks[new.id] = new
            events.append(NetworkCreated(new))
            return True
        assert isinstance(old, Network)
        if old.id not in state.networks:
            return False
        attached = [e for e in state.endpoints.values() if e.network_id == old.id]
        if any(not e.remote for e in attached):
            log.error(
                "cluster network %s was removed by another host while containers here are on "
                "it; keeping it here until they leave", old.name,
            )  # fmt: skip
            return False
        for endpoint in attached:
            del state.endpoints[endpoint.id]
            events.append(EndpointDetached(endpoint))
        driver = self._driver(old.driver)
        if driver is not None:
            _best_effort(f"remove network {old.name}", driver.remove_network, old)
        self._ipam.remove_network(old.id)
        del state.networks[old.id]
        events.append(NetworkRemoved(old))
        return True

    def _follow_service(
        self, state: State, change: Change, events: list[Event], removed: list[Endpoint]
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
            undo = _Undo()
            try:
                started, stopped = self._run_tasks(state, new, undo)
            except Exception:
                undo.run()
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
        self,
        state: State,
        change: Change,
        events: list[Event],
        peers: list[tuple[Network, EndpointRecord, bool]],
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

    def _program_peers(
        self, peers: Iterable[tuple[Network, EndpointRecord, bool]], *, full: bool
    ) -> None:
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
            _best_effort(
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
                _best_effort(f"withdraw {record.endpoint.name}", cluster.withdraw, record.endpoint)
            elif isinstance(record, AddressClaim) and record.owner not in holders:
                _best_effort(
                    f"release {record.address}",
                    cluster.release, record.network_id, record.address, record.owner,
                )  # fmt: skip

    def _me(self) -> str:
        return self.cluster.host if self.cluster is not None else ""

    def _cluster(self) -> Cluster:
        if self.cluster is None:
            raise Unsupported(
                "this needs the cluster store: start the daemon with --store etcd://HOST:PORT"
            )
        return self.cluster

    # -- VIP routes (drivers/vip.py) --------------------------------------------------------

    def _routes_vips(self, network_id: str) -> bool:
        """Whether sandboxes on the network carry VIP routes (a vip service uses it)."""
        return any(
            s.mode is EndpointMode.VIP and network_id in s.networks
            for s in self._state.services.values()
        )

    def _route_vips(self, network_ids: Iterable[str]) -> None:
        """Rewrite the VIP table of every sandbox on these networks (the tasks included)."""
        wanted = set(network_ids)
        sandbox_ids = {
            e.sandbox_id for e in self._state.endpoints.values() if e.network_id in wanted
        }
        for sandbox in self._state.sandboxes.values():
            if sandbox.id in sandbox_ids:
                self._route_vips_in(sandbox)

    def _route_vips_in(self, sandbox: Sandbox) -> None:
        # After the state change: a failure is logged, and the next change on the network
        # rewrites the whole table again.
        if sandbox.netns:
            routes = vip_routes(self._state, sandbox.id)
            _best_effort(
                f"set VIP routes in {sandbox.name}", self._vip_routes.apply, sandbox.netns, routes
            )

    # -- helpers ----------------------------------------------------------------------------

    def _driver(self, kind: Driver) -> NetworkDriver | None:
        return self._drivers.get(kind)

    def _unused_id(self, taken: Mapping[str, object]) -> str:
        while True:
            candidate = new_id()
            if candidate not in taken:
                return candidate


def _find(items: Mapping[str, T], ref: str, kind: str) -> T:
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


def _best_effort(what: str, fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("could not %s; going on", what)


def _subnets(network: Network) -> str:
    return ", ".join(str(c.subnet) for c in network.ipam) or "no addresses"


def _addrs(endpoint: Endpoint) -> str:
    return ", ".join(map(str, endpoint.addresses)) or "no addresses"


# -- services: pure helpers ---------------------------------------------------------------------


def new_task_id() -> str:
    return "".join(secrets.choice(_TASK_ID_ALPHABET) for _ in range(TASK_ID_LENGTH))


def check_service_name(name: str) -> str:
    if not name:
        raise Invalid("service name is empty: give --name NAME")
    if len(name) > SERVICE_NAME_MAX or not _SERVICE_NAME_RE.match(name):
        raise Invalid(
            f"service name {name!r} is not valid: one DNS label of at most {SERVICE_NAME_MAX} "
            "letters, digits, '-' and '_', starting and ending with a letter or digit"
        )
    return name


def check_replicas(replicas: object) -> int:
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        raise Invalid(f"replicas {replicas!r} is not a number: give 0 to {MAX_REPLICAS}")
    if not 0 <= replicas <= MAX_REPLICAS:
        raise Invalid(f"replicas {replicas} is out of range: give 0 to {MAX_REPLICAS}")
    return replicas


def parse_ports(publish: Iterable[str], port_name: str = "") -> tuple[ServicePort, ...]:
    """`--publish PORT[/PROTO]` (PROTO tcp or udp, default tcp) as service ports, named
    `port_name` for SRV, else after the port number."""
    publish = list(publish)
    if port_name and not publish:
        raise Invalid(f"--port-name {port_name!r} names published ports: add --publish PORT/PROTO")
    if port_name and (len(port_name) > 63 or not _PORT_NAME_RE.match(port_name)):
        raise Invalid(
            f"--port-name {port_name!r} is not a DNS label: letters, digits and '-', "
            "not starting or ending with '-' (e.g. http)"
        )
    ports: dict[tuple[int, str], ServicePort] = {}
    for text in publish:
        number, sep, protocol = text.partition("/")
        protocol = protocol.lower() if sep else "tcp"
        if ":" in number:
            raise Invalid(
                f"--publish {text!r}: netdns publishes a service port on the service's networks "
                "only, not on the host: give PORT/PROTO such as 80/tcp"
            )
        if not number.isdigit() or not 0 < int(number) < 65536:
            raise Invalid(f"--publish {text!r}: the port must be a number from 1 to 65535")
        if protocol not in PROTOCOLS:
            raise Invalid(f"--publish {text!r}: the protocol must be tcp or udp")
        port = int(number)
        ports.setdefault((port, protocol), ServicePort(port_name or str(port), protocol, port))
    return tuple(ports.values())


def _tasks(state: State, service_id: str) -> list[tuple[Task, Sandbox]]:
    found: dict[str, Task] = {}
    for endpoint in state.endpoints.values():
        if endpoint.task is not None and endpoint.task.service_id == service_id:
            found.setdefault(endpoint.sandbox_id, endpoint.task)
    tasks = [(t, state.sandboxes[sid]) for sid, t in found.items() if sid in state.sandboxes]
    return sorted(tasks, key=lambda pair: pair[0].slot)


def vip_routes(state: State, sandbox_id: str) -> list[VipRoute]:
    """The VIP routes a sandbox needs: every vip service on its networks, to the tasks'
    IPv4 addresses on that network (slot order)."""
    attached = {e.network_id for e in state.endpoints.values() if e.sandbox_id == sandbox_id}
    routes = []
    for service in state.services.values():
        if service.mode is not EndpointMode.VIP:
            continue
        for vip in service.vips:
            if vip.network_id not in attached or vip.address.version != 4:
                continue
            backends = sorted(
                (e.task.slot, e.ipv4)  # type: ignore[union-attr]
                for e in state.endpoints.values()
                if e.network_id == vip.network_id
                and e.ipv4 is not None
                and e.task is not None
                and e.task.service_id == service.id
            )
            routes.append(VipRoute(vip.address, service.ports, tuple(a for _, a in backends)))  # type: ignore[arg-type]
    return routes


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


def _attached(events: Iterable[Event]) -> list[Endpoint]:
    """This host's endpoints that the events attach."""
    return [e.endpoint for e in events if isinstance(e, EndpointAttached) and not e.endpoint.remote]


def _networks_touched(events: Iterable[Event]) -> set[str]:
    """The networks whose members or services the events change."""
    touched: set[str] = set()
    for event in events:
        if isinstance(event, EndpointAttached | EndpointDetached | EndpointUpdated):
            touched.add(event.endpoint.network_id)
        elif isinstance(event, ServiceUpdated | ServiceRemoved):
            touched.update(event.service.networks)
    return touched
