"""All the hand-written DNS wire code: constants, name walking, question and rcode readers, and
a reply's records read straight from its bytes, never decoded into objects.

The answer builder (resolver/answer.py), the hot cache (resolver/hot.py), the forwarder and the
answer cache (resolver/forward/) read messages through these functions; dnslib builds what is
built and parses what the slow path parses, this module reads what must be read fast.

`parse_question` reads the header and the question of the common query (one question, class
IN, plain labels, at most one well-formed EDNS OPT) and returns None for anything else, which
then takes the slow path (resolver/resolve.py: dnslib, the rules, the forwarder).

`read_records` serves both caches of finished answers: they keep a reply as bytes and need to
know where each TTL sits (to count it down in place), what the reply may be cached for (RFC
2308), and which names point into the question (those take each client's spelling of it).
Names are skipped, never followed, so a reply whose pointers loop or chain costs no more than
its length; anything that does not add up (a name or record running past the end, records
ending before the reply does, a reserved label type) raises ValueError, and the reply is then
simply not cached.

Pure functions over bytes: no sockets, no clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER_SIZE = 12
MAX_NAME = 255  # RFC 1035 2.3.4: octets in a name on the wire
MAX_LABEL = 63  # RFC 1035 2.3.4: octets in a label; 0x40-0xBF are other label types
POINTER = 0xC0
QUESTION_NAME = 12  # the offset a pointer to the question's name carries

# The header's flags as one 16-bit word (bytes 2-3)...
QR = 0x8000
OPCODE_MASK = 0x7800
TC = 0x0200
RD = 0x0100
RA = 0x0080
RCODE_MASK = 0x000F
# ...and as bits of its first byte (byte 2), for a test on the bytes.
QR_BIT = 0x80
TC_BIT = 0x02
RD_BIT = 0x01

QTYPE_A = 1
QTYPE_SOA = 6
QTYPE_PTR = 12
QTYPE_AAAA = 28
QTYPE_SRV = 33
QTYPE_OPT = 41
QTYPE_ANY = 255
CLASS_IN = 1
RCODE_NXDOMAIN = 3
CACHEABLE_RCODES = frozenset({0, RCODE_NXDOMAIN})  # NOERROR, NXDOMAIN

UDP_MIN = 512  # RFC 1035: the limit without EDNS
UDP_ADVERTISED = 1232  # the EDNS buffer size we offer (DNS flag day 2020), and the most we send
DO_FLAG = 0x8000  # in the OPT record's TTL field (RFC 6891)

# What in a query beside its question shapes the reply: the bits both caches key on, so one
# read of the query serves both.
EDNS = 1  # the client sent an OPT record: the reply carries one too
DO = 2  # DNSSEC OK: the reply carries signatures
CD = 4  # checking disabled: the reply may hold data that failed validation
AD = 8  # the client understands AD: an upstream sets AD only then (RFC 6840 5.7)

_FIXED = struct.Struct("!HHIH")  # type, class, TTL, RDLENGTH after a record's owner
_COUNTS = struct.Struct("!HHH")  # ANCOUNT, NSCOUNT, ARCOUNT

# (RD bit, lowercased qname on the wire, qtype, the client's question bytes, bits, UDP limit)
Question = tuple[int, bytes, int, bytes, int, int]


def rcode_of(message: bytes) -> int:
    return message[3] & 0x0F


def parse_question(data: bytes) -> Question | None:
    """The common query's header and question, or None for anything the slow path must see.

    Taken: QR=0, opcode 0, QDCOUNT=1, ANCOUNT=NSCOUNT=0, ARCOUNT 0 or 1; labels uncompressed,
    1-63 octets without a '.' octet inside, the name at most 255 octets; class IN; when ARCOUNT
    is 1, an OPT at the root, EDNS version 0, well-formed options, ending exactly at the end.
    The UDP limit is R15's: 512 without EDNS, else the client's size within 512..1232.
    """
    end = len(data)
    # data[2]: QR, opcode, AA, TC, RD; data[4:11]: QDCOUNT=1, ANCOUNT=0, NSCOUNT=0, ARCOUNT high
    if end < 17 or data[2] & 0xF8 or data[4:11] != b"\x00\x01\x00\x00\x00\x00\x00":
        return None
    position = HEADER_SIZE
    length = data[HEADER_SIZE]
    while length:
        if length > MAX_LABEL:
            return None  # a compression pointer or an extended label type
        position += length + 1
        if position >= end:
            return None
        length = data[position]
    name_end = position + 1
    question_end = name_end + 4
    if name_end - HEADER_SIZE > MAX_NAME or question_end > end:
        return None
    if data[name_end + 2] or data[name_end + 3] != CLASS_IN:
        return None
    name = data[HEADER_SIZE:name_end]
    if b"." in name and _dot_inside_label(name):
        return None
    bits = (CD if data[3] & 0x10 else 0) | (AD if data[3] & 0x20 else 0)
    arcount = data[11]
    if arcount == 0:
        if question_end != end:
            return None
        limit = UDP_MIN
    elif arcount == 1:
        opt = question_end
        # root owner, type OPT, class = UDP size, TTL = extended rcode, version, flags; RDLENGTH
        if end < opt + 11 or data[opt] or data[opt + 1] or data[opt + 2] != QTYPE_OPT:
            return None
        if data[opt + 6]:
            return None  # EDNS version other than 0: BADVERS on the slow path
        position = opt + 11
        if position + (data[opt + 9] << 8 | data[opt + 10]) != end:
            return None
        while position < end:  # options: code, length, data
            if position + 4 > end:
                return None
            position += 4 + (data[position + 2] << 8 | data[position + 3])
        if position != end:
            return None
        size = data[opt + 3] << 8 | data[opt + 4]
        limit = UDP_MIN if size <= UDP_MIN else min(size, UDP_ADVERTISED)
        bits |= EDNS | (DO if data[opt + 7] & 0x80 else 0)
    else:
        return None
    return (
        data[2] & 1,
        name.lower(),
        data[name_end] << 8 | data[name_end + 1],
        data[HEADER_SIZE:question_end],
        bits,
        limit,
    )


def _dot_inside_label(name: bytes) -> bool:
    """Whether an uncompressed wire name has a '.' octet inside a label (not a length octet)."""
    position = 0
    while length := name[position]:
        if b"." in name[position + 1 : position + 1 + length]:
            return True
        position += length + 1
    return False


def question_of(message: bytes) -> bytes | None:
    """The first question of a DNS message as comparable bytes (name lowercased), or None.

    Only the name is lowercased: the type and class bytes may fall in the ASCII letter range.
    A compression pointer cannot point backwards from the first name, so it makes the message
    unusable here.
    """
    if len(message) < HEADER_SIZE or message[4:6] == b"\x00\x00":
        return None
    pointers: list[int] = []
    try:
        end = skip_name(message, HEADER_SIZE, pointers)
    except ValueError:
        return None
    if pointers or end + 4 > len(message):
        return None
    return message[HEADER_SIZE:end].lower() + message[end : end + 4]


# Octets a name may hold for `start` to read it as text; others (escapes, spaces, non-ASCII)
# take the slow path, where dnslib spells them as the name table expects.
_PLAIN = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"


def text_name(question: bytes) -> str | None:
    """The question's name (uncompressed wire labels) as dnslib's str() gives it, trailing dot
    included; None when a label holds an octet outside _PLAIN."""
    labels = []
    position = 0
    while length := question[position]:
        label = question[position + 1 : position + 1 + length]
        if label.translate(None, _PLAIN):
            return None
        labels.append(label.decode())
        position += length + 1
    return ".".join(labels) + "."


# Types whose RDATA holds names that may be compressed (RFC 3597 3: the well-known ones):
# (octets before the first name, names).
RDATA_NAMES: dict[int, tuple[int, int]] = {
    2: (0, 1),  # NS
    5: (0, 1),  # CNAME
    12: (0, 1),  # PTR
    15: (2, 1),  # MX: preference, exchange
    6: (0, 2),  # SOA: mname, rname (then five numbers)
}


def skip_name(reply: bytes, position: int, pointers: list[int] | None = None) -> int:
    """The offset after the wire name at `position`; the pointer it ends in, if any, goes to
    `pointers` (not followed)."""
    while True:
        if position >= len(reply):
            raise ValueError(f"name runs past the end of the message at offset {position}")
        length = reply[position]
        if length >= POINTER:
            if pointers is not None:
                if position + 2 > len(reply):
                    raise ValueError(f"pointer cut short at offset {position}")
                pointers.append((length & 0x3F) << 8 | reply[position + 1])
            return position + 2
        if length > MAX_LABEL:
            raise ValueError(f"label type {length:#x} at offset {position}")
        position += length + 1
        if length == 0:
            return position


def question_end(reply: bytes) -> int:
    """The offset after the (single) question; ValueError when there is none."""
    if len(reply) < HEADER_SIZE or reply[4:6] != b"\x00\x01":
        raise ValueError("not exactly one question")
    end = skip_name(reply, HEADER_SIZE) + 4
    if end > len(reply):
        raise ValueError("question cut short")
    return end


@dataclass(frozen=True, slots=True)
class Records:
    ttl_offsets: tuple[int, ...]  # where each non-OPT record's TTL sits, from the reply's start
    ttls: tuple[int, ...]
    question_pointers: bool  # a name points inside the question other than at its start
    owner_copies: tuple[int, ...]  # where an uncompressed owner spelled like the question starts
    negative: bool  # NXDOMAIN, or no answer record of the asked type (RFC 2308 NODATA)
    soa_minimum: int | None  # the first authority SOA's min(TTL, MINIMUM), if there is one


def read_records(reply: bytes, end_of_question: int) -> Records:
    """Every record after the question of `reply`; ValueError when they do not add up."""
    ancount, nscount, arcount = _COUNTS.unpack_from(reply, 6)
    qtype = reply[end_of_question - 4] << 8 | reply[end_of_question - 3]
    qname = reply[HEADER_SIZE : end_of_question - 4].lower()
    position = end_of_question
    pointers: list[int] = []
    offsets: list[int] = []
    ttls: list[int] = []
    owners: list[int] = []
    answered = False
    soa_minimum: int | None = None
    for index in range(ancount + nscount + arcount):
        owner = position
        position = skip_name(reply, position, pointers)
        if position + _FIXED.size > len(reply):
            raise ValueError(f"record {index} cut short at offset {position}")
        rtype, _rclass, ttl, rdlength = _FIXED.unpack_from(reply, position)
        if rtype != QTYPE_OPT:
            offsets.append(position + 4)
            ttls.append(ttl)
        if index < ancount:
            answered = answered or rtype == qtype or qtype == QTYPE_ANY
            if reply[owner] < POINTER and reply[owner:position].lower() == qname:
                owners.append(owner)
        position += _FIXED.size
        if position + rdlength > len(reply):
            raise ValueError(f"record {index}: RDATA runs past the end, at offset {position}")
        if rtype in RDATA_NAMES:
            skip, names = RDATA_NAMES[rtype]
            name_at = position + skip
            for _ in range(names):
                name_at = skip_name(reply, name_at, pointers)
            if rtype == QTYPE_SOA and ancount <= index < ancount + nscount and soa_minimum is None:
                if name_at + 20 != position + rdlength:
                    raise ValueError(f"SOA at offset {owner} has no room for its five numbers")
                soa_minimum = min(ttl, int.from_bytes(reply[name_at + 16 : name_at + 20], "big"))
        position += rdlength
    if position != len(reply):
        raise ValueError(f"records end at {position}, the reply at {len(reply)}")
    inside = any(QUESTION_NAME < p < end_of_question - 4 for p in pointers)
    negative = (reply[3] & 0x0F) == RCODE_NXDOMAIN or not answered
    return Records(tuple(offsets), tuple(ttls), inside, tuple(owners), negative, soa_minimum)


def cache_ttl(reply: bytes, records: Records) -> int:
    """How long `reply` may be cached, in seconds; 0 when it must not be (R13).

    Positive answers live for their smallest TTL; NXDOMAIN and NODATA for min(SOA TTL, SOA
    MINIMUM) when the authority section has an SOA, else not at all (RFC 2308). Failures,
    truncated replies and TTL 0 are never cached."""
    if reply[2] & TC_BIT or rcode_of(reply) not in CACHEABLE_RCODES:
        return 0
    ttls = list(records.ttls)
    if records.negative:
        if records.soa_minimum is None:
            return 0
        ttls.append(records.soa_minimum)
    return max(0, min(ttls, default=0))
