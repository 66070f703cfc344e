"""Logs (resolver/logs.py): JSON lines that parse, and the sampled query log.

The formatter is checked on real records through a real handler; the query log through real
queries to a real listener (tests/proto/harness.py), with the sample switched at run time.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from collections.abc import Iterator

import pytest

from drivers.errors import Invalid
from netdns import logs as output
from resolver import logs
from tests.proto.harness import CLIENT1, ServerThread, dig, sample_table


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    query_level = logs.query_log.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        logs.query_log.setLevel(query_level)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def query_records() -> Iterator[Records]:
    handler = Records()
    logs.query_log.addHandler(handler)
    old_level = logs.query_log.level
    logs.query_log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logs.query_log.removeHandler(handler)
        logs.query_log.setLevel(old_level)


def test_json_format_writes_one_object_per_line_with_the_extra_fields(
    restore_root_logging: None,
) -> None:
    out = io.StringIO()
    output.configure("info", "json", out)
    log = logging.getLogger("netdns.test")
    log.info("listener for %s on %s", "web", "127.0.0.11:53", extra={"container": "web"})
    log.debug("not at info")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "listener for web on 127.0.0.11:53"
    assert first["level"] == "info" and first["logger"] == "netdns.test"
    assert first["container"] == "web"
    assert first["time"].endswith("Z") and first["time"][10] == "T"
    assert second["level"] == "error" and "ValueError: boom" in second["traceback"]


def test_text_format_is_the_plain_line(restore_root_logging: None) -> None:
    out = io.StringIO()
    output.configure("warning", "text", out)
    logging.getLogger("netdns.test").warning("upstream %s down", "127.1.2.3:53")
    line = out.getvalue().strip()
    assert line.endswith("WARNING netdns.test: upstream 127.1.2.3:53 down")
    with pytest.raises(ValueError):
        output.configure("info", "xml", out)


def test_a_query_log_line_in_json_carries_every_field(restore_root_logging: None) -> None:
    out = io.StringIO()
    output.configure("warning", "json", out)  # the query log shows whatever --log-level says
    logs.log_query(
        container="web", qname="example.com.", qtype="A", rcode="NOERROR", path="upstream",
        upstream="127.1.2.3:53", elapsed_us=1234,
    )  # fmt: skip
    line = json.loads(out.getvalue())
    assert line["logger"] == "netdns.query" and line["level"] == "info"
    assert {k: line[k] for k in ("container", "qname", "qtype", "rcode", "path")} == {
        "container": "web",
        "qname": "example.com.",
        "qtype": "A",
        "rcode": "NOERROR",
        "path": "upstream",
    }
    assert line["upstream"] == "127.1.2.3:53" and line["elapsed_us"] == 1234


def test_check_sample_takes_0_to_1_only() -> None:
    assert logs.check_sample(0) == 0.0 and logs.check_sample(0.25) == 0.25
    for bad in (-0.1, 1.5, "0.5", True, None):
        with pytest.raises(Invalid, match="sample"):
            logs.check_sample(bad)


@pytest.mark.skipif(shutil.which("dig") is None, reason="needs dig (bind9-dnsutils)")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: listeners prefer port 53")
def test_sampled_query_log_every_query_at_1_and_none_at_0(query_records: Records) -> None:
    with ServerThread(sample_table(), [CLIENT1]) as server:
        assert server.resolver is not None
        resolver = server.resolver
        dig(server, CLIENT1, "web", "A")  # off by default
        assert query_records.records == []
        server.call(lambda: setattr(resolver, "query_sample", 1.0))
        dig(server, CLIENT1, "web", "A")  # the hot cache now
        dig(server, CLIENT1, "db", "AAAA")  # the slow path
        server.call(lambda: setattr(resolver, "query_sample", 0.0))
        dig(server, CLIENT1, "db", "A")
    records = query_records.records
    assert [(r.qname, r.qtype, r.rcode, r.path) for r in records] == [  # type: ignore[attr-defined]
        ("web.", "A", "NOERROR", "hot"),
        ("db.", "AAAA", "NOERROR", "local"),
    ]
    assert all(r.container == "client1" for r in records)  # type: ignore[attr-defined]
    assert all(r.levelno == logging.INFO and r.name == "netdns.query" for r in records)
    assert "query web. A from client1: NOERROR by hot" in records[0].getMessage()


def test_log_throttle_lets_one_message_through_per_interval_and_counts_the_rest() -> None:
    throttle = logs.LogThrottle(10.0)
    assert throttle.due(100.0) == 1
    assert [throttle.due(t) for t in (101.0, 105.0, 109.9)] == [None, None, None]
    assert throttle.due(110.0) == 4  # the three held back and this one
    assert throttle.due(110.5) is None
