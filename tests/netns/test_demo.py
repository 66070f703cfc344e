"""`netdns demo` (what `make run` plays) against a real daemon: the tutorial's answers, then a
clean slate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.labs.daemon import running_daemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and links")


def row(out: str, first: str) -> list[str]:
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0] == first and len(cells) == 5:
            return cells[1:]
    raise AssertionError(f"no table row for {first} in:\n{out}")


def test_demo_plays_the_tutorial_and_removes_what_it_made(tmp_path: Path) -> None:
    if any(Path(f"/run/netns/alpine{i}").exists() for i in range(1, 5)):
        pytest.skip("namespaces alpine1..4 exist on this machine: the demo would refuse to run")
    with running_daemon(tmp_path) as daemon:
        done = daemon.cli("demo", timeout=180)
        out = done.stdout
        a1, a2, a3, a4 = (
            row(out, "alpine1"),
            row(out, "alpine2"),
            row(out, "alpine3"),
            row(out, "alpine4"),
        )
        assert a1[1] != "-" and a1[3] != "-"  # alpine1 resolves alpine2 and alpine4
        assert a1[2] == "-" and a4[2] == "-"  # nobody resolves alpine3 (default bridge)
        assert a3 == ["-", "-", "-", "-"]  # and alpine3 resolves nobody
        assert a4[0] == a1[0] and a2[3] == a1[3]
        assert "rule R2" in out
        assert daemon.json("container", "ls") == []
        assert [n["Name"] for n in daemon.json("network", "ls")] == ["bridge", "host", "none"]
