"""R11, R13, R14: the Forwarder against upstreams that misbehave on purpose.

The upstreams are bench/labs/upstreams.py's stand-ins.

Budgets are shortened where the test waits for timeouts; one test keeps the default 4 s to
show the client (glibc: 5 s) gets SERVFAIL in time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from bench.labs.upstreams import (
    BIG_RECORDS,
    SPOOF_ADDRESS,
    Fault,
    FaultUpstream,
    free_loopback_address,
)
from drivers.errors import Invalid
from resolver.forward import AnswerCache, Forwarder, ForwardResult
from resolver.forward.policy import Health
from resolver.lookup import Upstreams

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: upstreams on port 53")

SLACK = 0.3  # scheduling slack on a busy machine


async def ask(
    forwarder: Forwarder, name: str = "svc.example", qtype: str = "A", *, tcp: bool = False
) -> tuple[DNSRecord, ForwardResult, DNSRecord]:
    request = DNSRecord.question(name, qtype)
    result = await forwarder.forward(request, request.pack(), Upstreams(), tcp=tcp)
    return request, result, DNSRecord.parse(result.reply)


def run(forwarder: Forwarder, name: str = "svc.example", qtype: str = "A", *, tcp: bool = False):
    return asyncio.run(ask(forwarder, name, qtype, tcp=tcp))


def forwarder_for(*upstreams: FaultUpstream | str, **kwargs) -> Forwarder:
    servers = [u if isinstance(u, str) else u.server for u in upstreams]
    return Forwarder(default_servers=lambda: servers, **kwargs)


def addresses(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


# -- order and failover ---------------------------------------------------------------------------


def test_r11_first_upstream_answers_and_the_rest_are_not_asked() -> None:
    with FaultUpstream() as first, FaultUpstream(answer_address="192.0.2.2") as second:
        _, result, reply = run(forwarder_for(first, second))
        assert result.upstream == first.server
        assert addresses(reply) == ["192.0.2.1"]
        assert (first.queries, second.queries) == (1, 0)


@pytest.mark.parametrize("fault", [Fault.SERVFAIL, Fault.REFUSED])
def test_r11_servfail_and_refused_move_to_the_next_upstream(fault: Fault) -> None:
    with FaultUpstream(fault) as bad, FaultUpstream() as good:
        forwarder = forwarder_for(bad, good)
        _, result, reply = run(forwarder)
        assert result.path == "upstream"
        assert result.upstream == good.server
        assert addresses(reply) == ["192.0.2.1"]
        assert result.tries == (f"{bad.server} {fault.name}", f"{good.server} NOERROR")
        assert result.elapsed < 0.5  # no waiting: the rcode says it at once
        assert forwarder.failovers == 1


def test_r11_timeout_moves_to_the_next_upstream_after_its_share() -> None:
    with FaultUpstream(Fault.SILENT) as silent, FaultUpstream() as good:
        _, result, reply = run(forwarder_for(silent, good, budget=1.0))
        assert result.upstream == good.server
        assert addresses(reply) == ["192.0.2.1"]
        assert result.tries[0] == f"{silent.server} timeout"
        assert 0.45 <= result.elapsed < 0.5 + SLACK  # half the budget: two upstreams left


def test_r11_nxdomain_is_the_answer_without_failover() -> None:
    with FaultUpstream(Fault.NXDOMAIN_WITH_SOA) as first, FaultUpstream() as second:
        _, result, reply = run(forwarder_for(first, second))
        assert result.upstream == first.server
        assert reply.header.rcode == RCODE.NXDOMAIN
        assert second.queries == 0


def test_r11_at_most_three_upstreams_are_tried() -> None:
    with (
        FaultUpstream(Fault.SERVFAIL) as a,
        FaultUpstream(Fault.SERVFAIL) as b,
        FaultUpstream(Fault.REFUSED) as c,
        FaultUpstream() as d,
    ):
        _, result, reply = run(forwarder_for(a, b, c, d))
        assert result.path == "servfail"
        assert reply.header.rcode == RCODE.SERVFAIL
        assert (a.queries, b.queries, c.queries, d.queries) == (1, 1, 1, 0)


def test_r11_all_silent_servfail_before_the_default_budget() -> None:
    with (
        FaultUpstream(Fault.SILENT) as a,
        FaultUpstream(Fault.SILENT) as b,
        FaultUpstream(Fault.SILENT) as c,
    ):
        forwarder = forwarder_for(a, b, c)
        assert forwarder.budget == 4.0
        started = time.monotonic()
        _, result, reply = run(forwarder)
        waited = time.monotonic() - started
        assert result.path == "servfail"
        assert reply.header.rcode == RCODE.SERVFAIL
        assert 3.9 <= waited < 4.0 + SLACK < 5.0  # glibc gives up at 5 s
        assert (a.queries, b.queries, c.queries) == (1, 1, 1)
        assert [t.split()[1] for t in result.tries] == ["timeout"] * 3


def test_r11_our_servfail_copies_rd_question_and_echoes_edns() -> None:
    with FaultUpstream(Fault.SERVFAIL) as bad:
        request = DNSRecord.question("Svc.Example", "AAAA")
        request.header.rd = 0
        request.add_ar(EDNS0(udp_len=4096))
        forwarder = forwarder_for(bad)
        result = asyncio.run(forwarder.forward(request, request.pack(), Upstreams(), tcp=False))
        reply = DNSRecord.parse(result.reply)
        assert result.path == "servfail"
        assert (reply.header.qr, reply.header.ra, reply.header.rd) == (1, 1, 0)
        assert reply.header.id == request.header.id
        assert reply.header.rcode == RCODE.SERVFAIL
        assert str(reply.q.qname) == "Svc.Example." and reply.q.qtype == QTYPE.AAAA
        assert [rr.rtype for rr in reply.ar] == [QTYPE.OPT]


def test_r11_unreachable_upstream_fails_over_without_waiting() -> None:
    nobody = free_loopback_address()  # nothing listens: ICMP port unreachable
    with FaultUpstream() as good:
        _, result, _ = run(forwarder_for(nobody, good))
        assert result.upstream == good.server
        assert result.tries[0] == f"{nobody}:53 unreachable"
        assert result.elapsed < 0.5


# -- spoofing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.WRONG_ID, Fault.WRONG_QUESTION])
def test_r11_replies_to_another_query_are_ignored_until_the_timeout(fault: Fault) -> None:
    with FaultUpstream(fault) as liar:
        _, result, reply = run(forwarder_for(liar, budget=0.8))
        assert result.path == "servfail"
        assert SPOOF_ADDRESS not in addresses(reply)
        assert result.tries == (f"{liar.server} timeout",)
        assert result.elapsed >= 0.75  # a spoofer cannot make us give up early either


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_r11_spoofed_replies_first_then_the_real_answer_wins(tcp: bool) -> None:
    with FaultUpstream(Fault.SPOOF_THEN_REAL, delay=0.2) as upstream:
        _, result, reply = run(forwarder_for(upstream, cache=AnswerCache()), tcp=tcp)
        assert result.path == "upstream"
        assert addresses(reply) == ["192.0.2.1"]  # not SPOOF_ADDRESS, from any of the 3 spoofs


# -- transports -----------------------------------------------------------------------------------


def test_r11_truncated_udp_answer_is_retried_over_tcp() -> None:
    with FaultUpstream(Fault.TRUNCATE) as upstream:
        _, result, reply = run(forwarder_for(upstream))
        assert result.path == "upstream"
        assert reply.header.tc == 0
        assert len(reply.rr) == BIG_RECORDS
        assert (upstream.udp_queries, upstream.tcp_queries) == (1, 1)


def test_r11_truncated_answer_stands_when_tcp_fails() -> None:
    with FaultUpstream(Fault.TRUNCATE, tcp_mode=Fault.SILENT) as upstream:
        _, result, reply = run(forwarder_for(upstream, budget=0.8))
        assert result.path == "upstream"
        assert reply.header.tc == 1  # the client can retry over TCP itself
        assert (upstream.udp_queries, upstream.tcp_queries) == (1, 1)
        assert result.elapsed < 0.8 + SLACK


def test_r11_tcp_query_goes_upstream_over_tcp() -> None:
    with FaultUpstream() as upstream:
        request, result, reply = run(forwarder_for(upstream), tcp=True)
        assert result.path == "upstream"
        assert reply.header.id == request.header.id
        assert (upstream.udp_queries, upstream.tcp_queries) == (0, 1)


def test_r11_oversized_udp_answer_is_accepted() -> None:
    with FaultUpstream(Fault.BIG) as upstream:
        _, result, reply = run(forwarder_for(upstream))
        assert len(result.reply) > 512
        assert len(reply.rr) == BIG_RECORDS
        assert (upstream.udp_queries, upstream.tcp_queries) == (1, 0)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_r11_ipv6_upstream_with_a_port(tcp: bool) -> None:
    with FaultUpstream(address="::1", port=0) as upstream:
        assert upstream.server.startswith("[::1]:")
        _, result, reply = run(forwarder_for(upstream), tcp=tcp)
        assert result.upstream == upstream.server
        assert addresses(reply) == ["192.0.2.1"]
        assert upstream.tcp_queries == int(tcp)


def test_r11_sockets_come_from_the_opener() -> None:
    opened: list[tuple[int, int]] = []

    def opener(family: int, kind: int) -> socket.socket:
        opened.append((family, kind))
        return socket.socket(family, kind)

    with FaultUpstream(Fault.TRUNCATE) as upstream:
        request = DNSRecord.question("svc.example")
        forwarder = forwarder_for(upstream)
        coro = forwarder.forward(request, request.pack(), Upstreams(), tcp=False, opener=opener)
        result = asyncio.run(coro)
        assert result.path == "upstream"
        assert opened == [
            (socket.AF_INET, socket.SOCK_DGRAM),
            (socket.AF_INET, socket.SOCK_STREAM),
        ]


# -- health memory --------------------------------------------------------------------------------


def test_r11_failing_upstream_is_put_last_then_probed_back() -> None:
    now = [0.0]
    health = Health(max_failures=3, hold=30.0, clock=lambda: now[0])
    with FaultUpstream(Fault.SERVFAIL) as sick, FaultUpstream() as good:
        forwarder = forwarder_for(sick, good, health=health)
        for _ in range(3):
            assert run(forwarder)[1].upstream == good.server
        assert sick.queries == 3
        for _ in range(3):  # held: the good one is asked first, the sick one not at all
            assert run(forwarder)[1].tries == (f"{good.server} NOERROR",)
        assert sick.queries == 3

        now[0] = 31.0  # hold over: one query probes it in its place; it still fails
        assert run(forwarder)[1].upstream == good.server
        assert sick.queries == 4
        run(forwarder)
        assert sick.queries == 4  # held again

        sick.mode = Fault.ANSWER
        sick.answer_address = "192.0.2.9"
        now[0] = 62.0
        _, result, reply = run(forwarder)  # the probe answers: its place is back
        assert result.upstream == sick.server
        assert addresses(reply) == ["192.0.2.9"]
        assert run(forwarder)[1].upstream == sick.server


def test_r11_dead_upstream_costs_no_wait_while_held_and_one_query_probes_it() -> None:
    now = [0.0]
    health = Health(max_failures=3, hold=30.0, clock=lambda: now[0])
    with FaultUpstream(Fault.SILENT) as dead, FaultUpstream() as good:
        forwarder = forwarder_for(dead, good, health=health, budget=1.0)
        for _ in range(3):  # each pays the dead one's share of the budget
            result = run(forwarder)[1]
            assert result.upstream == good.server
            assert result.elapsed >= 0.45
        assert forwarder.upstream_health()[dead.server] is False
        for _ in range(3):  # held: skipped, no timeout to wait for
            result = run(forwarder)[1]
            assert result.tries == (f"{good.server} NOERROR",)
            assert result.elapsed < 0.2
        assert dead.queries == 3

        async def burst() -> list[ForwardResult]:
            return [r for _, r, _ in await asyncio.gather(*(ask(forwarder) for _ in range(5)))]

        now[0] = 31.0  # hold over: of five queries at once, only one probes the dead upstream
        results = asyncio.run(burst())
        assert dead.queries == 4
        assert all(r.upstream == good.server for r in results)
        probes = [r for r in results if r.tries[0] == f"{dead.server} timeout"]
        assert len(probes) == 1
        assert sorted(r.elapsed < 0.2 for r in results) == [False] + [True] * 4
        assert forwarder.upstream_health()[dead.server] is False

        dead.mode = Fault.ANSWER
        now[0] = 62.0
        assert run(forwarder)[1].upstream == dead.server  # the probe answers: back in place
        assert forwarder.upstream_health()[dead.server] is True
        assert run(forwarder)[1].tries == (f"{dead.server} NOERROR",)


def test_r11_health_memory_is_per_sandbox_for_sandbox_upstreams() -> None:
    """The same address named for two sandboxes may be two servers (one per namespace): a
    failing one held for sandbox X is still asked first for sandbox Y."""
    health = Health(max_failures=1, hold=30.0)
    with FaultUpstream(Fault.SERVFAIL) as sick, FaultUpstream() as good:
        forwarder = forwarder_for(health=health)
        upstreams = Upstreams((sick.server, good.server), from_sandbox=True)

        async def ask_as(scope: str) -> ForwardResult:
            request = DNSRecord.question("svc.example")
            return await forwarder.forward(
                request, request.pack(), upstreams, tcp=False, cache_scope=scope
            )

        asyncio.run(ask_as("sandbox-x"))
        assert asyncio.run(ask_as("sandbox-x")).tries == (f"{good.server} NOERROR",)
        assert asyncio.run(ask_as("sandbox-y")).tries[0] == f"{sick.server} SERVFAIL"


# -- cache (R13) ----------------------------------------------------------------------------------


def test_r13_cached_answer_does_not_reach_the_upstream() -> None:
    with FaultUpstream() as upstream:
        forwarder = forwarder_for(upstream, cache=AnswerCache())
        first = run(forwarder)[1]
        request, second, reply = run(forwarder, "SVC.example")
        assert (first.path, second.path) == ("upstream", "cache")
        assert upstream.queries == 1
        assert reply.header.id == request.header.id
        assert str(reply.q.qname) == str(reply.rr[0].rname) == "SVC.example."


def test_r13_nxdomain_with_soa_is_cached() -> None:
    with FaultUpstream(Fault.NXDOMAIN_WITH_SOA, soa_ttl=300, soa_minimum=60) as upstream:
        forwarder = forwarder_for(upstream, cache=AnswerCache())
        run(forwarder, "gone.example")
        _, second, reply = run(forwarder, "gone.example")
        assert second.path == "cache"
        assert reply.header.rcode == RCODE.NXDOMAIN
        assert upstream.queries == 1


def test_r13_servfail_is_not_cached() -> None:
    with FaultUpstream(Fault.SERVFAIL) as upstream:
        forwarder = forwarder_for(upstream, cache=AnswerCache())
        paths = [run(forwarder)[1].path for _ in range(2)]
        assert paths == ["servfail", "servfail"]
        assert upstream.queries == 2
        assert forwarder.cache is not None and forwarder.cache.size == 0


# -- in-flight cap (R14) --------------------------------------------------------------------------


def test_r14_beyond_max_inflight_servfail_at_once(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(forwarder: Forwarder) -> tuple[list[ForwardResult], list[float]]:
        slow = [asyncio.create_task(ask(forwarder)) for _ in range(2)]
        await asyncio.sleep(0.1)
        assert forwarder.inflight == 2
        extra, waited = [], []
        for _ in range(3):
            started = time.monotonic()
            extra.append((await ask(forwarder))[1])
            waited.append(time.monotonic() - started)
        for task in slow:
            assert (await task)[1].path == "servfail"
        assert forwarder.inflight == 0
        return extra, waited

    with FaultUpstream(Fault.SILENT) as silent, caplog.at_level(logging.WARNING):
        forwarder = forwarder_for(silent, max_inflight=2, budget=1.0)
        extra, waited = asyncio.run(scenario(forwarder))
        assert [r.path for r in extra] == ["overload"] * 3
        assert all(DNSRecord.parse(r.reply).header.rcode == RCODE.SERVFAIL for r in extra)
        assert max(waited) < 0.05
        assert silent.queries == 2
        assert forwarder.overloaded == 3
        overload_lines = [r for r in caplog.records if "max-inflight" in r.getMessage()]
        assert len(overload_lines) == 1  # rate-limited: one line for the burst
        assert run(forwarder)[1].path == "servfail"  # capacity is back: it tries again
        assert silent.queries == 3


def test_r14_one_sandbox_over_its_share_does_not_take_the_others_room() -> None:
    async def scenario(forwarder: Forwarder, upstream: FaultUpstream) -> None:
        async def ask_for(sandbox: str) -> ForwardResult:
            request = DNSRecord.question("svc.example")
            return await forwarder.forward(
                request, request.pack(), Upstreams(), tcp=False, sandbox_id=sandbox
            )

        flood = [asyncio.create_task(ask_for("sandbox-a")) for _ in range(3)]
        await asyncio.sleep(0.1)
        assert (forwarder.inflight, forwarder.sandbox_inflight("sandbox-a")) == (2, 2)
        assert (await flood[2]).path == "overload"  # over A's share: SERVFAIL at once
        upstream.mode = Fault.ANSWER
        other = await ask_for("sandbox-b")  # room left in the global cap for B
        assert other.path == "upstream"
        assert forwarder.sandbox_inflight("sandbox-b") == 0
        upstream.mode = Fault.SILENT
        for task in flood[:2]:
            assert (await task).path == "servfail"
        assert forwarder.sandbox_inflight("sandbox-a") == 0
        assert (await ask_for("sandbox-a")).path == "servfail"  # its share is free again

    with FaultUpstream(Fault.SILENT) as upstream:
        forwarder = forwarder_for(upstream, max_inflight=4, max_inflight_per_sandbox=2, budget=0.5)
        asyncio.run(scenario(forwarder, upstream))
        assert (forwarder.sandbox_overloaded, forwarder.overloaded) == (1, 0)
        assert (forwarder.inflight_peak, forwarder.sandbox_inflight_peak) == (3, 2)
        assert forwarder.inflight == 0


def test_r14_a_quiet_sandbox_forwards_even_when_flooders_fill_the_whole_cap() -> None:
    async def scenario(forwarder: Forwarder, upstream: FaultUpstream) -> None:
        async def ask_for(sandbox: str) -> ForwardResult:
            request = DNSRecord.question("svc.example")
            return await forwarder.forward(
                request, request.pack(), Upstreams(), tcp=False, sandbox_id=sandbox
            )

        # Two flooders, each at its share: the cap of 4 is full between them.
        flood = [asyncio.create_task(ask_for(s)) for s in ("a", "a", "b", "b")]
        await asyncio.sleep(0.1)
        assert forwarder.inflight == forwarder.max_inflight
        assert (await ask_for("a")).path == "overload"  # a flooder: refused at once
        upstream.mode = Fault.ANSWER
        quiet = [asyncio.create_task(ask_for("c")) for _ in range(2)]
        assert [(await t).path for t in quiet] == ["upstream", "overload"]  # one, not more
        upstream.mode = Fault.SILENT
        for task in flood:
            assert (await task).path == "servfail"

    with FaultUpstream(Fault.SILENT) as upstream:
        forwarder = forwarder_for(upstream, max_inflight=4, max_inflight_per_sandbox=2, budget=0.5)
        asyncio.run(scenario(forwarder, upstream))
        assert forwarder.inflight_peak == 5  # the cap, and the quiet sandbox's one
        assert forwarder.inflight == 0


def test_r14_share_defaults_to_a_quarter_of_the_cap_and_at_least_eight() -> None:
    assert forwarder_for(max_inflight=1024).max_inflight_per_sandbox == 256
    assert forwarder_for(max_inflight=10).max_inflight_per_sandbox == 8
    assert forwarder_for(max_inflight=10, max_inflight_per_sandbox=3).max_inflight_per_sandbox == 3
    with pytest.raises(Invalid, match="max_inflight_per_sandbox 0"):
        forwarder_for(max_inflight_per_sandbox=0)
