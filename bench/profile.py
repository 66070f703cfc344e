"""Where netdns spends its time during a bench run: py-spy sampling the server process.

`--profile` makes the bench run `py-spy record` against the netdns server during the first
netdns run of each workload (non-blocking sampling, so the server is not paused) and puts the
top entries in the report: the functions the samples were in (own time) and the ones on the
stack (total time), as shares of the samples. Idle samples (the loop waiting in epoll) are
left out by py-spy, so the shares are of the time the server was busy.

`top_entries` is pure over py-spy's raw (collapsed stacks) format: one line per distinct
stack, frames separated by ';' from the outermost, then a space and the sample count.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RATE = 250  # samples a second
TOP = 12


@dataclass(frozen=True, slots=True)
class Profile:
    workload: str
    samples: int
    own: tuple[tuple[str, float], ...]  # (frame, share of samples), largest first
    total: tuple[tuple[str, float], ...]


def py_spy() -> str | None:
    """py-spy from PATH, or beside this Python (the project's venv is rarely on PATH)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def top_entries(workload: str, raw: str, top: int = TOP) -> Profile:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in dict.fromkeys(frames):  # a recursive frame counts once per sample
            total[frame] += count

    def shares(counter: Counter[str]) -> tuple[tuple[str, float], ...]:
        return tuple((f, n / samples) for f, n in counter.most_common(top)) if samples else ()

    return Profile(workload, samples, shares(own), shares(total))


def _short(frame: str) -> str:
    """'answer (resolver/hot.py:300)' with the path cut to the repository or library."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
    for top_level in ("resolver/", "drivers/", "bench/"):
        if top_level in where:
            where = top_level + where.split(top_level, 1)[1]
    # Line numbers split one function into many entries; the function is what matters here.
    where = where.rsplit(":", 1)[0]
    return f"{name} ({where})" if where else name


@contextlib.contextmanager
def recording(pid: int | None, seconds: float, out: Path) -> Iterator[None]:
    """Sample PID for SECONDS into OUT (raw format) while the block runs; no-op without py-spy."""
    binary = py_spy()
    if binary is None or pid is None:
        yield
        return
    command = [
        binary, "record", "--pid", str(pid), "--duration", f"{max(1, int(seconds))}",
        "--rate", str(RATE), "--format", "raw", "--nonblocking", "--output", str(out),
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            yield
        finally:
            try:
                _, err = proc.communicate(timeout=seconds + 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if proc.returncode != 0:
                log.warning("py-spy exited %s: %s", proc.returncode, err.strip()[-300:])


def render(profiles: list[Profile]) -> str:
    lines: list[str] = []
    for p in profiles:
        lines += [
            f"{p.workload}: {p.samples} samples of the busy server (py-spy, {RATE}/s)",
            "",
            "| own time | function | | total time | function |",
            "|---:|---|---|---:|---|",
        ]
        for index in range(max(len(p.own), len(p.total))):
            own = p.own[index] if index < len(p.own) else ("", 0.0)
            total = p.total[index] if index < len(p.total) else ("", 0.0)
            lines.append(
                f"| {100 * own[1]:.1f}% | `{own[0]}` | | {100 * total[1]:.1f}% | `{total[0]}` |"
            )
        lines.append("")
    return "\n".join(lines)
