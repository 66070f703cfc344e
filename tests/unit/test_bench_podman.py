"""The pure parts of the podman comparison (bench/podman_dns.py) and bench
(bench/podman_bench.py): reading dig's answer, the cell table, the report."""

from __future__ import annotations

import subprocess

from bench.podman_bench import Result, report
from bench.podman_dns import Cell, answer_of, table

DIG_A = """;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1
;; flags: qr rd ra; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1

web.dns.podman.\t\t86400\tIN\tA\t10.89.0.3
web.dns.podman.\t\t86400\tIN\tA\t10.89.0.2
"""


def done(stdout: str) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(["dig"], 0, stdout, "")


def test_dig_answers_read_as_rcode_and_sorted_records() -> None:
    assert answer_of(done(DIG_A)) == "NOERROR 10.89.0.2 10.89.0.3"
    nx = ";; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 2\n"
    assert answer_of(done(nx)) == "NXDOMAIN (no records)"
    assert answer_of(done(";; connection timed out; no servers could be reached\n")) == "timeout"


def test_the_table_has_a_row_per_question_and_a_column_per_server() -> None:
    name = Cell("container name", "NOERROR 10.0.0.2")
    text = table({
        "netdns": [name, Cell("over TCP", "NOERROR 10.0.0.2")],
        "aardvark": [name, Cell("over TCP", "timeout")],
    })  # fmt: skip
    lines = text.splitlines()
    assert lines[0] == "| question | netdns | aardvark |"
    assert lines[3] == "| over TCP | NOERROR 10.0.0.2 | timeout |"
    assert len(lines) == 4


def test_the_report_gives_medians_ratios_to_netdns_and_start_times() -> None:
    netdns = Result(
        qps={"W1": [100.0, 300.0, 200.0], "W7": [50.0]},
        cpu_us={"W1": [10.0], "W7": [80.0]},
        latencies={"W1": [0.001, 0.002], "W7": [0.01]},
        starts=[0.1, 0.2, 0.3], podman_runs=[0.25],
    )  # fmt: skip
    peer = Result(qps={"W1": [100.0], "W7": [100.0]}, unanswered_starts=2)
    text = report({"netdns (netavark)": netdns, "aardvark (netavark)": peer}, 3, 5.0)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "server" not in line]
    mine, theirs = rows
    assert mine.startswith("| netdns (netavark) | 200 | 10 µs |")
    assert "(netdns 2.00x)" in theirs and "(netdns 0.50x)" in theirs
    assert "none answered (2)" in theirs
    assert "(3)" in mine and mine.endswith("| 250.000 |")  # `podman run` itself, p50
