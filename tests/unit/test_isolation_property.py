"""Property: no sandbox gets an answer about an endpoint on a network it is not attached to (R1,
R3, R5, R8), and every name it should see does resolve (R2-R6, R18).

A hypothesis state machine builds random topologies through the DriverCore (drivers/core/):
user networks (some IPv6, some internal, some with dotted names), containers on them, on the
default `bridge` (no embedded DNS) or on `none`, with shared and dotted aliases; connects,
disconnects, removals; services in vip and dnsrr mode with published ports, scaled and removed;
restarts (a new core and table built from the stored state's replay).
The core is the daemon's own: its events reach the NameTable as they do in the daemon (the
daemon's ListenerManager.apply is `table.apply` followed by listener upkeep, which needs real
namespaces and adds nothing to the names). In-test drivers, namespaces and VIP routes make no
Linux objects (as in test_core_services.py); the store is the real LocalStore in a temporary
directory.

After every step that changed something, every sandbox asks for every name and address the run
has ever known (container names, aliases, short ids, task names, `name.network`, services,
`tasks.<svc>`, `_<port>._<proto>.<svc>` SRV, PTR of every endpoint and VIP, v4 and v6), as a
query arrives at a listener: wire bytes through Resolver.fast (the hot cache), else
Resolver.handle (parse, table, answer, fit to UDP), again over TCP when truncated. Two checks:

- isolation, stated on its own: every A/AAAA record (answer or additional) is an address of an
  endpoint or VIP on a DNS network the asker is attached to at that moment; every PTR answers
  for such an address and names such a network; every SRV target is a task on such a network;
- exactness: the answer equals what an oracle written here from the core's state (not from the
  name table) says R1-R8 and R12 give: the same rcode, the same record set, and the question
  goes upstream exactly when the name is not local (so a lost name fails as a leak does).

The upstream is a stub at the Forwarder's seam that records the question and answers NXDOMAIN:
what is checked is which questions leave the sandbox, not how they are forwarded (tests/proto
covers that against real dnsmasq), and a socket per forwarded query would cost most of the
time budget of thousands of queries per example.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from dnslib import EDNS0, QTYPE, RCODE, DNSRecord
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from drivers.core import ConnectSpec, DriverCore, NetworkSpec, SandboxSpec, ServiceSpec
from drivers.errors import NetdnsError
from drivers.local_store import LocalStore
from drivers.model import (
    Driver,
    Endpoint,
    EndpointMode,
    Event,
    IPAddress,
    Network,
    Sandbox,
    Service,
)
from drivers.vip import VipRoute
from resolver.answer import base_reply
from resolver.forward.forwarder import ForwardResult
from resolver.lookup import Upstreams
from resolver.names import NameTable
from resolver.resolve import Resolver
from tests.unit.doubles import PathNamespaces, QuietDriver

# Dotted network names make R3 split names two ways: `x.x.z` is `x.x.z`, `x.x` on network `z`
# or `x` on network `x.z`. No name is all hex digits: the core takes a ref that is not a name as
# an id prefix, which would make a step depend on the random ids.
NETWORK_NAMES = ["n1", "n2", "x.z", "z"]
PLACES = [*NETWORK_NAMES, "bridge", "none"]  # where a container is created
CONTAINER_NAMES = ["web", "dbs", "Web2", "x.x", "x"]
# Shared between containers, one equal to a container name, one equal to a network name.
ALIASES = ["dbs", "cache", "shared", "web", "z"]
SERVICE_NAMES = ["api", "web", "rr"]  # `web` is also a container name
PORTS = ["80/tcp", "53/udp", "443"]

aliases = st.lists(st.sampled_from(ALIASES), max_size=2)

# Never contacted: the stub forwarder answers instead (the hot cache keys on the name).
STUB_SERVER = "127.53.53.53"


# -- the system under test: the core, its events into the table, the resolver ---------------


class NoRoutes:
    def apply(self, netns: str, routes: Sequence[VipRoute]) -> None:
        pass


class StubUpstream:
    """Stands in for the Forwarder: records each question that leaves, answers NXDOMAIN."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int, Upstreams]] = []

    def default_servers(self) -> list[str]:
        return [STUB_SERVER]

    async def forward(
        self,
        request: DNSRecord,
        data: bytes,
        upstreams: Upstreams,
        *,
        tcp: bool,
        **how: object,  # opener, cache scope, ...: how it would go, not whether
    ) -> ForwardResult:
        self.asked.append((str(request.q.qname), request.q.qtype, upstreams))
        return ForwardResult(base_reply(request, RCODE.NXDOMAIN).pack(), "upstream", STUB_SERVER)


# -- the oracle: what R1-R8, R12 give, from the core's state --------------------------------


@dataclass(frozen=True)
class Expected:
    rcode: int
    records: frozenset[tuple[int, str]]  # (type, rdata) in the answer section
    additional: frozenset[tuple[int, str]] = frozenset()
    forwarded: bool = False


NODATA = Expected(RCODE.NOERROR, frozenset())


def endpoint_names(endpoint: Endpoint, sandbox: Sandbox) -> set[str]:
    """R2: container name, aliases, short id, hostname, task name; lowercase."""
    names = {endpoint.name, *endpoint.aliases, endpoint.sandbox_id[:12], sandbox.hostname}
    if endpoint.task is not None:
        names.add(endpoint.task.name)
    return {n.lower() for n in names if n}


def address_rr(address: IPAddress) -> tuple[int, str]:
    return (QTYPE.A if address.version == 4 else QTYPE.AAAA, str(address))


class Topology:
    """The core's state at one moment, indexed the way the rules read it."""

    def __init__(self, core: DriverCore) -> None:
        self.networks = {n.id: n for n in core.networks()}
        self.sandboxes = {s.id: s for s in core.sandboxes()}
        self.endpoints = core.endpoints()  # connect order
        self.services = core.services()
        self._attached: dict[str, list[Network]] = {}
        self._allowed: dict[str, tuple[set[IPAddress], set[str]]] = {}

    def attached(self, sandbox_id: str) -> list[Network]:
        """R1: the sandbox's networks with embedded DNS, in connect order (R3)."""
        if sandbox_id not in self._attached:
            nets = [
                self.networks[e.network_id] for e in self.endpoints if e.sandbox_id == sandbox_id
            ]
            self._attached[sandbox_id] = [n for n in nets if n.dns]
        return self._attached[sandbox_id]

    def on(self, network: Network) -> list[Endpoint]:
        return [e for e in self.endpoints if e.network_id == network.id]

    def service_on(self, network: Network, name: str) -> Service | None:
        for service in self.services:
            if network.id in service.networks and service.name.lower() == name:
                return service
        return None

    def task_addresses(self, network: Network, service: Service) -> list[IPAddress]:
        return [
            a
            for e in self.on(network)
            if e.task is not None and e.task.service_id == service.id
            for a in e.addresses
        ]

    def holds(self, network: Network, name: str) -> list[IPAddress] | None:
        """Addresses `name` stands for on `network`, None when it is no name there (R2, R5)."""
        service = self.service_on(network, name)
        if service is not None:
            if service.mode is EndpointMode.VIP:
                return list(service.vips_on(network.id))
            return self.task_addresses(network, service)
        if name.startswith("tasks."):
            service = self.service_on(network, name[len("tasks.") :])
            if service is not None:
                return self.task_addresses(network, service)
        found = [e for e in self.on(network) if name in endpoint_names(e, self.sandbox_of(e))]
        if not found:
            return None
        return [a for e in found for a in e.addresses]

    def sandbox_of(self, endpoint: Endpoint) -> Sandbox:
        return self.sandboxes[endpoint.sandbox_id]

    def allowed(self, sandbox_id: str) -> tuple[set[IPAddress], set[str]]:
        """Every address a record given to this sandbox may carry, and every SRV target."""
        if sandbox_id not in self._allowed:
            nets = {n.id for n in self.attached(sandbox_id)}
            mine = [e for e in self.endpoints if e.network_id in nets]
            addresses = {a for e in mine for a in e.addresses}
            addresses |= {v.address for s in self.services for v in s.vips if v.network_id in nets}
            tasks = {e.task.name.lower() for e in mine if e.task is not None}
            self._allowed[sandbox_id] = addresses, tasks
        return self._allowed[sandbox_id]

    def not_local(self, sandbox_id: str) -> Expected:
        nets = self.attached(sandbox_id)
        sandbox = self.sandboxes[sandbox_id]
        own = sandbox.dns_servers or any(n.dns_servers for n in nets)
        if nets and all(n.internal for n in nets) and not own:
            return Expected(RCODE.NXDOMAIN, frozenset())  # R12: never forwarded
        return Expected(RCODE.NXDOMAIN, frozenset(), forwarded=True)  # the stub's answer

    @staticmethod
    def candidates(nets: list[Network], name: str) -> Iterable[tuple[str, list[Network]]]:
        """R3: the whole name on every network, then each `prefix` on network `suffix`."""
        yield name, nets
        labels = name.split(".")
        for cut in range(len(labels) - 1, 0, -1):
            scope = [n for n in nets if n.name.lower() == ".".join(labels[cut:])]
            if scope:
                yield ".".join(labels[:cut]), scope

    def expect_name(self, sandbox_id: str, name: str, qtype: int) -> Expected:
        nets = self.attached(sandbox_id)
        for candidate, scope in self.candidates(nets, name):
            hits = [h for n in scope if (h := self.holds(n, candidate)) is not None]
            if not hits:
                continue
            if qtype not in (QTYPE.A, QTYPE.AAAA):
                return NODATA  # R7
            version = 4 if qtype == QTYPE.A else 6
            for addresses in hits:
                wanted = {address_rr(a) for a in addresses if a.version == version}
                if wanted:
                    return Expected(RCODE.NOERROR, frozenset(wanted))
            return NODATA  # R6
        return self.not_local(sandbox_id)

    def expect_ptr(self, sandbox_id: str, address: IPAddress) -> Expected:
        for network in self.attached(sandbox_id):
            for endpoint in self.on(network):
                if address in endpoint.addresses:
                    owner = endpoint.task.name if endpoint.task is not None else endpoint.name
                    return Expected(
                        RCODE.NOERROR, frozenset({(QTYPE.PTR, f"{owner}.{network.name}.")})
                    )
            for service in self.services:
                if address in service.vips_on(network.id):
                    return Expected(
                        RCODE.NOERROR, frozenset({(QTYPE.PTR, f"{service.name}.{network.name}.")})
                    )
        return self.not_local(sandbox_id)

    def expect_srv(self, sandbox_id: str, name: str) -> Expected:
        labels = name.split(".")
        nets = self.attached(sandbox_id)
        port_name, protocol = labels[0][1:], labels[1][1:]
        for candidate, scope in self.candidates(nets, ".".join(labels[2:])):
            for network in scope:
                service = self.service_on(network, candidate)
                if service is None:
                    continue
                ports = [p for p in service.ports if (p.name, p.protocol) == (port_name, protocol)]
                if not ports:
                    return NODATA  # R7
                tasks = [e for e in self.on(network) if e.task and e.task.service_id == service.id]
                records = {
                    (QTYPE.SRV, f"0 0 {p.port} {e.task.name}.")  # type: ignore[union-attr]
                    for p in ports
                    for e in tasks
                }
                extra = {address_rr(a) for e in tasks for a in e.addresses}
                return Expected(RCODE.NOERROR, frozenset(records), frozenset(extra))
        return self.expect_name(sandbox_id, name, QTYPE.SRV)


# -- the machine ------------------------------------------------------------------------------


def flip_case(name: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.3 else c for c in name)


class Isolation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # On tmpfs when there is one: the store fsyncs every change, and durability is not
        # what this test is about.
        shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
        self.root = Path(tempfile.mkdtemp(prefix="nd-iso-", dir=shm))
        self.events: list[Event] = []
        self.namespaces = PathNamespaces()  # outlive a core, as the kernel's outlive the daemon
        self.rng = random.Random(0)
        self.upstream = StubUpstream()
        self.start()
        self.runner = asyncio.Runner()
        self.checked_at = -1
        # Everything ever named or addressed in this run: removed things are asked for too.
        self.names: set[str] = {"nosuch"}
        self.addresses: set[IPAddress] = {ip_address("192.0.2.1")}
        self.srv: set[str] = {"_80._tcp.nosuch"}
        self.short_ids: set[str] = set()
        self.queries = 0

    def start(self) -> None:
        """A core on the stored state, a new table fed by its events, a new resolver."""
        self.table = NameTable()
        self.core = DriverCore(
            LocalStore(self.root),
            {k: QuietDriver(k) for k in Driver},
            self.namespaces,
            vip_routes=NoRoutes(),
        )
        self.core.subscribe(self.events.append)
        self.core.subscribe(self.table.apply)  # as the daemon's ListenerManager.apply does
        self.core.start()
        self.resolver = Resolver(self.table, self.upstream, rng=self.rng)  # type: ignore[arg-type]

    def teardown(self) -> None:
        self.runner.close()
        shutil.rmtree(self.root, ignore_errors=True)
        STATS.append((self.queries, len(self.events)))

    def _try(self, fn: object, *args: object) -> None:
        """Refused operations (in use, not found, invalid) change nothing and emit nothing."""
        before = len(self.events)
        try:
            fn(*args)  # type: ignore[operator]
        except NetdnsError:
            assert len(self.events) == before, f"a refused {fn} emitted events"

    # -- rules: the first pick from what exists, most of the time; refusals are steps too --

    @initialize(
        networks=st.lists(
            st.tuples(st.sampled_from(NETWORK_NAMES), st.booleans(), st.booleans()),
            min_size=2,
            max_size=4,
        ),
        containers=st.lists(st.sampled_from(CONTAINER_NAMES), min_size=1, max_size=3),
        data=st.data(),
    )
    def topology(
        self, networks: list[tuple[str, bool, bool]], containers: list[str], data: st.DataObject
    ) -> None:
        for name, ipv6, internal in networks:
            self.create_network(name, ipv6, internal)
        for name in containers:
            self.create_container(name, data.draw(self.places()), data.draw(aliases))

    def places(self) -> st.SearchStrategy[str]:
        existing = [n.name for n in self.core.networks() if n.name not in ("host", "none")]
        return st.sampled_from(existing or PLACES) | st.sampled_from(PLACES)

    def containers(self) -> st.SearchStrategy[str]:
        """Containers that are not service tasks (those are scaled, not connected)."""
        tasks = {e.sandbox_id for e in self.core.endpoints() if e.task is not None}
        existing = [s.name for s in self.core.sandboxes() if s.id not in tasks]
        return st.sampled_from(existing or CONTAINER_NAMES) | st.sampled_from(CONTAINER_NAMES)

    @rule(name=st.sampled_from(NETWORK_NAMES), ipv6=st.booleans(), internal=st.booleans())
    def create_network(self, name: str, ipv6: bool, internal: bool) -> None:
        internal = internal and name == "z"  # one network that may be internal is enough (R12)
        self._try(self.core.create_network, NetworkSpec(name, ipv6=ipv6, internal=internal))

    @rule(data=st.data())
    def remove_network(self, data: st.DataObject) -> None:
        self._try(self.core.remove_network, data.draw(self.places()))

    @rule(name=st.sampled_from(CONTAINER_NAMES), data=st.data())
    def create_container_rule(self, name: str, data: st.DataObject) -> None:
        self.create_container(name, data.draw(self.places()), data.draw(aliases))

    def create_container(self, name: str, place: str, aliases: list[str]) -> None:
        spec = SandboxSpec(name, network=place, aliases=tuple(aliases))
        self._try(self.core.create_sandbox, spec)

    @rule(data=st.data())
    def connect(self, data: st.DataObject) -> None:
        spec = ConnectSpec(
            data.draw(self.places()), data.draw(self.containers()), tuple(data.draw(aliases))
        )
        self._try(self.core.connect, spec)

    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        endpoints = [(e.network_id, e.sandbox_id) for e in self.core.endpoints() if not e.task]
        if endpoints and data.draw(st.integers(0, 4)):
            network_id, sandbox_id = data.draw(st.sampled_from(endpoints))
            self._try(self.core.disconnect, network_id, sandbox_id)
        else:
            self._try(self.core.disconnect, data.draw(self.places()), data.draw(self.containers()))

    @rule(data=st.data())
    def remove_container(self, data: st.DataObject) -> None:
        self._try(self.core.remove_sandbox, data.draw(self.containers()))

    @rule(
        name=st.sampled_from(SERVICE_NAMES),
        dnsrr=st.booleans(),
        replicas=st.integers(0, 3),
        publish=st.lists(st.sampled_from(PORTS), max_size=2, unique=True),
        data=st.data(),
    )
    def create_service(
        self, name: str, dnsrr: bool, replicas: int, publish: list[str], data: st.DataObject
    ) -> None:
        networks = data.draw(st.lists(self.places(), min_size=1, max_size=2, unique=True))
        spec = ServiceSpec(
            name, tuple(networks), replicas, "dnsrr" if dnsrr else "vip", tuple(publish)
        )
        self._try(self.core.create_service, spec)

    @rule(name=st.sampled_from(SERVICE_NAMES), replicas=st.integers(0, 3))
    def scale_service(self, name: str, replicas: int) -> None:
        self._try(self.core.scale_service, name, replicas)

    @rule(name=st.sampled_from(SERVICE_NAMES))
    def remove_service(self, name: str) -> None:
        self._try(self.core.remove_service, name)

    @rule()
    def restart(self) -> None:
        """The daemon restarted: the table is rebuilt from the stored state's replay."""
        self.start()
        self.checked_at = -1

    # -- the property ------------------------------------------------------------------------

    @invariant()
    def no_sandbox_sees_another_networks_names(self) -> None:
        if self.checked_at == len(self.events):
            return  # nothing changed since the last check
        self.checked_at = len(self.events)
        topology = Topology(self.core)
        self._learn(topology)
        self.runner.run(self._check_all(topology))

    async def _check_all(self, topology: Topology) -> None:
        # `name.network` for every name but short ids (hex, never dotted, nothing new to R3).
        qualified = {
            f"{n}.{net.name.lower()}"
            for n in self.names - self.short_ids
            for net in topology.networks.values()
            if net.dns
        }
        for sandbox in self.askers(topology):
            # A sandbox without a DNS network gets no listener (R1): its queries never reach
            # the resolver. Asking anyway checks that the table holds nothing for it.
            dns = bool(topology.attached(sandbox.id))
            assert self.table.has_dns(sandbox.id) == dns, sandbox.name
            for name in sorted(self.names | qualified if dns else self.names):
                for qtype in (QTYPE.A, QTYPE.AAAA):
                    await self._check(topology, sandbox, name, qtype)
            for address in sorted(self.addresses, key=str):
                await self._check(topology, sandbox, address.reverse_pointer, QTYPE.PTR, address)
            for name in sorted(self.srv):
                await self._check(topology, sandbox, name, QTYPE.SRV)

    @staticmethod
    def askers(topology: Topology) -> list[Sandbox]:
        """Every container, and one task of each service (its others share its networks)."""
        tasks: dict[str, str] = {}  # sandbox id -> service id
        for endpoint in topology.endpoints:
            if endpoint.task is not None:
                tasks[endpoint.sandbox_id] = endpoint.task.service_id
        first = {service: sandbox for sandbox, service in reversed(tasks.items())}
        return [
            s for s in topology.sandboxes.values() if s.id not in tasks or s.id in first.values()
        ]

    def _learn(self, topology: Topology) -> None:
        for endpoint in topology.endpoints:
            self.short_ids.add(endpoint.sandbox_id[:12])
            self.names |= endpoint_names(endpoint, topology.sandbox_of(endpoint))
            self.addresses.update(endpoint.addresses)
        for sandbox in topology.sandboxes.values():
            self.names.add(sandbox.name.lower())
        for service in topology.services:
            self.names |= {service.name.lower(), f"tasks.{service.name.lower()}"}
            self.addresses.update(v.address for v in service.vips)
            self.srv |= {f"_{p.name}._{p.protocol}.{service.name.lower()}" for p in service.ports}

    async def _ask(self, sandbox_id: str, qname: str, qtype: int) -> DNSRecord:
        """As a listener gets it: the hot cache first, else the full path; TCP after TC."""
        query = DNSRecord.question(qname, QTYPE[qtype])
        query.header.id = self.rng.randrange(0x10000)
        query.add_ar(EDNS0(udp_len=1232))
        data = bytes(query.pack())
        self.queries += 1
        reply = self.resolver.fast(sandbox_id, data)
        if reply is None:
            reply = await self.resolver.handle(sandbox_id, data, False)
        assert reply is not None
        parsed = DNSRecord.parse(reply)
        if parsed.header.tc:
            reply = await self.resolver.handle(sandbox_id, data, True)
            assert reply is not None
            parsed = DNSRecord.parse(reply)
        assert parsed.header.id == query.header.id
        return parsed

    async def _check(
        self,
        topology: Topology,
        sandbox: Sandbox,
        name: str,
        qtype: int,
        address: IPAddress | None = None,
    ) -> None:
        spelled = flip_case(name, self.rng)
        asked = len(self.upstream.asked)
        reply = await self._ask(sandbox.id, spelled, qtype)
        forwarded = len(self.upstream.asked) > asked
        where = (
            f"{sandbox.name} (on {[n.name for n in topology.attached(sandbox.id)]}) asked "
            f"{QTYPE[qtype]} {spelled}"
        )

        # Isolation, on its own: every record is about something on the asker's networks.
        allowed, tasks = topology.allowed(sandbox.id)
        attached = {n.name for n in topology.attached(sandbox.id)}
        for rr in (*reply.rr, *reply.ar):
            if rr.rtype in (QTYPE.A, QTYPE.AAAA):
                assert ip_address(str(rr.rdata)) in allowed, f"{where}: leaked {rr.toZone()}"
            elif rr.rtype == QTYPE.PTR:
                assert address in allowed, f"{where}: PTR of a foreign address: {rr.toZone()}"
                target = str(rr.rdata).rstrip(".").lower()
                assert any(target.endswith(f".{n.lower()}") for n in attached), rr.toZone()
            elif rr.rtype == QTYPE.SRV:
                target = str(rr.rdata.target).rstrip(".").lower()
                assert target in tasks, f"{where}: {rr.toZone()}"

        # Exactness: what the rules give, from the core's state.
        if qtype == QTYPE.PTR:
            assert address is not None
            expected = topology.expect_ptr(sandbox.id, address)
        elif qtype == QTYPE.SRV:
            expected = topology.expect_srv(sandbox.id, name)
        else:
            expected = topology.expect_name(sandbox.id, name, qtype)
        got = frozenset((rr.rtype, str(rr.rdata)) for rr in reply.rr)
        extra = frozenset((rr.rtype, str(rr.rdata)) for rr in reply.ar if rr.rtype != QTYPE.OPT)
        assert reply.header.rcode == expected.rcode, f"{where}: rcode {reply.header.rcode}"
        assert got == expected.records, (
            f"{where}: got {sorted(got)}, want {sorted(expected.records)}"
        )
        assert extra == expected.additional, f"{where}: additional {sorted(extra)}"
        assert forwarded == expected.forwarded, f"{where}: forwarded={forwarded}"
        assert all(str(rr.rname) == spelled.rstrip(".") + "." for rr in reply.rr), where


# (queries asked, events seen) per example: for measuring the test's reach by hand.
STATS: list[tuple[int, int]] = []

Isolation.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestIsolation = Isolation.TestCase
