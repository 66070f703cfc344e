"""A real `netdns daemon` for end-to-end tests, driven through the real `netdns` CLI.

Each daemon gets its own --root and admin socket, and a dnsmasq upstream started by the test
on a loopback address (never the machine's own resolver). Everything it made is removed on
exit, even when the test failed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.labs.upstreams import Dnsmasq, free_loopback_address

NETDNS = [sys.executable, "-m", "netdns.cli"]
DEFAULT_BRIDGE_GATEWAY = "172.17.0.1"
OUTSIDE_NAME, OUTSIDE_ADDRESS = "outside.test", "192.0.2.10"  # served by the test's dnsmasq


def suffix() -> str:
    return secrets.token_hex(3)


@dataclass
class DaemonProcess:
    root: Path
    socket: Path
    upstream: str
    process: subprocess.Popen
    log: Path
    bridge: str
    made: list[tuple[str, str]] = field(default_factory=list)  # ("container"|"network", name)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "NETDNS_HOST": f"unix://{self.socket}"}

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [*NETDNS, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"netdns {' '.join(args)} failed ({done.returncode}): {done.stderr}{done.stdout}"
            )
        return done

    def json(self, *args: str) -> object:
        return json.loads(self.cli(*args, "--format", "json").stdout)

    def network(self, name: str, *args: str) -> str:
        self.made.append(("network", name))
        return self.cli("network", "create", *args, name).stdout.strip()

    def container(self, name: str, *args: str) -> str:
        self.made.append(("container", name))
        return self.cli("container", "create", "--name", name, *args).stdout.strip()

    def netns_exec(self, name: str, *cmd: str, timeout: float = 15) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", name, *cmd], capture_output=True, text=True, timeout=timeout
        )

    def getent(self, container: str, name: str) -> str | None:
        """The first address glibc resolves for `name` inside `container`, or None."""
        done = self.netns_exec(container, "getent", "hosts", name)
        return done.stdout.split()[0] if done.returncode == 0 and done.stdout else None

    def dig(self, container: str, *args: str) -> subprocess.CompletedProcess:
        return self.netns_exec(container, "dig", "@127.0.0.11", "+tries=1", "+time=2", *args)

    def cleanup(self) -> None:
        for kind, name in reversed(self.made):
            self.cli(kind, "rm", name, check=False)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def start_daemon(
    root: Path, upstream: str, *extra: str, bridge: str = "", prefix: Sequence[str] = ()
) -> DaemonProcess:
    """Its default network gets a bridge of its own, so a test never touches netdns0. `prefix`
    runs it through another command (nsenter into a lab's mount namespace, say)."""
    bridge = bridge or f"nd{suffix()}"
    sock = root / "admin.sock"
    log = root / "daemon.log"
    # The host resolv.conf the daemon sees: containers without embedded DNS get its nameserver,
    # the default bridge's own gateway, a link the test made, where nothing answers port 53.
    resolv = root / "host-resolv.conf"
    resolv.write_text(f"nameserver {DEFAULT_BRIDGE_GATEWAY}\n")
    command = [
        *prefix, *NETDNS, "daemon", "--root", str(root / "state"), "--admin", f"unix://{sock}",
        "--dns", upstream, "--bridge", bridge, "--resolv-conf", str(resolv),
        "--log-level", "debug", *extra,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    daemon = DaemonProcess(root, sock, upstream, process, log, bridge)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"netdns daemon exited {process.returncode}:\n{daemon.logs()}")
        if sock.exists() and daemon.cli("network", "ls", check=False).returncode == 0:
            return daemon
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"netdns daemon did not come up:\n{daemon.logs()}")


@contextmanager
def running_daemon(tmp: Path, *extra: str) -> Iterator[DaemonProcess]:
    """A daemon with its own dnsmasq upstream; removes what the test made, then stops both."""
    zone = (f"--address=/{OUTSIDE_NAME}/{OUTSIDE_ADDRESS}",)
    with Dnsmasq(free_loopback_address(), zone=zone) as upstream:
        daemon = start_daemon(tmp, upstream.server, *extra)
        try:
            yield daemon
        finally:
            try:
                daemon.cleanup()
            finally:
                if daemon.process.poll() is None:
                    daemon.stop()
                # The default network's bridge outlives the daemon, as docker0 does.
                subprocess.run(["ip", "link", "del", daemon.bridge], capture_output=True)
                shutil.rmtree(tmp, ignore_errors=True)
