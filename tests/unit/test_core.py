"""The DriverCore's logic (drivers/core/): validation, IPAM, events and their order, undo on
failure, restart from the store.

The drivers and namespaces here are small in-test classes that record their calls and make no
Linux objects; the real plumbing (bridges, veths, namespaces) is covered by tests/netns/. The
store is the real LocalStore in a temporary directory.
"""

from __future__ import annotations

import threading
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from drivers.core import ConnectSpec, DriverCore, NetworkSpec, SandboxSpec
from drivers.errors import Conflict, Invalid, NotFound, Unsupported
from drivers.local_store import STATE_FILE, LocalStore, State
from drivers.model import (
    Driver,
    EndpointAttached,
    EndpointDetached,
    Event,
    NetworkCreated,
    NetworkRemoved,
    SandboxCreated,
    SandboxRemoved,
)
from resolver.lookup import Outcome, Rule
from resolver.names import QTYPE_A, QTYPE_AAAA, NameTable
from tests.unit.cluster_double import MemoryCluster, MemoryEtcd
from tests.unit.doubles import PlumbingFailed, RecordingDriver, RecordingNamespaces


class FailingStore(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fail = False

    def save(self, state: State) -> None:
        if self.fail:
            raise OSError(28, "No space left on device")
        super().save(state)


class Harness:
    def __init__(self, root: Path, namespaces: RecordingNamespaces | None = None) -> None:
        self.root = root
        self.store = FailingStore(root)
        self.drivers = {kind: RecordingDriver(kind) for kind in Driver}
        self.namespaces = namespaces or RecordingNamespaces()
        self.core = DriverCore(self.store, self.drivers, self.namespaces)
        self.events: list[Event] = []
        self.core.subscribe(self.events.append)
        self.core.start()

    @property
    def bridge(self) -> RecordingDriver:
        return self.drivers[Driver.BRIDGE]

    def restart(self) -> Harness:
        return Harness(self.root, self.namespaces)

    def snapshot(self) -> tuple:
        """Everything a failed call must leave as it was."""
        core = self.core
        stored = (self.root / STATE_FILE).read_bytes()
        return (
            core.networks(), core.sandboxes(), core.endpoints(), stored, len(self.events),
            self.namespaces.live.copy(),
        )  # fmt: skip


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def unchanged(h: Harness, fn, error: type[Exception], match: str) -> None:
    before = h.snapshot()
    with pytest.raises(error, match=match):
        fn()
    assert h.snapshot() == before


# -- start and the predefined networks ---------------------------------------------------------


def test_start_creates_predefined_networks_without_dns(h):
    bridge, host, none = h.core.networks()
    assert (bridge.name, bridge.driver, bridge.dns) == ("bridge", Driver.BRIDGE, False)
    assert bridge.ipam[0].subnet == ip_network("172.17.0.0/16")
    assert bridge.ipam[0].gateway == ip_address("172.17.0.1")
    assert (host.name, host.driver, host.dns, host.ipam) == ("host", Driver.HOST, False, ())
    assert (none.name, none.driver, none.dns, none.ipam) == ("none", Driver.NULL, False, ())
    assert h.events == [NetworkCreated(bridge), NetworkCreated(host), NetworkCreated(none)]
    assert h.bridge.calls == [("create_network", "bridge")]
    assert all(len(n.id) == 64 and int(n.id, 16) >= 0 for n in (bridge, host, none))


@pytest.mark.parametrize("name", ["bridge", "host", "none"])
def test_predefined_networks_cannot_be_removed(h, name):
    unchanged(h, lambda: h.core.remove_network(name), Conflict, "predefined")


# -- networks ----------------------------------------------------------------------------------


def test_r18_create_network_emits_its_event_before_returning(h):
    network = h.core.create_network(NetworkSpec("front"))
    assert h.events[-1] == NetworkCreated(network)
    assert network.dns and network.driver is Driver.BRIDGE
    assert network.ipam[0].subnet == ip_network("172.18.0.0/16")
    assert h.bridge.calls[-1] == ("create_network", "front")
    assert h.core.network("front") == network == h.core.network(network.id[:10])


def test_default_subnets_follow_on_and_skip_explicit_ones(h):
    h.core.create_network(NetworkSpec("a", subnets=("172.19.0.0/16",)))
    b = h.core.create_network(NetworkSpec("b"))
    c = h.core.create_network(NetworkSpec("c"))
    assert [b.ipam[0].subnet, c.ipam[0].subnet] == [
        ip_network("172.18.0.0/16"), ip_network("172.20.0.0/16"),
    ]  # fmt: skip


def test_duplicate_network_name_is_a_conflict_and_changes_nothing(h):
    h.core.create_network(NetworkSpec("front"))
    calls = len(h.bridge.calls)
    unchanged(h, lambda: h.core.create_network(NetworkSpec("front")), Conflict, "'front'")
    assert len(h.bridge.calls) == calls


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        (NetworkSpec("bad", subnets=("10.0.0.0/33",)), Invalid, "not a subnet"),
        (NetworkSpec("bad", subnets=("172.17.1.0/24",)), Conflict, "overlaps 172.17.0.0/16"),
        (NetworkSpec("bad name"), Invalid, "network name 'bad name'"),
        (NetworkSpec("bad", driver="weave"), Invalid, "driver 'weave'"),
        (NetworkSpec("bad", driver="host"), Invalid, "predefined network 'host'"),
        (NetworkSpec("bad", options=(("bad", "1"),)), Invalid, "option bad"),
        (NetworkSpec("bad", dns_servers=("dns.example",)), Invalid, "not an IP address"),
    ],
)
def test_bad_network_specs_change_nothing(h, spec, error, match):
    calls = len(h.bridge.calls)
    unchanged(h, lambda: h.core.create_network(spec), error, match)
    assert len(h.bridge.calls) == calls


def test_overlapping_subnets_between_networks_conflict(h):
    h.core.create_network(NetworkSpec("a", subnets=("10.10.0.0/16",)))
    unchanged(
        h, lambda: h.core.create_network(NetworkSpec("b", subnets=("10.10.5.0/24",))),
        Conflict, r"10\.10\.5\.0/24 overlaps 10\.10\.0\.0/16",
    )  # fmt: skip


def test_unsupported_driver_changes_nothing(h):
    h.drivers[Driver.MACVLAN].fail.add("check_supported")
    unchanged(
        h, lambda: h.core.create_network(NetworkSpec("mv", driver="macvlan")), Unsupported,
        "macvlan",
    )  # fmt: skip


def test_failed_network_plumbing_is_undone(h):
    h.bridge.fail.add("create_network")
    unchanged(h, lambda: h.core.create_network(NetworkSpec("front")), PlumbingFailed, "front")
    # the subnet it would have had is still free
    h.bridge.fail.clear()
    assert h.core.create_network(NetworkSpec("x")).ipam[0].subnet == ip_network("172.18.0.0/16")


def test_failed_save_undoes_network_plumbing(h):
    h.store.fail = True
    unchanged(h, lambda: h.core.create_network(NetworkSpec("front")), OSError, "No space")
    assert h.bridge.calls[-2:] == [("create_network", "front"), ("remove_network", "front")]


def test_network_with_endpoints_cannot_be_removed_until_they_leave(h):
    network = h.core.create_network(NetworkSpec("front"))
    h.core.create_sandbox(SandboxSpec("web", network="front"))
    unchanged(h, lambda: h.core.remove_network("front"), Conflict, r"active endpoints \(web\)")
    h.core.disconnect("front", "web")
    assert h.core.remove_network("front") == network
    assert h.events[-1] == NetworkRemoved(network)
    assert h.bridge.calls[-1] == ("remove_network", "front")
    with pytest.raises(NotFound, match="no network named 'front'"):
        h.core.network("front")


def test_references_by_name_full_id_and_unique_prefix(tmp_path, monkeypatch):
    # the predefined networks take the first three ids
    ids = iter([f"{n}" * 64 for n in "123"] + ["ab" + "0" * 62, "ac" + "0" * 62])
    monkeypatch.setattr("drivers.core.core_base.new_id", lambda: next(ids))
    h = Harness(tmp_path)
    ab = h.core.create_network(NetworkSpec("first"))
    ac = h.core.create_network(NetworkSpec("second"))
    assert h.core.network("first") is ab and h.core.network(ac.id) is ac
    assert h.core.network("ab") is ab and h.core.network("AC0") is ac
    with pytest.raises(Invalid, match="'a' matches 2 networks"):
        h.core.network("a")
    with pytest.raises(NotFound, match="no network named 'nope'"):
        h.core.network("nope")
    with pytest.raises(Invalid, match="empty"):
        h.core.network("")
    with pytest.raises(NotFound, match="no container named 'first'"):
        h.core.sandbox("first")


# -- sandboxes ---------------------------------------------------------------------------------


def test_r18_create_sandbox_makes_namespace_joins_and_emits_in_order(h):
    network = h.core.create_network(NetworkSpec("front", subnets=("10.5.0.0/24",)))
    sandbox = h.core.create_sandbox(SandboxSpec("web", network="front", aliases=("www", "w")))
    (endpoint,) = h.core.endpoints(sandbox_id=sandbox.id)
    assert h.events[-2:] == [SandboxCreated(sandbox), EndpointAttached(endpoint)]
    assert sandbox.netns == "/run/netns/web" and sandbox.hostname == "web"
    assert ("create", "web") in h.namespaces.calls
    assert h.bridge.calls[-1] == ("join", "web@front:/run/netns/web")
    assert endpoint.ipv4 == ip_address("10.5.0.2") and endpoint.ipv6 is None
    assert endpoint.mac == "02:42:00:00:00:01"  # what the driver filled in
    assert (endpoint.network_id, endpoint.name, endpoint.aliases) == (
        network.id,
        "web",
        ("www", "w"),
    )


def test_sandbox_on_default_bridge_gets_an_address_but_no_aliases_or_fixed_ip(h):
    h.core.create_sandbox(SandboxSpec("plain"))
    (endpoint,) = h.core.endpoints()
    assert endpoint.ipv4 == ip_address("172.17.0.2")
    for spec in (SandboxSpec("x", aliases=("a",)), SandboxSpec("y", ip="172.17.0.9")):
        unchanged(h, lambda spec=spec: h.core.create_sandbox(spec), Invalid, "user-defined")


def test_none_network_sandbox_has_a_namespace_but_no_endpoint(h):
    sandbox = h.core.create_sandbox(SandboxSpec("iso", network="none"))
    assert sandbox.netns == "/run/netns/iso"
    assert h.core.endpoints(sandbox_id=sandbox.id) == []
    assert h.events[-1] == SandboxCreated(sandbox)


def test_host_network_sandbox_has_no_namespace_and_cannot_join_others(h):
    h.core.create_network(NetworkSpec("front"))
    sandbox = h.core.create_sandbox(SandboxSpec("hosty", network="host"))
    assert sandbox.netns == "" and ("create", "hosty") not in h.namespaces.calls
    (endpoint,) = h.core.endpoints(sandbox_id=sandbox.id)
    assert endpoint.addresses == ()
    unchanged(h, lambda: h.core.connect(ConnectSpec("front", "hosty")), Conflict, "host's network")
    unchanged(h, lambda: h.core.disconnect("host", "hosty"), Invalid, "remove the container")


def test_adopted_namespace_is_used_and_never_removed(h):
    h.namespaces.adopted.add("/proc/4242/ns/net")
    sandbox = h.core.create_sandbox(SandboxSpec("ext", netns="/proc/4242/ns/net"))
    assert sandbox.netns == "/proc/4242/ns/net"
    assert not [c for c in h.namespaces.calls if c[0] == "create"]
    h.core.remove_sandbox("ext")
    assert not [c for c in h.namespaces.calls if c[0] == "remove"]


def test_missing_adopted_namespace_is_not_found_and_changes_nothing(h):
    unchanged(
        h, lambda: h.core.create_sandbox(SandboxSpec("ext", netns="/proc/1/ns/nope")), NotFound,
        "not a network namespace",
    )  # fmt: skip
    unchanged(
        h, lambda: h.core.create_sandbox(SandboxSpec("ext", netns="rel/path")), Invalid, "absolute"
    )


def test_duplicate_container_name_is_a_conflict_and_changes_nothing(h):
    h.core.create_sandbox(SandboxSpec("web"))
    unchanged(h, lambda: h.core.create_sandbox(SandboxSpec("web")), Conflict, "'web' is already")


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        (SandboxSpec("-bad"), Invalid, "container name '-bad'"),
        (SandboxSpec("ok", hostname="bad host"), Invalid, "hostname"),
        (SandboxSpec("ok", network="nope"), NotFound, "'nope'"),
        (SandboxSpec("ok", dns=("x.example",)), Invalid, "--dns"),
        (SandboxSpec("ok", dns_options=("a b",)), Invalid, "--dns-option"),
        (SandboxSpec("ok", network="front", aliases=("bad alias",)), Invalid, "alias"),
        (SandboxSpec("ok", network="front", ip="10.9.9.9"), Invalid, "not in network 'front'"),
        (SandboxSpec("ok", network="front", ip="fd00::1"), Invalid, "use --ip6"),
        (SandboxSpec("ok", network="front", ip6="fd00::5"), Invalid, "no IPv6"),
    ],
)
def test_bad_sandbox_specs_change_nothing(h, spec, error, match):
    h.core.create_network(NetworkSpec("front", subnets=("10.5.0.0/24",)))
    unchanged(h, lambda: h.core.create_sandbox(spec), error, match)
    assert ("create", spec.name) not in h.namespaces.calls


def test_failed_join_releases_address_and_removes_namespace(h):
    h.core.create_network(NetworkSpec("front", subnets=("10.5.0.0/24",)))
    h.bridge.fail.add("join")
    unchanged(
        h, lambda: h.core.create_sandbox(SandboxSpec("web", network="front", ip="10.5.0.7")),
        PlumbingFailed, "join",
    )  # fmt: skip
    assert h.namespaces.calls[-2:] == [("create", "web"), ("remove", "web")]
    assert h.bridge.calls[-2:] == [("join", "web@front:/run/netns/web"), ("leave", "web@front")]
    h.bridge.fail.clear()
    h.core.create_sandbox(SandboxSpec("web", network="front", ip="10.5.0.7"))  # released


def test_failed_namespace_creation_releases_the_address(h):
    h.core.create_network(NetworkSpec("front", subnets=("10.5.0.0/24",)))
    h.namespaces.fail_create = True
    spec = SandboxSpec("web", network="front", ip="10.5.0.7")
    unchanged(h, lambda: h.core.create_sandbox(spec), PlumbingFailed, "create web")
    h.namespaces.fail_create = False
    assert h.core.create_sandbox(spec).name == "web"


def test_failed_save_undoes_sandbox_plumbing(h):
    h.core.create_network(NetworkSpec("front"))
    h.store.fail = True
    unchanged(
        h, lambda: h.core.create_sandbox(SandboxSpec("web", network="front")), OSError, "No space"
    )
    assert h.bridge.calls[-1] == ("leave", "web@front")
    assert h.namespaces.calls[-1] == ("remove", "web")


def test_remove_sandbox_detaches_newest_first_then_removes_namespace(h):
    h.core.create_network(NetworkSpec("a"))
    h.core.create_network(NetworkSpec("b"))
    sandbox = h.core.create_sandbox(SandboxSpec("web", network="a", ip="172.18.0.9"))
    h.core.connect(ConnectSpec("b", "web"))
    first, second = h.core.endpoints(sandbox_id=sandbox.id)
    assert h.core.remove_sandbox("web") == sandbox
    assert h.events[-3:] == [
        EndpointDetached(second),
        EndpointDetached(first),
        SandboxRemoved(sandbox),
    ]
    assert h.bridge.calls[-2:] == [("leave", "web@b"), ("leave", "web@a")]
    assert h.namespaces.calls[-1] == ("remove", "web")
    assert h.core.sandboxes() == [] and h.core.endpoints() == []
    # its address is free again
    h.core.create_sandbox(SandboxSpec("again", network="a", ip="172.18.0.9"))


# -- connect and disconnect --------------------------------------------------------------------


def test_r18_connect_emits_before_returning_and_twice_is_a_conflict(h):
    h.core.create_network(NetworkSpec("a"))
    h.core.create_network(NetworkSpec("b"))
    h.core.create_sandbox(SandboxSpec("web", network="a"))
    endpoint = h.core.connect(ConnectSpec("b", "web", aliases=("api",)))
    assert h.events[-1] == EndpointAttached(endpoint)
    assert endpoint.aliases == ("api",) and endpoint.ipv4 == ip_address("172.19.0.2")
    unchanged(h, lambda: h.core.connect(ConnectSpec("b", "web")), Conflict, "already connected")
    assert [e.network_id for e in h.core.endpoints(sandbox_id=endpoint.sandbox_id)] == [
        h.core.network("a").id, h.core.network("b").id,
    ]  # fmt: skip


def test_requested_address_in_use_is_a_conflict_and_consumes_nothing(h):
    h.core.create_network(NetworkSpec("front", subnets=("10.5.0.0/24",)))
    h.core.create_sandbox(SandboxSpec("a", network="front", ip="10.5.0.2"))
    h.core.create_sandbox(SandboxSpec("b", network="none"))
    unchanged(
        h, lambda: h.core.connect(ConnectSpec("front", "b", ip="10.5.0.2")), Conflict,
        "in use on network 'front' by 'a'",
    )  # fmt: skip
    assert h.core.connect(ConnectSpec("front", "b")).ipv4 == ip_address("10.5.0.3")


def test_connect_to_host_or_none_is_invalid(h):
    h.core.create_sandbox(SandboxSpec("web", network="none"))
    for network in ("host", "none"):
        unchanged(h, lambda n=network: h.core.connect(ConnectSpec(n, "web")), Invalid, "created")


def test_disconnect_releases_and_emits(h):
    h.core.create_network(NetworkSpec("front", subnets=("10.5.0.0/24",)))
    h.core.create_sandbox(SandboxSpec("web", network="front", ip="10.5.0.20"))
    endpoint = h.core.disconnect("front", "web")
    assert h.events[-1] == EndpointDetached(endpoint)
    assert h.bridge.calls[-1] == ("leave", "web@front")
    unchanged(h, lambda: h.core.disconnect("front", "web"), NotFound, "not connected")
    assert h.core.connect(ConnectSpec("front", "web", ip="10.5.0.20")).ipv4 == endpoint.ipv4


def test_failed_leave_keeps_the_endpoint(h):
    h.core.create_network(NetworkSpec("front"))
    h.core.create_sandbox(SandboxSpec("web", network="front"))
    h.bridge.fail.add("leave")
    unchanged(h, lambda: h.core.disconnect("front", "web"), PlumbingFailed, "leave")


def test_ipv6_network_gives_both_families_and_honours_ip6(h):
    h.core.create_network(NetworkSpec("v6", subnets=("10.6.0.0/24", "fd00:6::/64"), ipv6=True))
    h.core.create_sandbox(SandboxSpec("a", network="v6"))
    h.core.create_sandbox(SandboxSpec("b", network="v6", ip6="fd00:6::99"))
    a, b = h.core.endpoints()
    assert (a.ipv4, a.ipv6) == (ip_address("10.6.0.2"), ip_address("fd00:6::2"))
    assert (b.ipv4, b.ipv6) == (ip_address("10.6.0.3"), ip_address("fd00:6::99"))


def test_overlay_networks_need_the_cluster_store(h):
    unchanged(
        h,
        lambda: h.core.create_network(NetworkSpec("ov", driver="overlay")),
        Unsupported,
        "--store etcd://",
    )


def test_overlay_networks_need_attachable_for_containers(h):
    h.core.cluster = MemoryCluster(MemoryEtcd(), "h1", "192.0.2.1")
    h.core.create_network(NetworkSpec("ov", driver="overlay"))
    h.core.create_network(NetworkSpec("ova", driver="overlay", attachable=True))
    unchanged(
        h, lambda: h.core.create_sandbox(SandboxSpec("x", network="ov")), Conflict, "--attachable"
    )
    h.core.create_sandbox(SandboxSpec("y", network="ova"))


def test_a_failing_subscriber_does_not_hide_events_from_the_others(h):
    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    later: list[Event] = []
    h.core.subscribe(broken)
    h.core.subscribe(later.append)
    network = h.core.create_network(NetworkSpec("front"))
    assert later == [NetworkCreated(network)] and h.events[-1] == NetworkCreated(network)


def test_concurrent_calls_from_threads_never_share_an_address(h):
    h.core.create_network(NetworkSpec("front", subnets=("10.7.0.0/24",)))
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                h.core.create_sandbox(SandboxSpec(f"w{n}-{i}", network="front"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    addresses = [e.ipv4 for e in h.core.endpoints()]
    assert len(addresses) == 80 == len(set(addresses))
    attached = [e.endpoint for e in h.events if isinstance(e, EndpointAttached)]
    assert attached == h.core.endpoints()  # events in the same order as the state


# -- restart -----------------------------------------------------------------------------------


def build_world(h: Harness) -> None:
    h.core.create_network(NetworkSpec("front", subnets=("10.5.0.0/24",)))
    h.core.create_network(NetworkSpec("back", subnets=("10.6.0.0/24", "fd00:6::/64"), ipv6=True))
    h.core.create_sandbox(SandboxSpec("web", network="front", aliases=("www",)))
    h.core.create_sandbox(SandboxSpec("db", network="back", hostname="database"))
    h.core.connect(ConnectSpec("back", "web", aliases=("api",)))
    h.core.create_sandbox(SandboxSpec("gone", network="front"))
    h.core.remove_sandbox("gone")


def test_restart_restores_the_same_state_and_replays_the_same_events(h):
    build_world(h)
    again = h.restart()
    assert again.core.networks() == h.core.networks()
    assert again.core.sandboxes() == h.core.sandboxes()
    assert again.core.endpoints() == h.core.endpoints()
    assert again.events == [
        *(NetworkCreated(n) for n in h.core.networks()),
        *(SandboxCreated(s) for s in h.core.sandboxes()),
        *(EndpointAttached(e) for e in h.core.endpoints()),
    ]
    # each bridge network's plumbing is restored (idempotent: a reboot loses bridges), and no
    # network is made anew nor any endpoint joined again
    bridges = [n.name for n in h.core.networks() if n.driver is Driver.BRIDGE]
    assert sorted(again.bridge.calls) == sorted(("create_network", b) for b in bridges)


def test_after_restart_no_address_is_handed_out_twice(h):
    build_world(h)
    held = {a for e in h.core.endpoints() for a in e.addresses}
    again = h.restart()
    for i in range(5):
        again.core.create_sandbox(SandboxSpec(f"new{i}", network="back"))
    fresh = [a for e in again.core.endpoints()[-5:] for a in e.addresses]
    assert len(fresh) == 10 and not held & set(fresh) and len(set(fresh)) == 10
    web_front = again.core.endpoints(sandbox_id=again.core.sandbox("web").id)[0]
    with pytest.raises(Conflict, match="in use"):
        again.core.create_sandbox(SandboxSpec("x", network="front", ip=str(web_front.ipv4)))


def test_restart_forgets_sandboxes_whose_namespace_vanished(h):
    build_world(h)
    h.namespaces.live.discard("/run/netns/db")
    again = h.restart()
    assert [s.name for s in again.core.sandboxes()] == ["web"]
    assert all(e.name == "web" for e in again.core.endpoints())
    # its address is free, and the store was updated
    again.core.create_sandbox(SandboxSpec("db2", network="back", ip="10.6.0.2"))
    assert [s.name for s in LocalStore(h.root).load().sandboxes.values()] == ["web", "db2"]


# -- the events build the name table -------------------------------------------------------------


def test_r18_events_fed_to_the_name_table_answer_as_soon_as_calls_return(h):
    table = NameTable()
    table.apply_all(h.events)
    h.core.subscribe(table.apply)
    build_world(h)
    web = h.core.sandbox("web")
    db = h.core.sandbox("db")
    plain = h.core.create_sandbox(SandboxSpec("plain"))  # default bridge: no DNS (R1)

    found = table.lookup(web.id, "db", QTYPE_A)
    assert (found.rule, found.outcome, found.network) == (Rule.R2_NAME, Outcome.RECORDS, "back")
    assert found.addresses == (ip_address("10.6.0.2"),)
    assert table.lookup(web.id, "database", QTYPE_AAAA).addresses == (ip_address("fd00:6::2"),)
    assert table.lookup(db.id, "api", QTYPE_A).addresses == (ip_address("10.6.0.3"),)
    assert table.lookup(db.id, "www", QTYPE_A).outcome is Outcome.FORWARD  # only on `front`
    assert table.lookup(web.id, "www.front", QTYPE_A).addresses == (ip_address("10.5.0.2"),)
    assert table.lookup(web.id, "gone", QTYPE_A).outcome is Outcome.FORWARD
    assert not table.has_dns(plain.id) and table.has_dns(web.id)

    h.core.disconnect("back", "web")
    assert table.lookup(db.id, "web", QTYPE_A).outcome is Outcome.FORWARD

    # a new table fed only by a restarted core's replay answers the same
    replayed = NameTable()
    again = Harness(h.root, h.namespaces)
    replayed.apply_all(again.events)
    for sandbox, name in [(web, "db"), (db, "api"), (web, "www"), (db, "web"), (db, "database")]:
        assert replayed.lookup(sandbox.id, name, QTYPE_A) == table.lookup(sandbox.id, name, QTYPE_A)
