"""Running dnsperf (the Debian package) against one server, and reading its summary.

`run_dnsperf` starts one bounded dnsperf run (`-l` seconds, and a hard subprocess timeout a
little above it, so a stuck dnsperf cannot hang the bench), inside the client network namespace
of the target when it has one (`ip netns exec`); `parse_summary` turns the "Statistics:" block
dnsperf prints at the end into a `Summary`. With `-v` dnsperf prints one line per answered
query, `> RCODE NAME TYPE LATENCY`; `run_with_latencies` keeps those latencies
(`parse_latencies`). The parsers are pure and tested on captured real output
(tests/unit/data/dnsperf_sample*.txt).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import subprocess
from array import array
from dataclasses import dataclass
from pathlib import Path

from bench.errors import Invalid, NotFound

log = logging.getLogger(__name__)

DNSPERF = "dnsperf"
# dnsperf waits up to its query timeout (-t) for answers after the time limit; beyond that and
# this margin the run is stuck and is killed.
EXIT_MARGIN = 10.0


@dataclass(frozen=True, slots=True)
class Summary:
    """What one dnsperf run reports; latencies in seconds."""

    sent: int
    completed: int
    lost: int
    qps: float
    run_time: float
    avg_latency: float
    min_latency: float
    max_latency: float
    rcodes: tuple[tuple[str, int], ...]  # ("NOERROR", 3000), ... in dnsperf's order

    @property
    def lost_fraction(self) -> float:
        return self.lost / self.sent if self.sent else 0.0

    def rcode(self, name: str) -> int:
        return dict(self.rcodes).get(name, 0)


@dataclass(frozen=True, slots=True)
class DnsperfRun:
    """One dnsperf invocation: where to, what, how long and how hard."""

    address: str
    port: int
    datafile: Path
    duration: float
    clients: int = 1
    max_qps: int | None = None
    query_timeout: float = 2.0  # dnsperf -t: a query without an answer by then counts as lost
    netns: str | None = None  # named network namespace to run in (the target's client's)
    enter: tuple[str, ...] = ()  # or a command that enters it (nsenter -t PID -n)
    verbose: bool = False  # -v: a line per query, with its latency

    def command(self) -> list[str]:
        command = [
            *(("ip", "netns", "exec", self.netns) if self.netns else self.enter),
            DNSPERF,
            "-s",
            self.address,
            "-p",
            str(self.port),
            "-d",
            str(self.datafile),
            "-l",
            f"{self.duration:g}",
            "-c",
            str(self.clients),
            "-t",
            f"{self.query_timeout:g}",
        ]
        if self.max_qps is not None:
            command += ["-Q", str(self.max_qps)]
        if self.verbose:
            command.append("-v")
        return command


def available() -> bool:
    return shutil.which(DNSPERF) is not None


def run_dnsperf(run: DnsperfRun) -> Summary:
    """Run dnsperf once, bounded in time, and parse its summary.

    Raises NotFound when dnsperf is not installed, Invalid when it fails or prints no summary
    (the message carries the tail of its output).
    """
    return parse_summary(_execute(run))


def run_with_latencies(run: DnsperfRun) -> tuple[Summary, array[float]]:
    """Run dnsperf once with -v: its summary and the latency (s) of every answered query."""
    output = _execute(dataclasses.replace(run, verbose=True))
    return parse_summary(output), parse_latencies(output)


def _execute(run: DnsperfRun) -> str:
    if not available():
        raise NotFound("dnsperf is not installed: apt-get install dnsperf")
    command = run.command()
    log.debug("running %s", " ".join(command))
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=run.duration + run.query_timeout + EXIT_MARGIN,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise Invalid(
            f"dnsperf against {run.address}:{run.port} did not finish within "
            f"{exc.timeout:.0f} s: is the server wedged?"
        ) from exc
    if done.returncode != 0:
        output = _tail(done.stdout + done.stderr)
        raise Invalid(f"dnsperf exited {done.returncode}: {' '.join(command)}\n{output}")
    return done.stdout


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


_COUNT = r"\s*(\d+)"
_FLOAT = r"\s*([0-9.]+)"
_PATTERNS: dict[str, re.Pattern[str]] = {
    "sent": re.compile(r"^\s*Queries sent:" + _COUNT, re.M),
    "completed": re.compile(r"^\s*Queries completed:" + _COUNT, re.M),
    "lost": re.compile(r"^\s*Queries lost:" + _COUNT, re.M),
    "qps": re.compile(r"^\s*Queries per second:" + _FLOAT, re.M),
    "run_time": re.compile(r"^\s*Run time \(s\):" + _FLOAT, re.M),
}
_LATENCY = re.compile(
    r"^\s*Average Latency \(s\):" + _FLOAT + r"\s*\(min" + _FLOAT + r",\s*max" + _FLOAT + r"\)",
    re.M,
)
_RCODES = re.compile(r"^\s*Response codes:(.*)$", re.M)
_RCODE = re.compile(r"([A-Z][A-Z0-9]*)\s+(\d+)\s*\(")


def parse_latencies(text: str) -> array[float]:
    """The latency in seconds of each `> RCODE NAME TYPE LATENCY` line of dnsperf -v output.

    A timed-out query (`> T NAME TYPE`) has no latency: it is counted as lost in the summary.
    """
    latencies = array("d")
    for line in text.splitlines():
        if line.startswith("> ") and not line.startswith("> T "):
            _, _, value = line.rpartition(" ")
            try:
                latencies.append(float(value))
            except ValueError as exc:
                raise Invalid(f"dnsperf -v line without a latency: {line!r}") from exc
    return latencies


def parse_summary(text: str) -> Summary:
    """The numbers of dnsperf's final "Statistics:" block; Invalid when it is missing."""
    _, marker, statistics = text.rpartition("Statistics:")
    if not marker:
        raise Invalid(f"no 'Statistics:' block in dnsperf output:\n{_tail(text)}")
    values: dict[str, str] = {}
    for key, pattern in _PATTERNS.items():
        match = pattern.search(statistics)
        if match is None:
            raise Invalid(f"dnsperf summary has no {key!r} line:\n{_tail(statistics)}")
        values[key] = match.group(1)
    latency = _LATENCY.search(statistics)
    if latency is None:
        raise Invalid(f"dnsperf summary has no latency line:\n{_tail(statistics)}")
    rcodes_line = _RCODES.search(statistics)
    rcodes = _RCODE.findall(rcodes_line.group(1)) if rcodes_line else []
    return Summary(
        sent=int(values["sent"]),
        completed=int(values["completed"]),
        lost=int(values["lost"]),
        qps=float(values["qps"]),
        run_time=float(values["run_time"]),
        avg_latency=float(latency.group(1)),
        min_latency=float(latency.group(2)),
        max_latency=float(latency.group(3)),
        rcodes=tuple((name, int(count)) for name, count in rcodes),
    )
