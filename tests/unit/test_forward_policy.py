"""R11: upstream strings, reply matching, budget shares and health memory. No sockets."""

from __future__ import annotations

import socket

import pytest
from dnslib import RCODE, DNSRecord

from drivers.errors import Invalid
from resolver.forward.policy import Health, moves_on, try_timeout
from resolver.forward.upstream import Server, is_reply_to, parse_server
from resolver.wire import question_of


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "host", "port", "canonical"),
    [
        ("127.1.2.3", "127.1.2.3", 53, "127.1.2.3:53"),
        (" 10.0.0.2:5353 ", "10.0.0.2", 5353, "10.0.0.2:5353"),
        ("2001:db8::1", "2001:db8::1", 53, "[2001:db8::1]:53"),
        ("[2001:DB8::1]:5300", "2001:db8::1", 5300, "[2001:db8::1]:5300"),
        ("[::1]", "::1", 53, "[::1]:53"),
    ],
)
def test_r11_server_strings_parse(text, host, port, canonical):
    server = parse_server(text)
    assert server == Server(host, port)
    assert str(server) == canonical
    assert parse_server(canonical) == server


def test_r11_server_family():
    assert parse_server("127.1.2.3").family == socket.AF_INET
    assert parse_server("[::1]:53").family == socket.AF_INET6


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("dns.example", "not an IP address"),
        ("10.0.0.300", "not an IP address"),
        ("10.0.0.1:0", "port"),
        ("10.0.0.1:70000", "port"),
        ("10.0.0.1:dns", "port"),
        ("[2001:db8::1", "[IPv6]:PORT"),
        ("[2001:db8::1]53", "[IPv6]:PORT"),
        ("fe80::1%eth0", "scoped"),
        ("", "not an IP address"),
    ],
)
def test_r11_bad_server_strings_are_invalid_and_named(text, says):
    with pytest.raises(Invalid) as caught:
        parse_server(text)
    assert says in str(caught.value)
    assert repr(text) in str(caught.value)


def test_r11_reply_must_match_id_qr_and_question():
    query = DNSRecord.question("Web.Example", "A")
    query.header.id = 777
    question = question_of(query.pack())
    reply = DNSRecord.question("wEB.eXAMPLE", "A").reply()
    reply.header.id = 777
    assert is_reply_to(reply.pack(), 777, question)  # names compare case-insensitively
    assert not is_reply_to(reply.pack(), 778, question)
    assert not is_reply_to(query.pack(), 777, question)  # QR clear: not a reply
    other_name = DNSRecord.question("web.example.org", "A").reply()
    other_name.header.id = 777
    assert not is_reply_to(other_name.pack(), 777, question)
    other_type = DNSRecord.question("web.example", "AAAA").reply()
    other_type.header.id = 777
    assert not is_reply_to(other_type.pack(), 777, question)
    assert not is_reply_to(reply.pack()[:12], 777, question)  # no question at all


def test_r11_question_type_bytes_are_not_case_folded():
    # Type 65 (HTTPS) is 0x0041, 'A' in ASCII; folding it would make HTTPS match type 97.
    https = question_of(DNSRecord.question("web.example", "HTTPS").pack())
    type97 = bytearray(DNSRecord.question("web.example", "HTTPS").pack())
    type97[-3] = 97
    assert https is not None
    assert https != question_of(bytes(type97))


def test_r11_failover_rcodes():
    def reply(rcode: int) -> bytes:
        record = DNSRecord.question("web.example").reply()
        record.header.rcode = rcode
        return record.pack()

    assert moves_on(reply(RCODE.SERVFAIL))
    assert moves_on(reply(RCODE.REFUSED))
    for rcode in (RCODE.NOERROR, RCODE.NXDOMAIN, RCODE.FORMERR, RCODE.NOTIMP):
        assert not moves_on(reply(rcode)), RCODE[rcode]


def test_r11_budget_shared_equally_among_upstreams_left():
    assert try_timeout(4.0, 3) == pytest.approx(4.0 / 3)
    # the first timed out after its share: the second gets half of what is left, and so on
    assert try_timeout(4.0 - 4.0 / 3, 2) == pytest.approx(4.0 / 3)
    assert try_timeout(0.5, 1) == 0.5
    assert try_timeout(-0.1, 2) == 0.0


def test_r11_health_keeps_order_until_max_failures():
    health = Health(max_failures=3, hold=30.0, clock=Clock())
    health.failed("a")
    health.failed("a")
    assert health.order(["a", "b", "c"]) == ["a", "b", "c"]
    health.failed("a")
    assert health.held("a")
    assert health.order(["a", "b", "c"]) == ["b", "c", "a"]


def test_r11_health_of_a_removed_sandboxs_own_upstreams_is_forgotten():
    health = Health(max_failures=1, clock=Clock())
    for key in [("box1", "a"), ("box1", "b"), ("box2", "a"), ("", "a")]:
        health.failed(key)
    health.forget("box1")
    assert health.down() == {("box2", "a"), ("", "a")}


def test_r11_health_success_resets_the_count():
    health = Health(max_failures=3, clock=Clock())
    health.failed("a")
    health.failed("a")
    health.succeeded("a")
    health.failed("a")
    health.failed("a")
    assert health.order(["a", "b"]) == ["a", "b"]


def test_r11_health_probes_back_after_hold_once_per_period():
    clock = Clock()
    health = Health(max_failures=3, hold=30.0, clock=clock)
    for _ in range(3):
        health.failed("a")
    clock.now += 29.9
    assert health.order(["a", "b"]) == ["b", "a"]
    clock.now += 0.2
    assert health.order(["a", "b"]) == ["a", "b"]  # this query probes it in its own place
    assert health.order(["a", "b"]) == ["b", "a"]  # while the probe runs, others keep it last
    health.failed("a")  # the probe failed: held for another period
    clock.now += 29.0
    assert health.order(["a", "b"]) == ["b", "a"]
    clock.now += 1.1
    assert health.order(["a", "b"]) == ["a", "b"]
    health.succeeded("a")  # the probe answered: its place is back for every query
    assert not health.held("a")
    assert health.order(["a", "b"]) == ["a", "b"]
    assert health.order(["a", "b"]) == ["a", "b"]


def test_r11_health_is_per_key():
    health = Health(max_failures=1, clock=Clock())
    health.failed(("sandbox-1", "10.0.0.2:53"))
    assert health.order([("", "10.0.0.2:53"), ("", "10.0.0.3:53")])[0] == ("", "10.0.0.2:53")
    assert health.held(("sandbox-1", "10.0.0.2:53"))
