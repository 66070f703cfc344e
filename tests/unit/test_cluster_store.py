"""The real ClusterStore with a real EtcdClient against a real etcd (Debian's /usr/bin/etcd) on a
random loopback address: full reading at start, watch, lease and keepalive, etcd restarts and
compaction with resync, cluster-wide claims, route_source.

The store watches the whole /netdns/v1/ prefix, so tests that share the module's etcd start
with that prefix wiped; tests that stop etcd or compact it run their own. Another host is played
by a second EtcdClient writing keys directly, or by a second ClusterStore. The store's blocking
API is called from a worker thread (asyncio.to_thread), as the DriverCore's worker thread does.
`Gate` (a loopback TCP relay) holds the store away from etcd while another client writes, so
"changed while the store was disconnected" does not depend on the store's retry timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network

import pytest

from bench.labs.etcd import EtcdServer, etcd_available
from bench.labs.upstreams import free_loopback_address
from drivers.cluster import keys
from drivers.cluster.etcd import EtcdClient
from drivers.cluster.etcd_wire import Compacted, Delete, Put
from drivers.cluster.keys import AddressClaim, EndpointRecord, HostRecord, Record
from drivers.cluster.store import ClusterStore, route_source
from drivers.cluster.view import Change
from drivers.errors import Conflict, Unavailable
from drivers.model import Driver, Endpoint, IPAMConfig, Network, Scope, Service
from drivers.overlay import OPT_VNI

pytestmark = pytest.mark.skipif(
    not etcd_available(), reason="needs /usr/bin/etcd (Debian package etcd-server)"
)

WAIT = 5.0  # any single thing the store should do promptly
LEASE_TTL = 2  # the daemon's smallest --lease-ttl
HERE, THERE = "host-a", "host-b"
VTEPS = {HERE: IPv4Address("192.0.2.1"), THERE: IPv4Address("192.0.2.2")}


# -- helpers -----------------------------------------------------------------------------------


def network(name: str, subnet: str) -> Network:
    return Network(
        id=f"net-{name}".ljust(64, "0"),
        name=name,
        driver=Driver.OVERLAY,
        scope=Scope.GLOBAL,
        attachable=True,
        ipam=(IPAMConfig(IPv4Network(subnet)),),
    )


NET = network("front", "10.10.0.0/24")


def endpoint(name: str, last_octet: int, *, net: Network = NET) -> Endpoint:
    subnet = net.ipam[0].subnet
    return Endpoint(
        id=f"ep-{name}".ljust(64, "0"),
        network_id=net.id,
        sandbox_id=f"sb-{name}".ljust(64, "0"),
        name=name,
        ipv4=IPv4Address(int(subnet.network_address) + last_octet),  # type: ignore[arg-type]
    )


def remote_value(ep: Endpoint, host: str = THERE) -> bytes:
    return keys.encode_endpoint(ep, host, VTEPS[host])


@dataclass
class Recorder:
    """The store's `on_changes`: every call, in order."""

    calls: list[tuple[list[Change], list[Record] | None]] = field(default_factory=list)

    async def __call__(self, changes: list[Change], own: list[Record] | None) -> None:
        self.calls.append((list(changes), None if own is None else list(own)))

    @property
    def changes(self) -> list[Change]:
        return [change for changes, _ in self.calls for change in changes]

    def of(self, key: str) -> list[Change]:
        return [change for change in self.changes if change.key == key]

    def counts(self, key_prefix: str = keys.PREFIX) -> Counter[str]:
        return Counter(c.key for c in self.changes if c.key.startswith(key_prefix))


async def until(
    check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = WAIT
) -> float:
    """Poll `check` until true; the seconds it took. AssertionError naming `what` after
    `timeout`."""
    started = time.monotonic()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_store(
    at: EtcdServer | Gate,
    host: str = HERE,
    *,
    mine: list[Endpoint] | None = None,
    lease_ttl: int = 10,
    timeout: float = 1.0,
) -> AsyncIterator[tuple[ClusterStore, Recorder]]:
    recorder = Recorder()
    published = mine if mine is not None else []
    store = ClusterStore(
        EtcdClient(at.url, timeout=timeout),
        host,
        VTEPS[host],
        on_changes=recorder,
        mine=lambda: list(published),
        lease_ttl=lease_ttl,
    )
    await store.start(wait=WAIT)
    try:
        yield store, recorder
    finally:
        await store.stop()


def compact(server: EtcdServer, revision: int) -> None:
    request = urllib.request.Request(
        f"{server.http_url}/v3/kv/compaction",
        data=json.dumps({"revision": str(revision), "physical": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


class Gate:
    """A TCP relay on a loopback address of its own in front of etcd, for the store's client
    only. `shut()` refuses new connections and cuts the open ones, as if etcd were gone;
    `open()` lets the store through again. It holds the store away from etcd for exactly as
    long as a test needs while another client writes to etcd directly."""

    def __init__(self, server: EtcdServer) -> None:
        self.target = (server.address, server.client_port)
        self.address = free_loopback_address(2379)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"etcd://{self.address}:{self.port}"

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._relay, self.address, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def shut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pair = {writer, upstream}
        self._writers |= pair
        try:
            await asyncio.gather(_pump(reader, upstream), _pump(upstream_reader, writer))
        finally:
            self._writers -= pair


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()  # one side ended: end the other, so neither hangs


@contextlib.asynccontextmanager
async def gated(server: EtcdServer) -> AsyncIterator[Gate]:
    gate = Gate(server)
    await gate.open()
    try:
        yield gate
    finally:
        await gate.shut()


@pytest.fixture(scope="module")
def shared_etcd() -> Iterator[EtcdServer]:
    with EtcdServer(free_loopback_address(2379)) as server:
        yield server


@pytest.fixture
def etcd(shared_etcd: EtcdServer) -> EtcdServer:
    """The module's etcd, emptied of what earlier tests left (leases of stopped stores run
    on for their TTL)."""

    async def wipe() -> None:
        async with EtcdClient(shared_etcd.url) as client:
            await client.delete(keys.PREFIX, prefix=True)

    asyncio.run(wipe())
    return shared_etcd


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    """A server of the test's own, for tests that stop or compact it."""
    with EtcdServer(free_loopback_address(2379)) as server:
        yield server


# -- 1. the first full reading -----------------------------------------------------------------


def test_start_delivers_everything_written_before_as_additions_and_lists_own_records(
    etcd: EtcdServer,
) -> None:
    theirs, ours = endpoint("db", 5), endpoint("app", 6)
    their_claim = keys.address_key(NET.id, theirs.ipv4)  # type: ignore[arg-type]
    our_claim = keys.address_key(NET.id, ours.ipv4)  # type: ignore[arg-type]

    async def scenario() -> None:
        async with EtcdClient(etcd.url) as other:
            await other.put(keys.network_key(NET.id), keys.encode_network(NET))
            await other.put(keys.network_name_key(NET.name), NET.id.encode())
            await other.put(keys.endpoint_key(theirs), remote_value(theirs))
            await other.put(their_claim, keys.encode_claim(THERE, theirs.id))
            # What this host left in the store before a restart.
            await other.put(keys.endpoint_key(ours), remote_value(ours, HERE))
            await other.put(our_claim, keys.encode_claim(HERE, ours.id))

            async with running_store(etcd) as (store, recorder):
                assert store.connected
                assert len(recorder.calls) == 1, "start returned before the first reading"
                changes, own = recorder.calls[0]
                assert all(change.old is None for change in changes)
                assert {change.key: change.new for change in changes} == {
                    keys.host_key(HERE): HostRecord(HERE, VTEPS[HERE]),
                    keys.network_key(NET.id): NET,
                    keys.endpoint_key(theirs): EndpointRecord(
                        replace(theirs, host=THERE), VTEPS[THERE]
                    ),
                    their_claim: AddressClaim(NET.id, theirs.ipv4, THERE, theirs.id),  # type: ignore[arg-type]
                }
                keys_in_order = [change.key for change in changes]
                assert keys_in_order.index(keys.network_key(NET.id)) < keys_in_order.index(
                    keys.endpoint_key(theirs)
                ), "an endpoint arrived before its network"
                assert own == [
                    EndpointRecord(replace(ours, host=HERE), VTEPS[HERE]),
                    AddressClaim(NET.id, ours.ipv4, HERE, ours.id),  # type: ignore[arg-type]
                ]

                host = await other.get(keys.host_key(HERE))
                assert host is not None and host.lease != 0, "host record not under a lease"
                assert keys.decode(host.key, host.value) == HostRecord(HERE, VTEPS[HERE])

                # The blocking reads, from a worker thread as the DriverCore makes them.
                assert await asyncio.to_thread(store.hosts) == [HERE]
                assert await asyncio.to_thread(store.remote_endpoints, NET.id) == [
                    replace(theirs, host=THERE)
                ]

    asyncio.run(scenario())


def test_start_while_etcd_is_down_returns_after_wait_and_syncs_once_it_is_up(
    own_etcd: EtcdServer,
) -> None:
    theirs = endpoint("db", 5)

    async def scenario() -> None:
        async with EtcdClient(own_etcd.url) as other:
            await other.put(keys.endpoint_key(theirs), remote_value(theirs))
        await asyncio.to_thread(own_etcd.stop)
        recorder = Recorder()
        store = ClusterStore(
            EtcdClient(own_etcd.url, timeout=1.0),
            HERE,
            VTEPS[HERE],
            on_changes=recorder,
            mine=list,
        )
        try:
            started = time.monotonic()
            await store.start(wait=0.5)
            assert time.monotonic() - started < 1.5
            assert not store.connected and recorder.calls == []
            await asyncio.to_thread(own_etcd.start)
            await until(lambda: store.connected, "the first reading once etcd is up", 8)
            assert [c.key for c in recorder.changes if c.new is not None].count(
                keys.endpoint_key(theirs)
            ) == 1
        finally:
            await store.stop()

    asyncio.run(scenario())


# -- 2. the watch ------------------------------------------------------------------------------


def test_watch_delivers_put_update_and_delete_by_another_host_once_each(
    etcd: EtcdServer,
) -> None:
    theirs = endpoint("db", 5)
    key = keys.endpoint_key(theirs)
    record = EndpointRecord(replace(theirs, host=THERE), VTEPS[THERE])
    moved = replace(theirs, aliases=("database",))
    moved_record = EndpointRecord(replace(moved, host=THERE), VTEPS[THERE])

    async def scenario() -> None:
        async with EtcdClient(etcd.url) as other, running_store(etcd) as (_, recorder):
            await other.put(key, remote_value(theirs))
            await until(lambda: len(recorder.of(key)) >= 1, "the put")
            await other.put(key, remote_value(moved))
            await until(lambda: len(recorder.of(key)) >= 2, "the update")
            await other.delete(key)
            await until(lambda: len(recorder.of(key)) >= 3, "the delete")
            await asyncio.sleep(0.3)  # anything delivered twice shows up by now
            assert recorder.of(key) == [
                Change(key, None, record),
                Change(key, record, moved_record),
                Change(key, moved_record, None),
            ]
            assert all(own is None for _, own in recorder.calls[1:]), "watch batches carry own"

    asyncio.run(scenario())


def test_watch_delivers_every_key_of_one_transaction(etcd: EtcdServer) -> None:
    """One revision, many events: none may be dropped as "seen already"."""
    eps = [endpoint(f"task{i}", 10 + i) for i in range(4)]
    written = [keys.network_key(NET.id), *(keys.endpoint_key(ep) for ep in eps)]

    async def scenario() -> None:
        async with EtcdClient(etcd.url) as other, running_store(etcd) as (_, recorder):
            result = await other.txn(
                [],
                [
                    Put(keys.network_key(NET.id), keys.encode_network(NET)),
                    Put(keys.network_name_key(NET.name), NET.id.encode()),
                    *(Put(keys.endpoint_key(ep), remote_value(ep)) for ep in eps),
                ],
            )
            assert result.succeeded
            await until(
                lambda: all(recorder.of(key) for key in written), "all keys of the transaction"
            )
            # And one after it, in a later batch, so a wrong floor would show there too.
            late = endpoint("late", 30)
            await other.put(keys.endpoint_key(late), remote_value(late))
            await until(lambda: bool(recorder.of(keys.endpoint_key(late))), "the later put")
            await asyncio.sleep(0.3)
            counts = recorder.counts()
            assert {key: counts[key] for key in written} == dict.fromkeys(written, 1)
            assert counts[keys.endpoint_key(late)] == 1

    asyncio.run(scenario())


# -- 3. the lease ------------------------------------------------------------------------------


def test_lease_keeps_host_and_published_endpoints_while_running_and_drops_them_after_stop(
    etcd: EtcdServer,
) -> None:
    ours = endpoint("app", 6)
    mine = [ours]

    async def scenario() -> None:
        async with EtcdClient(etcd.url) as other:
            async with running_store(etcd, mine=mine, lease_ttl=LEASE_TTL) as (store, _):
                await asyncio.to_thread(store.publish, ours)
                host = await other.get(keys.host_key(HERE))
                published = await other.get(keys.endpoint_key(ours))
                assert host is not None and published is not None
                assert published.lease == host.lease != 0
                assert keys.decode(published.key, published.value) == EndpointRecord(
                    replace(ours, host=HERE), VTEPS[HERE]
                )

                # Well past the TTL: only the keepalive keeps them.
                started = time.monotonic()
                while time.monotonic() - started < LEASE_TTL * 1.5:
                    for key in (keys.host_key(HERE), keys.endpoint_key(ours)):
                        assert await other.get(key) is not None, f"{key} lost while running"
                    await asyncio.sleep(0.25)

            # stop() leaves the lease to run out rather than revoking it.
            assert await other.get(keys.endpoint_key(ours)) is not None, "stop revoked"

            async def gone() -> bool:
                return (
                    await other.get(keys.host_key(HERE)) is None
                    and await other.get(keys.endpoint_key(ours)) is None
                )

            await until(gone, "host and endpoint gone after the lease ran out", LEASE_TTL + 2.5)

    asyncio.run(scenario())


def test_lease_revoked_while_running_is_granted_anew_and_endpoints_put_again(
    etcd: EtcdServer,
) -> None:
    ours = endpoint("app", 6)

    async def scenario() -> None:
        async with (
            EtcdClient(etcd.url) as other,
            running_store(etcd, mine=[ours], lease_ttl=LEASE_TTL) as (store, _),
        ):
            await asyncio.to_thread(store.publish, ours)
            first = await other.get(keys.endpoint_key(ours))
            assert first is not None
            await other.revoke(first.lease)
            assert await other.get(keys.endpoint_key(ours)) is None

            async def back() -> bool:
                kv = await other.get(keys.endpoint_key(ours))
                return kv is not None and kv.lease != first.lease

            await until(back, "the endpoint back under a new lease", LEASE_TTL + 2)
            host = await other.get(keys.host_key(HERE))
            again = await other.get(keys.endpoint_key(ours))
            assert host is not None and again is not None and host.lease == again.lease

    asyncio.run(scenario())


# -- 4. etcd stopped and started again ---------------------------------------------------------


def test_etcd_restart_calls_fail_fast_then_resync_delivers_each_change_once(
    own_etcd: EtcdServer,
) -> None:
    ours, ours_offline = endpoint("app", 6), endpoint("app2", 7)
    gone, updated = endpoint("gone", 20), endpoint("updated", 21)
    offline_new, online_new = endpoint("offline", 22), endpoint("online", 23)
    mine = [ours]
    timeout = 1.0

    async def scenario() -> None:
        async with (
            gated(own_etcd) as gate,
            EtcdClient(own_etcd.url) as other,
            running_store(gate, mine=mine, lease_ttl=LEASE_TTL, timeout=timeout) as (
                store,
                recorder,
            ),
        ):
            await asyncio.to_thread(store.publish, ours)
            for ep in (gone, updated):
                await other.put(keys.endpoint_key(ep), remote_value(ep))
            await until(
                lambda: bool(recorder.of(keys.endpoint_key(updated))), "the first remote puts"
            )
            first_lease = (await other.get(keys.host_key(HERE))).lease  # type: ignore[union-attr]
            resyncs = store.resyncs

            started = time.monotonic()
            await gate.shut()
            await asyncio.to_thread(own_etcd.stop)
            await until(lambda: not store.connected, "the store noticing etcd stopped")

            # While down: writes that must not half-happen fail fast, naming the store.
            for call, args in (
                (store.claim, (NET.id, IPv4Address("10.10.0.9"), "owner")),
                (store.create_network, (network("blue", "10.20.0.0/24"),)),
            ):
                before = time.monotonic()
                with pytest.raises(Unavailable) as caught:
                    await asyncio.to_thread(call, *args)
                assert time.monotonic() - before < timeout + 1
                assert gate.url in str(caught.value)
            # Publishing is best effort: no error now, the resync puts it.
            mine.append(ours_offline)
            await asyncio.to_thread(store.publish, ours_offline)

            # Down for longer than the TTL, then back. The gate keeps the store away a little
            # longer, while another host changes things it must catch up on.
            await asyncio.sleep(max(0.0, LEASE_TTL + 0.2 - (time.monotonic() - started)))
            await asyncio.to_thread(own_etcd.start)
            # etcd renews every lease when it starts again; revoking plays a lease that ran
            # out meanwhile (a longer outage, or a multi-member cluster).
            await other.revoke(first_lease)
            await other.delete(keys.endpoint_key(gone))
            changed = replace(updated, hostname="u")
            await other.put(keys.endpoint_key(updated), remote_value(changed))
            await other.put(keys.endpoint_key(offline_new), remote_value(offline_new))
            assert store.resyncs == resyncs and not store.connected

            await gate.open()
            await until(lambda: store.resyncs > resyncs, "the resync after etcd came back", 8)
            await other.put(keys.endpoint_key(online_new), remote_value(online_new))
            await until(
                lambda: bool(recorder.of(keys.endpoint_key(online_new))), "a put after resync"
            )

            # Published endpoints are back under a new, live lease.
            host = await other.get(keys.host_key(HERE))
            assert host is not None and host.lease not in (0, first_lease)
            for ep in (ours, ours_offline):
                kv = await other.get(keys.endpoint_key(ep))
                assert kv is not None and kv.lease == host.lease, f"{ep.name} not republished"
            # The resync's reading lists them as this host's own, for the core to check.
            own = [own for _, own in recorder.calls if own is not None][-1]
            assert {r.endpoint.id for r in own if isinstance(r, EndpointRecord)} == {
                ours.id,
                ours_offline.id,
            }

            # Past the TTL again: still there (kept alive), and nothing delivered twice.
            await asyncio.sleep(LEASE_TTL + 0.3)
            for ep in (ours, ours_offline):
                assert await other.get(keys.endpoint_key(ep)) is not None
            counts = recorder.counts(keys.ENDPOINTS)
            assert counts == {
                keys.endpoint_key(gone): 2,  # put, then delete while disconnected
                keys.endpoint_key(updated): 2,  # put, then update while disconnected
                keys.endpoint_key(offline_new): 1,
                keys.endpoint_key(online_new): 1,
            }
            assert recorder.of(keys.endpoint_key(gone))[-1].new is None
            last = recorder.of(keys.endpoint_key(updated))[-1]
            assert isinstance(last.new, EndpointRecord) and last.new.endpoint.hostname == "u"
            assert store.resyncs == resyncs + 1

    asyncio.run(scenario())


def test_short_lease_outlives_an_etcd_outage_longer_than_its_ttl(own_etcd: EtcdServer) -> None:
    """etcd renews its leases when it starts again: the store must keep them alive from then
    on even before its watch is back, or this host's endpoints blink out of the cluster."""
    ours = endpoint("app", 6)
    # etcd back just after the 6.2 s retry of a store backing off up to 5 s; a short timeout
    # so that retry does not wait out etcd's election and get through.
    down, timeout = 5.8, 0.3

    async def scenario() -> None:
        async with (
            EtcdClient(own_etcd.url) as other,
            running_store(own_etcd, mine=[ours], lease_ttl=LEASE_TTL, timeout=timeout) as (
                store,
                _,
            ),
        ):
            await asyncio.to_thread(store.publish, ours)
            kv = await other.get(keys.endpoint_key(ours))
            assert kv is not None
            _, revision = await other.get_prefix(keys.PREFIX)

            started = time.monotonic()
            await asyncio.to_thread(own_etcd.stop)
            await asyncio.sleep(down)
            await asyncio.to_thread(own_etcd.start)
            back = time.monotonic()
            await until(lambda: store.connected, "the store back", 8)
            await asyncio.sleep(max(0.0, back + LEASE_TTL + 1.5 - time.monotonic()))
            assert time.monotonic() - started > down

            # Every change to the endpoint since before the outage: there must be none.
            watch = other.watch(keys.ENDPOINTS, revision + 1)
            events = []
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        async for batch in watch:
                            events.extend(batch)
            finally:
                await watch.aclose()
            assert [(e.kind, e.mod_revision) for e in events] == [], "the endpoint blinked out"
            now = await other.get(keys.endpoint_key(ours))
            assert now is not None and now.lease == kv.lease

    asyncio.run(scenario())


# -- 5. compaction while disconnected ----------------------------------------------------------


def test_history_compacted_while_disconnected_resyncs_by_reading_with_each_difference_once(
    own_etcd: EtcdServer,
) -> None:
    eps = [endpoint(f"e{i}", 10 + i) for i in range(8)]
    hot, fresh, after = endpoint("hot", 40), endpoint("fresh", 41), endpoint("after", 42)

    async def scenario() -> None:
        async with (
            gated(own_etcd) as gate,
            EtcdClient(own_etcd.url) as other,
            running_store(gate) as (store, recorder),
        ):
            await other.txn([], [Put(keys.endpoint_key(ep), remote_value(ep)) for ep in eps])
            first_hot = await other.put(keys.endpoint_key(hot), remote_value(hot))
            await until(lambda: bool(recorder.of(keys.endpoint_key(hot))), "the first puts")
            before = recorder.counts(keys.ENDPOINTS)
            resyncs = store.resyncs

            await gate.shut()  # the store's watch breaks; etcd goes on
            await until(lambda: not store.connected, "the store noticing the break")
            # Many revisions the store never sees one by one, then compacted away.
            for i in range(30):
                value = remote_value(replace(hot, hostname=f"h{i}"))
                await other.put(keys.endpoint_key(hot), value)
            await other.txn([], [Delete(keys.endpoint_key(ep)) for ep in eps[:3]])
            await other.put(keys.endpoint_key(eps[3]), remote_value(replace(eps[3], hostname="x")))
            latest = await other.put(keys.endpoint_key(fresh), remote_value(fresh))
            await asyncio.to_thread(compact, own_etcd, latest)
            with pytest.raises(Compacted):  # the history the store's watch would resume from
                await anext(other.watch(keys.PREFIX, first_hot + 1))
            assert store.resyncs == resyncs and not store.connected

            await gate.open()
            await until(lambda: store.resyncs > resyncs, "the resync after the break", 8)
            await other.put(keys.endpoint_key(after), remote_value(after))
            await until(lambda: bool(recorder.of(keys.endpoint_key(after))), "a put after resync")
            await asyncio.sleep(0.3)

            since = recorder.counts(keys.ENDPOINTS) - before
            expected = {keys.endpoint_key(ep): 1 for ep in (hot, *eps[:4], fresh, after)}
            assert since == expected  # 30 revisions of `hot`: one difference
            assert [recorder.of(keys.endpoint_key(ep))[-1].new for ep in eps[:3]] == [None] * 3
            last_hot = recorder.of(keys.endpoint_key(hot))[-1].new
            assert isinstance(last_hot, EndpointRecord) and last_hot.endpoint.hostname == "h29"
            assert store.resyncs == resyncs + 1, "the watch after the resync kept failing"

    asyncio.run(scenario())


# -- 6. claims across hosts --------------------------------------------------------------------


def test_address_claim_has_one_winner_is_idempotent_and_survives_wrong_release(
    etcd: EtcdServer,
) -> None:
    address = IPv4Address("10.10.0.50")
    key = keys.address_key(NET.id, address)

    async def scenario() -> None:
        async with (
            EtcdClient(etcd.url) as other,
            running_store(etcd, HERE) as (a, _),
            running_store(etcd, THERE) as (b, _),
        ):
            results = await asyncio.gather(
                asyncio.to_thread(a.claim, NET.id, address, "owner-a"),
                asyncio.to_thread(b.claim, NET.id, address, "owner-b"),
            )
            assert sorted(results) == [False, True]
            winner, owner, loser, lost = (
                (a, "owner-a", b, "owner-b") if results[0] else (b, "owner-b", a, "owner-a")
            )
            assert await asyncio.to_thread(winner.claim, NET.id, address, owner) is True
            assert await asyncio.to_thread(loser.claim, NET.id, address, lost) is False
            # The same owner id from the other host is another holder.
            assert await asyncio.to_thread(loser.claim, NET.id, address, owner) is False
            held = keys.encode_claim(winner.host, owner)

            await asyncio.to_thread(loser.release, NET.id, address, lost)
            await asyncio.to_thread(loser.release, NET.id, address, owner)
            await asyncio.to_thread(winner.release, NET.id, address, "someone-else")
            kv = await other.get(key)
            assert kv is not None and kv.value == held

            await asyncio.to_thread(winner.release, NET.id, address, owner)
            assert await other.get(key) is None
            assert await asyncio.to_thread(loser.claim, NET.id, address, lost) is True

    asyncio.run(scenario())


def test_create_network_claims_name_and_subnet_and_gives_distinct_vnis(etcd: EtcdServer) -> None:
    blue = network("blue", "10.30.0.0/24")

    async def scenario() -> None:
        async with (
            EtcdClient(etcd.url) as other,
            running_store(etcd, HERE) as (a, _),
            running_store(etcd, THERE) as (b, recorder_b),
        ):
            created = await asyncio.to_thread(a.create_network, blue)
            vni = int(created.option(OPT_VNI))
            assert 1 <= vni < 2**24
            assert created == replace(blue, options=((OPT_VNI, str(vni)),))
            stored = await other.get(keys.network_key(blue.id))
            assert stored is not None and keys.decode(stored.key, stored.value) == created
            await until(lambda: bool(recorder_b.of(keys.network_key(blue.id))), "b seeing blue")

            same_name = replace(network("other", "10.31.0.0/24"), name="blue")
            with pytest.raises(Conflict, match="'blue'"):
                await asyncio.to_thread(b.create_network, same_name)
            with pytest.raises(Conflict, match=r"10\.30\.0\.0/24"):
                await asyncio.to_thread(b.create_network, network("green", "10.30.0.0/24"))
            # A refused create leaves no claim of its own behind.
            assert await other.get(keys.network_name_key("green")) is None
            assert await other.get(keys.subnet_key(IPv4Network("10.31.0.0/24"))) is None

            green = await asyncio.to_thread(b.create_network, network("green", "10.31.0.0/24"))
            assert int(green.option(OPT_VNI)) != vni

            # Two hosts at once, neither knowing the other's network yet: both get one.
            red, yellow = await asyncio.gather(
                asyncio.to_thread(a.create_network, network("red", "10.40.0.0/24")),
                asyncio.to_thread(b.create_network, network("yellow", "10.41.0.0/24")),
            )
            vnis = [int(n.option(OPT_VNI)) for n in (created, green, red, yellow)]
            assert len(set(vnis)) == 4, f"VNIs given twice: {vnis}"
            for n in (created, green, red, yellow):
                vni_claim = await other.get(keys.vni_key(int(n.option(OPT_VNI))))
                assert vni_claim is not None and vni_claim.value == n.id.encode()

    asyncio.run(scenario())


def test_create_network_refuses_a_subnet_overlapping_another_hosts_network(
    etcd: EtcdServer,
) -> None:
    async def scenario() -> None:
        async with running_store(etcd, HERE) as (a, _), running_store(etcd, THERE) as (b, _):
            await asyncio.to_thread(a.create_network, network("blue", "10.30.0.0/24"))
            with pytest.raises(Conflict, match=r"10\.30\.0\.0/16 overlaps 10\.30\.0\.0/24"):
                await asyncio.to_thread(b.create_network, network("wide", "10.30.0.0/16"))

    asyncio.run(scenario())


def test_remove_network_refused_while_another_host_has_endpoints_then_frees_claims(
    etcd: EtcdServer,
) -> None:
    theirs = endpoint("db", 5)

    async def scenario() -> None:
        async with (
            EtcdClient(etcd.url) as other,
            running_store(etcd, HERE) as (a, _),
            running_store(etcd, THERE, mine=[theirs]) as (b, _),
        ):
            created = await asyncio.to_thread(a.create_network, NET)
            await asyncio.to_thread(b.publish, theirs)
            await until(lambda: bool(a.view.endpoints_on(NET.id)), "a seeing b's endpoint")
            with pytest.raises(Conflict, match=f"db on {THERE}"):
                await asyncio.to_thread(a.remove_network, created)

            await asyncio.to_thread(b.withdraw, theirs)
            await until(lambda: not a.view.endpoints_on(NET.id), "a seeing the withdraw")
            await asyncio.to_thread(a.remove_network, created)
            kvs, _ = await other.get_prefix(keys.CLAIMS)
            left = [kv.key for kv in kvs if kv.key != keys.NETWORKS_EPOCH]
            assert left == [], f"claims left after remove: {left}"
            assert await other.get(keys.network_key(NET.id)) is None

    asyncio.run(scenario())


def test_create_service_twice_in_the_cluster_is_a_conflict_until_removed(
    etcd: EtcdServer,
) -> None:
    web = Service(id="svc-a".ljust(25, "0"), name="web", networks=(NET.id,), placement=(HERE,))
    key = keys.service_key(web.id)

    async def scenario() -> None:
        async with (
            EtcdClient(etcd.url) as other,
            running_store(etcd, HERE) as (a, _),
            running_store(etcd, THERE) as (b, recorder_b),
        ):
            await asyncio.to_thread(a.create_service, web)
            stored = await other.get(keys.service_key(web.id))
            assert stored is not None and keys.decode(stored.key, stored.value) == web
            for store in (a, b):
                twin = replace(web, id=f"svc-{store.host}".ljust(25, "0"))
                with pytest.raises(Conflict, match="'web'"):
                    await asyncio.to_thread(store.create_service, twin)
                assert await other.get(keys.service_key(twin.id)) is None

            scaled = replace(web, replicas=2, placement=(HERE, THERE))
            await asyncio.to_thread(a.update_service, scaled)
            await until(lambda: len(recorder_b.of(key)) >= 2, "b seeing the update")
            assert recorder_b.of(key) == [Change(key, None, web), Change(key, web, scaled)]

            await asyncio.to_thread(a.remove_service, scaled)
            await until(lambda: len(recorder_b.of(key)) >= 3, "b seeing the removal")
            assert recorder_b.of(key)[-1] == Change(key, scaled, None)
            # The name is free again, for any host.
            await asyncio.to_thread(b.create_service, replace(web, id="svc-b".ljust(25, "0")))

    asyncio.run(scenario())


# -- 7. route_source ---------------------------------------------------------------------------


def test_route_source_of_a_loopback_etcd_is_the_source_of_a_real_connection(
    etcd: EtcdServer,
) -> None:
    # Not etcd's own 127.x address: the kernel sends to all of 127/8 from 127.0.0.1.
    with socket.create_connection((etcd.address, etcd.client_port), timeout=2) as connection:
        used = IPv4Address(connection.getsockname()[0])
    assert used.is_loopback
    assert route_source(etcd.url) == used
    assert route_source(etcd.http_url) == used
