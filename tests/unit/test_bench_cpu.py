"""The bench's CPU readings (bench/cpu.py) and the Python ceiling's canned reply
(bench/ceiling.py)."""

from __future__ import annotations

import os

import pytest
from dnslib import QTYPE, DNSRecord

from bench.ceiling import canned_reply
from bench.cpu import cpu_seconds, parse_stat
from bench.errors import Invalid

# /proc/PID/stat of a process whose name holds a space and a parenthesis.
STAT = (
    "4242 (bench (x) y) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 130 0 0 20 0 3 0 "
    "12345 100000 2000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0"
)


def test_parse_stat_adds_user_and_system_ticks_after_the_command_name() -> None:
    assert parse_stat(STAT, ticks=100) == pytest.approx(3.8)  # (250 + 130) / 100
    with pytest.raises(Invalid):
        parse_stat("4242 (cut short) S 1", ticks=100)


def test_cpu_seconds_of_this_process_grows_and_of_none_is_none() -> None:
    before = cpu_seconds(os.getpid())
    assert before is not None
    deadline = before + 0.05
    while (now := cpu_seconds(os.getpid())) is not None and now < deadline:
        sum(range(10_000))
    assert now is not None and now >= deadline
    assert cpu_seconds(None) is None


def test_canned_reply_answers_behind_the_query_id_and_question() -> None:
    query = DNSRecord.question("C17.Example", "AAAA")
    reply = DNSRecord.parse(canned_reply(query.pack()))
    assert reply.header.id == query.header.id and reply.header.qr == 1
    assert str(reply.q.qname) == "C17.Example." and reply.q.qtype == QTYPE.AAAA
    assert [(str(rr.rname), str(rr.rdata)) for rr in reply.rr] == [("C17.Example.", "10.128.0.2")]
    assert canned_reply(b"\x00" * 12) is None
