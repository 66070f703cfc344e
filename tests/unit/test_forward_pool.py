"""The pooled UDP upstream sockets (resolver/forward/pool.py, R11): real sockets on loopback
against bench/labs/upstreams.py's FaultUpstream."""

from __future__ import annotations

import asyncio
import time

import pytest
from dnslib import DNSRecord

from bench.labs.upstreams import Fault, FaultUpstream, free_loopback_address
from resolver.forward.forwarder import Forwarder
from resolver.forward.pool import UdpPool
from resolver.forward.upstream import Server, UpstreamFailed, parse_server
from resolver.lookup import Upstreams


def query(name: str) -> bytes:
    return DNSRecord.question(name, "A").pack()


def server_of(upstream: FaultUpstream) -> Server:
    return parse_server(upstream.server)


def test_r11_replies_go_to_their_query_with_several_in_flight_on_one_socket() -> None:
    names = [f"host{index}.example" for index in range(8)]
    pool = UdpPool(size=1)

    async def run() -> list[bytes]:
        try:
            return await asyncio.gather(
                *(pool.exchange(server, query(name), timeout=2.0) for name in names)
            )
        finally:
            pool.close()

    with FaultUpstream(Fault.SLOW, port=0, delay=0.2) as upstream:
        server = server_of(upstream)
        replies = asyncio.run(run())
    assert pool.sockets_opened == 1
    assert [str(DNSRecord.parse(reply).q.qname).rstrip(".") for reply in replies] == names
    assert upstream.udp_queries == len(names)


def test_r11_ids_pending_on_one_socket_never_collide(monkeypatch: pytest.MonkeyPatch) -> None:
    # The random source is made to repeat itself: the second query must skip the taken id.
    draws = iter([0x1234, 0x1234, 0x1234, 0x4321])
    pool = UdpPool(size=1)
    monkeypatch.setattr(pool.entropy, "u16", lambda: next(draws))
    seen: list[set[int]] = []

    async def run() -> None:
        tasks = [
            asyncio.create_task(pool.exchange(server, query(f"n{i}.example"), timeout=0.5))
            for i in range(2)
        ]
        for _ in range(50):
            await asyncio.sleep(0.01)
            sockets = pool.sockets()
            if sockets and len(sockets[0].pending) == 2:
                seen.append(set(sockets[0].pending))
                break
        for task in tasks:
            with pytest.raises(UpstreamFailed, match="timeout"):
                await task
        pool.close()

    with FaultUpstream(Fault.SILENT, port=0) as upstream:
        server = server_of(upstream)
        asyncio.run(run())
    assert seen == [{0x1234, 0x4321}]


def test_r11_socket_retired_after_max_uses_gets_a_new_port() -> None:
    pool = UdpPool(size=1, max_uses=3)

    async def run() -> list[int]:
        ports = []
        for index in range(4):
            await pool.exchange(server, query(f"r{index}.example"), timeout=2.0)
            ports.append(pool.sockets()[0].port)
        return ports

    with FaultUpstream(Fault.ANSWER, port=0) as upstream:
        server = server_of(upstream)
        try:
            ports = asyncio.run(run())
        finally:
            pool.close()
    assert ports[0] == ports[1] == ports[2]
    assert ports[3] != ports[0]
    assert pool.sockets_opened == 2


def test_r11_socket_retired_after_max_age_gets_a_new_socket() -> None:
    pool = UdpPool(size=1, max_age=0.1)

    async def run() -> None:
        await pool.exchange(server, query("a.example"), timeout=2.0)
        await asyncio.sleep(0.15)
        await pool.exchange(server, query("b.example"), timeout=2.0)
        pool.close()

    with FaultUpstream(Fault.ANSWER, port=0) as upstream:
        server = server_of(upstream)
        asyncio.run(run())
    assert pool.sockets_opened == 2


def test_r11_wrong_id_and_wrong_question_replies_are_ignored_on_pooled_sockets() -> None:
    for fault in (Fault.WRONG_ID, Fault.WRONG_QUESTION):
        pool = UdpPool(size=2)

        async def run(server: Server, pool: UdpPool = pool) -> None:
            try:
                with pytest.raises(UpstreamFailed, match="timeout"):
                    await pool.exchange(server, query("victim.example"), timeout=0.3)
            finally:
                pool.close()

        with FaultUpstream(fault, port=0) as upstream:
            asyncio.run(run(server_of(upstream)))
            assert upstream.udp_queries == 1


def test_r11_pending_queries_fail_fast_when_the_upstream_is_unreachable() -> None:
    # Nobody listens on port 53 of a fresh loopback address: the kernel answers ICMP
    # port unreachable, which must fail every query pending on the socket, not time out.
    server = Server(free_loopback_address(53), 53)
    pool = UdpPool(size=1)

    async def run() -> list[BaseException | bytes]:
        try:
            return await asyncio.gather(
                *(pool.exchange(server, query(f"u{i}.example"), timeout=3.0) for i in range(4)),
                return_exceptions=True,
            )
        finally:
            pool.close()

    started = time.monotonic()
    results = asyncio.run(run())
    assert time.monotonic() - started < 1.0
    assert all(isinstance(result, UpstreamFailed) for result in results)
    assert {result.reason for result in results if isinstance(result, UpstreamFailed)} == {
        "unreachable"
    }


def test_r11_close_fails_pending_queries_and_leaves_no_socket_open() -> None:
    pool = UdpPool(size=4)
    opened = []

    async def run() -> list[BaseException | bytes]:
        tasks = [
            asyncio.create_task(pool.exchange(server, query(f"c{i}.example"), timeout=5.0))
            for i in range(6)
        ]
        await asyncio.sleep(0.2)
        opened.extend(pool.sockets())
        pool.close()
        return await asyncio.gather(*tasks, return_exceptions=True)

    with FaultUpstream(Fault.SILENT, port=0) as upstream:
        server = server_of(upstream)
        started = time.monotonic()
        results = asyncio.run(run())
    assert time.monotonic() - started < 2.0
    assert opened
    assert all(pooled.sock.fileno() == -1 for pooled in opened)
    assert pool.sockets() == []
    assert all(isinstance(r, UpstreamFailed) and r.reason == "closed" for r in results)


def test_r11_forwarder_uses_the_pool_across_event_loops_and_close_frees_it() -> None:
    with FaultUpstream(Fault.ANSWER, port=0) as upstream:
        forwarder = Forwarder(default_servers=lambda: [upstream.server])
        for name in ("one.example", "two.example"):
            request = DNSRecord.question(name, "A")
            result = asyncio.run(
                forwarder.forward(request, request.pack(), Upstreams(()), tcp=False)
            )
            assert result.path == "upstream"
            assert DNSRecord.parse(result.reply).header.id == request.header.id
        sockets = forwarder.udp_pool.sockets()
        assert len(sockets) == 1  # the first loop's socket was dropped for the second
        forwarder.close()
    assert forwarder.udp_pool.sockets() == []
    assert sockets[0].sock.fileno() == -1
    assert forwarder.udp_pool.sockets_opened == 2
