"""CPU time of a server process, read from /proc: steadier than queries per second on a small,
noisy machine, since it does not count the time the server waited for a core.

`parse_stat` is pure (tests/unit/test_bench_cpu.py); `cpu_seconds` reads /proc/PID/stat, whose
utime and stime cover every thread of the process.
"""

from __future__ import annotations

import os

from bench.errors import Invalid

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Fields after the command name (which is in parentheses and may hold spaces): state is the
# first, utime the 12th and stime the 13th (proc(5) numbers them 3, 14 and 15).
_UTIME = 11
_STIME = 12


def parse_stat(text: str, ticks: int = CLOCK_TICKS) -> float:
    """User plus system CPU seconds from the text of /proc/PID/stat."""
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) <= _STIME:
        raise Invalid(f"not a /proc/PID/stat line: {text[:80]!r}")
    return (int(fields[_UTIME]) + int(fields[_STIME])) / ticks


def cpu_seconds(pid: int | None) -> float | None:
    """The process's CPU seconds so far, or None without a pid or once it is gone."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return parse_stat(stat.read())
    except OSError:
        return None
