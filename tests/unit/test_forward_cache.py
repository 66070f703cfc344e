"""R13: the answer cache, on replies built in memory and a clock the test moves. No sockets."""

from __future__ import annotations

from dnslib import CNAME, EDNS0, QTYPE, RCODE, RR, SOA, A, DNSRecord

from resolver.forward.cache import AnswerCache, cache_key
from resolver.wire import cache_ttl as cache_ttl_of_bytes
from resolver.wire import question_end, read_records

UPSTREAMS = ("", "127.1.2.3:53")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def question(name: str = "web.example", qtype: str = "A", *, edns: bool = False, do: bool = False):
    request = DNSRecord.question(name, qtype)
    if edns:
        request.add_ar(EDNS0(udp_len=1232, flags="do" if do else ""))
    return request


def answer(request: DNSRecord, ttl: int = 300, address: str = "10.0.0.1") -> DNSRecord:
    reply = request.reply()
    reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=ttl, rdata=A(address)))
    return reply


def negative(
    request: DNSRecord, rcode: int, *, soa_ttl: int | None = 300, minimum: int = 60
) -> DNSRecord:
    reply = request.reply()
    reply.header.rcode = rcode
    if soa_ttl is not None:
        times = (1, 3600, 600, 86400, minimum)
        soa = SOA("ns.example.", "hostmaster.example.", times)
        reply.add_auth(RR("example.", QTYPE.SOA, ttl=soa_ttl, rdata=soa))
    return reply


def cache_ttl(reply: DNSRecord) -> int:
    raw = reply.pack()
    return cache_ttl_of_bytes(raw, read_records(raw, question_end(raw)))


def cache_with(clock: Clock, request: DNSRecord, reply: DNSRecord, **kwargs) -> AnswerCache:
    cache = AnswerCache(clock=clock, **kwargs)
    assert cache.put(cache_key(UPSTREAMS, request), reply.pack())
    return cache


def test_r13_hit_counts_ttls_down_and_expires():
    clock = Clock()
    request = question()
    reply = answer(request, ttl=300)
    reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=500, rdata=A("10.0.0.2")))
    cache = cache_with(clock, request, reply)
    key = cache_key(UPSTREAMS, request)

    clock.now += 100.7
    hit = DNSRecord.parse(cache.get(key, request))
    assert [rr.ttl for rr in hit.rr] == [200, 400]

    clock.now += 199.0  # 299.7 s after storing: the smallest TTL has not run out
    assert [rr.ttl for rr in DNSRecord.parse(cache.get(key, request)).rr] == [1, 201]

    clock.now += 0.3  # the smallest TTL is spent: the whole answer goes
    assert cache.get(key, request) is None
    assert cache.size == 0
    assert (cache.hits, cache.misses) == (2, 1)


def test_r13_hit_has_client_id_rd_and_question_case():
    clock = Clock()
    stored_request = question("web.example")
    reply = stored_request.reply()
    reply.add_answer(RR("web.example", QTYPE.CNAME, ttl=300, rdata=CNAME("Target.Example.")))
    reply.add_answer(RR("Target.Example.", QTYPE.A, ttl=300, rdata=A("10.0.0.1")))
    cache = cache_with(clock, stored_request, reply)

    client = question("wEb.ExAmPlE")
    client.header.id = 4321
    client.header.rd = 0
    raw = cache.get(cache_key(UPSTREAMS, client), client)
    assert raw is not None
    hit = DNSRecord.parse(raw)
    assert hit.header.id == 4321
    assert hit.header.rd == 0
    assert hit.header.qr == 1
    assert str(hit.q.qname) == "wEb.ExAmPlE."
    assert b"wEb\x07ExAmPlE" in raw  # the wire keeps the spelling, not only the parsed label
    owners = [str(rr.rname) for rr in hit.rr]
    assert owners == ["wEb.ExAmPlE.", "Target.Example."]  # only the owner equal to the question
    assert str(hit.rr[0].rdata) == "Target.Example."


def test_r13_nxdomain_cached_for_soa_minimum():
    clock = Clock()
    request = question("gone.example")
    cache = cache_with(clock, request, negative(request, RCODE.NXDOMAIN, soa_ttl=300, minimum=60))
    key = cache_key(UPSTREAMS, request)
    clock.now += 59.5
    hit = DNSRecord.parse(cache.get(key, request))
    assert hit.header.rcode == RCODE.NXDOMAIN
    assert hit.auth[0].ttl == 300 - 59
    clock.now += 0.5
    assert cache.get(key, request) is None


def test_r13_negative_ttl_is_soa_ttl_when_smaller_than_minimum():
    request = question("gone.example")
    assert cache_ttl(negative(request, RCODE.NXDOMAIN, soa_ttl=30, minimum=600)) == 30
    assert cache_ttl(negative(request, RCODE.NXDOMAIN, soa_ttl=300, minimum=60)) == 60


def test_r13_nodata_cached_for_soa_minimum():
    clock = Clock()
    request = question("web.example", "AAAA")
    cache = cache_with(clock, request, negative(request, RCODE.NOERROR, minimum=45))
    key = cache_key(UPSTREAMS, request)
    clock.now += 44.9
    hit = DNSRecord.parse(cache.get(key, request))
    assert (hit.header.rcode, hit.rr) == (RCODE.NOERROR, [])
    clock.now += 0.2
    assert cache.get(key, request) is None


def test_r13_nodata_after_cname_uses_soa_minimum():
    request = question("alias.example", "AAAA")
    reply = negative(request, RCODE.NOERROR, soa_ttl=300, minimum=20)
    reply.add_answer(RR("alias.example", QTYPE.CNAME, ttl=3600, rdata=CNAME("web.example.")))
    assert cache_ttl(reply) == 20


def test_r13_negative_without_soa_not_cached():
    cache = AnswerCache(clock=Clock())
    for qtype, rcode in (("A", RCODE.NXDOMAIN), ("AAAA", RCODE.NOERROR)):
        request = question("gone.example", qtype)
        reply = negative(request, rcode, soa_ttl=None)
        assert not cache.put(cache_key(UPSTREAMS, request), reply.pack())
    assert cache.size == 0


def test_r13_failures_truncation_and_ttl_zero_not_cached():
    cache = AnswerCache(clock=Clock())
    request = question()
    key = cache_key(UPSTREAMS, request)
    for rcode in (RCODE.SERVFAIL, RCODE.REFUSED, RCODE.FORMERR, RCODE.NOTIMP):
        reply = answer(request)
        reply.header.rcode = rcode
        assert not cache.put(key, reply.pack()), RCODE[rcode]
    truncated = answer(request)
    truncated.header.tc = 1
    assert not cache.put(key, truncated.pack())
    assert not cache.put(key, answer(request, ttl=0).pack())
    assert not cache.put(key, b"\x00\x01garbage")
    assert cache.size == 0
    assert cache.get(key, request) is None


def test_r13_lru_bound_drops_least_recently_used():
    clock = Clock()
    cache = AnswerCache(3, clock=clock)
    requests = [question(f"n{i}.example") for i in range(4)]
    keys = [cache_key(UPSTREAMS, r) for r in requests]
    for request, key in zip(requests[:3], keys[:3], strict=True):
        assert cache.put(key, answer(request).pack())
    assert cache.get(keys[0], requests[0]) is not None  # n0 is now the most recent
    cache.put(keys[3], answer(requests[3]).pack())
    assert cache.size == 3
    assert cache.get(keys[1], requests[1]) is None  # n1 was the least recently used
    for i in (0, 2, 3):
        assert cache.get(keys[i], requests[i]) is not None


def test_r13_key_per_upstream_set_and_scope():
    clock = Clock()
    request = question()
    cache = cache_with(clock, request, answer(request))
    assert cache.get(cache_key(UPSTREAMS, request), request) is not None
    assert cache.get(cache_key(("", "127.9.9.9:53"), request), request) is None
    assert cache.get(cache_key(("sandbox-1", "127.1.2.3:53"), request), request) is None


def test_r13_key_separates_type_class_edns_do_cd_and_ad():
    base = cache_key(UPSTREAMS, question())
    assert cache_key(UPSTREAMS, question("WEB.example.")) == base
    assert cache_key(UPSTREAMS, question(qtype="AAAA")) != base
    chaos = question()
    chaos.q.qclass = 3
    assert cache_key(UPSTREAMS, chaos) != base
    with_edns = cache_key(UPSTREAMS, question(edns=True))
    with_do = cache_key(UPSTREAMS, question(edns=True, do=True))
    assert len({base, with_edns, with_do}) == 3
    checking_disabled = question()
    checking_disabled.header.cd = 1
    assert cache_key(UPSTREAMS, checking_disabled) != base
    # An upstream sets AD only for a client that asked with AD (or DO): that reply is not
    # for a client that did not (RFC 6840 5.7).
    understands_ad = question()
    understands_ad.header.ad = 1
    assert cache_key(UPSTREAMS, understands_ad) != base


def test_r13_opt_record_kept_and_not_counted_down():
    clock = Clock()
    request = question(edns=True, do=True)
    reply = answer(request)
    reply.add_ar(EDNS0(udp_len=1232, flags="do"))
    cache = cache_with(clock, request, reply)
    clock.now += 100
    hit = DNSRecord.parse(cache.get(cache_key(UPSTREAMS, request), request))
    opt = [rr for rr in hit.ar if rr.rtype == QTYPE.OPT]
    assert len(opt) == 1
    assert opt[0].ttl & 0x8000  # the DO flag lives in the TTL field; aging must not touch it
    assert hit.rr[0].ttl == 200
