"""drivers.cluster.etcd against a real etcd (Debian's /usr/bin/etcd) on a random loopback address.

Tests that only read and write share one server per module and keep to their own key prefix;
tests that compact, stop or kill etcd start their own.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from bench.labs.etcd import EtcdServer, etcd_available
from bench.labs.upstreams import free_loopback_address
from drivers.cluster.etcd import EtcdClient
from drivers.cluster.etcd_wire import (
    Compacted,
    Compare,
    Delete,
    EtcdError,
    EtcdUnavailable,
    EventKind,
    Put,
    WatchEvent,
    parse_store_url,
)
from drivers.errors import Invalid, Unavailable

pytestmark = pytest.mark.skipif(
    not etcd_available(), reason="needs /usr/bin/etcd (Debian package etcd-server)"
)

WATCH_WAIT = 5.0


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer(free_loopback_address(2379)) as server:
        yield server


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    """A server of the test's own, for tests that compact, stop or kill it."""
    with EtcdServer(free_loopback_address(2379)) as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"/netdns-test/{uuid.uuid4().hex[:10]}/"


async def next_batch(watch: AsyncIterator[list[WatchEvent]]) -> list[WatchEvent]:
    async with asyncio.timeout(WATCH_WAIT):
        return await anext(watch)


async def collect(watch: AsyncIterator[list[WatchEvent]], count: int) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    while len(events) < count:
        events.extend(await next_batch(watch))
    return events


def compact(server: EtcdServer, revision: int) -> None:
    request = urllib.request.Request(
        f"{server.http_url}/v3/kv/compaction",
        data=json.dumps({"revision": str(revision), "physical": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


# -- keys ------------------------------------------------------------------------------------------


def test_put_get_delete_round_trip(etcd: EtcdServer, prefix: str) -> None:
    async def scenario() -> None:
        async with EtcdClient(etcd.url) as client:
            key = prefix + "web"
            assert await client.get(key) is None
            first = await client.put(key, b"10.0.0.2")
            kv = await client.get(key)
            assert kv is not None
            assert (kv.key, kv.value, kv.lease) == (key, b"10.0.0.2", 0)
            assert kv.create_revision == kv.mod_revision == first

            second = await client.put(key, b"")  # an empty value is omitted on the wire
            kv = await client.get(key)
            assert kv is not None
            assert (kv.value, kv.create_revision, kv.mod_revision) == (b"", first, second)
            assert second > first

            assert await client.delete(key) == 1
            assert await client.get(key) is None
            assert await client.delete(key) == 0

    asyncio.run(scenario())


def test_delete_prefix_removes_only_keys_under_it(etcd: EtcdServer, prefix: str) -> None:
    async def scenario() -> None:
        async with EtcdClient(etcd.url) as client:
            for name in ("a", "b", "c"):
                await client.put(prefix + "net/" + name, b"x")
            await client.put(prefix + "net0", b"sibling")  # "net0" > "net/" but not under it
            assert await client.delete(prefix + "net/", prefix=True) == 3
            kvs, _ = await client.get_prefix(prefix)
            assert [kv.key for kv in kvs] == [prefix + "net0"]

    asyncio.run(scenario())


def test_get_prefix_reads_25000_keys_across_pages_at_one_revision(
    etcd: EtcdServer, prefix: str
) -> None:
    total, per_txn = 25_000, 100

    async def scenario() -> None:
        async with EtcdClient(etcd.url, timeout=10) as client:
            gate = asyncio.Semaphore(16)
            batch_revisions: list[int] = []

            async def put_batch(start: int) -> None:
                puts = [
                    Put(f"{prefix}k{i:06d}", f"v{i}".encode())
                    for i in range(start, min(start + per_txn, total))
                ]
                async with gate:
                    result = await client.txn([], puts)
                assert result.succeeded
                batch_revisions.append(result.revision)

            async with asyncio.TaskGroup() as group:
                for start in range(0, total, per_txn):
                    group.create_task(put_batch(start))
            await client.put(prefix[:-1] + "0", b"outside")  # just past the prefix's range

            # Keys written while the read pages through sort after all others ("~"): without
            # one pinned revision the last pages would pick them up.
            extra_revisions: list[int] = []
            reading = True

            async def write_during_read() -> None:
                index = 0
                while reading:
                    extra_revisions.append(await client.put(f"{prefix}~{index:05d}", b"late"))
                    index += 1

            writer = asyncio.create_task(write_during_read())
            await asyncio.sleep(0.05)
            started = time.monotonic()
            kvs, revision = await client.get_prefix(prefix)
            elapsed = time.monotonic() - started
            reading = False
            await writer

            assert extra_revisions and max(extra_revisions) > revision, "no write during read"
            expected_extra = sum(1 for r in extra_revisions if r <= revision)
            assert len(kvs) == total + expected_extra
            keys = [kv.key for kv in kvs]
            assert keys == sorted(set(keys))
            assert keys[0] == f"{prefix}k000000" and keys[total - 1] == f"{prefix}k{total - 1:06d}"
            assert kvs[12_345].value == b"v12345"
            assert all(kv.mod_revision <= revision for kv in kvs)
            assert elapsed < 10, f"reading {total} keys took {elapsed:.1f} s"

            # The same keys through a watch: etcd sends them as one message of megabytes,
            # which reaches the client in many chunks.
            watch = client.watch(prefix, min(batch_revisions))
            try:
                events = await collect(watch, total)
            finally:
                await watch.aclose()
            assert {e.key for e in events[:total]} == set(keys[:total])
            assert [e.mod_revision for e in events] == sorted(e.mod_revision for e in events)

    asyncio.run(scenario())


def test_get_prefix_of_nothing_is_empty_with_current_revision(
    etcd: EtcdServer, prefix: str
) -> None:
    async def scenario() -> None:
        async with EtcdClient(etcd.url) as client:
            written = await client.put(prefix[:-1] + "-other", b"x")
            kvs, revision = await client.get_prefix(prefix)
            assert kvs == []
            assert revision >= written

    asyncio.run(scenario())


def test_create_succeeds_only_while_key_is_absent(etcd: EtcdServer, prefix: str) -> None:
    async def scenario() -> None:
        async with EtcdClient(etcd.url) as client:
            key = prefix + "lock"
            assert await client.create(key, b"first") is True
            assert await client.create(key, b"second") is False
            kv = await client.get(key)
            assert kv is not None and kv.value == b"first"

    asyncio.run(scenario())


def test_txn_runs_success_or_failure_branch_by_compare(etcd: EtcdServer, prefix: str) -> None:
    async def scenario() -> None:
        async with EtcdClient(etcd.url) as client:
            key, flag = prefix + "ep", prefix + "flag"
            revision = await client.put(key, b"old")

            failed = await client.txn(
                [Compare(key, "VALUE", "EQUAL", b"something else")],
                [Put(flag, b"success")],
                [Put(flag, b"failure"), Delete(key)],
            )
            assert failed.succeeded is False
            assert failed.revision > revision
            flag_kv = await client.get(flag)
            assert flag_kv is not None and flag_kv.value == b"failure"
            assert await client.get(key) is None

            revision = await client.put(key, b"new")
            succeeded = await client.txn(
                [Compare(key, "MOD", "EQUAL", revision), Compare(key, "VERSION", "EQUAL", 1)],
                [Put(key, b"newer"), Delete(prefix + "fl", prefix=True)],
                [Put(flag, b"wrong branch")],
            )
            assert succeeded.succeeded is True
            kv = await client.get(key)
            assert kv is not None and kv.value == b"newer"
            assert kv.mod_revision == succeeded.revision
            assert await client.get(flag) is None

            # A compare that no longer holds (the key moved on) takes the failure branch.
            stale = await client.txn([Compare(key, "MOD", "EQUAL", revision)], [Delete(key)])
            assert stale.succeeded is False
            assert await client.get(key) is not None

    asyncio.run(scenario())


def test_compare_rejects_unknown_target_and_wrong_value_type() -> None:
    with pytest.raises(Invalid, match="target 'CREATED'"):
        Compare("k", "CREATED")
    with pytest.raises(Invalid, match="result 'EQ'"):
        Compare("k", "CREATE", "EQ")
    with pytest.raises(Invalid, match="needs bytes"):
        Compare("k", "VALUE", "EQUAL", 0)
    with pytest.raises(Invalid, match="needs an int"):
        Compare("k", "MOD", "EQUAL", b"1")


def test_put_with_unknown_lease_is_refused_with_etcd_message(etcd: EtcdServer, prefix: str) -> None:
    async def scenario() -> None:
        async with EtcdClient(etcd.url) as client:
            with pytest.raises(EtcdError, match="lease not found") as caught:
                await client.put(prefix + "x", b"v", lease=0x12345)
            assert caught.value.code == 5
            assert etcd.url in str(caught.value)

    asyncio.run(scenario())


# -- leases ----------------------------------------------------------------------------------------


def test_leased_key_vanishes_after_ttl(etcd: EtcdServer, prefix: str) -> None:
    async def scenario() -> None:
        async with EtcdClient(etcd.url) as client:
            lease = await client.grant(2)
            assert lease > 0
            key = prefix + "ephemeral"
            await client.put(key, b"v", lease=lease)
            kv = await client.get(key)
            assert kv is not None and kv.lease == lease

            started = time.monotonic()
            while await client.get(key) is not None:
                assert time.monotonic() - started < 6, "leased key outlived its TTL of 2 s"
                await asyncio.sleep(0.2)
            assert time.monotonic() - started > 0.5, "leased key vanished at once"
            assert await client.keepalive(lease) == 0

    asyncio.run(scenario())


def test_keepalive_keeps_leased_key(etcd: EtcdServer, prefix: str) -> None:
    async def scenario() -> None:
        async with EtcdClient(etcd.url) as client:
            lease = await client.grant(2)
            key = prefix + "kept"
            await client.put(key, b"v", lease=lease)
            started = time.monotonic()
            while time.monotonic() - started < 4.5:  # over twice the TTL
                assert await client.keepalive(lease) == 2
                await asyncio.sleep(0.5)
            assert await client.get(key) is not None

    asyncio.run(scenario())


def test_revoke_deletes_leased_keys_and_tolerates_missing_lease(
    etcd: EtcdServer, prefix: str
) -> None:
    async def scenario() -> None:
        async with EtcdClient(etcd.url) as client:
            lease = await client.grant(60)
            await client.put(prefix + "a", b"1", lease=lease)
            await client.put(prefix + "b", b"2", lease=lease)
            await client.revoke(lease)
            assert (await client.get_prefix(prefix))[0] == []
            assert await client.keepalive(lease) == 0
            await client.revoke(lease)  # already gone: fine

    asyncio.run(scenario())


# -- watch -----------------------------------------------------------------------------------------


def test_watch_from_revision_sees_puts_and_deletes_in_order(etcd: EtcdServer, prefix: str) -> None:
    async def scenario() -> None:
        async with EtcdClient(etcd.url) as client:
            r1 = await client.put(prefix + "a", b"1")
            r2 = await client.put(prefix + "b", b"2")
            await client.put(prefix[:-1] + "-outside", b"not watched")
            r3 = (await client.txn([], [Delete(prefix + "a")])).revision
            r4 = await client.put(prefix + "b", b"22")

            watch = client.watch(prefix, r1)
            try:
                events = await collect(watch, 4)
                assert events == [
                    WatchEvent(EventKind.PUT, prefix + "a", b"1", r1, r1),
                    WatchEvent(EventKind.PUT, prefix + "b", b"2", r2, r2),
                    WatchEvent(EventKind.DELETE, prefix + "a", b"", r3, 0),
                    WatchEvent(EventKind.PUT, prefix + "b", b"22", r4, r2),
                ]
                # And live changes after the history.
                r5 = await client.put(prefix + "c", b"3")
                assert await next_batch(watch) == [
                    WatchEvent(EventKind.PUT, prefix + "c", b"3", r5, r5)
                ]
            finally:
                await watch.aclose()

    asyncio.run(scenario())


def test_watch_from_now_yields_nothing_until_a_change(etcd: EtcdServer, prefix: str) -> None:
    async def scenario() -> None:
        async with EtcdClient(etcd.url) as client:
            _, revision = await client.get_prefix(prefix)
            watch = client.watch(prefix, revision + 1)
            try:
                waiting = asyncio.ensure_future(anext(watch))
                done, _ = await asyncio.wait({waiting}, timeout=0.5)
                assert not done, "the watch yielded before any change (created message?)"
                written = await client.put(prefix + "x", b"1")
                async with asyncio.timeout(WATCH_WAIT):
                    batch = await waiting
                assert [(e.kind, e.key, e.mod_revision) for e in batch] == [
                    (EventKind.PUT, prefix + "x", written)
                ]
            finally:
                await watch.aclose()

    asyncio.run(scenario())


def test_watch_of_compacted_revision_raises_compacted(own_etcd: EtcdServer) -> None:
    async def scenario() -> None:
        async with EtcdClient(own_etcd.url) as client:
            first = await client.put("/c/a", b"1")
            await client.put("/c/a", b"2")
            latest = await client.put("/c/a", b"3")
            compact(own_etcd, latest)
            with pytest.raises(Compacted) as caught:
                await next_batch(client.watch("/c/", first))
            assert caught.value.compact_revision == latest
            assert own_etcd.url in str(caught.value)

            # From the compact revision on the history is still there.
            watch = client.watch("/c/", latest)
            try:
                assert [e.mod_revision for e in await next_batch(watch)] == [latest]
            finally:
                await watch.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("end", ["kill", "stop"])
def test_watch_raises_unavailable_when_etcd_dies_or_stops(own_etcd: EtcdServer, end: str) -> None:
    async def scenario() -> None:
        async with EtcdClient(own_etcd.url) as client:
            revision = await client.put("/k/a", b"1")
            watch = client.watch("/k/", revision)
            try:
                assert len(await next_batch(watch)) == 1
                await asyncio.to_thread(getattr(own_etcd, end))  # SIGKILL or SIGTERM
                started = time.monotonic()
                with pytest.raises(EtcdUnavailable) as caught:
                    await next_batch(watch)
                assert time.monotonic() - started < 2
                assert own_etcd.url in str(caught.value)
            finally:
                await watch.aclose()

    asyncio.run(scenario())


# -- unavailable -----------------------------------------------------------------------------------


def test_call_to_stopped_etcd_fails_fast_with_url_then_works_after_restart(
    own_etcd: EtcdServer,
) -> None:
    timeout = 1.0

    async def scenario() -> None:
        async with EtcdClient(own_etcd.url, timeout=timeout) as client:
            await client.put("/s/a", b"kept")
            await asyncio.to_thread(own_etcd.stop)
            for call in (client.get("/s/a"), client.put("/s/b", b"x"), client.grant(5)):
                started = time.monotonic()
                with pytest.raises(EtcdUnavailable) as caught:
                    await call
                assert time.monotonic() - started < timeout + 1
                message = str(caught.value)
                assert own_etcd.url in message and "Connection refused" in message
                assert isinstance(caught.value, Unavailable)
            with pytest.raises(EtcdUnavailable):
                await next_batch(client.watch("/s/", 1))

            await asyncio.to_thread(own_etcd.start)  # same data dir, same port
            kv = await client.get("/s/a")
            assert kv is not None and kv.value == b"kept"

    asyncio.run(scenario())


def test_call_to_silent_server_times_out_within_timeout() -> None:
    """A peer that takes the connection but never answers (a hung etcd)."""
    address = free_loopback_address(2379)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((address, 0))
        listener.listen(16)  # never accepted: the kernel completes the handshake, nobody reads
        url = f"etcd://{address}:{listener.getsockname()[1]}"

        async def scenario() -> None:
            async with EtcdClient(url, timeout=0.5) as client:
                started = time.monotonic()
                with pytest.raises(EtcdUnavailable, match=r"did not answer within 0\.5 s"):
                    await client.get("/x")
                assert time.monotonic() - started < 1.5

        asyncio.run(scenario())


# -- store URL -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "http"),
    [
        ("etcd://10.1.2.3:2379", "http://10.1.2.3:2379"),
        ("etcd://etcd.internal:2379", "http://etcd.internal:2379"),
        ("etcd://[fd00::5]:2379", "http://[fd00::5]:2379"),
        ("etcd://127.0.0.1:2379/", "http://127.0.0.1:2379"),
    ],
)
def test_parse_store_url_accepts_etcd_host_port(text: str, http: str) -> None:
    assert parse_store_url(text) == http


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("etcd://10.1.2.3", "needs both a host and a port"),
        ("http://10.1.2.3:2379", "no etcd:// scheme"),
        ("10.1.2.3:2379", "no etcd:// scheme"),
        ("local", "no etcd:// scheme"),
        ("etcd://:2379", "needs both a host and a port"),
        ("etcd://10.1.2.3:99999", "not a valid address"),
        ("etcd://10.1.2.3:port", "not a valid address"),
        ("etcd://[fd00::5:2379", "not a valid address"),
        ("etcd://fd00::5:2379", "not a valid address"),
        ("etcd://10.1.2.3:0", "port 0"),
        ("etcd://10.1.2.3:2379/v3", "more than a host and a port"),
        ("etcd://user@10.1.2.3:2379", "more than a host and a port"),
        ("etcd://bad_host!:2379", "no host name or address"),
    ],
)
def test_parse_store_url_rejects_anything_else(text: str, complaint: str) -> None:
    with pytest.raises(Invalid, match=complaint) as caught:
        parse_store_url(text)
    assert repr(text) in str(caught.value)
    assert "etcd://HOST:PORT" in str(caught.value) or "IPv6" in str(caught.value)
