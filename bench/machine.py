"""What the numbers depend on, for the report's header: the machine and every version.

CPU model and cores, kernel, Python and uvloop, the netdns commit (marked when the tree has
uncommitted changes, since then the commit alone does not say what ran), dnsperf and each
peer's version. Probes are bounded subprocess calls; a missing tool says so instead of failing.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from bench.peers import aardvark, dnsmasq

REPO = Path(__file__).resolve().parent.parent
PROBE_TIMEOUT = 5.0


def _output(command: list[str]) -> str:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr if done.returncode == 0 else ""


def cpu_model(cpuinfo: str | None = None) -> str:
    """The `model name` of /proc/cpuinfo (or of CPUINFO's text); 'unknown' without one."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "unknown"
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return "unknown"


def netdns_commit() -> str:
    commit = _output(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"]).strip()
    if not commit:
        return "unknown (not a git checkout)"
    dirty = _output(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    return f"{commit} (with uncommitted changes)" if dirty.strip() else commit


def dnsperf_version() -> str:
    for line in _output(["dnsperf", "-h"]).splitlines():
        if line.startswith("Version"):
            return line.removeprefix("Version").strip()
    return "not installed"


def uvloop_version() -> str:
    try:
        import uvloop
    except ImportError:
        return "not installed (asyncio loop)"
    return uvloop.__version__


def environment() -> dict[str, str]:
    return {
        "host": platform.node(),
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores",
        "kernel": f"Linux {platform.release()}",
        "python": platform.python_version(),
        "uvloop": uvloop_version(),
        "netdns commit": netdns_commit(),
        "dnsperf": dnsperf_version(),
        "aardvark-dns": aardvark.version(),
        "dnsmasq": dnsmasq.version(),
    }
