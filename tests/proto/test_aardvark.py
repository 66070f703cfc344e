"""netdns-aardvark run as netavark runs aardvark-dns (`--config DIR -p PORT run`), on loopback:
the gateway and the containers' addresses are 127.x addresses, each client socket bound to its
container's address, so the server tells the askers apart by source address as it does on a
podman bridge. The upstream is a stand-in (bench/labs/upstreams.py) named by
NETDNS_AARDVARK_DNS. tests/netns/test_podman.py runs the same command under podman itself."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from bench.labs.upstreams import Fault, FaultUpstream, free_loopback_address
from netdns.aardvark.config import PID_FILE

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: upstreams on port 53")

COMMAND = [sys.executable, "-m", "netdns.aardvark.main"]
WEB_ID = "a1" * 32
DB_ID = "b2" * 32


@dataclass
class Lab:
    config: Path
    port: int
    gateway: str
    web: str  # the addresses of the two containers
    db: str
    upstream: FaultUpstream
    log: Path

    def write(self, *lines: str) -> None:
        """The network file, replaced whole as netavark writes it, then SIGHUP."""
        tmp = self.config / ".podnet.tmp"
        tmp.write_text("\n".join([self.gateway, *lines]) + "\n")
        tmp.rename(self.config / "podnet")

    @property
    def pid(self) -> int:
        return int((self.config / PID_FILE).read_text())

    def ask(self, name: str, qtype: str = "A", *, source: str = "", tcp: bool = False,
            timeout: float = 5.0) -> DNSRecord:  # fmt: skip
        query = DNSRecord.question(name, qtype).pack()
        kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.settimeout(timeout)
            sock.bind((source or self.db, 0))
            sock.connect((self.gateway, self.port))
            if tcp:
                sock.sendall(len(query).to_bytes(2, "big") + query)
                length = int.from_bytes(sock.recv(2), "big")
                data = b""
                while len(data) < length:
                    data += sock.recv(length - len(data))
                return DNSRecord.parse(data)
            sock.send(query)
            return DNSRecord.parse(sock.recv(65535))

    def run(self, *extra: str, upstreams: str = "") -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "NETDNS_AARDVARK_DNS": upstreams or self.upstream.server,
               "NETDNS_AARDVARK_LOG": str(self.log)}  # fmt: skip
        return subprocess.run(
            [*COMMAND, "--config", str(self.config), "-p", str(self.port), *extra, "run"],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip


def free_port(address: str) -> int:
    for _ in range(50):
        port = random.randint(20000, 60000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            try:
                u.bind((address, port))
                t.bind((address, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    gateway = free_loopback_address(53)
    prefix = gateway.rsplit(".", 1)[0]
    web, db = f"{prefix}.201", f"{prefix}.202"
    config = tmp_path / "aardvark-dns"
    config.mkdir()
    with FaultUpstream(answer_address="192.0.2.77") as upstream:
        lab = Lab(config, free_port(gateway), gateway, web, db, upstream, tmp_path / "log")
        lab.write(f"{WEB_ID} {web}  web,www,{WEB_ID[:12]}", f"{DB_ID} {db}  db")
        try:
            yield lab
        finally:
            pid_file = config / PID_FILE
            if pid_file.exists():
                pid = int(pid_file.read_text())
                with_timeout_kill(pid)
            if lab.log.exists():
                print(lab.log.read_text())  # shown when the test fails


def with_timeout_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def wait_for(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def addresses(reply: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr if rr.rtype in (QTYPE.A, QTYPE.AAAA))


def test_run_returns_once_it_listens_and_answers_each_container_by_its_address(lab: Lab) -> None:
    done = lab.run()
    assert done.returncode == 0, done.stderr
    assert lab.pid != os.getpid()
    os.kill(lab.pid, 0)  # the server lives on after the command returned
    assert addresses(lab.ask("web")) == [lab.web]
    assert addresses(lab.ask("WWW.dns.podman.", tcp=True)) == [lab.web]  # R3b, over TCP too
    assert addresses(lab.ask(WEB_ID[:12], source=lab.web)) == [lab.web]
    aaaa = lab.ask("web", "AAAA")
    assert aaaa.header.rcode == RCODE.NOERROR and not aaaa.rr  # R6: NODATA, not NXDOMAIN
    before = lab.upstream.queries
    assert lab.ask("ghost").header.rcode == RCODE.NXDOMAIN  # a bare name never leaves
    assert lab.ask("ghost.dns.podman").header.rcode == RCODE.NXDOMAIN
    assert addresses(lab.ask("outside.example")) == ["192.0.2.77"]  # forwarded (R11)
    assert lab.upstream.queries == before + 1
    # An address netavark never named (the host itself): not a container, forwarded only.
    assert (
        lab.ask("web", source="127.0.0.1").header.rcode != RCODE.NOERROR
        or not lab.ask("web", source="127.0.0.1").rr
    )


def test_sighup_follows_the_files_and_keeps_a_query_in_flight(lab: Lab) -> None:
    assert lab.run().returncode == 0
    lab.upstream.mode, lab.upstream.delay = Fault.SLOW, 1.0
    slow: list[DNSRecord] = []
    asking = threading.Thread(target=lambda: slow.append(lab.ask("slow.example")))
    asking.start()
    time.sleep(0.2)  # the query is with the upstream now
    lab.write(f"{DB_ID} {lab.db}  db,cache")  # web gone, db gains an alias
    os.kill(lab.pid, signal.SIGHUP)
    wait_for(lambda: addresses(lab.ask("cache")) == [lab.db])
    assert lab.ask("web").header.rcode == RCODE.NXDOMAIN
    asking.join(10)
    assert slow and addresses(slow[0]) == ["192.0.2.77"]  # the reload dropped nothing


def test_a_dead_first_upstream_fails_over_within_the_clients_budget(lab: Lab) -> None:
    # aardvark-dns #482: its per-upstream timeout equalled the client's, so failover never
    # helped. netdns's forwarder tries the next upstream well inside glibc's 5 s.
    with FaultUpstream(Fault.SILENT) as dead:
        assert lab.run(upstreams=f"{dead.server},{lab.upstream.server}").returncode == 0
        started = time.monotonic()
        reply = lab.ask("failover.example", timeout=5.0)
        took = time.monotonic() - started
        assert addresses(reply) == ["192.0.2.77"] and took < 4.0
        # Health memory: after three failures in a row the dead one is put last for a while,
        # so the next answers are quick.
        for name in ("again1.example", "again2.example"):
            assert addresses(lab.ask(name)) == ["192.0.2.77"]
        started = time.monotonic()
        assert addresses(lab.ask("quick.example")) == ["192.0.2.77"]
        assert time.monotonic() - started < 0.5


def test_the_last_network_gone_stops_it_and_removes_its_pid_file(lab: Lab) -> None:
    assert lab.run().returncode == 0
    pid = lab.pid
    (lab.config / "podnet").unlink()
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: not (lab.config / PID_FILE).exists())

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone)


def test_what_it_cannot_serve_is_a_clear_error(lab: Lab, tmp_path: Path) -> None:
    missing = subprocess.run(
        [*COMMAND, "--config", str(tmp_path / "nope"), "-p", "5533", "run"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert missing.returncode == 1 and "not a directory" in missing.stderr
    shutil.rmtree(lab.config)
    lab.config.mkdir()
    empty = lab.run()
    assert empty.returncode == 1 and "no address to listen on" in empty.stderr
    assert not (lab.config / PID_FILE).exists()
    version = subprocess.run([*COMMAND, "version"], capture_output=True, text=True, check=False)
    assert version.returncode == 0 and "aardvark-dns" in version.stdout
