"""R11, R13: the Forwarder against a real upstream, Debian's dnsmasq on a random 127.x address.

dnsmasq runs with --no-resolv and no --server: names outside its zone are NXDOMAIN, nothing
leaves the machine.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from bench.labs.upstreams import Dnsmasq
from resolver.forward import AnswerCache, Forwarder, ForwardResult, HostResolvConf
from resolver.lookup import Upstreams

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: dnsmasq on port 53")


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[Dnsmasq]:
    with Dnsmasq() as server:
        yield server


def forward(
    forwarder: Forwarder,
    name: str,
    qtype: str = "A",
    *,
    tcp: bool = False,
    servers: tuple[str, ...] = (),
    edns: bool = False,
) -> tuple[DNSRecord, ForwardResult, DNSRecord]:
    request = DNSRecord.question(name, qtype)
    if edns:
        request.add_ar(EDNS0(udp_len=1232))
    result = asyncio.run(forwarder.forward(request, request.pack(), Upstreams(servers), tcp=tcp))
    return request, result, DNSRecord.parse(result.reply)


def ask_directly(server: Dnsmasq, query: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.connect((server.address, server.port))
        sock.send(query)
        return sock.recv(65535)


def test_r11_answer_comes_back_unchanged_but_for_the_id(dnsmasq: Dnsmasq) -> None:
    forwarder = Forwarder(default_servers=lambda: [dnsmasq.server])
    request, result, reply = forward(forwarder, "web.test", edns=True)
    assert result.path == "upstream"
    assert result.upstream == dnsmasq.server
    assert reply.header.id == request.header.id
    assert [str(rr.rdata) for rr in reply.rr] == ["10.1.2.3"]
    assert any(rr.rtype == QTYPE.OPT for rr in reply.ar)  # the client's EDNS went upstream
    direct = ask_directly(dnsmasq, request.pack())
    assert result.reply[2:] == direct[2:]  # byte for byte what dnsmasq says


@pytest.mark.parametrize(
    ("name", "qtype", "expected"),
    [
        ("db.test", "AAAA", "fd00::4"),
        ("txt.test", "TXT", '"hello world"'),
        ("mail.test", "MX", "10 mx.mail.test."),
        ("_http._tcp.web.test", "SRV", "0 0 80 web.test."),
    ],
)
def test_r11_other_types_pass_through(dnsmasq: Dnsmasq, name, qtype, expected) -> None:
    forwarder = Forwarder(default_servers=lambda: [dnsmasq.server])
    _, result, reply = forward(forwarder, name, qtype)
    assert result.path == "upstream"
    assert [str(rr.rdata) for rr in reply.rr] == [expected]


def test_r11_nxdomain_is_the_answer(dnsmasq: Dnsmasq) -> None:
    forwarder = Forwarder(default_servers=lambda: [dnsmasq.server])
    _, result, reply = forward(forwarder, "nowhere.example")
    assert result.path == "upstream"
    assert reply.header.rcode == RCODE.NXDOMAIN
    assert forwarder.failovers == 0


def test_r11_tcp_query_answered_over_tcp(dnsmasq: Dnsmasq) -> None:
    forwarder = Forwarder(default_servers=lambda: [dnsmasq.server])
    request, result, reply = forward(forwarder, "db.test", "AAAA", tcp=True)
    assert result.path == "upstream"
    assert reply.header.id == request.header.id
    assert [str(rr.rdata) for rr in reply.rr] == ["fd00::4"]


def test_r11_sandbox_servers_win_over_default_servers(dnsmasq: Dnsmasq) -> None:
    zone = ("--address=/web.test/10.7.7.7",)
    with Dnsmasq(zone=zone) as other:
        forwarder = Forwarder(default_servers=lambda: [dnsmasq.server])
        _, result, reply = forward(forwarder, "web.test", servers=(other.server,))
        assert result.upstream == other.server
        assert [str(rr.rdata) for rr in reply.rr] == ["10.7.7.7"]


def test_r11_no_servers_at_all_is_servfail_at_once() -> None:
    forwarder = Forwarder(default_servers=lambda: [])
    _, result, reply = forward(forwarder, "web.test")
    assert result.path == "servfail"
    assert reply.header.rcode == RCODE.SERVFAIL
    assert result.elapsed < 0.1


def test_r11_host_resolv_conf_change_picked_up(dnsmasq: Dnsmasq, tmp_path: Path) -> None:
    resolv_conf = tmp_path / "resolv.conf"  # never the real /etc/resolv.conf
    resolv_conf.write_text(f"# test\nsearch example\nnameserver {dnsmasq.address}\n")
    host = HostResolvConf(str(resolv_conf), check_interval=0.2)
    forwarder = Forwarder(default_servers=host.nameservers, cache=AnswerCache())
    _, result, reply = forward(forwarder, "web.test")
    assert result.upstream == dnsmasq.server
    assert [str(rr.rdata) for rr in reply.rr] == ["10.1.2.3"]

    with Dnsmasq(zone=("--address=/web.test/10.8.8.8",)) as replacement:
        resolv_conf.write_text(f"nameserver {replacement.address}\n")
        time.sleep(0.3)
        _, result, reply = forward(forwarder, "web.test")
        assert result.upstream == replacement.server
        # a new upstream set: the old set's cached answer does not leak into it (R13)
        assert result.path == "upstream"
        assert [str(rr.rdata) for rr in reply.rr] == ["10.8.8.8"]


def test_r11_host_resolv_conf_stat_at_most_once_per_interval(tmp_path: Path) -> None:
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 127.3.3.3\nnameserver fe80::1%eth0\nnameserver ::1\n")
    now = [0.0]
    host = HostResolvConf(str(resolv_conf), clock=lambda: now[0])
    assert host.nameservers() == ("127.3.3.3:53", "[::1]:53")  # the scoped entry is skipped
    resolv_conf.write_text("nameserver 127.4.4.4\n")
    now[0] = 0.5
    assert host.nameservers() == ("127.3.3.3:53", "[::1]:53")
    now[0] = 1.0
    assert host.nameservers() == ("127.4.4.4:53",)
    resolv_conf.unlink()
    now[0] = 2.0
    assert host.nameservers() == ()


def test_r13_second_query_answered_from_cache(dnsmasq: Dnsmasq) -> None:
    forwarder = Forwarder(default_servers=lambda: [dnsmasq.server], cache=AnswerCache())
    _, first, _ = forward(forwarder, "mail.test", "MX")
    before = dnsmasq.settled_queries()
    request, second, reply = forward(forwarder, "MAIL.test", "MX")
    time.sleep(0.1)  # let dnsmasq's log reach us, had it been asked
    assert first.path == "upstream"
    assert second.path == "cache"
    assert dnsmasq.queries == before
    assert reply.header.id == request.header.id
    assert str(reply.q.qname) == "MAIL.test."
    assert [str(rr.rdata) for rr in reply.rr] == ["10 mx.mail.test."]
    assert forwarder.cache is not None and forwarder.cache.hits == 1


def test_r13_nxdomain_without_soa_not_cached(dnsmasq: Dnsmasq) -> None:
    # dnsmasq's NXDOMAIN for names outside its zone carries no SOA: RFC 2308 says do not cache.
    forwarder = Forwarder(default_servers=lambda: [dnsmasq.server], cache=AnswerCache())
    _, first, reply = forward(forwarder, "nothing.example")
    assert reply.header.rcode == RCODE.NXDOMAIN and not reply.auth
    _, second, _ = forward(forwarder, "nothing.example")
    assert (first.path, second.path) == ("upstream", "upstream")


def test_r13_no_cache_always_asks_upstream(dnsmasq: Dnsmasq) -> None:
    forwarder = Forwarder(default_servers=lambda: [dnsmasq.server], cache=None)
    before = dnsmasq.settled_queries()
    paths = [forward(forwarder, "txt.test", "TXT")[1].path for _ in range(3)]
    deadline = time.monotonic() + 2.0
    while dnsmasq.queries < before + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert paths == ["upstream"] * 3
    assert dnsmasq.queries == before + 3
