"""The DriverCore across hosts: overlay networks, remote endpoints, cluster-wide addresses,
services placed over hosts, lease expiry and resync.

Three DriverCores (three "hosts", each with its own store and recording plumbing) share an
in-memory etcd (tests/unit/cluster_double.py: same keys, same ClusterView, no sockets). The
real ClusterStore on a real etcd is tested in test_cluster_store.py and tests/netns/test_cluster.py.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from drivers.cluster import keys
from drivers.cluster.keys import AddressClaim, EndpointRecord
from drivers.core import ConnectSpec, DriverCore, NetworkSpec, SandboxSpec, ServiceSpec, spread
from drivers.errors import Conflict, Unavailable
from drivers.local_store import LocalStore
from drivers.model import Driver, Endpoint, Network, Scope
from drivers.overlay import OPT_VNI
from resolver.lookup import Outcome
from resolver.names import QTYPE_A, NameTable
from tests.unit.cluster_double import MemoryCluster, MemoryEtcd
from tests.unit.doubles import RecordingDriver, RecordingNamespaces
from tests.unit.test_core_services import Routes


class RecordingOverlay(RecordingDriver):
    def __init__(self) -> None:
        super().__init__(Driver.OVERLAY)
        self.programmed: set[tuple[str, IPv4Address, str, IPv4Address]] = set()
        self.batches = 0

    def update_peers(self, network: Network, *, add=(), remove=()) -> None:
        self.batches += 1
        for address, mac, vtep in remove:
            self.programmed.discard((network.id, address, mac, vtep))
        for address, mac, vtep in add:
            self.programmed.add((network.id, address, mac, vtep))

    def peers(self, network: Network) -> set[tuple[IPv4Address, str, IPv4Address]]:
        return {(a, m, v) for n, a, m, v in self.programmed if n == network.id}


class Host:
    def __init__(self, etcd: MemoryEtcd, name: str, vtep: str, root: Path) -> None:
        self.name, self.etcd, self.root = name, etcd, root
        self.namespaces = RecordingNamespaces()
        self.overlay = RecordingOverlay()
        self.start(vtep)

    def start(self, vtep: str) -> None:
        drivers = {kind: RecordingDriver(kind) for kind in Driver}
        drivers[Driver.OVERLAY] = self.overlay
        self.routes = Routes()
        self.core = DriverCore(
            LocalStore(self.root), drivers, self.namespaces, vip_routes=self.routes
        )
        self.cluster = MemoryCluster(self.etcd, self.name, vtep)
        self.core.cluster = self.cluster
        self.table = NameTable()
        self.core.subscribe(self.table.apply)
        self.core.start()

    def sync(self) -> None:
        self.cluster.sync(self.core)

    def a(self, container: str, name: str) -> tuple:
        sandbox = self.core.sandbox(container)
        found = self.table.lookup(sandbox.id, name, QTYPE_A)
        return tuple(sorted(found.addresses)) if found.outcome is Outcome.RECORDS else ()


@pytest.fixture
def hosts(tmp_path: Path) -> list[Host]:
    etcd = MemoryEtcd()
    made = [
        Host(etcd, name, f"192.0.2.{i}", tmp_path / name)
        for i, name in enumerate(("h1", "h2", "h3"), 1)
    ]
    sync_all(made)
    return made


def sync_all(hosts: list[Host]) -> None:
    for host in hosts:
        host.sync()


def overlay(host: Host, name: str = "ov", subnet: str = "10.20.0.0/24") -> Network:
    network = host.core.create_network(
        NetworkSpec(name, driver="overlay", subnets=(subnet,), attachable=True)
    )
    return network


def test_an_overlay_network_is_cluster_scoped_with_a_vni_and_reaches_every_host(hosts):
    h1, h2, h3 = hosts
    network = overlay(h1)
    assert network.scope is Scope.GLOBAL and network.option(OPT_VNI) == "4096"
    # Before h2 has heard of it, the cluster store refuses the name.
    with pytest.raises(Conflict, match="already used by a cluster network"):
        h2.core.create_network(NetworkSpec("ov", driver="overlay"))
    sync_all(hosts)
    for host in (h2, h3):
        assert host.core.network("ov") == network
        assert ("create_network", "ov") in host.overlay.calls


def test_containers_on_two_hosts_resolve_each_other_and_get_overlay_peers(hosts):
    h1, h2, _ = hosts
    overlay(h1)
    sync_all(hosts)
    h1.core.create_sandbox(SandboxSpec("a1", network="ov"))
    h2.core.create_sandbox(SandboxSpec("b1", network="ov", aliases=("bee",)))
    sync_all(hosts)
    a1 = h1.core.endpoints(sandbox_id=h1.core.sandbox("a1").id)[0]
    b1 = h2.core.endpoints(sandbox_id=h2.core.sandbox("b1").id)[0]
    assert h1.a("a1", "b1") == (b1.ipv4,) and h1.a("a1", "bee") == (b1.ipv4,)
    assert h2.a("b1", "a1") == (a1.ipv4,)
    assert (a1.network_id, b1.ipv4, b1.mac, IPv4Address("192.0.2.2")) in h1.overlay.programmed
    assert (b1.network_id, a1.ipv4, a1.mac, IPv4Address("192.0.2.1")) in h2.overlay.programmed
    remote = [e for e in h1.core.endpoints() if e.remote]
    assert [(e.name, e.host) for e in remote] == [("b1", "h2")]
    # Remote endpoints live in memory only: the local store holds this host's own.
    stored = json.loads((h1.root / "state.json").read_text())
    assert [e["name"] for e in stored["endpoints"]] == ["a1"]

    h2.core.remove_sandbox("b1")
    sync_all(hosts)
    assert h1.a("a1", "b1") == ()
    assert not any(p[1] == b1.ipv4 for p in h1.overlay.programmed)


def test_addresses_are_never_handed_out_twice_across_hosts_with_stale_mirrors(hosts):
    h1 = hosts[0]
    overlay(h1)
    sync_all(hosts)
    # No sync between the creations: each host's pool mirror is stale, the claims decide.
    for i in range(20):
        for host in hosts:
            host.core.create_sandbox(SandboxSpec(f"{host.name}-c{i}", network="ov"))
    addresses = [e.ipv4 for host in hosts for e in host.core.endpoints() if not e.remote and e.ipv4]
    assert len(addresses) == 60 and len(set(addresses)) == 60
    claims = [k for k in h1.etcd.data if k.startswith(keys.IPAM)]
    assert len(claims) == 60


def test_a_requested_address_held_on_another_host_is_a_conflict(hosts):
    h1, h2, _ = hosts
    overlay(h1)
    sync_all(hosts)
    h1.core.create_sandbox(SandboxSpec("a1", network="ov", ip="10.20.0.50"))
    with pytest.raises(Conflict, match="another host"):
        h2.core.create_sandbox(SandboxSpec("b1", network="ov", ip="10.20.0.50"))
    assert [s.name for s in h2.core.sandboxes()] == []


def test_a_network_with_endpoints_on_another_host_cannot_be_removed(hosts):
    h1, h2, _ = hosts
    overlay(h1)
    sync_all(hosts)
    h2.core.create_sandbox(SandboxSpec("b1", network="ov"))
    sync_all(hosts)
    with pytest.raises(Conflict, match="b1"):
        h1.core.remove_network("ov")
    h2.core.remove_sandbox("b1")
    sync_all(hosts)
    h1.core.remove_network("ov")
    sync_all(hosts)
    assert all("ov" not in [n.name for n in h.core.networks()] for h in hosts)


def test_spread_keeps_slots_and_fills_the_least_loaded_hosts():
    assert spread((), 6, ["h2", "h1", "h3"]) == ("h1", "h2", "h3", "h1", "h2", "h3")
    assert spread(("h1", "h1", "h2"), 5, ["h1", "h2", "h3"]) == ("h1", "h1", "h2", "h3", "h2")
    assert spread(("h1", "h2", "h3"), 1, ["h2"]) == ("h1",)
    with pytest.raises(Unavailable):
        spread((), 1, [])


def test_a_service_spreads_its_tasks_over_the_hosts_and_every_host_sees_all(hosts):
    h1, h2, h3 = hosts
    overlay(h1)
    sync_all(hosts)
    h1.core.create_sandbox(SandboxSpec("probe", network="ov"))
    service = h1.core.create_service(ServiceSpec("web", ("ov",), replicas=6))
    assert service.placement == ("h1", "h2", "h3", "h1", "h2", "h3")
    assert len(h1.core.tasks(service.id)) == 2  # this host's slots start before returning
    sync_all(hosts)
    sync_all(hosts)
    assert [len(h.core.tasks(service.id)) for h in hosts] == [2, 2, 2]
    tasks = h1.a("probe", "tasks.web")
    assert len(tasks) == 6
    assert h1.a("probe", "web") == (service.vips[0].address,)
    # The VIP routes to all six tasks, wherever they run.
    (route,) = h1.routes.by_netns[h1.core.sandbox("probe").netns]
    assert route.vip == service.vips[0].address and sorted(route.backends) == list(tasks)

    h2.core.scale_service("web", 2)
    sync_all(hosts)
    sync_all(hosts)
    assert [len(h.core.tasks(service.id)) for h in hosts] == [1, 1, 0]
    assert len(h1.a("probe", "tasks.web")) == 2
    h3.core.scale_service("web", 6)
    sync_all(hosts)
    sync_all(hosts)
    assert [len(h.core.tasks(service.id)) for h in hosts] == [2, 2, 2]
    assert len(h1.a("probe", "tasks.web")) == 6

    h3.core.remove_service("web")
    sync_all(hosts)
    sync_all(hosts)
    assert [len(h.core.tasks(service.id)) for h in hosts] == [0, 0, 0]
    assert not [k for k in h1.etcd.data if k.startswith(keys.SERVICES)]
    assert h1.a("probe", "tasks.web") == ()


def test_a_dead_hosts_endpoints_leave_when_its_lease_runs_out(hosts):
    h1, h2, _ = hosts
    overlay(h1)
    sync_all(hosts)
    h2.core.create_sandbox(SandboxSpec("b1", network="ov"))
    h1.core.create_sandbox(SandboxSpec("a1", network="ov"))
    sync_all(hosts)
    assert h1.a("a1", "b1")
    h1.etcd.expire("h2")
    h1.sync()
    assert h1.a("a1", "b1") == ()
    assert not any(e.remote for e in h1.core.endpoints())


def test_changes_made_while_etcd_was_down_are_resynced_without_loss(hosts, caplog):
    h1, h2, _ = hosts
    overlay(h1)
    sync_all(hosts)
    h1.core.create_sandbox(SandboxSpec("a1", network="ov"))
    h2.core.create_sandbox(SandboxSpec("b1", network="ov"))
    h2.core.create_sandbox(SandboxSpec("b2", network="ov"))
    sync_all(hosts)
    h1.etcd.down = True
    # Writes that need etcd fail clearly; the state is unchanged.
    with pytest.raises(Unavailable):
        h2.core.create_sandbox(SandboxSpec("b3", network="ov"))
    assert "b3" not in [s.name for s in h2.core.sandboxes()]
    # Removal goes on locally; the withdrawal is left for the resync.
    h2.core.remove_sandbox("b2")
    assert h1.a("a1", "b1") and h1.a("a1", "b2")  # h1 answers from its last state
    h1.etcd.down = False
    h2.sync()  # h2 takes its stale record out
    h1.sync()
    assert h1.a("a1", "b1") and h1.a("a1", "b2") == ()
    records = [keys.decode(k, v) for k, (v, _, _) in h1.etcd.data.items()]
    assert not [r for r in records if isinstance(r, EndpointRecord) and r.endpoint.name == "b2"]
    claims = [r for r in records if isinstance(r, AddressClaim)]
    assert sorted(c.owner for c in claims) == sorted(
        e.id for h in hosts for e in h.core.endpoints() if not e.remote
    )


def test_a_restarted_host_keeps_its_addresses_and_publishes_them_again(hosts):
    h1, h2, _ = hosts
    overlay(h1)
    sync_all(hosts)
    h2.core.create_sandbox(SandboxSpec("b1", network="ov"))
    h1.core.create_sandbox(SandboxSpec("a1", network="ov"))
    sync_all(hosts)
    before = {e.name: e.ipv4 for e in h2.core.endpoints() if not e.remote}
    h1.etcd.expire("h2")  # the daemon died and its lease ran out
    h2.start("192.0.2.2")  # restarted: same store, same namespaces
    h2.sync()
    h1.sync()
    assert {e.name: e.ipv4 for e in h2.core.endpoints() if not e.remote} == before
    assert h1.a("a1", "b1") == (before["b1"],)


def test_a_service_mixing_overlay_and_local_networks_is_refused(hosts):
    h1 = hosts[0]
    overlay(h1)
    h1.core.create_network(NetworkSpec("local", subnets=("10.30.0.0/24",)))
    with pytest.raises(Exception, match="all overlay networks or all local"):
        h1.core.create_service(ServiceSpec("web", ("ov", "local")))


def test_connect_to_an_overlay_network_publishes_the_endpoint(hosts):
    h1, h2, _ = hosts
    overlay(h1)
    h1.core.create_network(NetworkSpec("local", subnets=("10.31.0.0/24",)))
    sync_all(hosts)
    h1.core.create_sandbox(SandboxSpec("a1", network="local"))
    h2.core.create_sandbox(SandboxSpec("b1", network="ov"))
    endpoint: Endpoint = h1.core.connect(ConnectSpec("ov", "a1"))
    sync_all(hosts)
    assert h2.a("b1", "a1") == (endpoint.ipv4,)
    h1.core.disconnect("ov", "a1")
    sync_all(hosts)
    assert h2.a("b1", "a1") == ()


def test_a_full_reading_drops_kernel_peers_no_remote_endpoint_accounts_for(hosts):
    h1, h2, _ = hosts
    network = overlay(h1)
    sync_all(hosts)
    h2.core.create_sandbox(SandboxSpec("b1", network="ov"))
    # Left in the kernel from before a restart: an endpoint the cluster no longer has.
    stale = (network.id, IPv4Address("10.20.0.99"), "02:42:0a:14:00:63", IPv4Address("192.0.2.9"))
    h1.overlay.programmed.add(stale)
    batches = h1.overlay.batches
    h1.sync()
    assert stale not in h1.overlay.programmed
    assert any(p[1] != stale[1] for p in h1.overlay.programmed)  # b1 is programmed
    assert h1.overlay.batches == batches + 1  # one batch for the network, not one per peer
