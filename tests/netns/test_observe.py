"""Observing a real daemon: `netdns events`, `/metrics` and the query log, end to end.

One daemon (with --log-format json) for the module, driven through the real CLI; queries are
real dig runs inside the containers it made; its metrics are parsed with prometheus_client's
parser. The last test stops a daemon of its own under a following `netdns events`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Empty, Queue

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.labs.daemon import NETDNS, OUTSIDE_NAME, DaemonProcess, running_daemon, suffix
from netdns.client import Client

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and links")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with running_daemon(tmp_path_factory.mktemp("observe"), "--log-format", "json") as d:
        yield d


def events(d: DaemonProcess, *args: str) -> list[dict]:
    done = d.cli("events", "--no-follow", "--format", "json", *args, timeout=20)
    return [json.loads(line) for line in done.stdout.splitlines()]


class Follower:
    """`netdns events --format json` running in the background, its lines in a queue."""

    def __init__(self, d: DaemonProcess, *args: str) -> None:
        self.process = subprocess.Popen(
            [*NETDNS, "events", "--format", "json", *args],
            env=d.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # As a background job of a script starts it (and the suite, run in the
            # background, started it before): SIGINT ignored, which `interrupt` must still end.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
        self.lines: Queue[dict] = Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def until(self, found: Callable[[dict], bool], timeout: float = 10) -> list[dict]:
        """Lines up to and with the first one `found` accepts."""
        seen: list[dict] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except Empty:
                raise AssertionError(f"no such event line within {timeout} s; saw {seen}") from None
            seen.append(line)
            if found(line):
                return seen

    def interrupt(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        assert self.process.stderr is not None
        return self.process.returncode, self.process.stderr.read()


def metrics(d: DaemonProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = Client(f"unix://{d.socket}").metrics()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def query_lines(d: DaemonProcess, qname: str) -> list[dict]:
    found = []
    for line in d.logs().splitlines():
        record = json.loads(line)  # every line of a --log-format json daemon is JSON
        if record["logger"] == "netdns.query" and record.get("qname") == qname:
            found.append(record)
    return found


def test_events_list_a_network_create_then_a_container_create_with_seqs(
    daemon: DaemonProcess,
) -> None:
    s = suffix()
    net, box = f"ev-{s}", f"evc-{s}"
    daemon.network(net)
    daemon.container(box, "--network", net)
    lines = events(daemon)
    seqs = [e["seq"] for e in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    kinds = [
        (e["type"], e.get("network"), e.get("container"))
        for e in lines
        if e.get("network") == net or e.get("container") == box
    ]
    assert kinds == [
        ("network.create", net, None),
        ("container.create", None, box),
        ("endpoint.attach", net, box),
    ]
    attach = next(e for e in lines if e["type"] == "endpoint.attach" and e["container"] == box)
    assert attach["addresses"] and attach["object"]["name"] == box and "host" not in attach
    assert json.loads(daemon.cli("events", "--no-follow").stdout.splitlines()[-1])["seq"]
    text = daemon.cli("events", "--no-follow", "--format", "text").stdout
    assert f"endpoint.attach container={box} network={net}" in text


def test_a_follower_sees_a_container_created_after_it_started(daemon: DaemonProcess) -> None:
    s = suffix()
    net, box = f"fo-{s}", f"foc-{s}"
    daemon.network(net)
    last = events(daemon)[-1]["seq"]
    follower = Follower(daemon)
    try:
        follower.until(lambda e: e.get("seq") == last)  # the replay is done: it is live now
        daemon.container(box, "--network", net)
        seen = follower.until(lambda e: e["type"] == "endpoint.attach" and e["container"] == box)
        assert [e["type"] for e in seen if e.get("container") == box] == [
            "container.create",
            "endpoint.attach",
        ]
        assert all(e["seq"] > last for e in seen)
    finally:
        code, err = follower.interrupt()
    assert (code, err) == (0, "")  # Ctrl-C ends it quietly


def test_events_resume_after_a_seq(daemon: DaemonProcess) -> None:
    s = suffix()
    net = f"rs-{s}"
    daemon.network(net)
    seq = next(e["seq"] for e in events(daemon) if e.get("network") == net)
    assert events(daemon, "--since", str(seq - 1))[0]["seq"] == seq
    assert all(e["seq"] > seq for e in events(daemon, "--since", str(seq)))
    assert [e["seq"] for e in events(daemon, "--since", str(seq - 1), "--until", str(seq))] == [seq]
    bad = daemon.cli("events", "--since", "yesterday", check=False)
    assert bad.returncode != 0 and "since 'yesterday'" in bad.stderr


def test_metrics_count_dig_queries_from_a_container(daemon: DaemonProcess) -> None:
    s = suffix()
    net, client, web = f"mx-{s}", f"mxc-{s}", f"mxw-{s}"
    daemon.network(net)
    daemon.container(client, "--network", net)
    daemon.container(web, "--network", net)
    before = metrics(daemon)
    for _ in range(3):
        assert daemon.dig(client, "+short", web).stdout.strip()
    assert daemon.dig(client, "+short", "AAAA", web).returncode == 0
    assert daemon.dig(client, "+short", OUTSIDE_NAME).stdout.strip()
    after = metrics(daemon)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    a_local = grew("netdns_queries_total", type="A", rcode="NOERROR", path="local")
    a_hot = grew("netdns_queries_total", type="A", rcode="NOERROR", path="hot")
    assert a_local + a_hot == 3 and a_hot >= 2  # the first asks the table, the rest the hot cache
    assert grew("netdns_queries_total", type="AAAA", rcode="NOERROR", path="local") == 1
    assert grew("netdns_queries_total", type="A", rcode="NOERROR", path="upstream") >= 1
    assert grew("netdns_upstream_answers_total", upstream=daemon.upstream) >= 1
    assert after[("netdns_upstream_up", (("upstream", daemon.upstream),))] == 1
    assert after[("netdns_endpoints", (("host", ""), ("network", net)))] == 2
    assert after[("netdns_listeners_running", ())] >= 2
    assert after[("netdns_event_lag_seconds_count", ())] > 0
    assert grew("netdns_events_total", type="container.create") == 0  # made before `before`


def test_querylog_sample_1_logs_a_dig_query_and_0_logs_none(daemon: DaemonProcess) -> None:
    s = suffix()
    net, client = f"ql-{s}", f"qlc-{s}"
    daemon.network(net)
    daemon.container(client, "--network", net)
    assert daemon.cli("querylog").stdout.strip() == "query log: off"
    try:
        shown = daemon.cli("querylog", "--sample", "1").stdout.strip()
        assert shown == "query log: every query (sample 1)"
        logged = f"on-{s}.{OUTSIDE_NAME}."
        daemon.dig(client, logged)
        assert json.loads(daemon.cli("querylog", "--format", "json").stdout) == {"sample": 1.0}
    finally:
        daemon.cli("querylog", "--off")
    silent = f"off-{s}.{OUTSIDE_NAME}."
    daemon.dig(client, silent)
    daemon.dig(client, silent)
    time.sleep(0.2)
    [line] = query_lines(daemon, logged)
    assert line["container"] == client and line["qtype"] == "A" and line["level"] == "info"
    assert line["path"] == "upstream" and line["upstream"] == daemon.upstream
    assert line["rcode"] == "NOERROR" and isinstance(line["elapsed_us"], int)
    assert query_lines(daemon, silent) == []
    bad = daemon.cli("querylog", "--sample", "2", check=False)
    assert bad.returncode != 0 and "0 (off) to 1" in bad.stderr


def test_a_follower_ends_cleanly_when_the_daemon_stops(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as d:
        follower = Follower(d)
        follower.until(lambda e: e.get("network") == "bridge")  # replayed at start
        started = time.monotonic()
        assert d.stop() == 0
        follower.process.wait(timeout=10)
        assert time.monotonic() - started < 10
        assert follower.process.returncode == 0
