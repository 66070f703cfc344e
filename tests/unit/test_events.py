"""The event log (netdns/events.py): numbering, the lines, replay, gaps, followers, filters.

Real EventLog and real model events; streams run in asyncio.run with a test clock where time
matters.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network

import pytest
from aiohttp.test_utils import TestClient, TestServer

from drivers.errors import Invalid
from drivers.model import (
    Driver,
    Endpoint,
    EndpointAttached,
    EndpointDetached,
    IPAMConfig,
    Network,
    NetworkCreated,
    Sandbox,
    SandboxCreated,
)
from netdns.admin import make_app
from netdns.events import Bound, EventLog, parse_bound

APP = Network(
    id="n" * 64,
    name="app",
    driver=Driver.BRIDGE,
    ipam=(IPAMConfig(IPv4Network("10.9.0.0/24")),),
)


def sandbox(i: int) -> Sandbox:
    return Sandbox(id=f"{i:064x}", name=f"c{i}", netns=f"/run/netns/c{i}")


def endpoint(i: int, host: str = "") -> Endpoint:
    return Endpoint(
        id=f"e{i:063x}",
        network_id=APP.id,
        sandbox_id=f"{i:064x}",
        name=f"c{i}",
        aliases=("db",),
        ipv4=IPv4Address(f"10.9.0.{i + 2}"),
        host=host,
    )


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fill(log: EventLog, count: int) -> None:
    for i in range(count):
        log.append(SandboxCreated(sandbox(i)))


def parsed(lines: list[bytes]) -> list[dict]:
    return [json.loads(line) for line in lines]


async def take(stream: AsyncIterator[bytes], count: int, timeout: float = 2.0) -> list[bytes]:
    lines: list[bytes] = []
    async with asyncio.timeout(timeout):
        async for line in stream:
            lines.append(line)
            if len(lines) == count:
                break
    return lines


def collect(log: EventLog, **kwargs: object) -> list[dict]:
    async def run() -> list[bytes]:
        async with asyncio.timeout(2):
            return [line async for line in log.stream(**kwargs)]  # type: ignore[arg-type]

    return parsed(asyncio.run(run()))


# -- records ---------------------------------------------------------------------------------


def test_each_event_gets_the_next_seq_a_type_and_its_object() -> None:
    log = EventLog(clock=Clock())
    log.append(NetworkCreated(APP))
    log.append(SandboxCreated(sandbox(1)))
    log.append(EndpointAttached(endpoint(1)))
    log.append(EndpointDetached(endpoint(1)))
    lines = [json.loads(r.line) for r in log.records()]
    assert [(e["seq"], e["type"]) for e in lines] == [
        (1, "network.create"),
        (2, "container.create"),
        (3, "endpoint.attach"),
        (4, "endpoint.detach"),
    ]
    assert lines[0]["network"] == "app" and lines[0]["object"]["ipam"][0]["subnet"] == "10.9.0.0/24"
    attach = lines[2]
    assert attach["container"] == "c1" and attach["network"] == "app"
    assert attach["addresses"] == ["10.9.0.3"] and attach["aliases"] == ["db"]
    assert attach["object"]["ipv4"] == "10.9.0.3" and "host" not in attach
    assert attach["time"] == "2027-01-15T08:00:00.000000Z"
    assert log.counts["endpoint.attach"] == 1 and log.last_seq == 4


def test_an_endpoint_of_another_cluster_host_carries_its_host() -> None:
    log = EventLog()
    log.append(NetworkCreated(APP))
    line = json.loads(log.append(EndpointAttached(endpoint(7, host="node-b"))).line)
    assert line["host"] == "node-b" and line["object"]["host"] == "node-b"


def test_the_ring_keeps_the_newest_capacity_records() -> None:
    log = EventLog(capacity=5)
    fill(log, 12)
    assert [r.seq for r in log.records()] == [8, 9, 10, 11, 12]
    assert log.first_seq == 8 and len(log) == 5


# -- replay and gaps -------------------------------------------------------------------------


def test_replay_since_a_seq_gives_the_records_after_it_then_ends_without_follow() -> None:
    log = EventLog()
    fill(log, 6)
    assert [e["seq"] for e in collect(log, since=Bound(seq=3), follow=False)] == [4, 5, 6]
    assert [e["seq"] for e in collect(log, follow=False)] == [1, 2, 3, 4, 5, 6]


def test_since_older_than_the_buffer_starts_with_a_gap_line() -> None:
    log = EventLog(capacity=4)
    fill(log, 10)  # holds 7..10
    lines = collect(log, since=Bound(seq=2), follow=False)
    assert lines[0] == {"type": "gap", "from": 3, "to": 6, "reason": "evicted"}
    assert [e["seq"] for e in lines[1:]] == [7, 8, 9, 10]


def test_since_just_before_the_buffer_has_no_gap() -> None:
    log = EventLog(capacity=4)
    fill(log, 10)
    assert [e.get("seq") for e in collect(log, since=Bound(seq=6), follow=False)] == [7, 8, 9, 10]


def test_since_a_seq_never_given_says_the_daemon_restarted() -> None:
    log = EventLog()
    fill(log, 3)
    lines = collect(log, since=Bound(seq=500), follow=False)
    assert lines[0]["type"] == "gap" and lines[0]["reason"] == "restart"
    assert [e["seq"] for e in lines[1:]] == [1, 2, 3]


def test_until_a_seq_ends_the_stream_there_even_when_following() -> None:
    log = EventLog()
    fill(log, 6)
    assert [e["seq"] for e in collect(log, since=Bound(seq=1), until=Bound(seq=4))] == [2, 3, 4]


# -- following -------------------------------------------------------------------------------


def test_a_follower_gets_events_appended_after_it_started_and_ends_on_close() -> None:
    async def run() -> list[bytes]:
        log = EventLog()
        fill(log, 2)
        stream = log.stream(since=Bound(seq=2))

        async def later() -> None:
            await asyncio.sleep(0.05)
            log.append(SandboxCreated(sandbox(50)))
            await asyncio.sleep(0.05)
            log.append(SandboxCreated(sandbox(51)))
            await asyncio.sleep(0.05)
            log.close()

        task = asyncio.create_task(later())
        async with asyncio.timeout(2):
            lines = [line async for line in stream]  # ends only because the log closed
        await task
        return lines

    assert [(e["seq"], e["container"]) for e in parsed(asyncio.run(run()))] == [
        (3, "c50"),
        (4, "c51"),
    ]


def test_a_follower_that_falls_behind_gets_a_gap_line_and_resumes() -> None:
    async def run() -> list[bytes]:
        log = EventLog(capacity=100)
        stream = log.stream(max_backlog=5)
        first = asyncio.create_task(take(stream, 1))
        await asyncio.sleep(0.01)  # the follower is waiting for seq 1
        log.append(SandboxCreated(sandbox(0)))
        lines = await first
        fill(log, 30)  # it reads nothing while 30 more arrive: seqs 2..31
        lines += await take(stream, 6)
        log.append(SandboxCreated(sandbox(99)))
        lines += await take(stream, 1)
        await stream.aclose()
        return lines

    lines = parsed(asyncio.run(run()))
    assert lines[0]["seq"] == 1
    assert lines[1] == {"type": "gap", "from": 2, "to": 26, "reason": "slow reader"}
    assert [e["seq"] for e in lines[2:]] == [27, 28, 29, 30, 31, 32]


def test_a_replay_of_the_whole_buffer_is_not_falling_behind() -> None:
    log = EventLog(capacity=100, max_backlog=3)
    fill(log, 50)
    seqs = [e["seq"] for e in collect(log, until=Bound(seq=50))]
    assert seqs == list(range(1, 51))


def test_appending_does_not_wait_for_readers_and_keeps_no_copy_per_reader() -> None:
    async def run() -> int:
        log = EventLog(capacity=50)
        readers = [asyncio.create_task(take(log.stream(), 1, timeout=5)) for _ in range(20)]
        await asyncio.sleep(0.01)
        fill(log, 10_000)  # no reader gets a turn meanwhile
        held = len(log)
        log.close()
        lines = await asyncio.gather(*readers)
        # Each reader, woken after the ring moved on, is told what it lost.
        assert all(json.loads(got[0])["type"] == "gap" for got in lines)
        return held

    assert asyncio.run(run()) == 50


# -- time --------------------------------------------------------------------------------------


def test_since_and_until_times_select_by_the_records_time() -> None:
    clock = Clock()
    log = EventLog(clock=clock)
    for i in range(6):
        clock.now = 1_800_000_000.0 + 60 * i  # one a minute
        log.append(SandboxCreated(sandbox(i)))
    since = Bound(time=1_800_000_000.0 + 120)  # from the third
    until = Bound(time=1_800_000_000.0 + 240)  # to the fifth
    assert [e["seq"] for e in collect(log, since=since, until=until)] == [3, 4, 5]
    assert [r.seq for r in log.records(since=since)] == [3, 4, 5, 6]


def test_a_future_until_time_follows_until_then() -> None:
    async def run() -> tuple[list[bytes], float]:
        log = EventLog()
        fill(log, 1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        until = Bound(time=log.clock() + 0.3)
        lines = [line async for line in log.stream(until=until)]
        return lines, loop.time() - started

    lines, took = asyncio.run(run())
    assert len(lines) == 1 and 0.2 < took < 2


def test_parse_bound_reads_seqs_times_and_durations() -> None:
    assert parse_bound("42", "since") == Bound(seq=42)
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert parse_bound("2026-01-02T03:04:05Z", "since") == Bound(time=when)
    assert parse_bound("2026-01-02T04:04:05+01:00", "since") == Bound(time=when)
    assert parse_bound("10m", "since", now=1000.0) == Bound(time=400.0)
    assert parse_bound("1h30m", "since", now=10_000.0) == Bound(time=4600.0)
    assert parse_bound("45s", "since", now=100.0) == Bound(time=55.0)
    with pytest.raises(Invalid, match="since 'yesterday'"):
        parse_bound("yesterday", "since")


# -- over HTTP (netdns/admin.py) -------------------------------------------------------------


class EventOps:
    """The part of AdminOps that GET /v1/events uses."""

    def __init__(self, log: EventLog) -> None:
        self.events = log


def test_http_events_stream_replays_then_follows_and_rejects_bad_bounds() -> None:
    async def run() -> tuple[list[dict], list[dict], int, dict]:
        log = EventLog(capacity=3)
        fill(log, 5)  # holds 3..5
        async with TestClient(TestServer(make_app(EventOps(log)))) as client:  # type: ignore[arg-type]
            done = await client.get("/v1/events", params={"since": "1", "follow": "false"})
            assert done.headers["Content-Type"] == "application/x-ndjson"
            replay = parsed((await done.read()).splitlines(keepends=True))

            following = await client.get("/v1/events", params={"since": "5"})
            log.append(SandboxCreated(sandbox(77)))
            first = await asyncio.wait_for(following.content.readline(), 2)
            log.close()
            rest = await asyncio.wait_for(following.content.read(), 2)  # ends: the log closed
            live = parsed([first, *rest.splitlines(keepends=True)])

            bad = await client.get("/v1/events", params={"since": "yesterday"})
            return replay, live, bad.status, await bad.json()

    replay, live, status, error = asyncio.run(run())
    assert replay[0] == {"type": "gap", "from": 2, "to": 2, "reason": "evicted"}
    assert [e["seq"] for e in replay[1:]] == [3, 4, 5]
    assert [(e["seq"], e["container"]) for e in live] == [(6, "c77")]
    assert status == 400 and "since 'yesterday'" in error["message"]
