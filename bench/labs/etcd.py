"""A real etcd server for tests: Debian's /usr/bin/etcd, single member, on one address.

- `EtcdServer(address)`: a context manager running etcd with its client and peer ports on
  ADDRESS (loopback, or an address on a link the test made), a temporary data dir, and its log in
  a file beside the data dir. `stop()` / `kill()` / `restart()` keep the data dir and the ports,
  so a restarted server has the same keys at the same URL.
- `etcd_available()`: whether the etcd binary is installed.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

ETCD = "/usr/bin/etcd"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 15


def etcd_available() -> bool:
    return Path(ETCD).is_file() and os.access(ETCD, os.X_OK)


def _free_port(address: str, taken: set[int]) -> int:
    """A TCP port the kernel considers free on ADDRESS (not in `taken`)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return int(port)
    raise RuntimeError(f"no free TCP port on {address}")


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class EtcdServer:
    """A single-member etcd on ADDRESS with free client and peer ports picked at construction."""

    def __init__(self, address: str, *, data_dir: Path | None = None) -> None:
        self.address = address
        self.client_port = _free_port(address, set())
        self.peer_port = _free_port(address, {self.client_port})
        self.name = f"nd-etcd-{self.client_port}"
        self._workdir = Path(tempfile.mkdtemp(prefix="netdns-etcd-"))
        self.data_dir = data_dir if data_dir is not None else self._workdir / "data"
        self.log_path = self._workdir / "etcd.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The address as a user gives it to netdns (`--store`)."""
        return f"etcd://{_host(self.address)}:{self.client_port}"

    @property
    def http_url(self) -> str:
        return f"http://{_host(self.address)}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{_host(self.address)}:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        return [
            ETCD,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.http_url}",
            f"--advertise-client-urls={self.http_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.name}={self.peer_url}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token={self.name}",
            "--logger=zap",
            "--log-outputs=stderr",
        ]

    def _environment(self) -> dict[str, str]:
        # ETCD_* variables are flags to etcd: drop any the caller's shell may carry.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        machine = platform.machine()
        if machine not in ("x86_64", "amd64"):
            env["ETCD_UNSUPPORTED_ARCH"] = {"aarch64": "arm64"}.get(machine, machine)
        return env

    def start(self) -> None:
        """Start etcd and wait until it serves reads (at most START_TIMEOUT seconds)."""
        if self.running:
            return
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._environment(),
            )
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def _ready(self) -> bool:
        # A linearizable range answers only once the member has a leader and applies requests.
        request = urllib.request.Request(
            f"{self.http_url}/v3/kv/range",
            data=b'{"key": "AA=="}',
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=1.0) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"etcd on {self.http_url} exited ({self._process.returncode}):\n"
                    + self.log_tail()
                )
            if self._ready():
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"etcd on {self.http_url} did not answer within {START_TIMEOUT} s:\n" + self.log_tail()
        )

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no etcd log)"

    def stop(self) -> None:
        """SIGTERM and wait; the data dir stays for `start()` / `restart()`."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: etcd dies without closing its connections cleanly."""
        self._end(signal.SIGKILL)

    def _end(self, how: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(how)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> EtcdServer:
        try:
            self.start()
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()
        # The work dir holds the log and, unless the caller gave one, the data dir; a caller's
        # data dir is the caller's to remove.
        shutil.rmtree(self._workdir, ignore_errors=True)
