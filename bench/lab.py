"""What a bench run needs running: the upstream dnsmasq and the servers under test.

Everything lives on random loopback addresses and is torn down on exit, even on failure
(context managers: terminate, wait, kill). The upstream is the bench's own dnsmasq with
--no-resolv: it serves the zone's forwarded names from a hosts file, answers NXDOMAIN for any
other name under bench.test (--local), and never asks anyone else.

A `Target` is one DNS server under test with the address dnsperf queries. This issue has one
target, netdns (`python -m bench.serve` in its own process); later ones add peers
(aardvark-dns, dnsmasq as a resolver) and listeners inside namespaces as more targets beside it.

The dnsmasq runner is the bench's own rather than tests/upstreams.py's `Dnsmasq`: that one
logs every query (--log-queries, read line by line by a Python thread), which at thousands of
queries a second would cost the upstream and the bench process the CPU being measured; it takes
its zone as command-line flags, which does not scale to large zones (here a conf file of
host-record lines); and bench/ should not import from tests/.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dnslib import DNSRecord

from bench.workloads import FORWARD_DOMAIN, Zone
from drivers.errors import Conflict, Invalid, NotFound

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0  # seconds a server gets to answer its first query / say "ready"
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
UPSTREAM_TTL = 300  # TTL of forwarded names, so netdns can cache them (W4)
ADDRESS_ATTEMPTS = 32
# Addresses others use on purpose: the usual host resolvers and netdns's own.
RESERVED = frozenset({"127.0.0.1", "127.0.0.11", "127.0.0.53", "127.0.0.54"})


@dataclass(frozen=True, slots=True)
class Target:
    """One DNS server under test."""

    name: str  # "netdns"; later "aardvark-dns", "dnsmasq", ...
    address: str
    port: int
    log_path: Path | None = None  # its stderr, for a failure report


@dataclass(frozen=True, slots=True)
class Lab:
    zone: Zone
    upstream: str  # "IP" of the bench's dnsmasq, port 53
    targets: tuple[Target, ...]


def free_loopback_address(port: int = 53) -> str:
    """A random 127.x.y.z (outside 127.0.0.0/24) where nobody holds `port` on UDP or TCP."""
    for _ in range(ADDRESS_ATTEMPTS):
        address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        if address in RESERVED:
            continue
        if _port_free(address, port):
            return address
    raise Conflict(f"no loopback address with port {port} free after {ADDRESS_ATTEMPTS} tries")


def _port_free(address: str, port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((address, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return False
                raise
    return True


def _require(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise NotFound(f"{program} is not installed: apt-get install {package}")
    return path


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def _process(
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


def _answers(address: str, port: int, name: str, timeout: float = 0.5) -> bool:
    """Whether a server answers an A query for `name` with an address."""
    query = DNSRecord.question(name, "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(query.pack(), (address, port))
            data, _ = sock.recvfrom(4096)
        except OSError:  # timeout, or port unreachable while it starts
            return False
    reply = DNSRecord.parse(data)
    return reply.header.id == query.header.id and bool(reply.rr)


@contextlib.contextmanager
def upstream_dnsmasq(zone: Zone, workdir: Path) -> Iterator[str]:
    """The bench's upstream: dnsmasq on a fresh loopback address, port 53, serving the zone."""
    dnsmasq = _require("dnsmasq", "dnsmasq")
    address = free_loopback_address()
    # A conf file of host-record lines: dnsmasq reads it as root at start (it drops to user
    # nobody before reading hosts files, which a private temporary directory would hide).
    records = workdir / "upstream.conf"
    records.write_text(
        "".join(f"host-record={name},{ip}\n" for name, ip in zone.forwarded_records())
    )
    log_path = workdir / "upstream-dnsmasq.log"
    command = [
        dnsmasq,
        "--keep-in-foreground",
        f"--conf-file={records}",  # and not the machine's /etc/dnsmasq.conf
        "--no-resolv",  # never the machine's resolv.conf servers
        "--no-poll",
        "--no-hosts",
        f"--local=/{FORWARD_DOMAIN}/",  # other names there: NXDOMAIN, never forwarded
        f"--listen-address={address}",
        "--bind-interfaces",
        "--port=53",
        f"--local-ttl={UPSTREAM_TTL}",
        "--pid-file=",
        f"--log-facility={log_path}",
    ]
    with _process(command, workdir / "upstream-dnsmasq.stderr") as proc:
        probe = next(zone.forwarded_names())
        _wait_until(
            lambda: _answers(address, 53, probe),
            proc,
            f"upstream dnsmasq on {address}:53",
            log_path,
        )
        log.info(
            "upstream dnsmasq on %s:53 serves %d forwarded names under %s",
            address,
            zone.forwarded,
            FORWARD_DOMAIN,
        )
        yield address


def _wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[str], what: str, log_path: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Invalid(f"{what} exited {proc.returncode} at start:\n{_log_tail(log_path)}")
        if ready():
            return
        time.sleep(0.05)
    raise Invalid(f"{what} did not answer within {START_TIMEOUT:.0f} s:\n{_log_tail(log_path)}")


@contextlib.contextmanager
def netdns_server(zone: Zone, upstream: str, workdir: Path) -> Iterator[Target]:
    """`python -m bench.serve` in its own process, on a fresh loopback address, port 53."""
    address = free_loopback_address()
    log_path = workdir / "netdns-serve.log"
    command = [
        sys.executable,
        "-m",
        "bench.serve",
        "--address",
        address,
        "--port",
        "53",
        "--names",
        str(zone.names),
        "--upstream",
        upstream,
        "--log-level",
        "info",
    ]
    # The child imports bench/, resolver/, drivers/ from the repository this file is in,
    # whatever the caller's working directory.
    repo = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    try:
        with _process(command, log_path, stdout=subprocess.PIPE, env=env) as proc:
            host, port = _read_ready(proc, log_path)
            log.info(
                "netdns (bench.serve) on %s:%d with %d container names", host, port, zone.names
            )
            yield Target("netdns", host, port, log_path)
    finally:
        # What the server counted (queries, drops, cache hits), once it has stopped.
        for line in _log_tail(log_path).splitlines():
            if "stopping:" in line:
                log.info("netdns %s", line[line.index("stopping:") :])


def _read_ready(proc: subprocess.Popen[str], log_path: Path) -> tuple[str, int]:
    """Wait (bounded) for the "ready ADDRESS PORT" line bench.serve prints once it listens."""
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
            f"bench.serve {state} instead of saying 'ready' within {START_TIMEOUT:.0f} s "
            f"(got {line.strip()!r}):\n{_log_tail(log_path)}"
        )
    return words[1], int(words[2])


@contextlib.contextmanager
def lab(zone: Zone, workdir: Path) -> Iterator[Lab]:
    """The upstream and every target, started in order and stopped in reverse."""
    workdir.mkdir(parents=True, exist_ok=True)
    with (
        upstream_dnsmasq(zone, workdir) as upstream,
        netdns_server(zone, upstream, workdir) as netdns,
    ):
        yield Lab(zone, upstream, (netdns,))
