"""Upstream replies are parsed at a bounded cost: the same records as dnslib's own parser for any
well-formed reply, and a clear DNSError (not a stall of the loop or a RecursionError) for
compression-pointer chains a hostile or broken upstream could send (found by the fuzzing work,
docs/RELIABILITY.md)."""

from __future__ import annotations

import struct

import pytest
from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RR, SOA, SRV, TXT, A, DNSError, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.forward.cache import AnswerCache, cache_key
from resolver.forward.message import MAX_HOPS, parse_message
from resolver.hot import HotCache

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
name = st.lists(label, min_size=1, max_size=4).map(lambda parts: ".".join(parts) + ".")
record = st.one_of(
    st.builds(lambda n, a: RR(n, QTYPE.A, rdata=A(a), ttl=60), name, st.ip_addresses(v=4).map(str)),
    st.builds(
        lambda n, a: RR(n, QTYPE.AAAA, rdata=AAAA(a), ttl=60), name, st.ip_addresses(v=6).map(str)
    ),
    st.builds(lambda n, t: RR(n, QTYPE.CNAME, rdata=CNAME(t), ttl=60), name, name),
    st.builds(lambda n, t: RR(n, QTYPE.PTR, rdata=PTR(t), ttl=60), name, name),
    st.builds(lambda n, t: RR(n, QTYPE.MX, rdata=MX(t, 10), ttl=60), name, name),
    st.builds(lambda n, t: RR(n, QTYPE.SRV, rdata=SRV(1, 2, 80, t), ttl=60), name, name),
    st.builds(lambda n, t: RR(n, QTYPE.TXT, rdata=TXT(t), ttl=60), name, label),
    st.builds(lambda n, m: RR(n, QTYPE.SOA, rdata=SOA(m, m, (1, 2, 3, 4, 5)), ttl=60), name, name),
)


@settings(max_examples=150, deadline=None)
@given(question=name, answers=st.lists(record, max_size=8), extra=st.lists(record, max_size=4))
def test_well_formed_replies_parse_as_dnslib_parses_them(
    question: str, answers: list[RR], extra: list[RR]
) -> None:
    reply = DNSRecord.question(question).reply()
    reply.rr, reply.ar = answers, extra
    data = reply.pack()  # dnslib compresses repeated names with pointers
    ours, theirs = parse_message(data), DNSRecord.parse(data)
    assert ours == theirs
    assert ours.pack() == data


def pointer_chain(count: int) -> bytes:
    """A reply with COUNT A records, each owner a pointer to the previous record's owner (16
    bytes a record: up to 1000 stay within the 14-bit reach of a pointer)."""
    header = struct.pack("!6H", 0x1234, 0x8180, 1, count, 0, 0)
    question = b"\x01a\x04test\x00" + struct.pack("!HH", 1, 1)
    body = bytearray(header + question)
    previous = 12  # the question's name
    for _ in range(count):
        owner = len(body)
        body += struct.pack("!H", 0xC000 | previous) + struct.pack("!HHIH", 1, 1, 60, 4)
        body += bytes(4)
        previous = owner
    return bytes(body)


def test_a_short_pointer_chain_parses_as_dnslib_parses_it() -> None:
    data = pointer_chain(100)
    assert parse_message(data) == DNSRecord.parse(data)


def test_a_long_pointer_chain_parses_once_per_name_where_dnslib_recurses() -> None:
    data = pointer_chain(1000)
    with pytest.raises(RecursionError):
        DNSRecord.parse(data)  # the hazard: one frame per pointer, from scratch for each name
    parsed = parse_message(data)
    assert len(parsed.rr) == 1000
    assert {str(rr.rname) for rr in parsed.rr} == {"a.test."}


def hidden_chain(hops: int) -> bytes:
    """A reply whose one answer's owner enters a chain of HOPS pointers kept in the opaque RDATA
    of a record before it, so no name on the way has been decoded yet."""
    header = struct.pack("!6H", 0x1234, 0x8180, 1, 2, 0, 0)
    body = bytearray(header + b"\x01a\x04test\x00" + struct.pack("!HH", 1, 1))
    body += b"\xc0\x0c" + struct.pack("!HHIH", 0xFF00, 1, 60, 2 * hops)
    previous = 12
    for _ in range(hops):
        here = len(body)
        body += struct.pack("!H", 0xC000 | previous)
        previous = here
    body += struct.pack("!H", 0xC000 | previous) + struct.pack("!HHIH", 1, 1, 60, 4) + bytes(4)
    return bytes(body)


def test_a_name_needing_more_pointers_than_any_name_can_is_malformed() -> None:
    assert str(parse_message(hidden_chain(MAX_HOPS - 1)).rr[1].rname) == "a.test."
    with pytest.raises(DNSError, match="pointers"):
        parse_message(hidden_chain(MAX_HOPS))


def test_a_forward_pointer_and_a_reserved_label_type_are_malformed() -> None:
    header = struct.pack("!6H", 1, 0x8180, 1, 0, 0, 0)
    forward = header + b"\xc0\x20" + struct.pack("!HH", 1, 1)
    with pytest.raises(DNSError, match="backwards"):
        parse_message(forward)
    reserved = header + b"\x41" + b"a" * 65 + b"\x00" + struct.pack("!HH", 1, 1)
    with pytest.raises(DNSError, match="reserved label"):
        parse_message(reserved)


def test_r13_the_answer_cache_keeps_pointer_chains_as_bytes_without_following_them() -> None:
    # The answer cache never decodes a name (resolver/wire.py skips them): a chain costs
    # its length, and the client gets the bytes the upstream sent, as without the cache.
    request = DNSRecord.question("a.test")
    request.header.id = 0x1234
    cache = AnswerCache()
    key = cache_key(("127.0.0.1:53",), request)
    for data in (hidden_chain(MAX_HOPS), pointer_chain(1000)):
        assert cache.put(key, data) is True
        assert cache.get(key, request) == data


def test_the_hot_path_does_not_take_a_reply_whose_names_cannot_be_decoded() -> None:
    hot = HotCache(10)
    query = bytes(DNSRecord.question("a.test").pack())
    assert not hot.put_forwarded("s", query, hidden_chain(MAX_HOPS), upstreams=None, generation=0)
    assert hot.put_forwarded("s", query, pointer_chain(100), upstreams=None, generation=0)
