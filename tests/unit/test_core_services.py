"""Services in the DriverCore (drivers/core/): tasks, VIPs, scale, rm, restart, events, errors,
and what the name table answers from the core's events (R5, R8, R18).

In-test drivers, namespaces and VIP routes record their calls and make no Linux objects (as in
test_core.py); the store is the real LocalStore in a temporary directory. The real plumbing is
covered by tests/netns/test_services.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from drivers.core import ConnectSpec, DriverCore, NetworkSpec, SandboxSpec, ServiceSpec
from drivers.errors import Conflict, Invalid, NotFound
from drivers.local_store import STATE_FILE, LocalStore
from drivers.model import (
    Driver,
    EndpointAttached,
    EndpointDetached,
    EndpointMode,
    Event,
    SandboxCreated,
    SandboxRemoved,
    ServicePort,
    ServiceRemoved,
    ServiceUpdated,
)
from drivers.validation import MAX_REPLICAS, parse_ports
from drivers.vip import VipRoute
from resolver.lookup import Outcome, Rule
from resolver.names import QTYPE_A, QTYPE_PTR, QTYPE_SRV, NameTable
from tests.unit.doubles import NamespacesFailed, PathNamespaces, QuietDriver

TASK_NAME = re.compile(r"^web\.(\d+)\.[a-z0-9]{25}$")


class Routes:
    """VipRoutes that remembers the last routes applied in each namespace."""

    def __init__(self) -> None:
        self.by_netns: dict[str, tuple[VipRoute, ...]] = {}
        self.calls = 0

    def apply(self, netns: str, routes: Sequence[VipRoute]) -> None:
        self.calls += 1
        self.by_netns[netns] = tuple(routes)


class Harness:
    def __init__(self, root: Path, namespaces: PathNamespaces | None = None) -> None:
        self.root = root
        self.namespaces = namespaces or PathNamespaces()
        self.routes = Routes()
        self.table = NameTable()
        self.events: list[Event] = []
        self.core = DriverCore(
            LocalStore(root),
            {k: QuietDriver(k) for k in Driver},
            self.namespaces,
            vip_routes=self.routes,
        )
        self.core.subscribe(self.events.append)
        self.core.subscribe(self.table.apply)
        self.core.start()

    def restart(self) -> Harness:
        return Harness(self.root, self.namespaces)

    def snapshot(self) -> tuple:
        core = self.core
        return (
            core.networks(), core.sandboxes(), core.endpoints(), core.services(),
            (self.root / STATE_FILE).read_bytes(), len(self.events), set(self.namespaces.live),
        )  # fmt: skip

    def lookup(self, container: str, name: str, qtype: int = QTYPE_A):
        return self.table.lookup(self.core.sandbox(container).id, name, qtype)

    def task_addresses(self, service: str) -> set:
        sid = self.core.service(service).id
        return {e.ipv4 for e in self.core.endpoints() if e.task and e.task.service_id == sid}


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path)
    harness.core.create_network(NetworkSpec("app", subnets=("10.20.0.0/24",)))
    harness.core.create_sandbox(SandboxSpec("client", network="app"))
    return harness


def web(replicas: int = 3, mode: str = "vip", **kw) -> ServiceSpec:
    return ServiceSpec("web", ("app",), replicas, mode, ("80/tcp",), "http", **kw)


def unchanged(h: Harness, fn, error: type[Exception], match: str) -> None:
    before = h.snapshot()
    with pytest.raises(error, match=match):
        fn()
    assert h.snapshot() == before


# -- create ------------------------------------------------------------------------------------


def test_create_vip_service_starts_task_sandboxes_with_a_vip(h):
    service = h.core.create_service(web())
    tasks = h.core.tasks(service.id)
    assert [t.slot for t, _ in tasks] == [1, 2, 3]
    for task, sandbox in tasks:
        assert TASK_NAME.match(sandbox.name) and sandbox.name == task.name
        assert sandbox.netns == f"/run/netns/{task.name}" and sandbox.netns in h.namespaces.live
        (endpoint,) = h.core.endpoints(sandbox_id=sandbox.id)
        assert endpoint.task == task and endpoint.ipv4 in ip_network("10.20.0.0/24")
    (vip,) = service.vips
    assert vip.network_id == h.core.network("app").id
    assert vip.address in ip_network("10.20.0.0/24")
    assert vip.address not in h.task_addresses("web")
    assert service.ports == (ServicePort("http", "tcp", 80),)
    assert h.core.service("web") == service == h.core.service(service.id[:8])


def test_r18_create_service_emits_service_then_task_events_before_returning(h):
    before = len(h.events)
    service = h.core.create_service(web(2))
    events = h.events[before:]
    assert events[0] == ServiceUpdated(service)
    assert [type(e) for e in events[1:]] == [SandboxCreated, EndpointAttached] * 2


def test_r5_names_of_a_vip_service(h):
    service = h.core.create_service(web())
    found = h.lookup("client", "web")
    assert (found.rule, found.addresses) == (Rule.R5_SERVICE, (service.vips[0].address,))
    assert set(h.lookup("client", "tasks.web").addresses) == h.task_addresses("web")
    srv = h.lookup("client", "_http._tcp.web", QTYPE_SRV)
    assert srv.outcome is Outcome.RECORDS and len(srv.srv) == 3
    for target in srv.srv:
        assert target.port == 80
        assert h.lookup("client", target.target).addresses == target.addresses


def test_r8_ptr_of_the_vip_is_the_service_name(h):
    service = h.core.create_service(web())
    ptr = h.lookup("client", service.vips[0].address.reverse_pointer, QTYPE_PTR)
    assert ptr.ptr == ("web.app.",)


def test_r5_dnsrr_service_has_no_vip_and_answers_every_task(h):
    service = h.core.create_service(web(mode="dnsrr"))
    assert service.mode is EndpointMode.DNSRR and service.vips == ()
    assert set(h.lookup("client", "web").addresses) == h.task_addresses("web")
    assert len(h.task_addresses("web")) == 3
    assert h.routes.calls == 0  # no VIP, nothing to route


def test_default_port_name_is_the_port_number():
    assert parse_ports(["80/tcp", "53/udp", "8080"]) == (
        ServicePort("80", "tcp", 80),
        ServicePort("53", "udp", 53),
        ServicePort("8080", "tcp", 8080),
    )
    assert parse_ports(["80/TCP", "80/tcp"], "web") == (ServicePort("web", "tcp", 80),)


# -- VIP routes --------------------------------------------------------------------------------


def test_every_sandbox_on_the_network_routes_the_vip_to_the_tasks(h):
    service = h.core.create_service(web())
    expected = (VipRoute(service.vips[0].address, service.ports, tuple(
        e.ipv4 for _, s in h.core.tasks(service.id) for e in h.core.endpoints(sandbox_id=s.id)
    )),)  # fmt: skip
    assert len(expected[0].backends) == 3
    for sandbox in h.core.sandboxes():  # the client and the tasks themselves
        if sandbox.netns:
            assert h.routes.by_netns[sandbox.netns] == expected, sandbox.name


def test_sandboxes_that_join_later_get_the_routes_and_lose_them_on_leaving(h):
    service = h.core.create_service(web())
    h.core.create_network(NetworkSpec("other"))
    late = h.core.create_sandbox(SandboxSpec("late", network="app"))
    assert h.routes.by_netns[late.netns][0].vip == service.vips[0].address
    outside = h.core.create_sandbox(SandboxSpec("outside", network="other"))
    assert outside.netns not in h.routes.by_netns  # no vip service on its network
    h.core.connect(ConnectSpec("app", "outside"))
    assert len(h.routes.by_netns[outside.netns][0].backends) == 3
    h.core.disconnect("app", "outside")
    assert h.routes.by_netns[outside.netns] == ()


def test_scale_rewrites_the_routes(h):
    service = h.core.create_service(web())
    client = h.core.sandbox("client")
    h.core.scale_service("web", 1)
    assert len(h.routes.by_netns[client.netns][0].backends) == 1
    h.core.scale_service("web", 0)
    assert h.routes.by_netns[client.netns] == (VipRoute(service.vips[0].address, service.ports),)
    h.core.remove_service("web")
    assert h.routes.by_netns[client.netns] == ()


# -- scale and rm ------------------------------------------------------------------------------


def test_r18_scale_down_stops_the_highest_slots_and_up_fills_the_lowest(h):
    service = h.core.create_service(web())
    first = h.core.tasks(service.id)
    before = len(h.events)
    scaled = h.core.scale_service("web", 1)
    assert scaled.replicas == 1 and h.core.service("web").replicas == 1
    assert h.core.tasks(service.id) == first[:1]
    for _, sandbox in first[1:]:
        assert sandbox.netns not in h.namespaces.live
    events = h.events[before:]
    assert events[0] == ServiceUpdated(scaled)
    removed = [e.sandbox.name for e in events if isinstance(e, SandboxRemoved)]
    assert removed == [first[2][1].name, first[1][1].name]  # highest slot first
    assert h.lookup("client", "tasks.web").addresses == tuple(h.task_addresses("web"))
    h.core.scale_service("web", 3)
    assert [t.slot for t, _ in h.core.tasks(service.id)] == [1, 2, 3]
    assert len(h.lookup("client", "tasks.web").addresses) == 3


def test_scale_to_the_same_count_changes_no_task(h):
    service = h.core.create_service(web(2))
    tasks = h.core.tasks(service.id)
    h.core.scale_service("web", 2)
    assert h.core.tasks(service.id) == tasks


def test_rm_removes_tasks_vip_and_names(h):
    service = h.core.create_service(web())
    tasks = h.core.tasks(service.id)
    before = len(h.events)
    assert h.core.remove_service("web") == service
    assert h.core.services() == [] and h.core.tasks(service.id) == []
    assert {s.name for s in h.core.sandboxes()} == {"client"}
    assert all(s.netns not in h.namespaces.live for _, s in tasks)
    assert h.events[-1] == ServiceRemoved(service)
    assert sum(isinstance(e, EndpointDetached) for e in h.events[before:]) == 3
    assert h.lookup("client", "web").outcome is Outcome.FORWARD
    assert h.lookup("client", "tasks.web").outcome is Outcome.FORWARD
    with pytest.raises(NotFound, match="no service named 'web'"):
        h.core.service("web")
    h.core.remove_sandbox("client")
    h.core.remove_network("app")  # nothing holds it any more


# -- restart -----------------------------------------------------------------------------------


def test_restart_restores_services_and_their_names(h):
    service = h.core.create_service(web())
    tasks = h.core.tasks(service.id)
    again = h.restart()
    assert again.core.services() == [service] and again.core.tasks(service.id) == tasks
    assert again.lookup("client", "web").addresses == (service.vips[0].address,)
    assert set(again.lookup("client", "tasks.web").addresses) == h.task_addresses("web")
    # The VIP is still held: a new container does not get it.
    new = again.core.create_sandbox(SandboxSpec("new", network="app"))
    (endpoint,) = again.core.endpoints(sandbox_id=new.id)
    assert endpoint.ipv4 != service.vips[0].address
    assert again.routes.by_netns[new.netns][0].vip == service.vips[0].address


def test_restart_after_a_reboot_starts_the_tasks_again_with_the_same_vip(h):
    service = h.core.create_service(web())
    h.namespaces.live.clear()  # a reboot: every namespace is gone
    again = h.restart()
    assert again.core.service("web") == service
    assert [t.slot for t, _ in again.core.tasks(service.id)] == [1, 2, 3]
    tasks = again.core.tasks(service.id)
    assert all(s.netns in again.namespaces.live for _, s in tasks)
    addresses = {e.ipv4 for e in again.core.endpoints()}
    assert service.vips[0].address not in addresses
    assert len(again.lookup(tasks[0][1].name, "tasks.web").addresses) == 3


# -- errors: clear, and nothing changes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        (ServiceSpec("web", ("nope",)), NotFound, "no network named 'nope'"),
        (ServiceSpec("web", ()), Invalid, "needs a network"),
        (ServiceSpec("web", ("app", "app")), Invalid, "given twice"),
        (ServiceSpec("web", ("bridge",)), Invalid, "no embedded DNS"),
        (ServiceSpec("web", ("app",), -1), Invalid, "replicas -1 is out of range"),
        (ServiceSpec("web", ("app",), MAX_REPLICAS + 1), Invalid, "out of range"),
        (ServiceSpec("web", ("app",), "3"), Invalid, "not a number"),  # type: ignore[arg-type]
        (ServiceSpec("web", ("app",), 1, "round"), Invalid, "endpoint-mode 'round'"),
        (ServiceSpec("we.b", ("app",)), Invalid, "service name 'we.b'"),
        (ServiceSpec("", ("app",)), Invalid, "service name is empty"),
        (ServiceSpec("web", ("app",), publish=("8080:80/tcp",)), Invalid, "not on the host"),
        (ServiceSpec("web", ("app",), publish=("80/sctp",)), Invalid, "tcp or udp"),
        (ServiceSpec("web", ("app",), publish=("0/tcp",)), Invalid, "1 to 65535"),
        (ServiceSpec("web", ("app",), port_name="http"), Invalid, "add --publish"),
        (ServiceSpec("web", ("app",), publish=("80",), port_name="-x"), Invalid, "DNS label"),
    ],
)
def test_bad_service_requests_change_nothing(h, spec, error, match):
    unchanged(h, lambda: h.core.create_service(spec), error, match)


def test_duplicate_service_name_is_a_conflict(h):
    h.core.create_service(web(1))
    unchanged(h, lambda: h.core.create_service(web(1)), Conflict, "'web' is already in use")
    unchanged(
        h, lambda: h.core.create_service(replace(web(1), name="WEB")), Conflict, "already in use"
    )


def test_bad_scale_and_unknown_service_change_nothing(h):
    h.core.create_service(web(2))
    unchanged(h, lambda: h.core.scale_service("web", -2), Invalid, "out of range")
    unchanged(h, lambda: h.core.scale_service("nope", 2), NotFound, "no service named 'nope'")
    unchanged(h, lambda: h.core.remove_service("nope"), NotFound, "netdns service ls")


def test_a_task_cannot_be_removed_or_disconnected_alone(h):
    service = h.core.create_service(web(1))
    (_, sandbox), = h.core.tasks(service.id)  # fmt: skip
    unchanged(h, lambda: h.core.remove_sandbox(sandbox.name), Conflict, "service scale web=N")
    unchanged(h, lambda: h.core.disconnect("app", sandbox.name), Conflict, "task of service")


def test_a_network_with_a_service_cannot_be_removed(h):
    h.core.create_service(web(0))
    h.core.remove_sandbox("client")
    unchanged(h, lambda: h.core.remove_network("app"), Conflict, "used by service")


def test_failed_task_start_undoes_everything(h):
    h.namespaces.fail_after = 1  # the second task's namespace fails
    unchanged(h, lambda: h.core.create_service(web()), NamespacesFailed, "create web.2.")
    h.namespaces.fail_after = None
    service = h.core.create_service(web())
    # Addresses and VIP went back: a third of a /24 is plenty, but next-fit would skip them;
    # what counts is that nothing from the failed attempt is still held or named.
    assert len(h.task_addresses("web")) == 3 and service.vips
    h.core.create_service(replace(web(1), name="api"))
    h.namespaces.fail_after = 0
    unchanged(h, lambda: h.core.scale_service("api", 2), NamespacesFailed, "create api.2.")
    assert h.core.service("api").replicas == 1


def test_vip_is_taken_from_the_pool_and_given_back(h):
    h.core.create_network(NetworkSpec("tiny", subnets=("10.30.0.0/30",)))  # one usable address
    service = h.core.create_service(ServiceSpec("solo", ("tiny",), 0))
    assert service.vips[0].address == ip_address("10.30.0.2")
    unchanged(h, lambda: h.core.scale_service("solo", 1), Conflict, "no free IPv4 address")
    h.core.remove_service("solo")
    h.core.create_sandbox(SandboxSpec("fits", network="tiny"))
