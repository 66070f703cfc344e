"""Child processes of the bench and the checks that say they are ready.

- `child_process`: a process that is stopped (SIGTERM, then SIGKILL) and reaped however the
  bench leaves, with its output in a log file.
- `wait_until`: poll a readiness check, bounded, failing early when the process exits.
- `read_ready`: the "ready ADDRESS PORT" line a bench server prints once it listens.
- `answers`: whether a DNS server gives an address for a name, optionally asked from inside a
  network namespace (the servers of the lab are reachable only there).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from dnslib import DNSRecord

from bench.errors import Invalid
from resolver.netns import in_netns

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0  # seconds a server gets to answer its first query / say "ready"
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
PROBE_TIMEOUT = 0.5
NETNS_DIR = "/run/netns"


def netns_path(name: str) -> str:
    """Where `ip netns add NAME` puts the namespace file."""
    return f"{NETNS_DIR}/{name}"


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def child_process(
    command: list[str],
    log_path: Path,
    *,
    stdout: int | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """A child process that is stopped (SIGTERM, then SIGKILL) and reaped however we leave."""
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else log_file,
            stderr=log_file,
            text=True,
            env=env,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    log.warning("%s ignored SIGTERM; killing it", command[0])
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[str] | None, what: str, log_path: Path
) -> None:
    """Poll READY every 50 ms for START_TIMEOUT; Invalid (with the log's tail) on failure."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise Invalid(f"{what} exited {proc.returncode} at start:\n{log_tail(log_path)}")
        if ready():
            return
        time.sleep(0.05)
    raise Invalid(f"{what} did not answer within {START_TIMEOUT:.0f} s:\n{log_tail(log_path)}")


def read_ready(proc: subprocess.Popen[str], log_path: Path, what: str) -> tuple[str, int]:
    """Wait (bounded) for the "ready ADDRESS PORT" line a bench server prints once it listens."""
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline() if readable else ""
    words = line.split()
    if len(words) != 3 or words[0] != "ready":
        if readable and not line:
            # End of output: it is exiting; give it a moment to be reaped, for the message.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1.0)
        state = f"exited {proc.returncode}" if proc.returncode is not None else "is silent"
        raise Invalid(
            f"{what} {state} instead of saying 'ready' within {START_TIMEOUT:.0f} s "
            f"(got {line.strip()!r}):\n{log_tail(log_path)}"
        )
    return words[1], int(words[2])


def _answers_here(address: str, port: int, name: str) -> bool:
    query = DNSRecord.question(name, "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(PROBE_TIMEOUT)
        try:
            sock.sendto(query.pack(), (address, port))
            data, _ = sock.recvfrom(4096)
        except OSError:  # timeout, or port unreachable while it starts
            return False
    reply = DNSRecord.parse(data)
    return reply.header.id == query.header.id and bool(reply.rr)


def answers(address: str, port: int, name: str, netns: str | None = None) -> bool:
    """Whether the server at ADDRESS:PORT answers an A query for NAME with an address, asked
    from the named network namespace NETNS (the calling thread's own when None)."""
    if netns is None:
        return _answers_here(address, port, name)
    return in_netns(netns_path(netns), lambda: _answers_here(address, port, name))
