"""`python -m bench` with every peer, briefly: netdns through the 127.0.0.11:53 redirect in its
client namespace, aardvark-dns on the lab bridge's gateway, dnsmasq as a resolver; each must
answer local names (W1) and PTR (W6) with NOERROR, and the lab's namespaces must be gone after."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.peers import aardvark

REPO = Path(__file__).resolve().parents[2]
PEERS = ("netdns", "aardvark-dns", "dnsmasq")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the lab makes namespaces"),
    *(
        pytest.mark.skipif(shutil.which(tool) is None, reason=f"needs {tool}: apt install {pkg}")
        for tool, pkg in (("dnsperf", "dnsperf"), ("dnsmasq", "dnsmasq"), ("nft", "nftables"))
    ),
    pytest.mark.skipif(
        aardvark.binary() is None, reason="needs aardvark-dns: apt-get install aardvark-dns"
    ),
]

ROW = re.compile(
    r"^\| (?P<target>[a-z-]+) \| (?P<workload>W\d+)[^|]* \| (?P<qps>[0-9.]+) \| [^|]+ \| "
    r"(?P<lost>[0-9.]+) \| [^|]+ \| (?P<cpu>[0-9.]+) \| (?P<rcodes>[^|]+) \|$",
    re.M,
)
LAB = re.compile(r"bridge br-nd\w+ in (?P<host>ndh-\w+), clients (?P<clients>.*)$", re.M)


def test_bench_every_peer_answers_w1_and_w6_with_noerror_and_the_lab_is_removed(
    tmp_path: Path,
) -> None:
    command = [
        sys.executable, "-m", "bench", "--quick", "--duration", "1", "--runs", "1",
        "--names", "100", "--peers", "netdns,aardvark,dnsmasq", "--workloads", "W1,W6",
        "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}"

    rows = {(m["target"], m["workload"]): m for m in ROW.finditer(done.stdout)}
    for peer in PEERS:
        for workload in ("W1", "W6"):
            row = rows.get((peer, workload))
            assert row is not None, f"no {peer} {workload} row in:\n{done.stdout}"
            assert float(row["qps"]) > 0, f"{peer} {workload} answered nothing:\n{done.stdout}"
            assert row["rcodes"].strip() == "NOERROR 100%", f"{peer} {workload}: {row['rcodes']}"
            assert float(row["lost"]) < 1.0, f"{peer} {workload} lost {row['lost']}%"
            # The server's CPU time per query, read from /proc around the run.
            assert float(row["cpu"]) > 0, f"{peer} {workload}: no CPU time read"
    # Ratios against both peers, for QPS and CPU per query, latency rows of a local and a
    # forwarded workload at both fixed rates, and the plots.
    assert done.stdout.count("| netdns / aardvark-dns | netdns / dnsmasq |") == 2
    assert "| Workload | netdns us/query |" in done.stdout
    for peer in PEERS:
        for workload in ("W1", "W7"):
            for rate in (5000, 20000):
                assert f"| {peer} | {workload} | {rate} |" in done.stdout
    (report,) = tmp_path.glob("*.md")
    assert report.read_text().strip() == done.stdout.strip()
    plots = sorted(p.name for p in (tmp_path / report.stem).iterdir())
    assert plots == ["latency-cdf.png", "throughput.png"]
    assert all((tmp_path / report.stem / p).stat().st_size > 1000 for p in plots)

    lab = LAB.search(done.stderr)
    assert lab is not None, f"no lab line in:\n{done.stderr}"
    made = [lab["host"], *re.findall(r"ndc-\w+-\w+", lab["clients"])]
    assert len(made) == 4
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    left = [name for name in made if re.search(rf"^{name}\b", listed.stdout, re.M)]
    assert not left, f"namespaces left behind: {left}"
    assert not Path(f"/etc/netns/{lab['host']}").exists()
