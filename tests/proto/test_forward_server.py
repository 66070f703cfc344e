"""R11 through the whole server: the real `dig` asks a listener for names that are not local,
and the Forwarder behind it asks a real dnsmasq or a scripted upstream (bench/labs/upstreams.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bench.labs.upstreams import BIG_RECORDS, Dnsmasq, Fault, FaultUpstream
from tests.proto.harness import CLIENT1, ServerThread, dig, sample_table

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: upstreams on port 53")


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[Dnsmasq]:
    with Dnsmasq() as server:
        yield server


def test_r11_dig_gets_the_upstream_answer_over_udp_and_tcp(dnsmasq: Dnsmasq) -> None:
    with ServerThread(sample_table(), [CLIENT1], upstreams=[dnsmasq.server]) as server:
        over_udp = dig(server, CLIENT1, "wEb.TeSt", "A")
        over_tcp = dig(server, CLIENT1, "+tcp", "_http._tcp.web.test", "SRV")
        missing = dig(server, CLIENT1, "nothing.example", "A")
    assert (over_udp.status, over_udp.rdata("A")) == ("NOERROR", ["10.1.2.3"])
    assert over_udp.answer[0].owner == "wEb.TeSt."  # dnsmasq keeps the case; we pass it on
    assert "ra" in over_udp.flags
    assert over_tcp.rdata("SRV") == ["0 0 80 web.test."]
    assert missing.status == "NXDOMAIN"


def test_r11_big_upstream_answer_truncated_to_udp_client_then_whole_over_tcp() -> None:
    with (
        FaultUpstream(Fault.BIG) as upstream,
        ServerThread(sample_table(), [CLIENT1], upstreams=[upstream.server]) as server,
    ):
        truncated = dig(server, CLIENT1, "+noedns", "+ignore", "big.example", "A")
        retried = dig(server, CLIENT1, "+noedns", "big.example", "A")  # dig retries over TCP
    assert "tc" in truncated.flags and truncated.answer == ()
    assert len(retried.rdata("A")) == BIG_RECORDS
    assert upstream.tcp_queries == 1  # the client's TCP query went upstream over TCP


def test_r11_dig_gets_next_upstream_when_first_refuses() -> None:
    with (
        FaultUpstream(Fault.REFUSED) as refusing,
        FaultUpstream(answer_address="192.0.2.77") as good,
        ServerThread(sample_table(), [CLIENT1], upstreams=[refusing.server, good.server]) as server,
    ):
        result = dig(server, CLIENT1, "svc.example", "A")
    assert (result.status, result.rdata("A")) == ("NOERROR", ["192.0.2.77"])
    assert (refusing.queries, good.queries) == (1, 1)
