"""`python -m bench` end to end, briefly: a real netdns listener process, the bench's dnsmasq
upstream and real dnsperf runs; the table must show traffic for local and forwarded names."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(
        shutil.which("dnsperf") is None, reason="needs dnsperf: apt-get install dnsperf"
    ),
    pytest.mark.skipif(
        shutil.which("dnsmasq") is None, reason="needs dnsmasq: apt-get install dnsmasq"
    ),
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root: the listener and upstream bind port 53"
    ),
]

ROW = re.compile(r"^\| (?P<target>[^|]+) \| (?P<workload>W\d+)[^|]* \| (?P<qps>[0-9.]+) \|", re.M)


def test_bench_quick_run_reports_positive_qps_for_local_and_forwarded_names(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "bench",
        "--quick",
        "--duration",
        "1",
        "--runs",
        "1",
        "--names",
        "100",
        "--rates",
        "5000",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}"

    qps = {m["workload"]: float(m["qps"]) for m in ROW.finditer(done.stdout)}
    assert qps.get("W1", 0) > 0, f"no W1 traffic in:\n{done.stdout}"
    assert qps.get("W4", 0) > 0, f"no W4 traffic in:\n{done.stdout}"
    # Every query of W7 is a real forward; the ceiling is measured beside netdns.
    assert qps.get("W7", 0) > 0, f"no W7 traffic in:\n{done.stdout}"
    assert re.search(r"^\| ceiling \| W1 ", done.stdout, re.M), done.stdout
    assert "| netdns / ceiling |" in done.stdout
    # One progress line per step went to stderr, and the report file holds the same table.
    assert "netdns W1 run 1/1" in done.stderr
    reports = list(tmp_path.glob("*.md"))
    assert len(reports) == 1
    assert reports[0].read_text().strip() == done.stdout.strip()
