"""A DNS reply's records read straight from its bytes, never decoded into objects.

Both caches of finished answers use it (the hot cache, resolver/wire.py, and the answer cache,
resolver/forward/cache.py): they keep a reply as bytes and need to know where each TTL sits (to
count it down in place), what the reply may be cached for (RFC 2308), and which names point
into the question (those take each client's spelling of it). Names are skipped, never followed,
so a reply whose pointers loop or chain costs no more than its length; anything that does not
add up (a name or record running past the end, records ending before the reply does, a reserved
label type) raises ValueError, and the reply is then simply not cached.

Pure functions over bytes: no sockets, no clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER_SIZE = 12
MAX_LABEL = 63
POINTER = 0xC0
QUESTION_NAME = 12  # the offset a pointer to the question's name carries
QTYPE_OPT = 41
QTYPE_SOA = 6
QTYPE_ANY = 255
RCODE_NXDOMAIN = 3
CACHEABLE_RCODES = frozenset({0, RCODE_NXDOMAIN})  # NOERROR, NXDOMAIN
TC = 0x02  # in the third byte of the header
_FIXED = struct.Struct("!HHIH")  # type, class, TTL, RDLENGTH after a record's owner
_COUNTS = struct.Struct("!HHH")  # ANCOUNT, NSCOUNT, ARCOUNT

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
    if reply[2] & TC or (reply[3] & 0x0F) not in CACHEABLE_RCODES:
        return 0
    ttls = list(records.ttls)
    if records.negative:
        if records.soa_minimum is None:
            return 0
        ttls.append(records.soa_minimum)
    return max(0, min(ttls, default=0))
