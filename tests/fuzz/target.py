"""The one function under fuzz: bytes in, the packet path's answers checked (R10, R15, R16).

`check_input(data)` takes the first byte as control bits and the rest as what a client sent:

- bit 0: TCP; the rest is then a stream of 2-byte length-prefixed messages (RFC 1035 4.2.2),
  at most MAX_FRAMES of them, ending at a zero length (the listener closes the connection
  there) or at an unfinished frame; else UDP, and the rest is one datagram;
- bits 1-2: which sandbox asks (ASKERS: two networks, internal only, ndots, own upstreams);
- bit 3: the query log samples every query (exercises the logging branches).

For each message, with one Resolver built once per process (realistic name table, hot cache,
answer cache): the hot path, the slow path, the slow path again (a forwarded answer now comes
from the answer cache and goes into the hot cache) and the hot path again. Checks:

- no exception escapes either path;
- the slow reply is None exactly when R16 drops the message (shorter than a header, QR set);
  NOTIMP for an opcode other than QUERY; FORMERR for QDCOUNT other than 1, and, judged by this
  module's own wire walker (not dnslib), exactly for messages whose question or records are
  malformed; otherwise NOERROR, NXDOMAIN or SERVFAIL with the question echoed;
- every reply parses with dnslib, has QR and RA set, the query's id and RD, AA clear, an OPT
  exactly when the query had one (R10); a UDP reply fits the client's limit (R15) and a
  truncated one holds no records; a TCP reply fits a frame;
- the hot path answers only what the slow path answers, and the same: the same header and
  question, the same records per section. What may differ, normalised away: the order of
  records within a section (R4: each answer is a new shuffle, the hot cache keeps a few) and
  name compression (the hot cache keeps encoded tails, the answer cache re-encodes). TTLs do not
  differ: both caches run on a frozen clock here. The two slow replies compare the same way.

The upstream is a stub, not a socket (StubForwarder): a fuzzer runs thousands of inputs a
second and must not send packets anywhere; everything of the Forwarder but the exchange itself
(servers_for, the answer cache, the in-flight cap) is the real code.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import random
import struct
import zlib
from collections import Counter
from collections.abc import Coroutine, Iterator
from typing import Any

from dnslib import (
    AAAA,
    CLASS,
    CNAME,
    EDNS0,
    QTYPE,
    RCODE,
    RR,
    SOA,
    A,
    DNSHeader,
    DNSQuestion,
    DNSRecord,
    EDNSOption,
)

from drivers.model import (
    EndpointAttached,
    Event,
    Sandbox,
    SandboxCreated,
)
from resolver.answer import parse_query
from resolver.forward import AnswerCache, Forwarder
from resolver.names import NameTable
from resolver.resolve import Resolver
from tests.unit.topology import APP, CLIENT, LONER, NDOTS, base_events, endpoint, sandbox

log = logging.getLogger(__name__)

HEADER = struct.Struct("!HHHHHH")
RECORD_FIXED = struct.Struct("!HHIH")
QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
OPCODE_MASK = 0x7800
QTYPE_OPT = 41
MAX_LABEL, MAX_NAME = 63, 255
UDP_MIN, UDP_ADVERTISED = 512, 1232
MAX_FRAME = 0xFFFF
MAX_FRAMES = 8
FROZEN_NOW = 1_000.0  # both caches' clock: TTLs never count down, so hot and slow agree
STUB_UPSTREAM = "127.77.0.53:53"  # never contacted: StubForwarder answers in process

# -- the name table ------------------------------------------------------------------------

# The shared topology of the hot path's property test (tests/unit/topology.py: the same names,
# so the fuzz target and that test exercise one table), plus a sandbox with upstreams of its own.
OWNUP = sandbox("ownup", dns_servers=("127.77.1.53",))  # its own upstreams (R11: from the sandbox)
ASKERS = (CLIENT, LONER, NDOTS, OWNUP)


def table_events() -> list[Event]:
    """The hot-path property test's table (networks, containers with aliases and v4+v6, a
    shared alias, a VIP and a DNSRR service), and OWNUP."""
    return [
        *base_events(),
        SandboxCreated(OWNUP),
        EndpointAttached(endpoint(OWNUP, APP, "10.1.0.6")),
    ]


# -- the stub upstream ---------------------------------------------------------------------


class UpstreamKind(enum.IntEnum):
    """What the stub upstream answers for a name (by a hash of it, so always the same)."""

    ADDRESSES = 0
    MORE_ADDRESSES = 1
    CNAME = 2
    NXDOMAIN = 3
    NODATA = 4
    SERVFAIL = 5
    OVERSIZED = 6  # over every UDP limit: truncated for UDP (R15), whole over TCP
    TTL_ZERO = 7  # not cached (R13)


def upstream_kind(request: DNSRecord) -> UpstreamKind:
    return UpstreamKind(zlib.crc32(str(request.q.qname).lower().encode()) % len(UpstreamKind))


def upstream_reply(request: DNSRecord) -> DNSRecord | None:
    """The stub upstream's answer, a function of the question (case aside) and EDNS only, as
    the caches assume of a real one; None for SERVFAIL (every upstream failed)."""
    kind = upstream_kind(request)
    if kind is UpstreamKind.SERVFAIL:
        return None
    # A fresh header: dnslib's request.reply() copies every query flag (Z, AD, TC, rcode).
    header = DNSHeader(id=request.header.id, qr=1, ra=1, rd=request.header.rd)
    reply = DNSRecord(header, q=request.q)
    reply.ar = []
    owner, qtype = request.q.qname, request.q.qtype
    soa = RR("example.", QTYPE.SOA, ttl=60, rdata=SOA("ns.example.", "host.example.",
                                                      (1, 7200, 900, 86400, 30)))  # fmt: skip
    count = {UpstreamKind.MORE_ADDRESSES: 3, UpstreamKind.OVERSIZED: 90}.get(kind, 1)
    ttl = 0 if kind is UpstreamKind.TTL_ZERO else 300
    if kind is UpstreamKind.NXDOMAIN:
        reply.header.rcode = RCODE.NXDOMAIN
        reply.add_auth(soa)
    elif kind is UpstreamKind.CNAME:
        reply.add_answer(RR(owner, QTYPE.CNAME, ttl=ttl, rdata=CNAME("target.example.")))
        if qtype == QTYPE.A:
            reply.add_answer(RR("target.example.", QTYPE.A, ttl=ttl, rdata=A("198.51.100.7")))
    elif kind is UpstreamKind.NODATA or qtype not in (QTYPE.A, QTYPE.AAAA, QTYPE.ANY):
        reply.add_auth(soa)
    else:
        for index in range(count):
            if qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(owner, QTYPE.A, ttl=ttl, rdata=A(f"198.51.100.{index + 1}")))
            if qtype in (QTYPE.AAAA, QTYPE.ANY):
                address = f"2001:db8::{index + 1:x}"
                reply.add_answer(RR(owner, QTYPE.AAAA, ttl=ttl, rdata=AAAA(address)))
    opt = next((rr for rr in request.ar if rr.rtype == QTYPE_OPT), None)
    if opt is not None:
        reply.add_ar(EDNS0(udp_len=UDP_ADVERTISED, flags="do" if opt.ttl & 0x8000 else ""))
    return reply


class StubForwarder(Forwarder):
    """The real Forwarder (upstream choice, answer cache, in-flight cap) whose exchange with
    the upstreams is answered in process by `upstream_reply`: no socket, no await that
    suspends, so one query runs to the end in one step (see `run_sync`)."""

    def send(self, flight: Any, index: int, server: Any, timeout: float) -> None:
        request = parse_query(flight.query.data)  # as the slow path read it: it forwards it
        assert isinstance(request, DNSRecord)
        reply = upstream_reply(request)
        if reply is None:
            reply = DNSRecord(DNSHeader(id=request.header.id, qr=1, rcode=RCODE.SERVFAIL))
            reply.questions = request.questions
        # As the real exchange: the upstream's reply, then the forwarder's own rules (R11).
        flight.replied(index, bytes(reply.pack()), retried=flight.tcp)


def frozen_clock() -> float:
    return FROZEN_NOW


def build_resolver() -> Resolver:
    table = NameTable()
    table.apply_all(table_events())
    forwarder = StubForwarder(
        default_servers=lambda: (STUB_UPSTREAM,), cache=AnswerCache(256, clock=frozen_clock)
    )
    # Small caches, so that fuzzing also runs their evictions.
    resolver = Resolver(table, forwarder, rng=random.Random(7), hot_entries=512)
    assert resolver.hot is not None
    resolver.hot.clock = frozen_clock
    return resolver


RESOLVER = build_resolver()


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (no loop needed: the stub upstream answers at once)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the query suspended: something awaited real I/O under the fuzzer")


# -- the oracle: an independent wire walker ---------------------------------------------------


class Verdict(enum.Enum):
    DROP = "drop"
    NOTIMP = "notimp"
    FORMERR = "formerr"
    ANSWER = "an answer (NOERROR, NXDOMAIN, SERVFAIL)"
    EITHER = "FORMERR or an answer"  # a label that is not UTF-8: dnslib refuses it, RFC allows


@dataclasses.dataclass(frozen=True, slots=True)
class Walked:
    verdict: Verdict
    labels: tuple[bytes, ...] = ()
    qtype: int = 0
    qclass: int = 0
    opt_size: int | None = None  # the OPT record's class: the client's UDP size
    why: str = ""


class Malformed(Exception):
    pass


def _name(data: bytes, position: int, follow: bool) -> tuple[list[bytes], int]:
    """The labels of the name at `position` (pointers followed when `follow`, backwards only:
    RFC 1035 4.1.4's "prior occurrence") and the offset after it."""
    labels: list[bytes] = []
    end = -1
    octets = 1
    seen: set[int] = set()
    while True:
        if position >= len(data):
            raise Malformed(f"name past the end at {position}")
        length = data[position]
        if length >= 0xC0:
            if position + 1 >= len(data):
                raise Malformed("pointer cut in half")
            if end < 0:
                end = position + 2
            if not follow:
                return labels, end
            target = (length & 0x3F) << 8 | data[position + 1]
            if target >= position or target in seen:
                raise Malformed(f"pointer from {position} to {target}: forward or a loop")
            seen.add(target)
            position = target
            continue
        if length > MAX_LABEL:
            raise Malformed(f"label type {length:#x}")
        if length == 0:
            return labels, end if end >= 0 else position + 1
        if position + 1 + length > len(data):
            raise Malformed("label past the end")
        labels.append(data[position + 1 : position + 1 + length])
        octets += length + 1
        if octets > MAX_NAME:
            raise Malformed("name over 255 octets")
        position += length + 1


def walk(data: bytes) -> Walked:
    """What R16 says this message gets, worked out without dnslib."""
    if len(data) < HEADER.size:
        return Walked(Verdict.DROP, why="shorter than a header")
    _, flags, qd, an, ns, ar = HEADER.unpack_from(data)
    if flags & QR:
        return Walked(Verdict.DROP, why="a response")
    if flags & OPCODE_MASK:
        return Walked(Verdict.NOTIMP)
    if qd != 1:
        return Walked(Verdict.FORMERR, why=f"QDCOUNT {qd}")
    try:
        labels, position = _name(data, HEADER.size, follow=True)
        if position + 4 > len(data):
            raise Malformed("question without type and class")
        qtype, qclass = struct.unpack_from("!HH", data, position)
        position += 4
        opt_size: int | None = None
        for index in range(an + ns + ar):
            start = position
            _, position = _name(data, position, follow=False)
            if position + RECORD_FIXED.size > len(data):
                raise Malformed(f"record {index} cut short")
            rtype, rclass, _ttl, rdlength = RECORD_FIXED.unpack_from(data, position)
            position += RECORD_FIXED.size
            if position + rdlength > len(data):
                raise Malformed(f"record {index}: RDATA past the end")
            if index >= an + ns and rtype == QTYPE_OPT:
                if opt_size is not None or data[start] != 0:
                    raise Malformed("a second OPT, or one not owned by the root")
                _options(data[position : position + rdlength])
                opt_size = rclass
            position += rdlength
    except Malformed as exc:
        return Walked(Verdict.FORMERR, why=str(exc))
    try:
        for label in labels:
            label.decode()
    except UnicodeDecodeError:
        return Walked(Verdict.EITHER, tuple(labels), qtype, qclass, opt_size, "label not UTF-8")
    return Walked(Verdict.ANSWER, tuple(labels), qtype, qclass, opt_size)


def _options(rdata: bytes) -> None:
    position = 0
    while position < len(rdata):
        if position + 4 > len(rdata):
            raise Malformed("EDNS option cut short")
        position += 4 + int.from_bytes(rdata[position + 2 : position + 4], "big")
    if position != len(rdata):
        raise Malformed("EDNS option past the OPT record's RDATA")


# -- checks ----------------------------------------------------------------------------------


class Mismatch(AssertionError):
    """A reply that breaks R10, R15, R16 or hot == slow (raised, so the fuzzer reports it)."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Mismatch(message)


def check_reply(data: bytes, reply: bytes, walked: Walked, tcp: bool, path: str) -> None:
    where = f"{path} reply to {data[:64].hex()}{'...' if len(data) > 64 else ''}"
    try:
        parsed = DNSRecord.parse(reply)
    except Exception as exc:
        raise Mismatch(f"{where}: does not parse: {exc!r}") from exc
    qid, flags, qd, an, ns, ar = HEADER.unpack_from(reply)
    query_id, query_flags = struct.unpack_from("!HH", data)
    rcode = flags & 0xF
    expect(qid == query_id, f"{where}: id {qid:#x}, the query's {query_id:#x}")
    expect(bool(flags & QR), f"{where}: QR clear")
    expect(bool(flags & RA), f"{where}: RA clear (R10)")
    expect(not flags & AA, f"{where}: AA set (R10)")
    expect(flags & RD == query_flags & RD, f"{where}: RD not copied (R10)")
    if walked.verdict is Verdict.NOTIMP:
        expect(rcode == RCODE.NOTIMP, f"{where}: rcode {rcode}, R16 says NOTIMP")
        return
    if walked.verdict is Verdict.FORMERR or rcode == RCODE.FORMERR:
        expect(
            walked.verdict in (Verdict.FORMERR, Verdict.EITHER),
            f"{where}: FORMERR for a well-formed query",
        )
        expect(rcode == RCODE.FORMERR, f"{where}: rcode {rcode}, R16 says FORMERR: {walked.why}")
        expect((qd, an, ns, ar) == (0, 0, 0, 0), f"{where}: FORMERR with records")
        return
    expect(rcode in (RCODE.NOERROR, RCODE.NXDOMAIN, RCODE.SERVFAIL), f"{where}: rcode {rcode}")
    expect(qd == 1 and len(parsed.questions) == 1, f"{where}: {qd} questions")
    question = parsed.q
    expect(
        (tuple(question.qname.label), question.qtype, question.qclass)
        == (walked.labels, walked.qtype, walked.qclass),
        f"{where}: question {question} is not the query's (R10)",
    )
    has_opt = any(rr.rtype == QTYPE_OPT for rr in parsed.ar)
    expect(has_opt == (walked.opt_size is not None), f"{where}: OPT echoed {has_opt} (R10)")
    if tcp:
        expect(len(reply) <= MAX_FRAME, f"{where}: {len(reply)} bytes over a TCP frame")
        return
    size = walked.opt_size
    limit = UDP_MIN if size is None else max(UDP_MIN, min(size, UDP_ADVERTISED))
    expect(len(reply) <= limit, f"{where}: {len(reply)} bytes over the UDP limit {limit} (R15)")
    if flags & TC:
        expect(an == ns == 0, f"{where}: truncated but carries records (R15)")


def normalised(reply: bytes) -> tuple[bytes, tuple, tuple[Counter, Counter, Counter]]:
    """What hot and slow replies must share: the header, the question exactly, each section's
    records as a multiset (order is R4's shuffle; compression is the encoder's choice). Answer
    owners equal to the question keep the client's spelling on both paths (R2) and compare
    exactly; other names compare case-insensitively (RFC 4343): in a forwarded answer kept
    hot, a name sharing the question's suffix (the SOA of an NXDOMAIN, say, or one equal to
    it) is a pointer into the question and takes each client's spelling, on purpose, while a
    fresh forward passes the upstream's (tests/unit/test_hot.py::
    test_r13_negative_answer_with_soa_is_served_hot)."""
    parsed = DNSRecord.parse(reply)
    question = tuple((tuple(q.qname.label), q.qtype, q.qclass) for q in parsed.questions)
    qname = parsed.q.qname if parsed.questions else None

    def owner(rr: RR, exact: bool) -> tuple[bytes, ...]:
        labels = tuple(rr.rname.label)
        return labels if exact and rr.rname == qname else tuple(label.lower() for label in labels)

    def section(records: list[RR], exact: bool = False) -> Counter:
        return Counter(
            (owner(rr, exact), rr.rtype, rr.rclass, rr.ttl, _rdata(rr).lower()) for rr in records
        )

    return (
        reply[:12],
        question,
        (section(parsed.rr, True), section(parsed.auth), section(parsed.ar)),
    )


def _rdata(rr: RR) -> bytes:
    record = DNSRecord()
    record.add_answer(RR("a.", rr.rtype, rr.rclass, 0, rr.rdata))
    return bytes(record.pack())[12:]  # names in RDATA re-encoded the same way for both


def same(first: bytes, second: bytes, what: str, data: bytes) -> None:
    expect(
        normalised(first) == normalised(second),
        f"{what} differ for {data[:64].hex()}: {first.hex()} vs {second.hex()}",
    )


def check_message(resolver: Resolver, sandbox_id: str, data: bytes, tcp: bool) -> None:
    walked = walk(data)
    before = resolver.fast(sandbox_id, data, tcp)  # an entry an earlier input left, maybe
    # The forwarding path the listener tries next for UDP: no parse, answered by callback.
    soon: list[bytes] = []
    taken = before is None and resolver.start(sandbox_id, data, tcp, soon.append)
    expect(not taken or len(soon) == 1, f"start took {data[:64].hex()} but replied {len(soon)}")
    slow = run_sync(resolver.handle(sandbox_id, data, tcp))
    again = run_sync(resolver.handle(sandbox_id, data, tcp))  # forwarded: from the answer cache
    after = resolver.fast(sandbox_id, data, tcp)
    if walked.verdict is Verdict.DROP:
        expect(slow is None and again is None, f"R16: {walked.why} not dropped: {data.hex()}")
        expect(before is None and after is None, f"hot path answered a dropped {data.hex()}")
        return
    expect(slow is not None and again is not None, f"R16: dropped {data[:64].hex()}")
    slow, again = bytes(slow), bytes(again)
    check_reply(data, slow, walked, tcp, "slow")
    check_reply(data, again, walked, tcp, "second slow")
    same(slow, again, "two slow replies", data)
    if soon:
        check_reply(data, soon[0], walked, tcp, "forwarded by callback")
        same(soon[0], slow, "callback-forwarded and slow replies", data)
    for hot, when in ((before, "before"), (after, "after")):
        if hot is not None:
            check_reply(data, hot, walked, tcp, f"hot ({when})")
            same(hot, slow, f"hot ({when}) and slow replies", data)


def messages(control: int, rest: bytes) -> Iterator[bytes]:
    if not control & 1:
        yield rest
        return
    position = 0
    for _ in range(MAX_FRAMES):
        if position + 2 > len(rest):
            return
        length = int.from_bytes(rest[position : position + 2], "big")
        if length == 0 or position + 2 + length > len(rest):
            return  # the listener closes on a zero length, waits for the rest of a frame
        yield rest[position + 2 : position + 2 + length]
        position += 2 + length


def check_input(data: bytes, resolver: Resolver = RESOLVER) -> None:
    """The fuzz target: see the module docstring for the input's layout and the checks."""
    if not data:
        return
    control = data[0]
    tcp = bool(control & 1)
    sandbox = ASKERS[(control >> 1) & 3]
    resolver.query_sample = 1.0 if control & 8 else 0.0
    for message in messages(control, data[1:]):
        check_message(resolver, sandbox.id, message, tcp)


# -- seeds -----------------------------------------------------------------------------------


def control_byte(*, tcp: bool = False, asker: Sandbox = CLIENT, sample: bool = False) -> int:
    return int(tcp) | ASKERS.index(asker) << 1 | int(sample) << 3


def query(
    name: str, qtype: str = "A", *, edns: int | None = None, qid: int = 0x1234, **opt: Any
) -> bytes:
    # Not DNSRecord.question: it draws a random id (hypothesis wants no hidden randomness).
    q = DNSRecord(DNSHeader(id=qid, rd=1), q=DNSQuestion(name, getattr(QTYPE, qtype)))
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns, **opt))
    return bytes(q.pack())


def udp(message: bytes, **kw: Any) -> bytes:
    return bytes([control_byte(**kw)]) + message


def tcp(*frames: bytes, **kw: Any) -> bytes:
    stream = b"".join(len(f).to_bytes(2, "big") + f for f in frames)
    return bytes([control_byte(tcp=True, **kw)]) + stream


def pointer_chain(records: int) -> bytes:
    """A query whose answer records' owners each point at the one before: decoding every owner
    costs time quadratic in their count (dnslib), and recursion as deep as the chain."""
    body = bytearray(b"\x03web\x00" + struct.pack("!HH", 1, 1))
    previous = HEADER.size
    for _ in range(records):
        at = HEADER.size + len(body)
        body += struct.pack("!HHHIH", 0xC000 | previous, QTYPE.TXT, 1, 5, 2) + b"\x01x"
        previous = at
    return HEADER.pack(0x4242, RD, 1, records, 0, 0) + bytes(body)


def seed_inputs() -> dict[str, bytes]:
    """Valid queries of every type we answer and forward, with and without EDNS, over UDP and
    TCP, from each sandbox; and the crafted bad inputs (the malformed cases of
    tests/proto/test_malformed.py are written to the corpus too, see test_corpus.py)."""
    seeds: dict[str, bytes] = {}
    local = {
        "web": ("A", "AAAA", "ANY", "MX", "TXT", "CAA", "SRV"), "WeB.AppNet": ("A", "AAAA"),
        "www": ("A",), "webhost": ("A",), "db.other.net": ("A",), "a.b": ("A", "AAAA"),
        "pool": ("A", "AAAA", "ANY"), "api": ("A", "AAAA"), "tasks.api": ("A",),
        "api.1.apit1": ("A",), "rr": ("A",), "_http._tcp.api": ("SRV",), "_dns._udp.rr": ("SRV",),
        "2.0.1.10.in-addr.arpa": ("PTR",), "100.0.1.10.in-addr.arpa": ("PTR",),
        "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa": ("PTR",),
    }  # fmt: skip
    for name, types in local.items():
        for qtype in types:
            seeds[f"udp_{name}_{qtype}"] = udp(query(name, qtype))
    forwarded = ("example.org", "cname.example", "big.example", "Mixed.Case.Example", "x.y.z.w")
    for index, name in enumerate(forwarded):
        for qtype in ("A", "AAAA", "MX", "NS", "SOA", "HTTPS"):
            seeds[f"udp_fwd_{name}_{qtype}"] = udp(query(name, qtype, qid=index))
    seeds["udp_fwd_unknown_ptr"] = udp(query("1.2.0.192.in-addr.arpa", "PTR"))
    for size in (512, 1232, 4096):
        seeds[f"udp_edns_{size}_web"] = udp(query("web", "A", edns=size))
        seeds[f"udp_edns_{size}_big"] = udp(query("big.example", "A", edns=size))
    seeds["udp_edns_do"] = udp(query("example.org", "A", edns=1232, flags="do"))
    seeds["udp_edns_version_1"] = udp(query("web", "A", edns=1232, version=1))
    seeds["udp_edns_cookie"] = udp(
        query("web", "A", edns=1232, opts=[_option(10, b"\x01" * 8)])
    )  # fmt: skip
    seeds["udp_edns_ecs"] = udp(
        query("example.org", "A", edns=1232, opts=[_option(8, b"\x00\x01\x18\x00\xc0\x00\x02")])
    )  # fmt: skip
    seeds["udp_chaos_version_bind"] = udp(_chaos())
    for asker in (LONER, NDOTS, OWNUP):
        for name in ("web", "example.org", "bare"):
            seeds[f"udp_{asker.name}_{name}"] = udp(query(name), asker=asker)
    seeds["udp_sampled_web"] = udp(query("web"), sample=True)
    seeds["tcp_web"] = tcp(query("web"))
    seeds["tcp_twice_same_name"] = tcp(query("web"), query("WEB", qid=7))
    seeds["tcp_big_forwarded"] = tcp(query("big.example"), query("big.example", edns=1232))
    seeds["tcp_zero_length_ends"] = tcp(query("web"), b"", query("db"))
    seeds["tcp_unfinished_frame"] = tcp(query("web"))[:-3]
    seeds["udp_label_64_octets"] = udp(
        HEADER.pack(0x1401, RD, 1, 0, 0, 0) + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01"
    )
    seeds["udp_two_opt_records"] = udp(
        query("web", edns=1232)[:11] + b"\x02" + query("web", edns=1232)[12:] + bytes(
            [0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 0]
        )
    )  # fmt: skip
    seeds["udp_pointer_chain_100"] = udp(pointer_chain(100))
    seeds["tcp_pointer_chain_1200"] = tcp(pointer_chain(1200))
    return seeds


def _option(code: int, data: bytes) -> EDNSOption:
    return EDNSOption(code, data)


def _chaos() -> bytes:
    q = DNSRecord(DNSHeader(id=0x0C4A, rd=1), q=DNSQuestion("version.bind", QTYPE.TXT, CLASS.CH))
    return bytes(q.pack())
