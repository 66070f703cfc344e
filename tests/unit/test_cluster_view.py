"""drivers/cluster/keys.py and drivers/cluster/view.py without etcd: key layout, value round
trips, and how full readings and watch batches become Changes (dedup by revision)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from drivers.cluster import keys
from drivers.cluster.etcd_wire import EventKind, KeyValue, WatchEvent
from drivers.cluster.keys import AddressClaim, EndpointRecord, HostRecord
from drivers.cluster.view import Change, ClusterView
from drivers.model import (
    Driver,
    Endpoint,
    EndpointMode,
    IPAMConfig,
    Network,
    Scope,
    Service,
    ServicePort,
    Task,
    VirtualIP,
)
from drivers.overlay import OPT_VNI

HERE, THERE = "host-a", "host-b"
VTEP_HERE, VTEP_THERE = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")

NETWORK = Network(
    id="n" * 64,
    name="front",
    driver=Driver.OVERLAY,
    scope=Scope.GLOBAL,
    attachable=True,
    ipv6=True,
    ipam=(
        IPAMConfig(IPv4Network("10.10.0.0/24"), IPv4Address("10.10.0.1")),
        IPAMConfig(IPv6Network("fd00:10::/64"), IPv6Address("fd00:10::1")),
    ),
    options=((OPT_VNI, "4096"),),
    dns_servers=("127.0.0.53",),
    created="2024-01-01T00:00:00Z",
)
SERVICE = Service(
    id="s" * 25,
    name="web",
    networks=(NETWORK.id,),
    mode=EndpointMode.VIP,
    vips=(VirtualIP(NETWORK.id, IPv4Address("10.10.0.2")),),
    ports=(ServicePort("http", "tcp", 80),),
    replicas=2,
    placement=(HERE, THERE),
)


def endpoint(name: str, address: str, *, network: Network = NETWORK) -> Endpoint:
    return Endpoint(
        id=f"e-{name}".ljust(64, "0"),
        network_id=network.id,
        sandbox_id=f"c-{name}".ljust(64, "0"),
        name=name,
        hostname=name,
        aliases=(f"{name}-alias",),
        ipv4=IPv4Address(address),
        mac="02:42:0a:0a:00:05",
        task=Task(SERVICE.id, SERVICE.name, 1, "t" * 25),
    )


REMOTE = endpoint("db", "10.10.0.5")
LOCAL = endpoint("app", "10.10.0.6")


@dataclass
class Revisions:
    """A tiny etcd: each write takes the next revision."""

    revision: int = 0

    def kv(self, key: str, value: bytes) -> KeyValue:
        self.revision += 1
        return KeyValue(key, value, self.revision, self.revision)

    def put(self, key: str, value: bytes) -> WatchEvent:
        self.revision += 1
        return WatchEvent(EventKind.PUT, key, value, self.revision, self.revision)

    def delete(self, key: str) -> WatchEvent:
        self.revision += 1
        return WatchEvent(EventKind.DELETE, key, b"", self.revision)


def cluster_kvs(etcd: Revisions) -> list[KeyValue]:
    """A reading in etcd's key order, with this host's own records among the others'."""
    kvs = [
        etcd.kv(keys.host_key(THERE), keys.encode_host(VTEP_THERE)),
        etcd.kv(keys.network_key(NETWORK.id), keys.encode_network(NETWORK)),
        etcd.kv(keys.network_name_key(NETWORK.name), NETWORK.id.encode()),
        etcd.kv(keys.service_key(SERVICE.id), keys.encode_service(SERVICE)),
        etcd.kv(keys.endpoint_key(REMOTE), keys.encode_endpoint(REMOTE, THERE, VTEP_THERE)),
        etcd.kv(keys.endpoint_key(LOCAL), keys.encode_endpoint(LOCAL, HERE, VTEP_HERE)),
        etcd.kv(
            keys.address_key(NETWORK.id, REMOTE.ipv4),  # type: ignore[arg-type]
            keys.encode_claim(THERE, REMOTE.id),
        ),
        etcd.kv(
            keys.address_key(NETWORK.id, LOCAL.ipv4),  # type: ignore[arg-type]
            keys.encode_claim(HERE, LOCAL.id),
        ),
    ]
    return sorted(kvs, key=lambda kv: kv.key)


# -- key layout --------------------------------------------------------------------------------


def test_every_key_sits_under_the_one_watched_prefix() -> None:
    made = [
        keys.host_key(HERE),
        keys.network_key(NETWORK.id),
        keys.service_key(SERVICE.id),
        keys.endpoint_key(REMOTE),
        keys.address_key(NETWORK.id, IPv6Address("fd00:10::5")),
        keys.network_name_key(NETWORK.name),
        keys.service_name_key(SERVICE.name),
        keys.subnet_key(IPv4Network("10.10.0.0/24")),
        keys.vni_key(4096),
    ]
    assert all(key.startswith(keys.PREFIX) for key in made)
    assert len(set(made)) == len(made)


def test_subnet_key_is_one_path_segment_and_differs_by_prefix_length() -> None:
    # A "/" inside the CIDR would nest the claim one level deeper than its siblings.
    key = keys.subnet_key(IPv4Network("10.10.0.0/24"))
    assert key == keys.CLAIMS + "subnet/10.10.0.0_24"
    assert keys.subnet_key(IPv4Network("10.10.0.0/16")) != key
    assert keys.subnet_key(IPv6Network("fd00::/64")) == keys.CLAIMS + "subnet/fd00::_64"


def test_endpoint_key_is_under_its_network() -> None:
    assert keys.endpoint_key(REMOTE) == f"{keys.ENDPOINTS}{NETWORK.id}/{REMOTE.id}"


# -- value round trips -------------------------------------------------------------------------


def test_host_record_round_trips_with_name_from_key() -> None:
    record = keys.decode(keys.host_key(THERE), keys.encode_host(VTEP_THERE))
    assert record == HostRecord(THERE, VTEP_THERE)


def test_network_round_trips_every_field() -> None:
    assert keys.decode(keys.network_key(NETWORK.id), keys.encode_network(NETWORK)) == NETWORK


def test_service_round_trips_vips_ports_and_placement() -> None:
    assert keys.decode(keys.service_key(SERVICE.id), keys.encode_service(SERVICE)) == SERVICE


def test_endpoint_record_round_trips_and_carries_its_host() -> None:
    value = keys.encode_endpoint(REMOTE, THERE, VTEP_THERE)
    record = keys.decode(keys.endpoint_key(REMOTE), value)
    assert record == EndpointRecord(replace(REMOTE, host=THERE), VTEP_THERE)
    assert isinstance(record, EndpointRecord) and record.endpoint.remote


@pytest.mark.parametrize("address", [IPv4Address("10.10.0.5"), IPv6Address("fd00:10::5")])
def test_address_claim_round_trips_address_from_key(address: IPv4Address | IPv6Address) -> None:
    record = keys.decode(keys.address_key(NETWORK.id, address), keys.encode_claim(THERE, "owner"))
    assert record == AddressClaim(NETWORK.id, address, THERE, "owner")


def test_claim_keys_and_foreign_keys_hold_no_record() -> None:
    assert keys.decode(keys.network_name_key("front"), NETWORK.id.encode()) is None
    assert keys.decode(keys.vni_key(4096), NETWORK.id.encode()) is None
    assert keys.decode(keys.PREFIX + "future/thing", b"{}") is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (keys.host_key(THERE), b"not json"),
        (keys.host_key(THERE), b'{"vtep": "not-an-address"}'),
        (keys.network_key("x"), b'{"id": "x"}'),
        (keys.endpoint_key(REMOTE), b'{"endpoint": {}}'),
        (keys.address_key("x", IPv4Address("10.0.0.1")), b'{"host": "h"}'),
    ],
)
def test_decode_of_bad_value_raises_a_parse_error(key: str, value: bytes) -> None:
    with pytest.raises((ValueError, TypeError, KeyError)):
        keys.decode(key, value)


# -- full readings -----------------------------------------------------------------------------


def test_first_reading_is_all_additions_networks_before_endpoints_own_left_out() -> None:
    etcd = Revisions()
    kvs = cluster_kvs(etcd)
    view = ClusterView(HERE)
    changes = view.load(kvs, etcd.revision)

    assert all(change.old is None for change in changes)
    assert [type(change.new) for change in changes] == [
        HostRecord,
        Network,
        Service,
        AddressClaim,
        EndpointRecord,
    ]
    assert {change.key for change in changes} == {
        keys.host_key(THERE),
        keys.network_key(NETWORK.id),
        keys.service_key(SERVICE.id),
        keys.address_key(NETWORK.id, REMOTE.ipv4),  # type: ignore[arg-type]
        keys.endpoint_key(REMOTE),
    }
    assert view.revision == etcd.revision
    assert view.hosts() == [THERE]
    assert view.endpoints_on(NETWORK.id) == [
        EndpointRecord(replace(REMOTE, host=THERE), VTEP_THERE)
    ]
    assert view.endpoints_on("other") == []


def test_own_records_are_this_hosts_endpoints_and_claims() -> None:
    etcd = Revisions()
    own = ClusterView(HERE).own_records(cluster_kvs(etcd))
    assert own == [  # in key order: endpoints/ sorts before ipam/
        EndpointRecord(replace(LOCAL, host=HERE), VTEP_HERE),
        AddressClaim(NETWORK.id, LOCAL.ipv4, HERE, LOCAL.id),  # type: ignore[arg-type]
    ]


def test_own_records_skip_values_that_do_not_parse() -> None:
    kvs = [KeyValue(keys.endpoint_key(LOCAL), b"garbage", 1, 1)]
    assert ClusterView(HERE).own_records(kvs) == []


def test_same_reading_again_changes_nothing() -> None:
    etcd = Revisions()
    kvs = cluster_kvs(etcd)
    view = ClusterView(HERE)
    view.load(kvs, etcd.revision)
    assert view.load(kvs, etcd.revision + 5) == []
    assert view.revision == etcd.revision + 5


def test_reading_yields_exactly_the_differences_removals_endpoints_first() -> None:
    etcd = Revisions()
    kvs = cluster_kvs(etcd)
    view = ClusterView(HERE)
    view.load(kvs, etcd.revision)

    moved = replace(REMOTE, aliases=("moved",))
    updated = etcd.kv(keys.endpoint_key(REMOTE), keys.encode_endpoint(moved, THERE, VTEP_THERE))
    dropped = {keys.network_key(NETWORK.id), keys.endpoint_key(REMOTE), keys.host_key(THERE)}
    later = [kv for kv in kvs if kv.key not in dropped]

    # The endpoint changed, the network and the host went: one Change each.
    changes = view.load([*later, updated], etcd.revision)
    assert changes == [
        Change(
            keys.endpoint_key(REMOTE),
            EndpointRecord(replace(REMOTE, host=THERE), VTEP_THERE),
            EndpointRecord(replace(moved, host=THERE), VTEP_THERE),
        ),
        Change(keys.network_key(NETWORK.id), NETWORK, None),
        Change(keys.host_key(THERE), HostRecord(THERE, VTEP_THERE), None),
    ]

    # Now everything but the service goes: endpoints and claims before services.
    changes = view.load([kv for kv in later if kv.key == keys.service_key(SERVICE.id)], 99)
    assert [type(change.old) for change in changes] == [EndpointRecord, AddressClaim]
    assert all(change.new is None for change in changes)


def test_reading_skips_a_value_that_does_not_parse(caplog: pytest.LogCaptureFixture) -> None:
    etcd = Revisions()
    bad = etcd.kv(keys.network_key("broken"), b"{not json")
    good = etcd.kv(keys.host_key(THERE), keys.encode_host(VTEP_THERE))
    with caplog.at_level(logging.ERROR, logger="drivers.cluster.view"):
        changes = ClusterView(HERE).load([bad, good], etcd.revision)
    assert [change.key for change in changes] == [good.key]
    assert keys.network_key("broken") in caplog.text


# -- watch batches -----------------------------------------------------------------------------


def test_watch_put_update_delete_each_one_change() -> None:
    etcd = Revisions()
    view = ClusterView(HERE)
    view.load([], etcd.revision)
    key = keys.network_key(NETWORK.id)
    renamed = replace(NETWORK, name="renamed")

    assert view.apply([etcd.put(key, keys.encode_network(NETWORK))]) == [Change(key, None, NETWORK)]
    assert view.apply([etcd.put(key, keys.encode_network(renamed))]) == [
        Change(key, NETWORK, renamed)
    ]
    assert view.apply([etcd.delete(key)]) == [Change(key, renamed, None)]
    assert view.revision == etcd.revision
    assert view.records(Network) == []


def test_one_revision_with_many_events_delivers_all_of_them() -> None:
    """A transaction: every event carries the same mod_revision."""
    etcd = Revisions()
    view = ClusterView(HERE)
    view.load([], etcd.revision)
    revision = etcd.revision + 1
    first, second = endpoint("one", "10.10.0.11"), endpoint("two", "10.10.0.12")
    batch = [
        WatchEvent(EventKind.PUT, key, value, revision, revision)
        for key, value in (
            (keys.network_key(NETWORK.id), keys.encode_network(NETWORK)),
            (keys.endpoint_key(first), keys.encode_endpoint(first, THERE, VTEP_THERE)),
            (keys.endpoint_key(second), keys.encode_endpoint(second, THERE, VTEP_THERE)),
        )
    ]
    changes = view.apply(batch)
    assert [change.key for change in changes] == [event.key for event in batch]
    assert view.revision == revision
    assert view.apply(batch) == []  # the same batch again (a watch restarted from older)


def test_events_at_or_below_the_reading_revision_are_skipped() -> None:
    etcd = Revisions()
    kvs = cluster_kvs(etcd)
    view = ClusterView(HERE)
    view.load(kvs, etcd.revision)
    replayed = [
        WatchEvent(EventKind.PUT, kv.key, kv.value, kv.mod_revision, kv.create_revision)
        for kv in kvs
    ]
    fresh = etcd.put(keys.host_key("host-c"), keys.encode_host(IPv4Address("192.0.2.3")))
    assert view.apply([*replayed, fresh]) == [
        Change(fresh.key, None, HostRecord("host-c", IPv4Address("192.0.2.3")))
    ]


def test_own_records_and_claims_in_a_batch_change_nothing_but_the_revision() -> None:
    etcd = Revisions()
    view = ClusterView(HERE)
    batch = [
        etcd.put(keys.endpoint_key(LOCAL), keys.encode_endpoint(LOCAL, HERE, VTEP_HERE)),
        etcd.put(
            keys.address_key(NETWORK.id, LOCAL.ipv4),  # type: ignore[arg-type]
            keys.encode_claim(HERE, LOCAL.id),
        ),
        etcd.put(keys.vni_key(4096), NETWORK.id.encode()),
        etcd.delete(keys.endpoint_key(LOCAL)),
        etcd.delete(keys.network_key("never-seen")),
    ]
    assert view.apply(batch) == []
    assert view.revision == etcd.revision


def test_watch_put_that_does_not_parse_is_logged_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    etcd = Revisions()
    view = ClusterView(HERE)
    host = etcd.put(keys.host_key(THERE), keys.encode_host(VTEP_THERE))
    with caplog.at_level(logging.ERROR, logger="drivers.cluster.view"):
        changes = view.apply([etcd.put(keys.network_key("broken"), b"[1, 2"), host])
    assert [change.key for change in changes] == [host.key]
    assert "broken" in caplog.text


def test_reading_after_watch_batches_yields_only_what_the_watch_missed() -> None:
    """A watch that broke part way: the resync's reading catches up, without repeats."""
    etcd = Revisions()
    view = ClusterView(HERE)
    view.load([], etcd.revision)
    a_host = etcd.put(keys.host_key(THERE), keys.encode_host(VTEP_THERE))
    a_net = etcd.put(keys.network_key(NETWORK.id), keys.encode_network(NETWORK))
    assert len(view.apply([a_host, a_net])) == 2

    # Missed while disconnected: the host left, an endpoint arrived, the network is unchanged.
    remote = etcd.kv(keys.endpoint_key(REMOTE), keys.encode_endpoint(REMOTE, THERE, VTEP_THERE))
    network = KeyValue(a_net.key, a_net.value, a_net.create_revision, a_net.mod_revision)
    changes = view.load([network, remote], etcd.revision + 1)
    assert [(change.key, change.old is None, change.new is None) for change in changes] == [
        (remote.key, True, False),
        (a_host.key, False, True),
    ]


def test_watch_put_that_does_not_parse_over_a_known_record_removes_it() -> None:
    """What the key said no longer holds: drop it now, as the next full reading would."""
    etcd = Revisions()
    view = ClusterView(HERE)
    key = keys.network_key(NETWORK.id)
    view.apply([etcd.put(key, keys.encode_network(NETWORK))])
    assert view.apply([etcd.put(key, b"{broken")]) == [Change(key, NETWORK, None)]
    assert view.records(Network) == []
    # And a reading of that state agrees: nothing more to change.
    assert view.load([KeyValue(key, b"{broken", etcd.revision, etcd.revision)], 99) == []
