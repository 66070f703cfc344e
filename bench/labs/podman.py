"""Podman as a lab for tests and benches: root podman 4 on this machine, with everything it
keeps under one temporary directory (storage root, runroot, containers.conf, network config
dir, the helper binaries it runs), removed afterwards even when the test fails.

Containers run from a local root filesystem made of busybox-static (no image registry is
reachable here), with runc, cgroupfs and explicit rlimits (crun and podman's default rlimits
fail on this machine). `dns` picks who answers podman's containers:

- "netdns": netdns-aardvark, found by netavark under the name `aardvark-dns` in the helper
  directory (a wrapper that names the lab's upstream and log file);
- "aardvark": podman's own aardvark-dns (/usr/lib/podman/aardvark-dns), as shipped.

Upstream: the lab makes a bridge of its own with one address and runs dnsmasq there; every
podman command runs in one private mount namespace (a holder process's) where /etc/resolv.conf
names that address, so podman's containers, netdns-aardvark and aardvark-dns alike forward to
it and never to the machine's own resolver. The containers' resolv.conf gets the network's
gateway and that address.

netavark writes the DNS files to /run/containers/networks/aardvark-dns whatever the runroot
says, and one DNS server serves every network there: labs use unique network names, one lab
runs at a time, and a lab refuses to start while a DNS server it did not start is running."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from bench.labs.daemon import DaemonProcess, start_daemon
from bench.labs.upstreams import DEFAULT_ZONE, Dnsmasq

PODMAN = "/usr/bin/podman"
NETAVARK = "/usr/lib/podman/netavark"
AARDVARK = "/usr/lib/podman/aardvark-dns"
BUSYBOX = "/bin/busybox"
AARDVARK_DIR = Path("/run/containers/networks/aardvark-dns")
PID_FILE = AARDVARK_DIR / "aardvark.pid"
TOOLS = ("sh", "sleep", "nslookup", "cat", "ip", "true", "wget")
RLIMITS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
TIMEOUT = 120.0


class PodmanError(RuntimeError):
    pass


def podman_available() -> str:
    """Why podman cannot run here ("" when it can)."""
    for path in (PODMAN, NETAVARK, BUSYBOX):
        if not os.path.exists(path):
            return f"{path} is missing (make deps installs podman, netavark, busybox-static)"
    return ""


def dns_server_pid() -> int | None:
    """The DNS server netavark runs now, if any (its pid file names a live process: not a
    zombie, which a server that exited is until its parent, gone too, is reaped)."""
    try:
        pid = int(PID_FILE.read_text().strip())
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return None
    return None if "\nState:\tZ" in status else pid


def command_path(name: str) -> str:
    """A console script of this install: beside the running interpreter (a venv not on PATH,
    as under `make test`), else on PATH; "" when neither has it."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name) or ""


def ip(*args: str, check: bool = True) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise PodmanError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    id: str
    pid: int


# Who answers podman's containers, by network backend.
SERVERS = {"netavark": ("netdns", "aardvark"), "cni": ("netdns-cni", "dnsname")}
ALL_SERVERS = tuple((backend, dns) for backend, names in SERVERS.items() for dns in names)
CNI_PLUGINS = "/usr/lib/cni"


class Podman:
    def __init__(
        self, *, backend: str = "netavark", dns: str = "netdns",
        zone: Sequence[str] = DEFAULT_ZONE, upstream_ttl: int = 300,
    ) -> None:  # fmt: skip
        if dns not in SERVERS.get(backend, ()):
            raise ValueError(f"backend {backend!r} with dns {dns!r}: use one of {SERVERS}")
        self.backend = backend
        self.dns = dns
        self.daemon: DaemonProcess | None = None  # netdns-cni's
        self.netdns_aardvark = command_path("netdns-aardvark")
        self.tag = f"nd{uuid.uuid4().hex[:6]}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.tag}-podman-"))
        self.log = self.dir / "dns.log"
        self.networks: list[str] = []
        self.containers: list[str] = []
        # The upstream's link: a bridge of the lab's own, one /32 on it.
        self.upstream_link = f"{self.tag}up"
        self.upstream_address = f"10.254.{random.randint(0, 255)}.{random.randint(1, 254)}"
        self.upstream = Dnsmasq(self.upstream_address, zone=zone, local_ttl=upstream_ttl)
        self._holder: subprocess.Popen[str] | None = None

    # -- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> Podman:
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _prepare(self) -> None:
        held = dns_server_pid()
        if held is not None:
            raise PodmanError(
                f"a DNS server for podman already runs (pid {held}, {PID_FILE}): stop the "
                "podman containers of other networks first; netavark shares one between them"
            )
        ip("link", "add", self.upstream_link, "type", "bridge")
        ip("addr", "add", f"{self.upstream_address}/32", "dev", self.upstream_link)
        ip("link", "set", self.upstream_link, "up")
        self.upstream.__enter__()
        resolv = self.dir / "resolv.conf"
        resolv.write_text(f"nameserver {self.upstream_address}\n")
        self._holder = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount --bind {resolv} /etc/resolv.conf && echo ready && exec sleep infinity"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self._holder.stdout is not None
        if self._holder.stdout.readline().strip() != "ready":
            raise PodmanError("could not make the lab's mount namespace (unshare -m)")
        rootfs = self.dir / "rootfs"
        for sub in ("bin", "etc", "proc", "sys", "dev", "tmp", "run"):
            (rootfs / sub).mkdir(parents=True)
        shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
        for tool in TOOLS:
            (rootfs / "bin" / tool).symlink_to("busybox")
        helpers = self.dir / "helpers"
        helpers.mkdir()
        (helpers / "netavark").symlink_to(NETAVARK)
        if self.dns == "netdns-cni":
            netdns_cni = command_path("netdns-cni")
            if not netdns_cni:
                raise PodmanError("netdns-cni is not installed (pip install -e .)")
            (helpers / "netdns-cni").symlink_to(netdns_cni)
            assert self._holder is not None
            (self.dir / "daemon").mkdir()
            self.daemon = start_daemon(
                self.dir / "daemon", self.upstream.server, "--domain", "dns.podman",
                prefix=("nsenter", "-t", str(self._holder.pid), "-m"),
            )  # fmt: skip
        if self.dns == "netdns":
            if not self.netdns_aardvark:
                raise PodmanError("netdns-aardvark is not installed (pip install -e .)")
            wrapper = helpers / "aardvark-dns"
            wrapper.write_text(
                f"#!/bin/sh\nexport NETDNS_AARDVARK_LOG={self.log}\n"
                f'exec {self.netdns_aardvark} "$@"\n'
            )
            wrapper.chmod(0o755)
        else:
            (helpers / "aardvark-dns").symlink_to(AARDVARK)
        (self.dir / "networks").mkdir()
        (self.dir / "containers.conf").write_text(
            "[engine]\n"
            f'helper_binaries_dir = ["{helpers}"]\n'
            "[network]\n"
            f'network_backend = "{self.backend}"\n'
            f'network_config_dir = "{self.dir / "networks"}"\n'
            f'cni_plugin_dirs = ["{helpers}", "{CNI_PLUGINS}"]\n'
        )

    def close(self) -> None:
        """Remove every container and network the lab made, stop the DNS server they left
        (netavark stops it with the last network; this is for a test that failed midway),
        then the directory."""
        for name in reversed(self.containers):
            self.podman("rm", "-f", "-t", "0", name, check=False)
        for name in reversed(self.networks):
            self.podman("network", "rm", "-f", name, check=False)
        if self.daemon is not None:
            self.daemon.stop()
            ip("link", "del", self.daemon.bridge, check=False)
        pid = dns_server_pid()
        if pid is not None and self._ours(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if self._holder is not None:  # its mounts (netns files, shm) go with it
            self._holder.kill()
            self._holder.wait(TIMEOUT)
        self.upstream.__exit__(None, None, None)
        ip("link", "del", self.upstream_link, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _ours(self, pid: int) -> bool:
        """Whether the DNS server runs in the lab's mount namespace (so this lab started it)."""
        if self._holder is None:
            return False
        try:
            return os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink(
                f"/proc/{self._holder.pid}/ns/mnt"
            )
        except OSError:
            return False

    # -- podman -----------------------------------------------------------------------------

    def _command(self, *args: str) -> list[str]:
        assert self._holder is not None
        return [
            "nsenter", "-t", str(self._holder.pid), "-m", PODMAN,
            "--root", str(self.dir / "root"), "--runroot", str(self.dir / "runroot"),
            "--runtime", "runc", "--cgroup-manager", "cgroupfs", *args,
        ]  # fmt: skip

    def call(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CONTAINERS_CONF": str(self.dir / "containers.conf")}
        return subprocess.run(
            self._command(*args), env=env, capture_output=True, text=True, timeout=TIMEOUT,
            check=False,
        )  # fmt: skip

    def podman(self, *args: str, check: bool = True) -> str:
        if self._holder is None:
            return ""
        done = self.call(*args)
        if check and done.returncode != 0:
            raise PodmanError(f"podman {' '.join(args)}: {done.stderr.strip() or done.stdout}")
        return done.stdout

    def network(self, suffix: str = "", *options: str) -> str:
        name = f"{self.tag}{suffix or len(self.networks)}"
        self.podman("network", "create", *options, name)
        self.networks.append(name)
        if self.backend == "cni":
            self._chain_dns_plugin(name)
        return name

    def _chain_dns_plugin(self, network: str) -> None:
        """The DNS plugin last in the conflist podman wrote: netdns-cni (as docs/CNI.md says)
        or dnsname (as podman 3 wrote it)."""
        path = self.dir / "networks" / f"{network}.conflist"
        conflist = json.loads(path.read_text())
        plugins = [p for p in conflist["plugins"] if p.get("type") not in ("dnsname", "netdns-cni")]
        if self.daemon is not None:
            plugins.append(
                {"type": "netdns-cni", "daemon": f"unix://{self.daemon.socket}",
                 "capabilities": {"aliases": True}}
            )  # fmt: skip
        else:
            plugins.append(
                {"type": "dnsname", "domainName": "dns.podman", "capabilities": {"aliases": True}}
            )
        conflist["plugins"] = plugins
        path.write_text(json.dumps(conflist, indent=2))

    def run(self, name: str, network: str, *options: str) -> Container:
        full = f"{self.tag}-{name}"
        self.containers.append(full)
        # The resolv.conf podman's CNI backend writes does not follow the plugins' results.
        dns = ("--dns", self.dns_server(network)) if self.backend == "cni" else ()
        self.podman(
            "run", "-d", "--name", full, "--network", network, *RLIMITS, *dns, *options,
            "--rootfs", str(self.dir / "rootfs"), "/bin/sleep", "600",
        )  # fmt: skip
        return self.container(full)

    def container(self, name: str) -> Container:
        (info,) = json.loads(self.podman("inspect", name))
        return Container(info["Name"].lstrip("/"), info["Id"], int(info["State"]["Pid"]))

    def address(self, container: Container, network: str) -> str:
        (info,) = json.loads(self.podman("inspect", container.name))
        return info["NetworkSettings"]["Networks"][network]["IPAddress"]

    def dns_server(self, network: str) -> str:
        """Where the network's containers send their queries: netdns-cni's 127.0.0.11 inside
        each container, or the network's gateway (aardvark-dns, netdns-aardvark, dnsname)."""
        return "127.0.0.11" if self.dns == "netdns-cni" else self.gateway(network)

    def gateway(self, network: str) -> str:
        (info,) = json.loads(self.podman("network", "inspect", network))
        return info["subnets"][0]["gateway"]

    def exec(self, container: Container, *command: str) -> subprocess.CompletedProcess[str]:
        return self.call("exec", container.name, *command)

    def in_netns(self, container: Container, *command: str) -> subprocess.CompletedProcess[str]:
        """A host tool (dig) run in the container's network namespace, not its filesystem."""
        return subprocess.run(
            ["nsenter", "-t", str(container.pid), "-n", *command],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip

    def server_pid(self, network: str) -> int | None:
        """The process that answers the network's containers (for its CPU time)."""
        if self.daemon is not None:
            return self.daemon.process.pid  # nsenter execs the daemon: the same process
        if self.dns == "dnsname":
            path = Path(f"/run/containers/cni/dnsname/{network}/pidfile")
            with contextlib.suppress(OSError, ValueError):
                return int(path.read_text().strip())
            return None
        return dns_server_pid()

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""
