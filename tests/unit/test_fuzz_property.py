"""Properties of the packet path over generated input (R10, R15, R16; hot path == slow path).

Each example goes through tests.fuzz.target.check_input, the fuzz target: no exception
escapes, every message gets R16's answer or is dropped, UDP replies fit (R15), and the hot
path answers only what the slow path answers. Three sources: arbitrary bytes; valid queries
mutated the way broken or hostile clients break them (bits, truncation, label lengths,
compression pointers and their loops, section counts, EDNS options); and valid queries of
random names, types and classes, which must all get an answer (never FORMERR).
"""

from __future__ import annotations

import struct

from dnslib import DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.target import ASKERS, HEADER, Verdict, check_input, query, walk

FAST = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # ~2 ms an example (quiet): ~5 s of CPU for the three, under the 20 s budget

NAMES = [
    "web", "WEB", "www", "webhost", "db", "db.other.net", "a.b", "pool", "api", "tasks.api",
    "api.1.apit1", "rr", "_http._tcp.api", "_dns._udp.rr", "client", "loner",
    "2.0.1.10.in-addr.arpa", "100.0.1.10.in-addr.arpa", "1.2.0.192.in-addr.arpa",
    "example.org", "Mixed.Case.Example", "big.example", "bare", "x.y.z",
]  # fmt: skip
TYPES = ["A", "AAAA", "ANY", "PTR", "SRV", "MX", "TXT", "CNAME", "SOA", "NS", "CAA", "HTTPS"]

controls = st.builds(
    lambda tcp, asker, sample: tcp | asker << 1 | sample << 3,
    st.integers(0, 1), st.integers(0, len(ASKERS) - 1), st.integers(0, 1),
)  # fmt: skip
unknown_names = st.from_regex(r"[a-zA-Z0-9-]{1,12}(\.[a-z]{1,5}){0,3}", fullmatch=True)
edns_sizes = st.sampled_from([None, None, 0, 512, 1232, 4096, 65535])


@st.composite
def valid_queries(draw: st.DrawFn) -> bytes:
    name = draw(
        st.one_of(
            st.sampled_from(NAMES),
            st.from_regex(r"[a-zA-Z0-9-]{1,12}(\.[a-z]{1,5}){0,3}", fullmatch=True),
        )
    )
    qtype = draw(st.sampled_from(TYPES))
    size = draw(edns_sizes)
    data = query(name, qtype, edns=size, qid=draw(st.integers(0, 0xFFFF)))
    if draw(st.booleans()):
        flags = draw(st.integers(0, 0xFFFF)) & ~0xF800  # QR clear, opcode QUERY, any other bit
        data = data[:2] + struct.pack("!H", flags) + data[4:]
    return data


def framed(control: int, message: bytes) -> bytes:
    if control & 1:
        return bytes([control]) + len(message).to_bytes(2, "big") + message
    return bytes([control]) + message


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_queries()))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from([
            "flip", "truncate", "label_length", "pointer", "counts", "qdcount", "edns_option",
            "append",
        ]))  # fmt: skip
        if kind == "flip" and data:
            bit = draw(st.integers(0, len(data) * 8 - 1))
            data[bit // 8] ^= 1 << (bit % 8)
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif kind == "label_length" and len(data) > 12:
            data[draw(st.integers(12, len(data) - 1))] = draw(
                st.sampled_from([0, 1, 63, 64, 0x40, 0x7F, 0x80, 0xBF, 0xFF])
            )
        elif kind == "pointer" and len(data) > 13:
            at = draw(st.integers(12, len(data) - 2))
            # to itself, backwards (maybe a loop through a label), into the header, forwards
            target = draw(st.sampled_from([at, 12, at - 2, 0, 4, at + 2, 0x3FFF]))
            data[at : at + 2] = struct.pack("!H", 0xC000 | max(0, target) & 0x3FFF)
        elif kind in ("counts", "qdcount") and len(data) >= 12:
            field = 4 if kind == "qdcount" else draw(st.sampled_from([6, 8, 10]))
            value = draw(st.sampled_from([0, 1, 2, 3, 0xFF, 0x100, 0xFFFF]))
            data[field : field + 2] = struct.pack("!H", value)
        elif kind == "edns_option":
            code = draw(st.sampled_from([3, 8, 10, 12, 15, 0xFFFF]))
            length = draw(st.integers(0, 300))
            body = draw(st.binary(max_size=40))
            data += struct.pack("!HH", code, length) + body
        elif kind == "append":
            data += draw(st.binary(max_size=64))
    return bytes(data)


@FAST
@given(control=controls, data=st.binary(max_size=600))
def test_r16_arbitrary_bytes_get_their_answer_or_are_dropped(control: int, data: bytes) -> None:
    check_input(bytes([control]) + data)


@FAST
@given(control=controls, data=mutated())
def test_r16_mutated_queries_get_their_answer_and_hot_path_agrees(
    control: int, data: bytes
) -> None:
    check_input(framed(control, data))


@FAST
@given(control=controls, data=valid_queries(), qclass=st.sampled_from([1, 1, 1, 3, 4, 254, 255]))
def test_r10_valid_queries_are_answered_and_hot_path_agrees(
    control: int, data: bytes, qclass: int
) -> None:
    if qclass != 1:
        data = _with_class(data, qclass)
    assert walk(data).verdict is Verdict.ANSWER  # the generator makes only good queries
    check_input(framed(control, data))  # raises on FORMERR for a well-formed query


def _with_class(data: bytes, qclass: int) -> bytes:
    request = DNSRecord.parse(data)
    request.q.qclass = qclass
    packed = bytes(request.pack())
    return packed[:2] + data[2:4] + packed[4:]  # keep the drawn flags


def test_r16_header_only_query_is_formerr() -> None:
    """A sanity anchor for the walker itself: QDCOUNT 1 and no question at all."""
    assert walk(HEADER.pack(1, 0, 1, 0, 0, 0)).verdict is Verdict.FORMERR
