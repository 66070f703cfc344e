"""Answer building and bad-input rules (R2, R4, R6, R9, R10, R15, R16), on bytes alone."""

from __future__ import annotations

import asyncio
import random
import struct
from ipaddress import ip_address

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from drivers.model import (
    Driver,
    Endpoint,
    EndpointAttached,
    Network,
    NetworkCreated,
    Sandbox,
    SandboxCreated,
)
from resolver.answer import fit_udp, local_reply, parse_query
from resolver.forward import Forwarder
from resolver.lookup import Lookup, Outcome, Rule, SrvTarget
from resolver.names import NameTable
from resolver.resolve import Resolver


def query(name: str, qtype: str = "A", *, edns: int | None = None, rd: bool = True) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    q.header.rd = int(rd)
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    return DNSRecord.parse(q.pack())


def records(*texts: str) -> Lookup:
    return Lookup(Rule.R2_NAME, Outcome.RECORDS, "n", tuple(ip_address(t) for t in texts))


def reply_for(request: DNSRecord, lookup: Lookup, *, ttl: int = 5, seed: int = 1) -> DNSRecord:
    return DNSRecord.parse(local_reply(request, lookup, ttl=ttl, rng=random.Random(seed)).pack())


def test_r2_owner_name_keeps_the_question_case() -> None:
    reply = reply_for(query("WeB.ApP"), records("10.0.0.3"))
    assert str(reply.q.qname) == "WeB.ApP."
    assert [str(rr.rname) for rr in reply.rr] == ["WeB.ApP."]


def test_r4_shared_names_come_in_a_new_order_each_query() -> None:
    lookup = records(*(f"10.0.0.{i}" for i in range(2, 10)))
    rng = random.Random(7)
    orders = {
        tuple(str(rr.rdata) for rr in DNSRecord.parse(
            local_reply(query("pool"), lookup, ttl=5, rng=rng).pack()).rr)
        for _ in range(20)
    }  # fmt: skip
    assert len(orders) > 10
    assert all(sorted(o) == sorted(str(a) for a in lookup.addresses) for o in orders)


def test_r6_nodata_is_noerror_with_no_records_and_nxdomain_is_nxdomain() -> None:
    nodata = reply_for(query("b", "AAAA"), Lookup(Rule.R6_NODATA, Outcome.NODATA))
    assert (nodata.header.rcode, nodata.rr) == (RCODE.NOERROR, [])
    nx = reply_for(query("x.example"), Lookup(Rule.R12_INTERNAL, Outcome.NXDOMAIN))
    assert nx.header.rcode == RCODE.NXDOMAIN


def test_r9_local_ttl() -> None:
    assert [rr.ttl for rr in reply_for(query("b"), records("10.0.0.3"), ttl=5).rr] == [5]
    assert [rr.ttl for rr in reply_for(query("b"), records("10.0.0.3"), ttl=30).rr] == [30]


@pytest.mark.parametrize("rd", [True, False])
def test_r10_flags(rd: bool) -> None:
    request = query("b", rd=rd)
    reply = reply_for(request, records("10.0.0.3"))
    h = reply.header
    assert (h.qr, h.ra, h.aa, h.rd, h.id) == (1, 1, 0, int(rd), request.header.id)
    assert reply.q == request.q


def test_r10_edns_echoed_only_when_asked() -> None:
    with_edns = reply_for(query("b", edns=4096), records("10.0.0.3"))
    assert [rr.rtype for rr in with_edns.ar] == [QTYPE.OPT]
    without = reply_for(query("b"), records("10.0.0.3"))
    assert without.ar == []


def test_r5_srv_answer_and_additional_addresses() -> None:
    lookup = Lookup(
        Rule.R5_SERVICE, Outcome.RECORDS, "n",
        srv=(SrvTarget(80, "web.1.t1", (ip_address("10.0.0.11"),)),),
    )  # fmt: skip
    reply = reply_for(query("_http._tcp.web", "SRV"), lookup)
    assert [(rr.rdata.port, str(rr.rdata.target)) for rr in reply.rr] == [(80, "web.1.t1.")]
    assert [(str(rr.rname), str(rr.rdata)) for rr in reply.ar] == [("web.1.t1.", "10.0.0.11")]


def test_r8_ptr_answer() -> None:
    lookup = Lookup(Rule.R8_PTR, Outcome.RECORDS, "n", ptr=("web.n.",))
    reply = reply_for(query("3.0.0.10.in-addr.arpa", "PTR"), lookup)
    assert [str(rr.rdata) for rr in reply.rr] == ["web.n."]


def test_r15_udp_reply_over_512_is_truncated_without_edns() -> None:
    many = records(*(f"10.0.{i // 250}.{i % 250 + 1}" for i in range(60)))
    request = query("pool")
    full = local_reply(request, many, ttl=5, rng=random.Random(1)).pack()
    assert len(full) > 512
    cut = DNSRecord.parse(fit_udp(full, request))
    assert (cut.header.tc, cut.rr, cut.header.id) == (1, [], request.header.id)
    assert len(fit_udp(full, request)) <= 512


def test_r15_edns_size_is_honoured() -> None:
    many = records(*(f"10.0.{i // 250}.{i % 250 + 1}" for i in range(60)))
    request = query("pool", edns=1232)
    full = local_reply(request, many, ttl=5, rng=random.Random(1)).pack()
    assert 512 < len(full) <= 1232
    assert fit_udp(full, request) == full


def header(qid: int = 0x1234, flags: int = 0x0100, qd: int = 1) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, 0, 0, 0)


QUESTION = b"\x03web\x00\x00\x01\x00\x01"


@pytest.mark.parametrize(
    ("name", "packet", "rcode"),
    [
        ("short", b"\x12\x34\x01", None),
        ("empty", b"", None),
        ("qr_set", header(flags=0x8100) + QUESTION, None),
        ("opcode_notify", header(flags=0x2100) + QUESTION, RCODE.NOTIMP),
        ("opcode_update", header(flags=0x2900) + QUESTION, RCODE.NOTIMP),
        ("qdcount_0", header(qd=0), RCODE.FORMERR),
        ("qdcount_2", header(qd=2) + QUESTION + QUESTION, RCODE.FORMERR),
        ("label_too_long", header() + b"\x50web\x00\x00\x01\x00\x01", RCODE.FORMERR),
        ("truncated_question", header() + b"\x03we", RCODE.FORMERR),
        ("compression_loop", header() + b"\xc0\x0c\x00\x01\x00\x01", RCODE.FORMERR),
        ("pointer_past_end", header() + b"\xc0\xff\x00\x01\x00\x01", RCODE.FORMERR),
    ],
)
def test_r16_bad_input(name: str, packet: bytes, rcode: int | None) -> None:
    got = parse_query(packet)
    if rcode is None:
        assert got is None, name
        return
    assert isinstance(got, bytes), name
    reply = DNSRecord.parse(got)
    assert (reply.header.rcode, reply.header.id, reply.header.qr) == (rcode, 0x1234, 1)


def test_r16_good_query_parses() -> None:
    parsed = parse_query(header() + QUESTION)
    assert isinstance(parsed, DNSRecord)
    assert str(parsed.q.qname) == "web."


def test_r3_a_dot_inside_one_label_is_not_a_qualified_name() -> None:
    """`\\x0aweb.appnet` is one label: it must not answer as `web` on `appnet` (R3)."""
    table = NameTable()
    table.apply(NetworkCreated(Network(id="n", name="appnet", driver=Driver.BRIDGE)))
    for sid, name, addr in (("a" * 64, "client", "10.0.0.2"), ("b" * 64, "web", "10.0.0.3")):
        table.apply(SandboxCreated(Sandbox(id=sid, name=name)))
        endpoint = Endpoint(
            id=name, network_id="n", sandbox_id=sid, name=name, ipv4=ip_address(addr)
        )
        table.apply(EndpointAttached(endpoint))
    resolver = Resolver(table, Forwarder(default_servers=lambda: []))
    packet = header() + b"\x0aweb.appnet\x00\x00\x01\x00\x01"
    request = parse_query(packet)
    assert isinstance(request, DNSRecord)
    decision = asyncio.run(resolver.decide("a" * 64, request, packet, tcp=False))
    assert decision.lookup.outcome is Outcome.FORWARD
    normal = DNSRecord.question("web.appnet").pack()
    plain = asyncio.run(resolver.decide("a" * 64, DNSRecord.parse(normal), normal, tcp=False))
    assert plain.lookup.outcome is Outcome.RECORDS
