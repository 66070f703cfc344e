"""The listener inside a sandbox's namespace (R17): sockets made there with setns, the nftables
redirect of 127.0.0.11:53 to the listener's own port, and the resolv.conf `ip netns exec` shows.

Real namespaces, the real Listener, and real clients run inside them: dig (udp and tcp), glibc
through `getent hosts`, busybox nslookup, dnsmasq holding port 53 itself. All traffic stays in
the namespaces the tests make.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from drivers.errors import Invalid, NotFound, Unsupported
from resolver import netns
from resolver.server import Listener

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and nftables")
TOOLS = ("ip", "nft", "nsenter", "dig", "getent", "busybox", "dnsmasq", "unshare")
needs_tools = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in TOOLS), reason=f"needs {', '.join(TOOLS)}"
)
pytestmark = [needs_root, needs_tools]

NAME = "web.ndtest"
USER_NAME = "user.ndtest"  # answered by the sandbox's own dnsmasq on port 53
ADDRESS = "10.201.7.9"  # never contacted: only carried in answers
OTHER_ADDRESS = "10.201.7.10"
USER_ADDRESS = "10.201.7.11"


async def answer_web(sandbox_id: str, data: bytes, tcp: bool) -> bytes | None:
    """A tiny handler: NAME has one A record, the listener's sandbox id (an address, so each
    listener's answer shows which one answered); anything else is NXDOMAIN."""
    query = DNSRecord.parse(data)
    reply = query.reply()
    qname = str(query.q.qname).rstrip(".").lower()
    if qname != NAME:
        reply.header.rcode = RCODE.NXDOMAIN
    elif query.q.qtype in (QTYPE.A, QTYPE.ANY):
        reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(sandbox_id), ttl=5))
    return reply.pack()


class LoopThread:
    """An event loop on its own thread, so tests can block on subprocesses meanwhile."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@dataclass
class Sandbox:
    name: str  # `ip netns` name, or "" for an adopted namespace
    path: str
    loop: LoopThread
    listener: Listener | None = None
    port: int = 0

    def enter(self) -> list[str]:
        if self.name:
            return ["ip", "netns", "exec", self.name]
        return ["nsenter", f"--net={self.path}"]

    def run(self, *command: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.enter(), *command], capture_output=True, text=True, timeout=timeout
        )

    def dig(self, *args: str, port: int = 53, server: str = "127.0.0.11") -> str:
        result = self.run(
            "dig", f"@{server}", "-p", str(port), "+tries=1", "+time=2", "+short", *args
        )
        return result.stdout.strip() if result.returncode == 0 else f"rc={result.returncode}"

    def start_listener(self, answer: str = ADDRESS) -> tuple[Listener, int]:
        """Open sockets inside the namespace and serve them; NAME answers ANSWER."""
        sockets = netns.open_listener_sockets(self.path)
        listener = self.loop.run(
            Listener.start(answer_web, answer, udp_sock=sockets.udp, tcp_sock=sockets.tcp)
        )
        return listener, sockets.port

    def serve(self) -> None:
        """A listener inside the namespace with 127.0.0.11:53 redirected to it."""
        self.listener, self.port = self.start_listener()
        netns.install_redirect(self.path, self.port)

    def close(self) -> None:
        if self.listener is not None:
            self.loop.run(self.listener.close())
            self.listener = None


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture
def sandbox(loop: LoopThread) -> Iterator[Sandbox]:
    name = f"nd{secrets.token_hex(3)}li"
    subprocess.run(["ip", "netns", "add", name], check=True)
    box = Sandbox(name=name, path=f"/run/netns/{name}", loop=loop)
    try:
        yield box
    finally:
        try:
            box.close()
        finally:
            netns.remove_resolv_conf(name)
            subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def adopted(loop: LoopThread) -> Iterator[Sandbox]:
    """A namespace made by another runtime: `unshare --net sleep`, addressed by /proc/PID."""
    process = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        path = f"/proc/{process.pid}/ns/net"
        ours = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 5
        while os.readlink(path) == ours:  # unshare has not run yet
            assert time.monotonic() < deadline, "unshare --net did not make a namespace"
            time.sleep(0.01)
        box = Sandbox(name="", path=path, loop=loop)
        try:
            yield box
        finally:
            box.close()
    finally:
        process.kill()
        process.wait(timeout=10)


def thread_netns() -> str:
    return os.readlink("/proc/thread-self/ns/net")


# -- in_netns ------------------------------------------------------------------------------------


def test_in_netns_runs_inside_and_switches_back(sandbox: Sandbox) -> None:
    before = thread_netns()
    inside = netns.in_netns(sandbox.path, thread_netns)
    assert inside != before
    assert inside == f"net:[{os.stat(sandbox.path).st_ino}]"
    assert thread_netns() == before


def test_in_netns_switches_back_when_the_function_raises(sandbox: Sandbox) -> None:
    before = thread_netns()

    def fail() -> None:
        raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        netns.in_netns(sandbox.path, fail)
    assert thread_netns() == before


def test_in_netns_moves_only_the_calling_thread(sandbox: Sandbox) -> None:
    main_thread = threading.get_native_id()
    main_before = thread_netns()
    seen: dict[str, str] = {}

    def look() -> None:
        seen["worker"] = thread_netns()
        seen["main"] = os.readlink(f"/proc/self/task/{main_thread}/ns/net")

    worker = threading.Thread(target=netns.in_netns, args=(sandbox.path, look))
    worker.start()
    worker.join(timeout=10)
    assert seen["worker"] == f"net:[{os.stat(sandbox.path).st_ino}]"
    assert seen["main"] == main_before


def test_in_netns_of_a_missing_namespace_is_not_found() -> None:
    with pytest.raises(NotFound, match="does not exist"):
        netns.in_netns(f"/run/netns/nd{secrets.token_hex(3)}gone", thread_netns)


def test_in_netns_of_a_file_that_is_no_namespace_is_invalid(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("")
    before = thread_netns()
    with pytest.raises(Invalid, match="not a network namespace"):
        netns.in_netns(str(plain), thread_netns)
    assert thread_netns() == before


# -- the listener and the redirect -------------------------------------------------------------


def test_r17_sockets_live_in_the_namespace_not_ours(sandbox: Sandbox) -> None:
    sockets = netns.open_listener_sockets(sandbox.path)
    try:
        assert sockets.udp.getsockname() == ("127.0.0.11", sockets.port)
        assert sockets.tcp.getsockname() == ("127.0.0.11", sockets.port)
        assert not sockets.udp.getblocking() and not sockets.tcp.getblocking()
        # Our namespace has no 127.0.0.11 listener on that port; the sandbox's has.
        ours = subprocess.run(["ss", "-Hlnu", f"sport = :{sockets.port}"], capture_output=True,
                              text=True)  # fmt: skip
        assert "127.0.0.11" not in ours.stdout
        theirs = sandbox.run("ss", "-Hlntu", f"sport = :{sockets.port}").stdout
        assert theirs.count(f"127.0.0.11:{sockets.port}") == 2, theirs
    finally:
        sockets.udp.close()
        sockets.tcp.close()


def test_r17_dig_over_udp_and_tcp_reaches_the_listener_through_port_53(
    sandbox: Sandbox,
) -> None:
    sandbox.serve()
    assert sandbox.port != 53
    assert sandbox.dig(NAME) == ADDRESS
    assert sandbox.dig("+tcp", NAME) == ADDRESS
    # The redirect is only in the sandbox: the host's 127.0.0.11:53 has no such rule.
    listing = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert "table ip netdns" not in listing


def test_r17_glibc_and_busybox_resolve_through_the_written_resolv_conf(
    sandbox: Sandbox,
) -> None:
    sandbox.serve()
    text = netns.resolv_conf_text(
        dns=True, search=(), options=(), host_nameservers=("127.0.0.53",), host_search=()
    )
    path = netns.write_resolv_conf(sandbox.name, text)
    assert path == Path("/etc/netns") / sandbox.name / "resolv.conf"
    assert "nameserver 127.0.0.11" in sandbox.run("cat", "/etc/resolv.conf").stdout

    getent = sandbox.run("getent", "hosts", NAME)
    assert getent.returncode == 0, getent
    assert getent.stdout.split()[0] == ADDRESS

    nslookup = sandbox.run("busybox", "nslookup", NAME, "127.0.0.11")
    assert f"Address: {ADDRESS}" in nslookup.stdout, nslookup

    missing = sandbox.run("getent", "hosts", "missing.ndtest")
    assert missing.returncode == 2  # "key not found": our NXDOMAIN came back


def test_r17_sandbox_process_binds_port_53_while_127_0_0_11_still_answers(
    sandbox: Sandbox,
) -> None:
    sandbox.serve()
    # The sandbox's own DNS server on the wildcard address, port 53, udp and tcp.
    own_server = subprocess.Popen(
        [*sandbox.enter(), "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
         "--no-resolv", "--no-hosts", "--port=53", "--user=root", "--pid-file=",
         f"--address=/{USER_NAME}/{USER_ADDRESS}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while "0.0.0.0:53" not in sandbox.run("ss", "-Hlnu", "sport = :53").stdout:
            assert own_server.poll() is None, own_server.communicate()
            assert time.monotonic() < deadline, "dnsmasq did not bind 0.0.0.0:53"
            time.sleep(0.05)
        # Port 53 belongs to the sandbox's server on every address but 127.0.0.11 ...
        assert sandbox.dig(USER_NAME, server="127.0.0.1") == USER_ADDRESS
        assert sandbox.dig("+tcp", USER_NAME, server="127.0.0.1") == USER_ADDRESS
        # ... and 127.0.0.11:53 still reaches the listener, never dnsmasq.
        assert sandbox.dig(NAME) == ADDRESS
        assert sandbox.dig("+tcp", NAME) == ADDRESS
        assert sandbox.dig(USER_NAME) == ""  # our NXDOMAIN, not dnsmasq's address
    finally:
        own_server.kill()
        own_server.wait(timeout=10)


def test_r17_a_plain_bind_of_0_0_0_0_53_succeeds_in_the_sandbox(sandbox: Sandbox) -> None:
    sandbox.serve()
    bind = sandbox.run(
        "python3", "-c",
        "import socket\n"
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', 53))\n"
        "t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.bind(('0.0.0.0', 53))\n"
        "t.listen()\n"
        "print('bound')\n",
    )  # fmt: skip
    assert bind.returncode == 0, bind.stderr
    assert bind.stdout.strip() == "bound"


def test_install_redirect_is_idempotent_and_follows_the_new_port(sandbox: Sandbox) -> None:
    sandbox.serve()
    netns.install_redirect(sandbox.path, sandbox.port)
    rules = sandbox.run("nft", "list", "table", "ip", "netdns").stdout
    assert rules.count("notrack") == 4, rules
    assert rules.count(f"dport set {sandbox.port}") == 2, rules
    assert sandbox.dig(NAME) == ADDRESS

    # A second listener (a restarted one, say): reinstalling moves the redirect, adds none.
    second, second_port = sandbox.start_listener(answer=OTHER_ADDRESS)
    try:
        assert second_port != sandbox.port
        netns.install_redirect(sandbox.path, second_port)
        rules = sandbox.run("nft", "list", "table", "ip", "netdns").stdout
        assert rules.count("notrack") == 4, rules
        assert rules.count(f"dport set {second_port}") == 2, rules
        assert rules.count(f"sport {second_port}") == 2, rules
        assert f"{sandbox.port}" not in rules, rules
        assert sandbox.dig(NAME) == OTHER_ADDRESS
        assert sandbox.dig("+tcp", NAME) == OTHER_ADDRESS
    finally:
        sandbox.loop.run(second.close())


def test_removed_redirect_and_closed_sockets_answer_nothing(sandbox: Sandbox) -> None:
    sandbox.serve()
    assert sandbox.dig(NAME) == ADDRESS

    netns.remove_redirect(sandbox.path)
    netns.remove_redirect(sandbox.path)  # already gone: not an error
    assert "netdns" not in sandbox.run("nft", "list", "tables").stdout
    assert sandbox.dig(NAME).startswith("rc=")  # nothing on 127.0.0.11:53 any more
    assert sandbox.dig("+tcp", NAME).startswith("rc=")
    assert sandbox.dig(NAME, port=sandbox.port) == ADDRESS  # the listener itself still serves

    sandbox.close()
    assert sandbox.dig(NAME, port=sandbox.port).startswith("rc=")
    tcp = sandbox.run("dig", "@127.0.0.11", "-p", str(sandbox.port), "+tcp", "+tries=1",
                      "+time=2", NAME)  # fmt: skip
    assert tcp.returncode != 0 and "refused" in tcp.stdout + tcp.stderr, tcp


def test_r17_adopted_namespace_by_proc_pid_path_works(adopted: Sandbox) -> None:
    # `unshare --net` leaves lo down; opening the sockets brings it up.
    assert "state DOWN" in adopted.run("ip", "link", "show", "lo").stdout
    adopted.serve()
    assert adopted.dig(NAME) == ADDRESS
    assert adopted.dig("+tcp", NAME) == ADDRESS
    netns.remove_redirect(adopted.path)
    assert adopted.dig(NAME).startswith("rc=")


def test_install_redirect_without_nft_is_unsupported(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH where no nft lives
    with pytest.raises(Unsupported, match="nft"):
        netns.install_redirect(sandbox.path, 5353)


def test_install_redirect_into_a_missing_namespace_is_not_found() -> None:
    with pytest.raises(NotFound):
        netns.install_redirect(f"/run/netns/nd{secrets.token_hex(3)}gone", 5353)
