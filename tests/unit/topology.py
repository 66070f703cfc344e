"""One topology for the tests of the name table, the hot path, the hot path's property test and
the packet fuzz target: builders for the model's objects (ids derived from names, so a test
reads by name), a table built through events only (as the daemon builds it), and the
networks, containers and services those tests share."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from drivers.model import (
    Driver,
    Endpoint,
    EndpointAttached,
    EndpointMode,
    Event,
    Network,
    NetworkCreated,
    Sandbox,
    SandboxCreated,
    Service,
    ServicePort,
    ServiceUpdated,
    Task,
    VirtualIP,
)
from resolver.names import NameTable


def network(name: str, *, id: str = "", **kw: object) -> Network:
    return Network(id=id or f"{name}-id", name=name, driver=Driver.BRIDGE, **kw)  # type: ignore[arg-type]


def sandbox(name: str, *, id: str = "", **kw: object) -> Sandbox:
    return Sandbox(id=id or f"{name:0<12}" + "cd" * 26, name=name, **kw)  # type: ignore[arg-type]


def endpoint(
    box: Sandbox, net: Network, v4: str | None = None, v6: str | None = None, **kw: object
) -> Endpoint:
    return Endpoint(
        id=f"ep-{box.name}-{net.id}", network_id=net.id, sandbox_id=box.id, name=box.name,
        ipv4=IPv4Address(v4) if v4 else None, ipv6=IPv6Address(v6) if v6 else None,
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def task_of(
    service: Service, slot: int, v4: str, net: Network | None = None
) -> tuple[Sandbox, Endpoint]:
    """Task `slot` of `service` (named `<svc>.<slot>.t<slot>x`), on its first network."""
    box = sandbox(f"{service.name}{slot}")
    on = net if net is not None else APP
    return box, endpoint(box, on, v4, task=Task(service.id, service.name, slot, f"t{slot}x"))


class Topology:
    """Builds a table through events only, as the daemon does; sandboxes get ids in order."""

    def __init__(self, *, domains: tuple[str, ...] = (), keep_single_labels: bool = False) -> None:
        self.table = NameTable(domains=domains, keep_single_labels=keep_single_labels)
        self.count = 0

    def network(self, name: str, **kw: object) -> Network:
        created = network(name, **kw)
        self.table.apply(NetworkCreated(created))
        return created

    def sandbox(self, name: str, **kw: object) -> Sandbox:
        self.count += 1
        created = sandbox(name, id=f"{self.count:012x}" + "ab" * 26, **kw)
        self.table.apply(SandboxCreated(created))
        return created

    def attach(
        self, box: Sandbox, net: Network, ipv4: str | None = None, ipv6: str | None = None,
        **kw: object,
    ) -> Endpoint:  # fmt: skip
        attached = endpoint(box, net, ipv4, ipv6, **kw)
        self.table.apply(EndpointAttached(attached))
        return attached


# -- what the hot path's tests share ----------------------------------------------------------

APP = network("appnet", id="n-app", ipv6=True)
DOTTED = network("other.net", id="n-dot")
INTERNAL = network("backstage", id="n-int", internal=True)

CLIENT = sandbox("client")
LONER = sandbox("loner")  # only on the internal network: R12
WEB = sandbox("web")
WEB_EP = endpoint(WEB, APP, "10.1.0.2", "fd00::2", aliases=("www",))
API = Service(
    id="s-api", name="api", networks=(APP.id,),
    vips=(VirtualIP(APP.id, IPv4Address("10.1.0.100")),), ports=(ServicePort("http", "tcp", 80),),
)  # fmt: skip


# -- the whole table of the hot path's property test and the packet fuzz target ---------------

NETWORKS = (APP, DOTTED, INTERNAL)
NDOTS = sandbox("ndots", dns_options=("ndots:1",))  # R12b
DB = sandbox("db")
POOL = [sandbox(f"p{i}") for i in range(3)]
ASKERS = (CLIENT, LONER, NDOTS)  # CLIENT: on appnet and other.net; LONER: internal only (R12)

RR = Service(
    id="s-rr", name="rr", networks=(APP.id,), mode=EndpointMode.DNSRR,
    ports=(ServicePort("dns", "udp", 53),),
)  # fmt: skip


TASKS = [task_of(API, 1, "10.1.0.11"), task_of(API, 2, "10.1.0.12"), task_of(RR, 1, "10.1.0.21")]
EXTRA_TASK = task_of(API, 3, "10.1.0.13")
DB_EPS = (endpoint(DB, APP, "10.1.0.3", aliases=("a.b",)), endpoint(DB, DOTTED, "10.2.0.3"))
POOL_EPS = [
    endpoint(p, APP, f"10.1.1.{i}", "fd00::1:0" if i == 0 else None, aliases=("pool",))
    for i, p in enumerate(POOL)
]


def base_events() -> list[Event]:
    events: list[Event] = [NetworkCreated(n) for n in NETWORKS]
    events += [ServiceUpdated(API), ServiceUpdated(RR)]
    for box in (*ASKERS, WEB, DB, *POOL, *(t[0] for t in TASKS)):
        events.append(SandboxCreated(box))
    events += [
        EndpointAttached(endpoint(CLIENT, APP, "10.1.0.4")),
        EndpointAttached(endpoint(CLIENT, DOTTED, "10.2.0.4")),
        EndpointAttached(endpoint(LONER, INTERNAL, "10.9.0.4")),
        EndpointAttached(endpoint(NDOTS, APP, "10.1.0.5")),
        EndpointAttached(WEB_EP),
        *(EndpointAttached(e) for e in DB_EPS),
        *(EndpointAttached(e) for e in POOL_EPS),
        *(EndpointAttached(t[1]) for t in TASKS),
    ]
    return events
