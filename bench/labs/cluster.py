"""A multi-host netdns cluster on one machine, for end-to-end tests (root only).

`cluster_lab(tmp_path, hosts=3, lease_ttl=...)` builds, and removes again even when the test
fails:
- an underlay: a Linux bridge `ndu<tag>` in the root namespace holding 198.18.X.1/24 (X picked
  at random among the /24s nothing here routes), and per host a named namespace `ndh<tag><i>`
  (lo up) joined to it by a veth pair whose namespace end holds 198.18.X.(10+i)/24;
- a real etcd (bench/labs/etcd.py) listening on 198.18.X.1, with its own data dir;
- per host a real `netdns daemon` started inside the host namespace with `nsenter --net` (not
  `ip netns exec`: that makes a new mount namespace, and the container namespaces the daemon
  binds under /run/netns would not be seen from here), with its own --root, admin socket, log,
  default bridge and `--store etcd://198.18.X.1:PORT --host-name hostN --advertise-addr ...`.
  Its upstream and resolv.conf name 127.0.0.1 inside the host namespace, where nothing
  answers: no query leaves the lab.

Each host's daemon is a bench/labs/daemon.py DaemonProcess (`.cli`, `.json`, `.getent`, `.dig`).
Names a test gives containers and services come from `lab.name(prefix)`: they carry the lab's
tag, so the namespaces the daemons make for them (containers by name, tasks as
`<service>.<slot>.<task id>`) are found and removed at the end whatever state the daemons are in.
When the body raises, every daemon's log tail and etcd's are printed (pytest shows them).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bench.labs.daemon import NETDNS, DaemonProcess
from bench.labs.etcd import EtcdServer
from netdns.client import Client, ClientError

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
START_TIMEOUT = 30.0  # a daemon started while etcd is away waits 10 s for it before serving
LOG_TAIL_LINES = 40
STOP_TIMEOUT = 5.0  # a daemon stops in well under a second; past this it is killed
WAIT = 15.0  # default bound of `wait_for`

_used_underlays: set[int] = set()
_used_lock = threading.Lock()


def wait_for(
    what: str,
    probe: Callable[[], T],
    done: Callable[[T], bool],
    timeout: float = WAIT,
    interval: float = 0.25,
) -> T:
    """Call PROBE until DONE(value) holds; AssertionError with the last value after TIMEOUT."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            waited = time.monotonic() - (deadline - timeout)
            if waited >= 1:  # shown with a failing test's output: where the time went
                print(f"waited {waited:.1f} s: {what}", flush=True)
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s; last seen: {value!r}")
        time.sleep(interval)


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _routed_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination and address of the root namespace."""
    found: list[ipaddress.IPv4Network] = []
    for line in _run("ip", "-4", "-o", "route", "show", "table", "all").stdout.splitlines():
        first = line.split()[0] if line.split() else ""
        if first in ("local", "broadcast", "unicast", "multicast"):
            first = line.split()[1]
        if first != "default":
            with contextlib.suppress(ValueError):
                found.append(ipaddress.IPv4Network(first, strict=False))
    for line in _run("ip", "-4", "-o", "addr", "show").stdout.splitlines():
        words = line.split()
        if "inet" in words:
            found.append(ipaddress.IPv4Network(words[words.index("inet") + 1], strict=False))
    return found


def _pick_underlay() -> int:
    """X of a 198.18.X.0/24 nothing here routes or holds (nor an earlier lab of this process)."""
    taken = _routed_networks()
    choices = list(range(256))
    random.shuffle(choices)
    with _used_lock:
        for x in choices:
            subnet = ipaddress.IPv4Network(f"198.18.{x}.0/24")
            if x not in _used_underlays and not any(subnet.overlaps(t) for t in taken):
                _used_underlays.add(x)
                return x
    raise RuntimeError("no free 198.18.X.0/24 for the underlay")


@dataclass
class ClusterHost:
    """One host: its namespace, underlay address and the daemon running inside it."""

    index: int  # 1-based
    name: str  # --host-name
    netns: str  # named namespace of the host
    address: str  # underlay address, the daemon's --advertise-addr
    root: Path
    command: list[str]
    daemon: DaemonProcess

    @property
    def client(self) -> Client:
        """The admin API client (what the CLI uses), for many calls without a process each."""
        return Client(f"unix://{self.daemon.socket}", timeout=60)

    @property
    def alive(self) -> bool:
        return self.daemon.process.poll() is None


@dataclass
class ClusterLab:
    tag: str
    tmp: Path
    underlay: str  # the root namespace's bridge
    gateway: str  # its address: where etcd listens
    lease_ttl: int
    etcd: EtcdServer | None = None
    hosts: list[ClusterHost] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    host_netns: list[str] = field(default_factory=list)
    _counter: int = 0

    # -- names --------------------------------------------------------------------------------

    def name(self, prefix: str = "c") -> str:
        """A container or service name unique to this lab (it holds the tag)."""
        self._counter += 1
        return f"{prefix}{self.tag}{self._counter:x}"

    def host(self, index: int) -> ClusterHost:
        """Host `index`, 1-based as in its --host-name."""
        return self.hosts[index - 1]

    # -- what tests drive ---------------------------------------------------------------------

    def service(self, host: ClusterHost, name: str, *args: str) -> str:
        """`netdns service create --name NAME ARGS` on HOST, removed at the end."""
        self.services.append(name)
        return host.daemon.cli("service", "create", "--name", name, *args).stdout.strip()

    def kill(self, host: ClusterHost) -> None:
        """SIGKILL the host's daemon: no cleanup, its lease is left to run out."""
        host.daemon.process.send_signal(signal.SIGKILL)
        host.daemon.process.wait(timeout=10)

    def restart(self, host: ClusterHost) -> None:
        """Start the host's daemon again with the same root and flags (after kill or stop)."""
        if host.alive:
            host.daemon.stop()
        host.daemon.process = self._spawn(host.command, host.daemon.log)
        _wait_ready(host.daemon)

    def stop_etcd(self) -> None:
        assert self.etcd is not None
        self.etcd.stop()

    def start_etcd(self) -> None:
        """etcd again on the same address, ports and data dir."""
        assert self.etcd is not None
        self.etcd.start()

    def logs(self) -> str:
        """The tail of every daemon's log and of etcd's."""
        parts = []
        for host in self.hosts:
            try:
                lines = host.daemon.logs().splitlines()[-LOG_TAIL_LINES:]
            except OSError as exc:
                lines = [f"(no log: {exc})"]
            state = "running" if host.alive else f"exited {host.daemon.process.returncode}"
            parts.append(f"===== {host.name} daemon ({state}) log tail =====\n" + "\n".join(lines))
        if self.etcd is not None:
            parts.append("===== etcd log tail =====\n" + self.etcd.log_tail(LOG_TAIL_LINES))
        return "\n".join(parts)

    # -- building -----------------------------------------------------------------------------

    def _build_underlay(self) -> None:
        _run("ip", "link", "add", self.underlay, "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.underlay)
        _run("ip", "link", "set", self.underlay, "up")

    def _add_host(self, index: int, x: int) -> tuple[str, str]:
        netns = f"ndh{self.tag}{index}"
        _run("ip", "netns", "add", netns)
        self.host_netns.append(netns)
        _run("ip", "-n", netns, "link", "set", "lo", "up")
        outer, inner = f"ndu{self.tag}p{index}", f"ndu{self.tag}h{index}"
        _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", netns)
        _run("ip", "link", "set", outer, "master", self.underlay)
        _run("ip", "link", "set", outer, "up")
        address = f"198.18.{x}.{10 + index}"
        _run("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", inner)
        _run("ip", "-n", netns, "link", "set", inner, "up")
        return netns, address

    def _start_daemon(self, index: int, netns: str, address: str) -> ClusterHost:
        assert self.etcd is not None
        root = self.tmp / f"host{index}"
        root.mkdir(parents=True, exist_ok=True)
        sock, log = root / "admin.sock", root / "daemon.log"
        resolv = root / "host-resolv.conf"
        # Inside the host namespace nothing answers on 127.0.0.1: forwarded queries die there.
        resolv.write_text("nameserver 127.0.0.1\n")
        bridge = f"nd{secrets.token_hex(4)}"
        command = [
            "nsenter", f"--net={NETNS_DIR / netns}", "--",
            *NETDNS, "daemon", "--root", str(root / "state"), "--admin", f"unix://{sock}",
            "--store", self.etcd.url, "--host-name", f"host{index}",
            "--advertise-addr", address, "--bridge", bridge, "--resolv-conf", str(resolv),
            "--dns", "127.0.0.1:53", "--lease-ttl", str(self.lease_ttl), "--log-level", "debug",
        ]  # fmt: skip
        process = self._spawn(command, log)
        daemon = DaemonProcess(root, sock, "127.0.0.1:53", process, log, bridge)
        host = ClusterHost(index, f"host{index}", netns, address, root, command, daemon)
        self.hosts.append(host)
        return host

    @staticmethod
    def _spawn(command: list[str], log: Path) -> subprocess.Popen:
        # nsenter execs the daemon (no --fork): the pid is the daemon's, for SIGKILL.
        with log.open("a") as out:
            return subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=Path(__file__).resolve().parents[2],
            )

    # -- cleanup ------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Everything the lab and its daemons made; each step best effort."""
        began = time.monotonic()
        self._remove_through_daemons()
        print(f"removed through the daemons in {time.monotonic() - began:.1f} s", flush=True)
        for host in self.hosts:
            if host.alive:
                host.daemon.process.send_signal(signal.SIGTERM)
        for host in self.hosts:
            try:
                host.daemon.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"{host.name}: daemon still running {STOP_TIMEOUT:g} s after SIGTERM: killed")
                host.daemon.process.kill()
                host.daemon.process.wait(timeout=10)
        self._sweep_namespaces()
        for netns in self.host_netns:
            _run("ip", "netns", "del", netns, check=False)
        for link in _run("ip", "-o", "link", "show").stdout.splitlines():
            name = link.split(":")[1].strip().split("@")[0] if ":" in link else ""
            if f"ndu{self.tag}" in name:
                _run("ip", "link", "del", name, check=False)
        if self.etcd is not None:
            self.etcd.__exit__(None, None, None)

    def _remove_through_daemons(self) -> None:
        """Services (from one live host), then every host's containers in parallel, then the
        networks: what a user would do, so a daemon bug shows in its log, not as leftovers."""
        live = [h for h in self.hosts if h.alive]
        if not live:
            return
        for name in reversed(self.services):
            with contextlib.suppress(ClientError, OSError):
                live[0].client.delete(f"/v1/services/{name}")

        def containers(host: ClusterHost) -> None:
            client = host.client
            for kind, name in reversed(host.daemon.made):
                if kind == "container":
                    with contextlib.suppress(ClientError, OSError):
                        client.remove_container(name)

        threads = [threading.Thread(target=containers, args=(h,)) for h in live]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        for host in live:
            for kind, name in reversed(host.daemon.made):
                if kind == "network":
                    with contextlib.suppress(ClientError, OSError):
                        host.client.remove_network(name)

    def _sweep_namespaces(self) -> None:
        names = {name for h in self.hosts for kind, name in h.daemon.made if kind == "container"}
        listed = _run("ip", "netns", "list", check=False).stdout.splitlines()
        names |= {line.split()[0] for line in listed if line and self.tag in line.split()[0]}
        for name in names:
            if name in self.host_netns:
                continue
            if (NETNS_DIR / name).exists():
                _run("ip", "netns", "del", name, check=False)
            shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
        if ETC_NETNS.is_dir():
            for leftover in ETC_NETNS.iterdir():
                if self.tag in leftover.name:
                    shutil.rmtree(leftover, ignore_errors=True)


def _wait_ready(daemon: DaemonProcess) -> None:
    """Until `network ls` answers through the admin socket (as start_daemon waits)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise AssertionError(
                f"netdns daemon exited {daemon.process.returncode}:\n{daemon.logs()[-4000:]}"
            )
        if daemon.socket.exists() and daemon.cli("network", "ls", check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"netdns daemon did not come up:\n{daemon.logs()[-4000:]}")


@contextlib.contextmanager
def cluster_lab(tmp_path: Path, hosts: int = 3, lease_ttl: int = 10) -> Iterator[ClusterLab]:
    """HOSTS hosts sharing one etcd over one underlay, each with a running daemon."""
    if os.geteuid() != 0:
        raise RuntimeError("cluster_lab needs root: it creates namespaces, links and daemons")
    tag = secrets.token_hex(2)
    x = _pick_underlay()
    lab = ClusterLab(tag, tmp_path, f"ndu{tag}", f"198.18.{x}.1", lease_ttl)
    began = time.monotonic()
    try:
        lab._build_underlay()
        placed = [lab._add_host(i, x) for i in range(1, hosts + 1)]
        lab.etcd = EtcdServer(lab.gateway)
        lab.etcd.start()
        started = [lab._start_daemon(i, netns, address) for i, (netns, address) in
                   enumerate(placed, 1)]  # fmt: skip
        for host in started:
            _wait_ready(host.daemon)
        print(f"lab up in {time.monotonic() - began:.1f} s", flush=True)
        yield lab
    except BaseException:
        print(lab.logs(), file=sys.stdout, flush=True)
        raise
    finally:
        began = time.monotonic()
        try:
            lab.cleanup()
            print(f"lab cleaned up in {time.monotonic() - began:.1f} s", flush=True)
        finally:
            with _used_lock:
                _used_underlays.discard(x)
