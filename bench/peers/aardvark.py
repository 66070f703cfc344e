"""aardvark-dns (Podman's resolver) as a peer, set up as netavark sets it up.

A config directory with one file per network, named after the network: the first line holds
the addresses aardvark listens on (the bridge gateway), then one line per container
`<id> <ipv4s> <ipv6s> <names>` (lists comma-separated, an empty field for none). aardvark
tells its clients apart by source address, so the client namespace is a container line too.
Names it does not hold go to the nameservers of its own /etc/resolv.conf: it runs under
`ip netns exec` in the lab's host namespace, where /etc/netns/<ns>/resolv.conf names the
bench's upstream (never the machine's resolver).

`aardvark-dns run` forks: the parent exits once the child serves, and the child writes
aardvark.pid into the config directory. The bench makes itself a child subreaper so that the
daemon, orphaned, becomes its child: it is then stopped by pidfd and reaped here.

`config_text` and `bench_entries` are pure (tests/unit/test_bench_aardvark.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import shutil
import signal
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from bench.errors import Invalid, NotFound
from bench.netlab import LabNet
from bench.peers import Peer, Target
from bench.process import START_TIMEOUT, STOP_TIMEOUT, answers, log_tail, wait_until
from bench.serve import CLIENT_ID, CLIENT_NAME, NETWORK, container_id
from bench.workloads import Zone
from resolver.netns import remove_resolv_conf, write_resolv_conf

log = logging.getLogger(__name__)

DEBIAN_BINARY = "/usr/lib/podman/aardvark-dns"  # the Debian package keeps it off PATH
PID_FILE = "aardvark.pid"
DNS_PORT = 53
_PR_SET_CHILD_SUBREAPER = 36

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class ContainerEntry:
    """One container line of an aardvark network file."""

    id: str
    ipv4: tuple[IPv4Address, ...] = ()
    ipv6: tuple[IPv6Address, ...] = ()
    names: tuple[str, ...] = ()

    def line(self) -> str:
        for word in (self.id, *self.names):
            if not word or any(ch.isspace() or ch == "," for ch in word):
                raise Invalid(
                    f"aardvark entry {self.id!r}: {word!r} is empty or holds a space or comma; "
                    "ids and names are single words"
                )
        if not self.names:
            raise Invalid(f"aardvark entry {self.id!r} has no name: give it at least one")
        if not (self.ipv4 or self.ipv6):
            raise Invalid(f"aardvark entry {self.id!r} has no address: give an IPv4 or IPv6")
        v4 = ",".join(str(a) for a in self.ipv4)
        v6 = ",".join(str(a) for a in self.ipv6)
        return f"{self.id} {v4} {v6} {','.join(self.names)}"


def config_text(listen: Sequence[IPAddress], entries: Iterable[ContainerEntry]) -> str:
    """One network's file: the listen addresses, then a line per container."""
    if not listen:
        raise Invalid("an aardvark network needs at least one listen address (the gateway)")
    lines = [",".join(str(a) for a in listen)]
    lines.extend(entry.line() for entry in entries)
    return "\n".join(lines) + "\n"


def bench_entries(zone: Zone, client: IPv4Address) -> Iterator[ContainerEntry]:
    """The zone's containers (with the shared alias) and the client, with the ids netdns uses."""
    for index, name in enumerate(zone.container_names()):
        yield ContainerEntry(
            id=container_id(name),
            ipv4=(zone.container_address(index),),
            names=(name, *zone.aliases(index)),
        )
    yield ContainerEntry(id=CLIENT_ID, ipv4=(client,), names=(CLIENT_NAME,))


def write_config(directory: Path, network: str, text: str) -> Path:
    if not network or "/" in network or network in (".", "..", PID_FILE):
        raise Invalid(f"aardvark network name {network!r} cannot name a config file")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / network
    path.write_text(text)
    return path


def binary() -> str | None:
    found = shutil.which("aardvark-dns")
    if found is not None:
        return found
    return DEBIAN_BINARY if os.access(DEBIAN_BINARY, os.X_OK) else None


def missing() -> str | None:
    if binary() is None:
        return (
            "aardvark-dns is not installed (apt-get install aardvark-dns; looked in PATH and "
            f"at {DEBIAN_BINARY})"
        )
    return None


def version() -> str:
    path = binary()
    if path is None:
        return "not installed"
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip().removeprefix("aardvark-dns").strip() or "unknown"


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_CHILD_SUBREAPER) failed: aardvark-dns will not be reaped here")


def _open_daemon(pid_file: Path) -> tuple[int, int]:
    """(pid, pidfd) of the daemon named by PID_FILE, after checking it is aardvark-dns."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError) as exc:
        raise Invalid(f"aardvark-dns said it started but {pid_file} holds no pid: {exc}") from exc
    pidfd = os.pidfd_open(pid)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    if b"aardvark-dns" not in cmdline:
        os.close(pidfd)
        raise Invalid(f"pid {pid} from {pid_file} is not aardvark-dns; not touching it")
    return pid, pidfd


def _stop(pid: int, pidfd: int) -> None:
    try:
        for signum, grace in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signum)
            readable, _, _ = select.select([pidfd], [], [], grace)
            if readable:
                break
            log.warning("aardvark-dns (pid %d) ignored signal %d", pid, signum)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    finally:
        os.close(pidfd)


@contextlib.contextmanager
def running(zone: Zone, net: LabNet, workdir: Path) -> Iterator[Target]:
    path = binary()
    if path is None:
        raise NotFound(missing() or "aardvark-dns not installed")
    client = net.client(Peer.AARDVARK)
    config_dir = workdir / "aardvark"
    write_config(
        config_dir, NETWORK.name, config_text([net.gateway], bench_entries(zone, client.address))
    )
    log_path = workdir / "aardvark.log"
    write_resolv_conf(net.host_netns, f"nameserver {net.upstream}\n")
    daemon: tuple[int, int] | None = None
    try:
        _become_subreaper()
        command = [
            "ip", "netns", "exec", net.host_netns,
            path, "--config", str(config_dir), "-p", str(DNS_PORT), "run",
        ]  # fmt: skip
        with log_path.open("w") as log_file:
            try:
                done = subprocess.run(
                    command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                    timeout=START_TIMEOUT, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired as exc:
                raise Invalid(
                    f"aardvark-dns did not start within {START_TIMEOUT:.0f} s:\n"
                    f"{log_tail(log_path)}"
                ) from exc
        if done.returncode != 0:
            raise Invalid(f"aardvark-dns exited {done.returncode} at start:\n{log_tail(log_path)}")
        daemon = _open_daemon(config_dir / PID_FILE)
        probe = next(zone.container_names())
        wait_until(
            lambda: answers(str(net.gateway), DNS_PORT, probe, client.netns),
            None,
            f"aardvark-dns on {net.gateway}:{DNS_PORT}",
            log_path,
        )
        log.info(
            "aardvark-dns %s on %s:%d in %s (pid %d), %d container names, upstream %s",
            version(),
            net.gateway,
            DNS_PORT,
            net.host_netns,
            daemon[0],
            zone.names,
            net.upstream,
        )
        yield Target(Peer.AARDVARK, str(net.gateway), DNS_PORT, client.netns, log_path, daemon[0])
    finally:
        if daemon is None and (config_dir / PID_FILE).exists():
            # It failed half way: a daemon may be up without having answered.
            with contextlib.suppress(Invalid, OSError):
                daemon = _open_daemon(config_dir / PID_FILE)
        if daemon is not None:
            _stop(*daemon)
        remove_resolv_conf(net.host_netns)
