"""What a real daemon exposes, and to whom: the DNS listener, the admin socket, the admin TCP
listener, and what bad input does to its state.

- Not an open resolver: only a sandbox's own 127.0.0.11 answers. Neither the host namespace nor
  a namespace the test plugs into the same bridge (a neighbour that is no netdns sandbox) gets an
  answer from the container's bridge address (port 53 or the listener's own port, UDP or TCP)
  or from its own 127.0.0.11; inside the sandbox every listening socket is on 127.0.0.11.
- The admin unix socket is 0600 root in a directory no one else may write; uid 65534 is refused.
- The admin TCP listener wants the token (ROOT/admin.token, 0600): none or a wrong one is 401.
- Bad names, network names, subnets and options are refused by the CLI (non-zero exit) and by the
  HTTP API (4xx), the message naming the bad input, and nothing changes.

Traffic goes only to loopback and to addresses on links this test (or its daemon) made.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.labs.daemon import DaemonProcess, running_daemon, suffix
from bench.labs.upstreams import free_loopback_address

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and links")

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
# The system python, which uid 65534 can run (the venv's interpreter lives under /root).
SYSTEM_PYTHON = "/usr/bin/python3"
CONNECT_UNIX = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "try:\n"
    "    s.connect(sys.argv[1])\n"
    "except OSError as e:\n"
    "    print(type(e).__name__, e.errno)\n"
    "    sys.exit(1)\n"
    "print('connected')\n"
)


@dataclass
class Admin:
    daemon: DaemonProcess
    url: str  # http://127.x.y.z:PORT
    token_path: Path

    def request(
        self, method: str, path: str, body: object = None, token: str | None = ""
    ) -> tuple[int, object]:
        """(status, JSON body); token "" means the right one, None none at all."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token or self.token_path.read_text().strip()}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def state(self) -> tuple[object, object, object]:
        """Networks, containers and services as the API lists them."""
        return tuple(self.request("GET", f"/v1/{kind}")[1] for kind in
                     ("networks", "containers", "services"))  # type: ignore[return-value]  # fmt: skip


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    port = random.randint(20000, 60000)
    address = free_loopback_address(port)
    tmp = tmp_path_factory.mktemp("exposure")
    with running_daemon(tmp, "--admin-tcp", f"{address}:{port}") as daemon:
        yield Admin(daemon, f"http://{address}:{port}", tmp / "state" / "admin.token")


def random_subnet() -> str:
    return f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250)}.0/24"


def dig(*args: str, netns: str = "") -> subprocess.CompletedProcess:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    command = [*prefix, "dig", "+tries=1", "+time=1", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=15)


def got_answer(done: subprocess.CompletedProcess) -> bool:
    """Whether dig got a DNS reply at all (any rcode)."""
    return done.returncode == 0 and "->>HEADER<<-" in done.stdout


def listening(netns: str, flag: str) -> list[str]:
    """Local addresses of listening sockets in a namespace: flag -lun (UDP) or -ltn (TCP)."""
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "ss", "-H", flag], capture_output=True, text=True, check=True
    )
    return [line.split()[3] for line in done.stdout.splitlines() if line.strip()]


# Run inside the neighbour's namespace: an Ethernet frame to the container's MAC carrying a DNS
# query for 127.0.0.11:PORT (what a neighbour on the bridge can send, whatever its routes say);
# prints "answered" if any UDP reply comes back to it within a second, else "silent". A kernel
# with route_localnet=1 in the sandbox would take such packets (CVE-2020-8558's pattern).
SPOOF = r"""
import socket, struct, sys, time
from dnslib import DNSRecord
ifname, dst_mac, src_ip, port, name = sys.argv[1:6]
src_mac = open(f"/sys/class/net/{ifname}/address").read().strip()
def checksum(data):
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
payload = DNSRecord.question(name).pack()
udp = struct.pack("!HHHH", 40053, int(port), 8 + len(payload), 0) + payload
header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton(src_ip), socket.inet_aton("127.0.0.11"))
header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
mac = lambda text: bytes.fromhex(text.replace(":", ""))
frame = mac(dst_mac) + mac(src_mac) + b"\x08\x00" + header + udp
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
sock.bind((ifname, 0))
sock.settimeout(0.2)
sock.send(frame)
deadline = time.monotonic() + 1.0
while time.monotonic() < deadline:
    try:
        data = sock.recv(2048)
    except TimeoutError:
        continue
    if data[23] == 17 and struct.unpack("!H", data[36:38])[0] == 40053:
        print("answered")
        sys.exit(0)
print("silent")
"""


@contextmanager
def neighbour(bridge: str, address: str, tag: str) -> Iterator[str]:
    """A namespace on `bridge` with `address`: a plain process's view, no netdns listener."""
    name, host_end, ns_end = f"nd{tag}o", f"vnd{tag}o", f"nd{tag}p"
    try:
        for command in (
            ["ip", "netns", "add", name],
            ["ip", "-n", name, "link", "set", "lo", "up"],
            ["ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end],
            ["ip", "link", "set", ns_end, "netns", name],
            ["ip", "link", "set", host_end, "master", bridge, "up"],
            ["ip", "-n", name, "addr", "add", address, "dev", ns_end],
            ["ip", "-n", name, "link", "set", ns_end, "up"],
        ):
            subprocess.run(command, check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


# -- not an open resolver -----------------------------------------------------------------------


def test_only_the_sandboxs_own_127_0_0_11_answers(admin: Admin) -> None:
    d = admin.daemon
    s = suffix()
    net, box, bridge = f"exp-{s}", f"box-{s}", f"br-nd{s}"
    subnet = random_subnet()
    d.network(net, "--subnet", subnet, "-o", f"com.docker.network.bridge.name={bridge}")
    d.container(box, "--network", net)
    settings = d.json("container", "inspect", box)[0]["NetworkSettings"]["Networks"][net]
    address, mac = settings["IPAddress"], settings["MacAddress"]
    # The sandbox's own 127.0.0.11 answers (the control: the name is there to be had).
    assert d.dig(box, "+short", box).stdout.split() == [address]

    # Inside the sandbox every listening socket is on 127.0.0.11, none on 0.0.0.0 or the
    # endpoint address.
    udp, tcp = listening(box, "-lun"), listening(box, "-ltn")
    assert udp and tcp, (udp, tcp)
    assert all(a.startswith("127.0.0.11:") for a in udp + tcp), (udp, tcp)
    ports = sorted({a.rpartition(":")[2] for a in udp + tcp} | {"53"})

    # The host namespace (where the daemon runs): the container's address on port 53 and on
    # the listener's own port, UDP and TCP; and the host's own 127.0.0.11.
    for port in ports:
        for transport in ("+notcp", "+tcp"):
            done = dig(f"@{address}", "-p", port, transport, box)
            assert not got_answer(done), f"host -> {address}:{port} {transport}: {done.stdout}"
    done = dig("@127.0.0.11", box)
    assert address not in done.stdout, f"the host's 127.0.0.11 knows {box}: {done.stdout}"

    # A neighbour on the same bridge that is no sandbox: it reaches the container (ping), yet
    # gets no DNS answer from it nor from its own 127.0.0.11.
    neighbour_address = str(ip_in(subnet, 250)) + "/24"
    with neighbour(bridge, neighbour_address, s) as ns:
        ping = subprocess.run(
            ["ip", "netns", "exec", ns, "ping", "-c1", "-W2", address], capture_output=True
        )
        assert ping.returncode == 0, "the neighbour cannot reach the container at all"
        for port in ports:
            for transport in ("+notcp", "+tcp"):
                done = dig(f"@{address}", "-p", port, transport, box, netns=ns)
                assert not got_answer(done), f"neighbour -> {address}:{port}: {done.stdout}"
        done = dig("@127.0.0.11", box, netns=ns)
        assert not got_answer(done), f"the neighbour's 127.0.0.11 answered: {done.stdout}"
        # Frames for 127.0.0.11 sent straight to the container's MAC: dropped as martians.
        for port in ports:
            spoof = subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, "-c", SPOOF, f"nd{s}p", mac,
                 neighbour_address.split("/")[0], port, box],
                capture_output=True, text=True, timeout=15,
            )  # fmt: skip
            assert spoof.stdout.strip() == "silent", (port, spoof.stdout, spoof.stderr)
    # Still answering its own sandbox after all that.
    assert d.dig(box, "+short", box).stdout.split() == [address]


def test_r1_a_sandbox_on_the_default_bridge_only_has_no_listener(admin: Admin) -> None:
    d = admin.daemon
    lone = f"lone-{suffix()}"
    d.container(lone)  # --network bridge: no embedded DNS
    assert listening(lone, "-lun") == [] and listening(lone, "-ltn") == []
    resolv = d.netns_exec(lone, "cat", "/etc/resolv.conf").stdout
    assert "127.0.0.11" not in resolv, resolv
    assert not got_answer(dig("@127.0.0.11", lone, netns=lone))


def ip_in(subnet: str, host: int) -> str:
    from ipaddress import ip_network

    return str(ip_network(subnet)[host])


# -- the admin unix socket ---------------------------------------------------------------------


def test_admin_socket_is_0600_root_and_refuses_other_users(admin: Admin) -> None:
    sock = admin.daemon.socket
    info = sock.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600, oct(info.st_mode)
    assert info.st_uid == 0
    parent = sock.parent.stat()
    assert parent.st_uid == 0 and not parent.st_mode & stat.S_IWOTH, oct(parent.st_mode)

    as_nobody = subprocess.run(
        [*NOBODY, SYSTEM_PYTHON, "-c", CONNECT_UNIX, str(sock)], capture_output=True, text=True
    )
    assert as_nobody.returncode == 1 and "PermissionError" in as_nobody.stdout, as_nobody

    # The same socket through a directory anyone may enter: then only its own mode refuses.
    with tempfile.TemporaryDirectory(prefix="nd-exp-") as open_dir:
        os.chmod(open_dir, 0o755)
        link = Path(open_dir) / "admin.sock"
        try:
            os.link(sock, link)
        except OSError as exc:  # another filesystem: the check above has to do
            pytest.skip(f"cannot hard-link the socket into {open_dir}: {exc}")
        as_root = subprocess.run(
            [SYSTEM_PYTHON, "-c", CONNECT_UNIX, str(link)], capture_output=True, text=True
        )
        assert as_root.stdout.strip() == "connected", as_root
        as_nobody = subprocess.run(
            [*NOBODY, SYSTEM_PYTHON, "-c", CONNECT_UNIX, str(link)], capture_output=True, text=True
        )
        assert as_nobody.stdout.strip() == "PermissionError 13", as_nobody


# -- the admin TCP listener ---------------------------------------------------------------------


def test_admin_tcp_wants_the_token(admin: Admin) -> None:
    info = admin.token_path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0, oct(info.st_mode)
    for path in ("/v1/networks", "/healthz", "/metrics"):
        status, body = admin.request("GET", path, token=None)
        assert status == 401, (path, status, body)
        assert "token" in body["message"] and str(admin.token_path) in body["message"], body
        status, body = admin.request("GET", path, token="not-" + secrets.token_urlsafe(8))
        assert status == 401, (path, status, body)
    # A change without the token changes nothing.
    name = f"tok-{suffix()}"
    admin.daemon.made.append(("network", name))
    status, _ = admin.request("POST", "/v1/networks", {"name": name}, token=None)
    assert status == 401
    status, networks = admin.request("GET", "/v1/networks")
    assert status == 200
    assert name not in {n["Name"] for n in networks}  # type: ignore[union-attr]


# -- bad input -----------------------------------------------------------------------------------

LONG_LABEL = "a" * 64  # a DNS label is at most 63
TOO_LONG = ".".join(["b" * 60] * 4)  # 243 characters: more than the 200 a name may have


@pytest.fixture(scope="module")
def taken(admin: Admin) -> tuple[str, str]:
    """A network with a known subnet, for overlaps and as the place for bad containers."""
    net, subnet = f"taken-{suffix()}", random_subnet()
    admin.daemon.network(net, "--subnet", subnet)
    return net, subnet


CONTAINER_NAMES = ["a/b", "..", LONG_LABEL, TOO_LONG, "-web", "web app", "we\u0301b"]


@pytest.mark.parametrize("name", CONTAINER_NAMES)
def test_bad_container_names_are_refused_naming_them(
    admin: Admin, taken: tuple[str, str], name: str
) -> None:
    net, _ = taken
    admin.daemon.made.append(("container", name))
    shown = name[:20]
    before = admin.state()
    done = admin.daemon.cli("container", "create", f"--name={name}", "--network", net, check=False)
    assert done.returncode == 2, done
    assert shown in done.stderr, done.stderr
    status, body = admin.request("POST", "/v1/containers", {"name": name, "network": net})
    assert status == 400 and shown in body["message"], (status, body)  # type: ignore[index]
    assert admin.state() == before


NETWORK_NAMES = ["bad/net", "-net", "a..b", ".", LONG_LABEL, TOO_LONG, "net work"]


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_bad_network_names_are_refused_naming_them(admin: Admin, name: str) -> None:
    admin.daemon.made.append(("network", name))
    shown = name[:20]
    before = admin.state()
    # `--`: argparse would take "-net" for an option.
    done = admin.daemon.cli("network", "create", "--", name, check=False)
    assert done.returncode == 2, done
    assert shown in done.stderr, done.stderr
    status, body = admin.request("POST", "/v1/networks", {"name": name})
    assert status == 400 and shown in body["message"], (status, body)  # type: ignore[index]
    assert admin.state() == before


def bad_networks(subnet: str) -> list[tuple[str, list[str], dict, int, str]]:
    """(what, CLI args, API body, exit code, text the message must hold)."""
    inside = ip_in(subnet, 0).rsplit(".", 1)[0] + ".128/25"
    return [
        ("same subnet", ["--subnet", subnet], {"subnets": [subnet]}, 4, subnet),
        ("subnet inside it", ["--subnet", inside], {"subnets": [inside]}, 4, inside),
        ("host bits", ["--subnet", "10.0.0.1/24"], {"subnets": ["10.0.0.1/24"]}, 2, "10.0.0.1/24"),
        ("not a subnet", ["--subnet", "10.0.0/33"], {"subnets": ["10.0.0/33"]}, 2, "10.0.0/33"),
        ("prefix /31", ["--subnet", "10.250.7.0/31"], {"subnets": ["10.250.7.0/31"]}, 2, "/31"),
        ("prefix /32", ["--subnet", "10.250.7.8/32"], {"subnets": ["10.250.7.8/32"]}, 2, "/32"),
        ("unknown option", ["-o", "nd.bogus=1"], {"options": {"nd.bogus": "1"}}, 2, "nd.bogus"),
        ("unknown driver", ["--driver", "warp"], {"driver": "warp"}, 2, "warp"),
        ("bad mtu", ["-o", "com.docker.network.driver.mtu=9"],
         {"options": {"com.docker.network.driver.mtu": "9"}}, 2, "mtu"),
    ]  # fmt: skip


def test_bad_subnets_and_options_are_refused_naming_them(
    admin: Admin, taken: tuple[str, str]
) -> None:
    _, subnet = taken
    for what, args, body, code, shown in bad_networks(subnet):
        name = f"bad-{suffix()}"
        admin.daemon.made.append(("network", name))
        before = admin.state()
        done = admin.daemon.cli("network", "create", *args, name, check=False)
        assert done.returncode == code, (what, done)
        assert shown in done.stderr, (what, done.stderr)
        status, reply = admin.request("POST", "/v1/networks", {"name": name, **body})
        assert status == {2: 400, 4: 409}[code], (what, status, reply)
        assert shown in reply["message"], (what, reply)  # type: ignore[index]
        assert admin.state() == before, what
