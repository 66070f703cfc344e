"""The hot path (resolver/hot.py): question parsing, encoded answers, invalidation (R18).

Every answer the hot path gives is checked against the slow path's for the same table; every
event kind is shown to drop the entries it makes wrong, so a stale answer is never served.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import shutil
import struct
import subprocess
from collections import Counter
from ipaddress import IPv4Address

import pytest
from dnslib import AAAA, EDNS0, QTYPE, RCODE, RR, SOA, A, DNSRecord, EDNSOption

from bench.labs.upstreams import Fault, FaultUpstream
from drivers.model import (
    Endpoint,
    EndpointAttached,
    EndpointDetached,
    EndpointMode,
    EndpointUpdated,
    NetworkCreated,
    NetworkRemoved,
    Sandbox,
    SandboxCreated,
    SandboxRemoved,
    ServicePort,
    ServiceRemoved,
    ServiceUpdated,
)
from resolver import hot as hot_module
from resolver.forward import AnswerCache, Forwarder
from resolver.forward.cache import cache_key
from resolver.hot import SHUFFLED_ORDERS, HotCache
from resolver.lookup import Upstreams
from resolver.names import NameTable
from resolver.resolve import Resolver
from resolver.server import Listener, new_event_loop
from resolver.wire import AD, CD, DO, EDNS, parse_question
from tests.unit.topology import (
    API,
    APP,
    CLIENT,
    INTERNAL,
    LONER,
    WEB,
    WEB_EP,
    endpoint,
    sandbox,
    task_of,
)

# -- building queries and a table -------------------------------------------------------------


def query(
    name: str,
    qtype: str = "A",
    *,
    edns: int | None = None,
    rd: bool = True,
    qid: int | None = None,
    do: bool = False,
    options: tuple[EDNSOption, ...] = (),
) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.rd = int(rd)
    if qid is not None:
        q.header.id = qid
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns, flags="do" if do else "", opts=list(options)))
    return bytes(q.pack())


def header(qid: int = 0x1234, flags: int = 0x0100, counts: tuple = (1, 0, 0, 0)) -> bytes:
    return struct.pack("!HH4H", qid, flags, *counts)


def task(slot: int) -> tuple[Sandbox, Endpoint]:
    return task_of(API, slot, f"10.1.0.{10 + slot}")


def base_events() -> list:
    events: list = [NetworkCreated(APP), NetworkCreated(INTERNAL), ServiceUpdated(API)]
    for box in (CLIENT, WEB, LONER):
        events.append(SandboxCreated(box))
    events += [
        EndpointAttached(endpoint(CLIENT, APP, "10.1.0.3")),
        EndpointAttached(WEB_EP),
        EndpointAttached(endpoint(LONER, INTERNAL, "10.9.0.2")),
    ]
    for slot in (1, 2):
        box, ep = task(slot)
        events += [SandboxCreated(box), EndpointAttached(ep)]
    return events


def make_resolver(
    *, cache: AnswerCache | None = None, servers: list[str] | None = None, hot_entries: int = 1000
) -> Resolver:
    table = NameTable()
    table.apply_all(base_events())
    upstreams = servers if servers is not None else []
    forwarder = Forwarder(default_servers=lambda: list(upstreams), cache=cache)
    return Resolver(table, forwarder, rng=random.Random(4), hot_entries=hot_entries)


def slow(resolver: Resolver, box: Sandbox, data: bytes, tcp: bool = False) -> bytes:
    reply = asyncio.run(resolver.handle(box.id, data, tcp))
    assert reply is not None
    return bytes(reply)


def records(reply: bytes) -> Counter:
    parsed = DNSRecord.parse(reply)
    return Counter(
        (str(rr.rname), rr.rtype, rr.rclass, rr.ttl, str(rr.rdata))
        for rr in (*parsed.rr, *parsed.ar)
    )


def same_answer(hot: bytes, slow_reply: bytes) -> None:
    """Same id, flags, counts and question bytes, same records as a multiset (R4 shuffles)."""
    assert hot[:12] == slow_reply[:12]
    question_end = 12 + len(parse_question_bytes(hot))
    assert hot[12:question_end] == slow_reply[12:question_end]
    assert records(hot) == records(slow_reply)


def parse_question_bytes(reply: bytes) -> bytes:
    position = 12
    while reply[position]:
        position += reply[position] + 1
    return reply[12 : position + 5]


def warm(resolver: Resolver, box: Sandbox, data: bytes) -> bytes:
    """Answer once through the slow path, which leaves the entry; the hot path answers next."""
    slow(resolver, box, data)
    hot = resolver.fast(box.id, data)
    assert hot is not None, "the hot path should answer once the slow path has"
    return hot


# -- parse_question --------------------------------------------------------------------------


def test_parse_question_takes_the_common_query() -> None:
    data = query("WeB.AppNet", "AAAA", rd=False)
    rd, name, qtype, question, bits, limit = parse_question(data)  # type: ignore[misc]
    assert (rd, name, qtype, bits, limit) == (0, b"\x03web\x06appnet\x00", 28, 0, 512)
    assert question == data[12:] and question.startswith(b"\x03WeB\x06AppNet\x00")


@pytest.mark.parametrize(
    ("size", "limit"), [(4096, 1232), (1232, 1232), (900, 900), (512, 512), (100, 512)]
)
def test_r15_parse_question_udp_limit_follows_edns_size(size: int, limit: int) -> None:
    parsed = parse_question(query("web", edns=size))
    assert parsed is not None and parsed[4] == EDNS and parsed[5] == limit


def test_parse_question_edns_with_options_do_and_cd_bits() -> None:
    data = bytearray(query("web", edns=1232, do=True, options=(EDNSOption(10, b"12345678"),)))
    data[3] |= 0x10  # CD
    parsed = parse_question(bytes(data))
    assert parsed is not None and parsed[4] == EDNS | DO | CD
    data[3] |= 0x20  # AD: an upstream's AD is only for a client that sets it (RFC 6840 5.7)
    parsed = parse_question(bytes(data))
    assert parsed is not None and parsed[4] == EDNS | DO | CD | AD


def _with(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


PLAIN = query("web")
OPT = query("web", edns=1232)
DECLINED = {
    "short": PLAIN[:11],
    "response": _with(PLAIN, 2, b"\x81"),
    "opcode": _with(PLAIN, 2, b"\x09"),
    "two questions": _with(PLAIN, 4, b"\x00\x02"),
    "answer count": _with(PLAIN, 6, b"\x00\x01"),
    "authority count": _with(PLAIN, 8, b"\x00\x01"),
    "two additional": _with(OPT, 10, b"\x00\x02"),
    "compressed name": header() + b"\xc0\x0c\x00\x01\x00\x01",
    "label over 63": header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
    "dot inside a label": header() + b"\x07web.app\x00\x00\x01\x00\x01",
    "name over 255": header() + b"\x3f" + b"a" * 63 * 0 + (b"\x3f" + b"a" * 63) * 4
    + b"\x00\x00\x01\x00\x01",
    "class CH": _with(PLAIN, len(PLAIN) - 2, b"\x00\x03"),
    "truncated question": PLAIN[:-1],
    "trailing bytes": PLAIN + b"\x00",
    "opt version 1": _with(OPT, len(OPT) - 5, b"\x01"),
    "opt not at the root": PLAIN[:11] + b"\x01" + PLAIN[12:] + b"\x01a\x00\x00\x29\x04\xd0"
    + b"\x00" * 6,
    "additional not an opt": _with(OPT, len(OPT) - 10, b"\x00\x01"),
    "opt options overrun": OPT[:-2] + b"\x00\x04" + b"\x00\x0a\x00\x09abcd",
    "opt short": OPT[:-1],
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(DECLINED))
def test_parse_question_leaves_everything_else_to_the_slow_path(case: str) -> None:
    assert parse_question(DECLINED[case]) is None


def test_a_long_label_of_46_octets_is_not_taken_for_a_dot() -> None:
    name = "a" * 46  # its length octet is the code of '.'
    parsed = parse_question(query(name))
    assert parsed is not None and parsed[1] == b"\x2e" + name.encode() + b"\x00"


# -- answers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rd", [True, False])
@pytest.mark.parametrize("edns", [None, 1232])
def test_r10_hot_reply_is_the_slow_reply_byte_for_byte(rd: bool, edns: int | None) -> None:
    resolver = make_resolver()
    first = query("web", rd=not rd, edns=edns, qid=1)
    slow(resolver, CLIENT, first)  # the entry comes from a query with the other RD and id
    data = query("web", rd=rd, edns=edns, qid=0xBEEF)
    hot = resolver.fast(CLIENT.id, data)
    assert hot is not None
    assert hot == slow(resolver, CLIENT, data)
    assert DNSRecord.parse(hot).header.id == 0xBEEF


def test_r2_hot_reply_keeps_each_clients_case_in_question_and_owner() -> None:
    resolver = make_resolver()
    warm(resolver, CLIENT, query("web.appnet", "AAAA"))
    hot = resolver.fast(CLIENT.id, query("wEb.APPnet", "AAAA"))
    assert hot is not None
    parsed = DNSRecord.parse(hot)
    assert str(parsed.q.qname) == "wEb.APPnet."
    assert [(str(rr.rname), str(rr.rdata)) for rr in parsed.rr] == [("wEb.APPnet.", "fd00::2")]


@pytest.mark.parametrize(
    ("name", "qtype", "rcode", "count"),
    [
        ("web", "AAAA", RCODE.NOERROR, 1),  # R6
        ("web", "MX", RCODE.NOERROR, 0),  # R7
        ("web", "ANY", RCODE.NOERROR, 2),  # R7
        ("api", "A", RCODE.NOERROR, 1),  # R5 vip
        ("tasks.api", "A", RCODE.NOERROR, 2),  # R5
        ("_http._tcp.api", "SRV", RCODE.NOERROR, 2),  # R5 srv
        ("2.0.1.10.in-addr.arpa", "PTR", RCODE.NOERROR, 1),  # R8
    ],
)
def test_local_outcomes_are_served_hot(name: str, qtype: str, rcode: int, count: int) -> None:
    resolver = make_resolver()
    data = query(name, qtype)
    hot = warm(resolver, CLIENT, data)
    same_answer(hot, slow(resolver, CLIENT, data))
    parsed = DNSRecord.parse(hot)
    assert (parsed.header.rcode, len(parsed.rr)) == (rcode, count)


def test_r12_nxdomain_of_an_internal_sandbox_is_served_hot() -> None:
    resolver = make_resolver()
    hot = warm(resolver, LONER, query("example.com"))
    assert DNSRecord.parse(hot).header.rcode == RCODE.NXDOMAIN


def test_r5_srv_additional_names_are_whole_in_the_tail() -> None:
    resolver = make_resolver()
    warm(resolver, CLIENT, query("_http._tcp.api", "SRV"))
    hot = resolver.fast(CLIENT.id, query("_HTTP._TCP.API", "SRV"))
    assert hot is not None
    parsed = DNSRecord.parse(hot)
    assert {str(rr.rname) for rr in parsed.rr} == {"_HTTP._TCP.API."}
    assert {str(rr.rname) for rr in parsed.ar} == {"api.1.t1x.", "api.2.t2x."}


def test_forwarded_names_are_left_to_the_slow_path_without_a_cache() -> None:
    resolver = make_resolver()
    data = query("example.com")
    assert DNSRecord.parse(slow(resolver, CLIENT, data)).header.rcode == RCODE.SERVFAIL
    assert resolver.fast(CLIENT.id, data) is None


def test_each_sandbox_has_its_own_entries() -> None:
    resolver = make_resolver()
    warm(resolver, CLIENT, query("web"))
    assert resolver.fast(LONER.id, query("web")) is None  # LONER does not see appnet (R1)


def _shared_alias_resolver(members: int) -> Resolver:
    resolver = make_resolver()
    for i in range(members):
        box = sandbox(f"pool{i}")
        resolver.table.apply(SandboxCreated(box))
        resolver.table.apply(
            EndpointAttached(endpoint(box, APP, f"10.1.1.{i + 1}", aliases=("pool",)))
        )
    return resolver


def test_r4_shared_names_rotate_through_precomputed_orders() -> None:
    resolver = _shared_alias_resolver(10)
    data = query("pool")
    warm(resolver, CLIENT, data)
    answers = [
        tuple(str(rr.rdata) for rr in DNSRecord.parse(resolver.fast(CLIENT.id, data)).rr)  # type: ignore[arg-type]
        for _ in range(2 * SHUFFLED_ORDERS)
    ]
    assert len(set(answers)) == SHUFFLED_ORDERS
    assert all(a != b for a, b in itertools.pairwise(answers))  # a new order each time
    assert {tuple(sorted(a)) for a in answers} == {
        tuple(sorted(f"10.1.1.{i}" for i in range(1, 11)))
    }


def test_r4_two_addresses_keep_both_orders() -> None:
    resolver = _shared_alias_resolver(2)
    data = query("pool")
    warm(resolver, CLIENT, data)
    orders = {str(DNSRecord.parse(resolver.fast(CLIENT.id, data)).rr[0].rdata) for _ in range(4)}  # type: ignore[arg-type]
    assert len(orders) == 2


def test_r15_reply_over_the_udp_limit_is_declined_but_served_over_tcp() -> None:
    resolver = _shared_alias_resolver(40)  # 40 A records: 12 + 9 + 40*16 > 512
    data = query("pool")
    slow_reply = slow(resolver, CLIENT, data)
    assert DNSRecord.parse(slow_reply).header.tc == 1
    assert resolver.fast(CLIENT.id, data) is None  # the slow path truncates it
    hot_tcp = resolver.fast(CLIENT.id, data, tcp=True)
    assert hot_tcp is not None and len(DNSRecord.parse(hot_tcp).rr) == 40
    big = query("pool", edns=1232)
    slow(resolver, CLIENT, big)
    hot = resolver.fast(CLIENT.id, big)
    assert hot is not None and len(hot) <= 1232 and len(DNSRecord.parse(hot).rr) == 40


def test_hot_cache_is_bounded_and_drops_the_oldest_first() -> None:
    resolver = make_resolver(hot_entries=3)
    names = ["web", "www", "api", "tasks.api"]
    for name in names:
        slow(resolver, CLIENT, query(name))
    assert resolver.hot is not None and resolver.hot.size == 3
    assert resolver.fast(CLIENT.id, query("web")) is None
    assert all(resolver.fast(CLIENT.id, query(name)) is not None for name in names[1:])
    assert resolver.hot.stats.evicted == 1


def test_a_repeated_query_is_parsed_once_and_answered_with_its_own_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolver = make_resolver()
    warm(resolver, CLIENT, query("web.appnet", qid=1))
    calls: list[bytes] = []
    real = hot_module.parse_question
    monkeypatch.setattr(hot_module, "parse_question", lambda data: calls.append(data) or real(data))
    for qid in (2, 3, 4):
        hot = resolver.fast(CLIENT.id, query("web.appnet", qid=qid))
        assert hot is not None and hot[:2] == qid.to_bytes(2, "big")
    assert calls == []  # parsed when warm() asked, kept since
    other = query("WEB.appnet", qid=5)  # another spelling, other bytes: parsed on its own (R2)
    hot = resolver.fast(CLIENT.id, other)
    assert calls == [other]
    assert hot is not None and str(DNSRecord.parse(hot).q.qname) == "WEB.appnet."


def test_the_parsed_questions_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hot_module, "MAX_PARSED", 2)
    resolver = make_resolver()
    assert resolver.hot is not None
    for name in ("web", "www", "api", "tasks.api", "nothing.here"):
        resolver.fast(CLIENT.id, query(name))
        assert len(resolver.hot._parsed) <= 2


def test_no_hot_cache_when_turned_off() -> None:
    resolver = make_resolver(hot_entries=0)
    slow(resolver, CLIENT, query("web"))
    assert resolver.fast(CLIENT.id, query("web")) is None


# -- R18: every event kind drops what it makes wrong -------------------------------------------


def _check_after(resolver: Resolver, box: Sandbox, data: bytes) -> None:
    """Whatever the hot path says now is what the slow path says now."""
    hot = resolver.fast(box.id, data)
    if hot is not None:
        same_answer(hot, slow(resolver, box, data))


def _r18(event: object, asks: list[tuple[Sandbox, str, str]], resolver=None) -> None:
    """Answers asked (and made hot) before `event`; after it, no stale one is served hot."""
    resolver = resolver or make_resolver()
    queries = [(box, query(name, qtype, qid=7)) for box, name, qtype in asks]
    before = []
    for box, data in queries:
        before.append(slow(resolver, box, data))
    hot_before = [resolver.fast(box.id, data) for box, data in queries]
    assert any(hot_before), "some answer should be hot before the event"
    resolver.table.apply(event)  # type: ignore[arg-type]
    changed = False
    for (box, data), old in zip(queries, before, strict=True):
        _check_after(resolver, box, data)
        new = slow(resolver, box, data)
        changed |= new[:12] != old[:12] or records(new) != records(old)
        _check_after(resolver, box, data)  # and once the slow path has made it hot again
    assert changed, "the event should change at least one of the answers asked"


def test_r18_attach_adds_a_name_that_was_nxdomain_for_an_internal_sandbox() -> None:
    newcomer = sandbox("newcomer")
    resolver = make_resolver()
    resolver.table.apply(SandboxCreated(newcomer))
    _r18(
        EndpointAttached(endpoint(newcomer, INTERNAL, "10.9.0.7")),
        [(LONER, "newcomer", "A"), (LONER, "7.0.9.10.in-addr.arpa", "PTR")],
        resolver,
    )


def test_r18_attach_of_the_asker_to_another_network_changes_its_view() -> None:
    _r18(
        EndpointAttached(endpoint(LONER, APP, "10.1.0.50")),
        [(LONER, "web", "A"), (LONER, "www.appnet", "AAAA"), (LONER, "nowhere", "A")],
    )


def test_r18_detach_removes_names_addresses_and_ptr() -> None:
    _r18(
        EndpointDetached(WEB_EP),
        [(CLIENT, "web", "A"), (CLIENT, "WWW", "AAAA"), (CLIENT, "2.0.1.10.in-addr.arpa", "PTR")],
    )


def test_r18_alias_added_and_removed_by_an_update() -> None:
    _r18(
        EndpointUpdated(dataclasses.replace(WEB_EP, aliases=("frontend",))),
        [(CLIENT, "www", "A"), (CLIENT, "frontend", "A"), (CLIENT, "frontend.appnet", "A")],
    )


def test_r18_address_change_by_an_update() -> None:
    _r18(
        EndpointUpdated(dataclasses.replace(WEB_EP, ipv4=IPv4Address("10.1.0.77"))),
        [(CLIENT, "web", "A"), (CLIENT, "2.0.1.10.in-addr.arpa", "PTR")],
    )


def test_r18_container_removed() -> None:
    _r18(SandboxRemoved(WEB), [(CLIENT, "web", "ANY"), (CLIENT, "www", "A")])


def test_r18_sandbox_settings_change_r12b_ndots() -> None:
    resolver = make_resolver()
    resolver.table.apply(SandboxCreated(dataclasses.replace(CLIENT, dns_options=("ndots:2",))))
    # NODATA at once with ndots:2 (R12b), forwarded once the setting is gone.
    _r18(SandboxCreated(CLIENT), [(CLIENT, "nosuchname", "A")], resolver)


def test_r18_service_scaled_up_changes_tasks_and_srv() -> None:
    box, ep = task(3)
    resolver = make_resolver()
    resolver.table.apply(SandboxCreated(box))
    _r18(
        EndpointAttached(ep),
        [(CLIENT, "tasks.api", "A"), (CLIENT, "_http._tcp.api", "SRV"), (CLIENT, "api", "A")],
        resolver,
    )


def test_r18_service_vip_and_mode_change() -> None:
    _r18(
        ServiceUpdated(dataclasses.replace(API, mode=EndpointMode.DNSRR, vips=())),
        [(CLIENT, "api", "A"), (CLIENT, "100.0.1.10.in-addr.arpa", "PTR")],
    )


def test_r18_service_ports_change_srv() -> None:
    _r18(
        ServiceUpdated(dataclasses.replace(API, ports=(ServicePort("grpc", "tcp", 81),))),
        [(CLIENT, "_http._tcp.api", "SRV"), (CLIENT, "_grpc._tcp.api.appnet", "SRV")],
    )


def test_r18_service_removed() -> None:
    _r18(ServiceRemoved(API), [(CLIENT, "api", "A"), (CLIENT, "tasks.api", "A")])


def test_r18_network_renamed_changes_ptr_and_qualified_names() -> None:
    _r18(
        NetworkCreated(dataclasses.replace(APP, name="frontnet")),
        [(CLIENT, "2.0.1.10.in-addr.arpa", "PTR"), (CLIENT, "web.appnet", "A")],
    )


def test_r18_network_removed() -> None:
    _r18(NetworkRemoved(APP), [(CLIENT, "web", "A"), (CLIENT, "api", "A")])


def test_an_answer_worked_out_before_an_event_is_not_kept_after_it() -> None:
    resolver = make_resolver()
    assert resolver.hot is not None
    data = query("web")
    generation = resolver.hot.generation
    lookup = resolver.table.lookup(CLIENT.id, "web", 1)
    resolver.table.apply(EndpointDetached(WEB_EP))
    assert not resolver.hot.put_local(
        CLIENT.id, data, lookup, ttl=5, rng=random.Random(1), generation=generation
    )
    assert resolver.fast(CLIENT.id, data) is None


# -- forwarded answers from the cache (R13) ----------------------------------------------------

UPSTREAM = "127.77.66.55"  # never contacted: the answer cache is filled by hand


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _forwarding_resolver(clock: Clock, servers: list[str]) -> Resolver:
    resolver = make_resolver(cache=AnswerCache(clock=clock), servers=servers)
    assert resolver.hot is not None
    resolver.hot.clock = clock
    return resolver


def _cache_upstream_reply(resolver: Resolver, name: str, reply: DNSRecord) -> None:
    request = DNSRecord.parse(query(name))
    servers = resolver.forwarder.servers_for(Upstreams())
    assert resolver.forwarder.cache is not None
    key = cache_key(("", *map(str, servers)), request)
    assert resolver.forwarder.cache.put(key, bytes(reply.pack()))


def _upstream_answer(name: str, ttl: int = 300) -> DNSRecord:
    reply = DNSRecord.question(name).reply()
    reply.add_answer(RR(name, QTYPE.A, ttl=ttl, rdata=A("192.0.2.7")))
    reply.add_answer(RR(name, QTYPE.AAAA, ttl=ttl + 50, rdata=AAAA("2001:db8::7")))
    return reply


def test_r13_cached_forward_is_served_hot_with_id_case_and_ttls_counted_down() -> None:
    clock = Clock()
    servers = [UPSTREAM]
    resolver = _forwarding_resolver(clock, servers)
    _cache_upstream_reply(resolver, "fwd.example", _upstream_answer("fwd.example"))
    slow(resolver, CLIENT, query("fwd.example"))  # a cache hit on the slow path: now hot
    clock.now += 10.5
    data = query("FWD.Example", qid=4242, rd=False)
    hot, *again = (resolver.fast(CLIENT.id, data) for _ in range(3))
    assert hot is not None and again == [hot, hot]
    parsed = DNSRecord.parse(hot)
    assert (parsed.header.id, parsed.header.rd, str(parsed.q.qname)) == (4242, 0, "FWD.Example.")
    assert [(str(rr.rname), rr.ttl) for rr in parsed.rr] == [
        ("FWD.Example.", 290),
        ("FWD.Example.", 340),
    ]
    same_answer(hot, slow(resolver, CLIENT, data))


def test_r13_cached_forward_leaves_the_hot_path_when_its_ttl_runs_out() -> None:
    clock = Clock()
    resolver = _forwarding_resolver(clock, [UPSTREAM])
    _cache_upstream_reply(resolver, "short.example", _upstream_answer("short.example", ttl=20))
    slow(resolver, CLIENT, query("short.example"))
    clock.now += 18.5
    assert resolver.fast(CLIENT.id, query("short.example")) is not None
    clock.now += 1.0
    assert resolver.fast(CLIENT.id, query("short.example")) is None


def test_r13_negative_answer_with_soa_is_served_hot() -> None:
    clock = Clock()
    resolver = _forwarding_resolver(clock, [UPSTREAM])
    reply = DNSRecord.question("nx.example").reply()
    reply.header.rcode = RCODE.NXDOMAIN
    soa = SOA("ns.example.", "admin.example.", (1, 60, 60, 60, 30))
    reply.add_auth(RR("example.", QTYPE.SOA, ttl=60, rdata=soa))
    _cache_upstream_reply(resolver, "nx.example", reply)
    slow(resolver, CLIENT, query("nx.example"))
    hot = resolver.fast(CLIENT.id, query("NX.example"))
    assert hot is not None
    parsed = DNSRecord.parse(hot)
    assert parsed.header.rcode == RCODE.NXDOMAIN
    assert [(str(rr.rname).lower(), rr.rtype) for rr in parsed.auth] == [("example.", QTYPE.SOA)]


def test_r11_cached_forward_leaves_the_hot_path_when_default_upstreams_change() -> None:
    clock = Clock()
    servers = [UPSTREAM]
    resolver = _forwarding_resolver(clock, servers)
    _cache_upstream_reply(resolver, "fwd.example", _upstream_answer("fwd.example"))
    slow(resolver, CLIENT, query("fwd.example"))
    assert resolver.fast(CLIENT.id, query("fwd.example")) is not None
    servers[0] = "127.77.66.56"  # resolv.conf now names another server
    clock.now += 1.5
    assert resolver.fast(CLIENT.id, query("fwd.example")) is None


def test_r18_cached_forward_is_dropped_when_the_name_becomes_local() -> None:
    clock = Clock()
    resolver = _forwarding_resolver(clock, [UPSTREAM])
    _cache_upstream_reply(resolver, "db", _upstream_answer("db"))
    slow(resolver, CLIENT, query("db"))
    assert resolver.fast(CLIENT.id, query("db")) is not None
    box = sandbox("db")
    resolver.table.apply(SandboxCreated(box))
    resolver.table.apply(EndpointAttached(endpoint(box, APP, "10.1.0.60")))
    _check_after(resolver, CLIENT, query("db"))
    assert [str(rr.rdata) for rr in DNSRecord.parse(slow(resolver, CLIENT, query("db"))).rr] == [
        "10.1.0.60"
    ]


# -- through a real listener -------------------------------------------------------------------


def random_loopback() -> str:
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


class CountingHandler:
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.calls = 0

    async def __call__(self, sandbox_id: str, data: bytes, tcp: bool) -> bytes | None:
        self.calls += 1
        return await self.resolver.handle(sandbox_id, data, tcp)


def _serve_and_ask(asks) -> tuple[int, list]:
    resolver = make_resolver()
    handler = CountingHandler(resolver)
    results: list = []

    async def main() -> None:
        listener = await Listener.start(handler, CLIENT.id, random_loopback(), fast=resolver.fast)
        try:
            results.extend(await asks(listener))
        finally:
            await listener.close()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())
    return handler.calls, results


async def _udp(host: str, port: int, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, reply: bytes, addr: object) -> None:
            if not answer.done():
                answer.set_result(reply)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(host, port))
    try:
        transport.sendto(data)
        return await asyncio.wait_for(answer, 2.0)
    finally:
        transport.close()


def test_listener_answers_udp_and_tcp_from_the_hot_path_without_the_handler() -> None:
    async def asks(listener: Listener) -> list:
        host, port = listener.host, listener.port
        first = await _udp(host, port, query("web", qid=1))  # slow path, leaves the entry
        replies = [await _udp(host, port, query("WEB", qid=i)) for i in range(2, 12)]
        reader, writer = await asyncio.open_connection(host, port)
        data = query("Web", qid=99)
        writer.write((len(data).to_bytes(2, "big") + data) * 3)
        await writer.drain()
        for _ in range(3):
            length = int.from_bytes(await reader.readexactly(2), "big")
            replies.append(await reader.readexactly(length))
        writer.close()
        return [first, *replies, listener.stats.fast_answers]

    calls, results = _serve_and_ask(asks)
    *replies, fast_answers = results
    assert calls == 1 and fast_answers == 13
    assert [DNSRecord.parse(r).header.id for r in replies] == [1, *range(2, 12), 99, 99, 99]
    assert all(str(DNSRecord.parse(r).rr[0].rdata) == "10.1.0.2" for r in replies)


@pytest.mark.skipif(shutil.which("dig") is None, reason="needs dig (bind9-dnsutils)")
def test_dig_with_edns_cookie_gets_the_hot_answer() -> None:
    async def asks(listener: Listener) -> list:
        outputs = []
        for name in ("web.appnet", "WEB.appnet"):
            process = await asyncio.create_subprocess_exec(
                "dig", f"@{listener.host}", "-p", str(listener.port), name, "A", "+cookie",
                "+tries=1", "+time=2", stdout=subprocess.PIPE,
            )  # fmt: skip
            out, _ = await process.communicate()
            outputs.append(out.decode())
        return [*outputs, listener.stats.fast_answers]

    calls, (_first, second, fast_answers) = _serve_and_ask(asks)
    assert calls == 1 and fast_answers == 1
    assert "WEB.appnet.\t\t5\tIN\tA\t10.1.0.2" in second
    assert "status: NOERROR" in second and "flags: qr rd ra;" in second


def test_hot_cache_stands_alone() -> None:
    hot = HotCache(2)
    assert hot.answer("x", query("web")) is None and hot.stats.misses == 1


def test_a_failing_fast_handler_leaves_the_query_to_the_slow_path() -> None:
    def broken(sandbox_id: str, data: bytes, tcp: bool) -> bytes | None:
        raise RuntimeError("hot path bug")

    resolver = make_resolver()
    handler = CountingHandler(resolver)

    async def main() -> tuple[bytes, int]:
        listener = await Listener.start(handler, CLIENT.id, random_loopback(), fast=broken)
        try:
            reply = await _udp(listener.host, listener.port, query("web", qid=5))
            return reply, listener.stats.handler_errors
        finally:
            await listener.close()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        reply, errors = runner.run(main())
    assert handler.calls == 1 and errors == 1
    assert str(DNSRecord.parse(reply).rr[0].rdata) == "10.1.0.2"


# -- forwarding by callback (Resolver.start): no parse, no task ----------------------------


def start_and_wait(resolver: Resolver, data: bytes, wait: float) -> tuple[bool, list[bytes]]:
    """Resolver.start as the listener calls it, then WAIT seconds of the loop for late replies."""
    replies: list[bytes] = []

    async def run() -> bool:
        taken = resolver.start(CLIENT.id, data, False, replies.append)
        await asyncio.sleep(wait)
        resolver.forwarder.close()
        return taken

    return asyncio.run(run()), replies


def test_r11_start_declines_local_names_tcp_and_odd_questions_and_takes_forwarded_ones() -> None:
    with FaultUpstream(Fault.ANSWER, port=0) as upstream:
        resolver = make_resolver(servers=[upstream.server])
        for declined in (query("web"), query("WEB", "AAAA")):
            assert not resolver.start(CLIENT.id, declined, False, lambda reply: None)
        assert not resolver.start(CLIENT.id, query("example.org"), True, lambda reply: None)
        odd = query("ex ample.org")  # a space in a label: dnslib spells it, the slow path asks
        assert not resolver.start(CLIENT.id, odd, False, lambda reply: None)
        taken, replies = start_and_wait(resolver, query("Example.ORG"), 0.3)
    assert taken and len(replies) == 1
    reply = DNSRecord.parse(replies[0])
    assert str(reply.q.qname) == "Example.ORG." and str(reply.rr[0].rdata) == "192.0.2.1"
    # Counted as the slow path counts a forward (metrics by type, rcode and path).
    assert resolver.stats.counts[(QTYPE.A, RCODE.NOERROR, "upstream")] == 1


@pytest.mark.parametrize("fault", [Fault.WRONG_ID, Fault.WRONG_QUESTION, Fault.SLOW])
def test_r11_a_reply_that_does_not_match_or_comes_late_never_answers_the_client(
    fault: Fault,
) -> None:
    # The budget runs out first: the client gets our SERVFAIL once, and the upstream's late
    # (SLOW) or mismatched reply, arriving after, reaches nobody.
    with FaultUpstream(fault, port=0, delay=0.4) as upstream:
        resolver = make_resolver(servers=[upstream.server])
        resolver.forwarder.budget = 0.2
        taken, replies = start_and_wait(resolver, query("late.example"), 0.8)
        assert upstream.udp_queries == 1
    assert taken
    assert len(replies) == 1, replies
    assert DNSRecord.parse(replies[0]).header.rcode == RCODE.SERVFAIL
    assert resolver.forwarder.inflight == 0


def test_r13_start_answers_the_second_query_from_the_bytes_cache_in_the_client_case() -> None:
    with FaultUpstream(Fault.ANSWER, port=0) as upstream:
        resolver = make_resolver(cache=AnswerCache(), servers=[upstream.server])
        assert start_and_wait(resolver, query("cached.example"), 0.3)[1]
        replies: list[bytes] = []
        asked = upstream.udp_queries
        assert resolver.start(CLIENT.id, query("CACHED.example"), False, replies.append)
        assert upstream.udp_queries == asked
    assert len(replies) == 1  # at once: no loop turn needed for a cache hit
    assert b"\x06CACHED\x07example" in replies[0]
    assert DNSRecord.parse(replies[0]).rr[0].rname == "CACHED.example."
