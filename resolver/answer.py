"""Answers built from a name-table Lookup, and the rcode rules for bad input (R2-R10, R15, R16).

Pure functions over dnslib records and bytes: no sockets, no clock. The randomness of R4's
shuffle comes from the caller so tests can pin it.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

from dnslib import (
    AAAA,
    EDNS0,
    PTR,
    QTYPE,
    RCODE,
    RR,
    SRV,
    A,
    DNSBuffer,
    DNSError,
    DNSHeader,
    DNSQuestion,
    DNSRecord,
)

from resolver.lookup import Lookup, Outcome
from resolver.wire import (
    MAX_LABEL,
    MAX_NAME,
    OPCODE_MASK,
    QR,
    RA,
    RCODE_MASK,
    RD,
    TC,
    UDP_ADVERTISED,
    UDP_MIN,
    skip_name,
)

HEADER = struct.Struct("!HHHHHH")
RECORD_FIXED = struct.Struct("!HHIH")  # type, class, TTL, RDLENGTH: after a record's owner
EDNS_VERSION = 0


def rcode_only_reply(query: bytes, rcode: int) -> bytes:
    """A header-only reply with the query's id, opcode and RD: for queries we cannot parse (R16)."""
    qid, flags = struct.unpack_from("!HH", query)
    flags = QR | (flags & (OPCODE_MASK | RD)) | RA | rcode
    return HEADER.pack(qid, flags, 0, 0, 0, 0)


def parse_query(data: bytes) -> DNSRecord | bytes | None:
    """R16. A parsed query; or the reply bytes for a bad one; or None when it is to be dropped.

    Only the header, the question and an OPT record are decoded: the records of the answer,
    authority and additional sections are walked over, never decoded (see `_query_records`).
    """
    if len(data) < HEADER.size:
        return None
    _, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & QR:
        return None  # a response: answering it would let two servers loop
    if flags & OPCODE_MASK:
        return rcode_only_reply(data, RCODE.NOTIMP)
    if qdcount != 1:
        return rcode_only_reply(data, RCODE.FORMERR)
    buffer = DNSBuffer(data)
    try:
        header = DNSHeader.parse(buffer)
        question = DNSQuestion.parse(buffer)
        opt = _query_records(buffer, ancount + nscount, arcount)
    # RecursionError: dnslib follows a chain of pointers recursively, one frame per pointer.
    except (DNSError, ValueError, IndexError, UnicodeDecodeError, struct.error, RecursionError):
        return rcode_only_reply(data, RCODE.FORMERR)
    labels = question.qname.label
    if any(len(label) > MAX_LABEL for label in labels):
        return rcode_only_reply(data, RCODE.FORMERR)  # 0x40-0xBF: reserved label types
    if sum(len(label) + 1 for label in labels) + 1 > MAX_NAME:
        return rcode_only_reply(data, RCODE.FORMERR)  # parses, but no reply could carry it
    return DNSRecord(header, [question], ar=[opt] if opt is not None else [])


def _query_records(buffer: DNSBuffer, skipped: int, additional: int) -> RR | None:
    """Walk the records after the question; the OPT record of the additional section, if any.

    The other records are checked for shape only (names end, RDATA fits) and never decoded:
    decoding follows every compression pointer, so a message of records whose owners point at
    each other in a chain costs time quadratic in its size (with dnslib's parse a 1.4 KB
    datagram took 21 ms, a 12.6 KB TCP message 1.2 s, and longer chains raised RecursionError,
    tests/fuzz/corpus/pointer_chain_*). A query's answer and authority records mean nothing to
    a resolver anyway. More than one OPT, or one not owned by the root, is
    malformed (RFC 6891 6.1.1).
    """
    data = buffer.data
    opt: RR | None = None
    for index in range(skipped + additional):
        start = buffer.offset
        position = skip_name(data, start)
        if position + RECORD_FIXED.size > len(data):
            raise DNSError(f"record {index} cut short at offset {position}")
        rtype, _rclass, _ttl, rdlength = RECORD_FIXED.unpack_from(data, position)
        end = position + RECORD_FIXED.size + rdlength
        if end > len(data):
            raise DNSError(f"record {index}: RDATA runs past the end, at offset {position}")
        if index >= skipped and rtype == QTYPE.OPT:
            if opt is not None or position != start + 1:
                raise DNSError("more than one OPT record, or one not owned by the root")
            _check_options(data, position + RECORD_FIXED.size, end)
            opt = RR.parse(buffer)
            if buffer.offset != end:
                raise DNSError(f"OPT record ends at {buffer.offset}, its RDATA at {end}")
        buffer.offset = end
    return opt


def _check_options(data: bytes, position: int, end: int) -> None:
    """EDNS options (code, length, data) filling the OPT RDATA exactly; dnslib skips a last
    option shorter than its 4-byte header without a word."""
    while position < end:
        if position + 4 > end:
            raise DNSError(f"EDNS option header cut short at offset {position}")
        position += 4 + (data[position + 2] << 8 | data[position + 3])
    if position != end:
        raise DNSError(f"EDNS option runs past the OPT record's RDATA, to offset {position}")


def request_edns(request: DNSRecord) -> EDNS0 | None:
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return rr
    return None


def udp_limit(request: DNSRecord) -> int:
    """R15: the largest UDP reply the client takes: 512 without EDNS, else its buffer size."""
    opt = request_edns(request)
    if opt is None:
        return UDP_MIN
    return max(UDP_MIN, min(opt.rclass, UDP_ADVERTISED))


def base_reply(request: DNSRecord, rcode: int = RCODE.NOERROR) -> DNSRecord:
    """R10: QR and RA set, RD and the question copied, AA clear, EDNS echoed when asked."""
    reply = DNSRecord(
        header=DNSHeader(id=request.header.id, qr=1, aa=0, ra=1, rd=request.header.rd, rcode=rcode),
        q=request.q,
    )
    if request_edns(request) is not None:
        reply.add_ar(EDNS0(udp_len=UDP_ADVERTISED))
    return reply


def bad_edns_version(request: DNSRecord) -> DNSRecord | None:
    """RFC 6891: an EDNS version we do not speak gets BADVERS (extended rcode 16)."""
    opt = request_edns(request)
    if opt is None or (opt.ttl >> 16) & 0xFF == EDNS_VERSION:
        return None
    reply = base_reply(request)
    reply.ar = [EDNS0(udp_len=UDP_ADVERTISED, ext_rcode=1)]
    return reply


def _address_rr(owner: object, address: object, ttl: int) -> RR:
    text = str(address)
    if ":" in text:
        return RR(owner, QTYPE.AAAA, ttl=ttl, rdata=AAAA(text))
    return RR(owner, QTYPE.A, ttl=ttl, rdata=A(text))


def shuffled(items: Sequence, rng: random.Random) -> list:
    """R4: a new random order on every query when there is more than one."""
    if len(items) < 2:
        return list(items)
    return rng.sample(list(items), len(items))


def local_reply(request: DNSRecord, lookup: Lookup, *, ttl: int, rng: random.Random) -> DNSRecord:
    """The reply for a query the name table answers (R2-R10, R12, R12b)."""
    if lookup.outcome is Outcome.NXDOMAIN:
        return base_reply(request, RCODE.NXDOMAIN)
    reply = base_reply(request)
    if lookup.outcome is not Outcome.RECORDS:
        return reply  # NODATA (R6, R7, R12b)
    owner = request.q.qname  # keeps the client's case (R2)
    for address in shuffled(lookup.addresses, rng):
        reply.add_answer(_address_rr(owner, address, ttl))
    for target in lookup.ptr:
        reply.add_answer(RR(owner, QTYPE.PTR, ttl=ttl, rdata=PTR(target)))
    for srv in shuffled(lookup.srv, rng):
        reply.add_answer(RR(owner, QTYPE.SRV, ttl=ttl, rdata=SRV(0, 0, srv.port, srv.target + ".")))
        for address in srv.addresses:
            reply.add_ar(_address_rr(srv.target + ".", address, ttl))
    return reply


# Our EDNS echo (R10): the root, type OPT, our buffer size as its class, TTL 0, no RDATA.
OPT_ECHO = b"\x00\x00\x29" + UDP_ADVERTISED.to_bytes(2, "big") + bytes(6)


def reply_of_query(
    query: bytes, question: bytes, edns: bool, rcode: int, *, tc: bool = False
) -> bytes:
    """base_reply(request, rcode).pack() from the bytes, for a query whose question bytes (as
    the client wrote them, uncompressed) are QUESTION: QR, RA and the client's RD, then the
    question, our OPT when the client sent one; TC when asked (R15)."""
    flags = QR | RA | (query[2] << 8 & RD) | rcode | (TC if tc else 0)
    return (
        query[:2]
        + HEADER.pack(0, flags, 1, 0, 0, int(edns))[2:]
        + question
        + (OPT_ECHO if edns else b"")
    )


def fit_udp_bytes(reply: bytes, query: bytes, question: bytes, edns: bool, limit: int) -> bytes:
    """fit_udp for a query read from the bytes (resolver/wire.py's parse_question)."""
    if len(reply) <= limit:
        return reply
    return reply_of_query(query, question, edns, reply[3] & RCODE_MASK, tc=True)


def fit_udp(reply: bytes, request: DNSRecord) -> bytes:
    """R15: a UDP reply over the client's limit goes back empty with TC set; TCP gets it whole."""
    if len(reply) <= udp_limit(request):
        return reply
    truncated = base_reply(request)
    truncated.header.rcode = HEADER.unpack_from(reply)[1] & RCODE_MASK
    truncated.header.tc = 1
    return truncated.pack()
