"""The `netdns` command (netdns/cli/) and the demo (netdns/demo.py).

Parsing: every command of INTERFACE.md parses with its flags and has --help with examples.
Behaviour: the CLI runs against a small real aiohttp server on a temporary unix socket, serving
make_app over tests/unit/test_admin.py's TableOps (a real DriverCore and NameTable with in-test
drivers that make no Linux objects). The demo's getent inside namespaces is replaced by a
recording function here; the real one runs in tests/netns/.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from drivers.core import SandboxSpec
from netdns import cli
from netdns.admin import make_app
from netdns.client import Client, ClientError
from netdns.demo import CONTAINERS, NETWORK, run_demo
from tests.unit.test_admin import TableOps

HEX64 = re.compile(r"^[0-9a-f]{64}$")
REPO = Path(__file__).resolve().parents[2]

# -- parsing -----------------------------------------------------------------------------------

COMMANDS = [
    ["network", "create"],
    ["network", "ls"],
    ["network", "inspect"],
    ["network", "rm"],
    ["network", "connect"],
    ["network", "disconnect"],
    ["container", "create"],
    ["container", "ls"],
    ["container", "inspect"],
    ["container", "rm"],
    ["exec"],
    ["resolve"],
    ["demo"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_examples(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([*command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: netdns {' '.join(command)}" in text
    assert "examples:" in text and "  netdns " in text.split("examples:")[1]


@pytest.mark.parametrize("group", [[], ["network"], ["container"]], ids=repr)
def test_groups_have_help_listing_their_commands(
    group: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([*group, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    listed = {c[len(group)] for c in COMMANDS if c[: len(group)] == group and len(c) > len(group)}
    for name in listed:
        assert re.search(rf"^\s+{name}\s", text, re.M), (name, text)


def test_daemon_help_comes_from_the_daemons_own_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["daemon", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "usage: netdns daemon" in text
    for flag in ("--root", "--admin", "--admin-tcp", "--store", "--dns", "--local-ttl"):
        assert flag in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert re.match(r"netdns \S+", capsys.readouterr().out)


def test_network_create_takes_every_interface_flag() -> None:
    args, extra = cli.build_parser().parse_known_args(
        ["network", "create", "--driver", "macvlan", "--subnet", "10.1.0.0/24", "--subnet",
         "fd00:1::/64", "--gateway", "10.1.0.1", "--ip-range", "10.1.0.128/25", "--ipv6",
         "--internal", "--attachable", "-o", "parent=eth0.50", "-o", "macvlan_mode=bridge",
         "vlan50"]
    )  # fmt: skip
    assert extra == []
    assert (args.driver, args.name, args.subnet) == (
        "macvlan",
        "vlan50",
        ["10.1.0.0/24", "fd00:1::/64"],
    )
    assert (args.gateway, args.ip_range) == ("10.1.0.1", "10.1.0.128/25")
    assert args.ipv6 and args.internal and args.attachable
    assert cli.option_pairs(args.opt, "-o") == {"parent": "eth0.50", "macvlan_mode": "bridge"}


def test_container_create_takes_every_interface_flag() -> None:
    args, extra = cli.build_parser().parse_known_args(
        ["container", "create", "--name", "c1", "--hostname", "h1", "--network", "app",
         "--network-alias", "a1", "--network-alias", "a2", "--ip", "10.1.0.5", "--dns",
         "192.0.2.1", "--dns-search", "example.test", "--dns-option", "ndots:2", "--netns",
         "/proc/1/ns/net"]
    )  # fmt: skip
    assert extra == []
    assert (args.name, args.hostname, args.network) == ("c1", "h1", "app")
    assert args.network_alias == ["a1", "a2"] and args.ip == "10.1.0.5"
    assert (args.dns, args.dns_search, args.dns_option) == (
        ["192.0.2.1"], ["example.test"], ["ndots:2"]
    )  # fmt: skip
    assert args.netns == "/proc/1/ns/net"


def test_other_commands_parse() -> None:
    parser = cli.build_parser()
    args, _ = parser.parse_known_args(
        ["network", "connect", "--alias", "x", "--alias", "y", "--ip", "10.1.0.9", "--ip6",
         "fd00::9", "net", "c1"]
    )  # fmt: skip
    assert (args.network, args.container, args.alias) == ("net", "c1", ["x", "y"])
    args, _ = parser.parse_known_args(["exec", "c1", "--", "ls", "-l", "--", "x"])
    assert (args.name, args.argv) == ("c1", ["ls", "-l", "--", "x"])
    args, _ = parser.parse_known_args(["resolve", "--from", "c1", "--type", "AAAA", "n"])
    assert (args.source, args.type, args.name) == ("c1", "AAAA", "n")
    args, extra = parser.parse_known_args(["daemon", "--root", "/tmp/x", "--dns", "127.9.9.9"])
    assert args.command == "daemon" and extra == ["--root", "/tmp/x", "--dns", "127.9.9.9"]


def test_unknown_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["network", "ls", "--bogus"])
    assert done.value.code == 2
    assert "--bogus" in capsys.readouterr().err


def test_exit_codes_follow_the_error_classes() -> None:
    from drivers.errors import Conflict, Invalid, NotFound, Unsupported

    for cls in (Invalid, NotFound, Conflict, Unsupported):
        assert cli.exit_code(cls.http_status) == cls.exit_code
    assert cli.exit_code(0) == 1  # no daemon at all
    assert cli.exit_code(500) == 1


def test_exec_argv_per_kind_of_namespace() -> None:
    assert cli.exec_argv("/run/netns/a1", ["getent", "hosts", "a2"]) == [
        "ip", "netns", "exec", "a1", "getent", "hosts", "a2"
    ]  # fmt: skip
    assert cli.exec_argv("/proc/42/ns/net", ["ip", "addr"]) == [
        "nsenter", "--net=/proc/42/ns/net", "ip", "addr"
    ]  # fmt: skip
    assert cli.exec_argv("", ["true"]) == ["true"]  # host network: no namespace of its own


# -- against a real server on a unix socket ----------------------------------------------------


class Server:
    """make_app(TableOps) on a unix socket, served by an event loop in a thread."""

    def __init__(self, root: Path) -> None:
        self.ops = TableOps(root)
        self.dir = Path(tempfile.mkdtemp(prefix="nd-cli-"))  # short: sun_path is 108 bytes
        self.path = self.dir / "admin.sock"
        self.host = f"unix://{self.path}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(make_app(self.ops))
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.UnixSite(runner, str(self.path)).start())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def __enter__(self) -> Server:
        self._thread.start()
        assert self._ready.wait(10), "the test server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def run(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(["--host", self.host, *args], out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    def ok(self, *args: str) -> str:
        code, out, err = self.run(*args)
        assert code == 0, (args, err)
        assert err == ""
        return out


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with Server(tmp_path) as running:
        yield running


def table(text: str) -> list[list[str]]:
    return [re.split(r"\s{3,}", line.strip()) for line in text.splitlines()]


def test_network_commands_print_tables_json_and_ids(server: Server) -> None:
    net_id = server.ok("network", "create", "--subnet", "10.83.0.0/24", "app").strip()
    assert HEX64.match(net_id)
    rows = table(server.ok("network", "ls"))
    assert rows[0] == ["NETWORK ID", "NAME", "DRIVER", "SCOPE"]
    assert [net_id[:12], "app", "bridge", "local"] in rows[1:]
    assert {r[1] for r in rows[1:]} == {"app", "bridge", "host", "none"}
    listed = json.loads(server.ok("network", "ls", "--format", "json"))
    assert {"ID": net_id[:12], "Name": "app", "Driver": "bridge", "Scope": "local"} in listed
    assert server.ok("network", "ls", "-q").split().count(net_id[:12]) == 1

    inspected = json.loads(server.ok("network", "inspect", "app", "bridge"))
    assert [n["Name"] for n in inspected] == ["app", "bridge"]
    assert inspected[0]["IPAM"]["Config"][0]["Subnet"] == "10.83.0.0/24"

    assert server.ok("network", "rm", "app") == "app\n"
    assert "app" not in [n.name for n in server.ops.core.networks()]


def test_container_commands_and_connect(server: Server) -> None:
    server.ok("network", "create", "--subnet", "10.84.0.0/24", "front")
    server.ok("network", "create", "--subnet", "10.85.0.0/24", "back")
    cid = server.ok(
        "container", "create", "--name", "c1", "--network", "front", "--network-alias", "web",
        "--ip", "10.84.0.7", "--dns-option", "ndots:1",
    ).strip()  # fmt: skip
    assert HEX64.match(cid)
    assert server.ok("network", "connect", "--alias", "api", "back", "c1") == ""
    rows = table(server.ok("container", "ls"))
    assert rows[0] == ["CONTAINER ID", "NAME", "NETWORKS", "IPS"]
    assert rows[1][:3] == [cid[:12], "c1", "front,back"]
    assert rows[1][3].startswith("10.84.0.7,10.85.0.")

    (inspected,) = json.loads(server.ok("container", "inspect", "c1", "--format", "json"))
    assert inspected["Id"] == cid
    assert inspected["NetworkSettings"]["Networks"]["back"]["Aliases"] == ["api"]
    assert inspected["HostConfig"]["DnsOptions"] == ["ndots:1"]

    assert server.ok("network", "disconnect", "back", "c1") == ""
    (row,) = json.loads(server.ok("container", "ls", "--format", "json"))
    assert row["Networks"] == ["front"] and row["IPs"] == ["10.84.0.7"]
    assert server.ok("container", "rm", "c1") == "c1\n"
    assert server.ops.core.sandboxes() == []


def test_resolve_prints_answers_rule_and_path(server: Server) -> None:
    server.ok("network", "create", "--subnet", "10.86.0.0/24", "net")
    server.ok("container", "create", "--name", "a", "--network", "net")
    server.ok("container", "create", "--name", "b", "--network", "net", "--ip", "10.86.0.20")
    server.ok("container", "create", "--name", "lone")  # default bridge: no DNS (R1)
    text = server.ok("resolve", "--from", "a", "b")
    assert "b A from a: NOERROR" in text
    assert "10.86.0.20" in text
    assert "rule R2 (records, network net); path local\n" in text
    assert "not local" not in text

    text = server.ok("resolve", "--from", "lone", "b")
    assert "rule R11 (forward); path upstream via 127.0.0.1:53 in 0 ms" in text
    assert "networks holding 'b': net" in text

    explained = json.loads(
        server.ok("resolve", "--from", "a", "--type", "AAAA", "b", "--format", "json")
    )
    assert explained["rule"] == "R6" and explained["answers"] == []


def test_errors_exit_with_one_line_and_leave_state(server: Server) -> None:
    server.ok("network", "create", "--subnet", "10.87.0.0/24", "net")
    server.ok("container", "create", "--name", "c", "--network", "net")
    before = server.ok("network", "ls", "--format", "json")
    cases = [
        (("network", "create", "net"), 4, "already in use"),
        (("network", "create", "--subnet", "10.0.0.0/33", "bad"), 2, "10.0.0.0/33"),
        (("network", "connect", "no-such-net", "c"), 3, "no-such-net"),
        (("network", "connect", "net", "c"), 4, "already connected"),
        (("network", "rm", "net"), 4, "active endpoints"),
        (("network", "inspect", "ghost"), 3, "ghost"),
        (("container", "rm", "ghost"), 3, "ghost"),
        (("network", "create", "-o", "novalue", "x"), 2, "KEY=VALUE"),
    ]
    for args, code, words in cases:
        got, _, err = server.run(*args)
        assert got == code, (args, err)
        assert len(err.splitlines()) == 1 and err.startswith("netdns: "), (args, err)
        assert words in err, (args, err)
    assert server.ok("network", "ls", "--format", "json") == before


def test_rm_goes_on_past_a_failure(server: Server) -> None:
    server.ok("network", "create", "--subnet", "10.88.0.0/24", "n1")
    server.ok("network", "create", "--subnet", "10.89.0.0/24", "n2")
    code, out, err = server.run("network", "rm", "n1", "ghost", "n2")
    assert code == 3
    assert out == "n1\nn2\n"
    assert "ghost" in err and len(err.splitlines()) == 1


def test_exec_returns_the_commands_exit_code(server: Server) -> None:
    # A host-network container has no namespace of its own: the command runs as it is.
    server.ops.core.create_sandbox(SandboxSpec("hosty", network="host"))
    assert server.run("exec", "hosty", "--", "sh", "-c", "exit 7")[0] == 7
    assert server.run("exec", "hosty", "--", "true")[0] == 0
    code, _, err = server.run("exec", "ghost", "--", "true")
    assert code == 3 and "ghost" in err
    code, _, err = server.run("exec", "hosty")
    assert code == 2 and "no command" in err


def test_no_daemon_is_a_clear_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sock"
    env = {**os.environ, "NETDNS_HOST": f"unix://{missing}"}
    done = subprocess.run(
        [sys.executable, "-m", "netdns.cli", "network", "ls"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(f"netdns: cannot reach the netdns daemon at {missing}: ")
    assert "is `netdns daemon` running?" in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_bad_host_is_a_clear_error(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["--host", "http://x", "network", "ls"], out=out, err=err) == 1
    assert "unix:///path/to/socket or tcp://HOST:PORT" in err.getvalue()


def test_tcp_host_sends_the_token(tmp_path: Path) -> None:
    """Over tcp://, NETDNS_TOKEN goes as a bearer token (the daemon checks it)."""
    seen: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response([])

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/v1/networks", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            client = Client(f"tcp://127.0.0.1:{port}", token="s3cret")
            assert await asyncio.to_thread(client.networks) == []
        finally:
            await runner.cleanup()

    asyncio.run(main())
    assert seen == ["Bearer s3cret"]


def test_client_error_keeps_status_and_message(server: Server) -> None:
    client = Client(server.host)
    with pytest.raises(ClientError) as caught:
        client.network("ghost")
    assert caught.value.status == 404 and "ghost" in caught.value.message


# -- the demo ----------------------------------------------------------------------------------


class RecordingGetent:
    """Stands in for getent inside namespaces: answers from the daemon's own resolve."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.asked: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, container: str, name: str) -> str:
        with self.lock:
            self.asked.append((container, name))
        found = self.client.resolve(name, source=container)
        return found["answers"][0].split()[-1] if found["answers"] else ""


def test_r1_r18_demo_runs_through_and_removes_everything(server: Server) -> None:
    out = io.StringIO()
    getent = RecordingGetent(Client(server.host))
    assert run_demo(Client(server.host), out, resolve_in=getent) == 0
    text = out.getvalue()
    for command in (
        f"$ netdns network create {NETWORK}",
        f"$ netdns container create --name alpine1 --network {NETWORK}",
        "$ netdns container create --name alpine3\n",
        "$ netdns network connect bridge alpine4",
        f"$ netdns network disconnect {NETWORK} alpine2",
        f"# connect alpine2 back to {NETWORK}\n$ netdns network connect {NETWORK} alpine2",
        "$ netdns container rm alpine4",
        f"$ netdns network rm {NETWORK}",
    ):
        assert command in text, command
    # Every container was asked about every name, then alpine1 about alpine2 twice more.
    assert {(s, n) for s in CONTAINERS for n in CONTAINERS} <= set(getent.asked)
    assert getent.asked.count(("alpine1", "alpine2")) == 3
    matrix = text.split("FROM \\ NAME")[1].split("\n#")[0]
    alpine3_row = next(line for line in matrix.splitlines() if line.strip().startswith("alpine3"))
    assert alpine3_row.split()[1:] == ["-", "-", "-", "-"]  # R1: the default bridge has no DNS
    # Afterwards: nothing the demo made is left.
    assert sorted(n.name for n in server.ops.core.networks()) == ["bridge", "host", "none"]
    assert server.ops.core.sandboxes() == []


def test_demo_shows_alpine2_gone_after_disconnect(server: Server) -> None:
    out = io.StringIO()
    assert run_demo(Client(server.host), out, resolve_in=RecordingGetent(Client(server.host))) == 0
    after_disconnect = out.getvalue().split("network disconnect")[1].split("network connect")[0]
    after_connect = out.getvalue().split(f"network connect {NETWORK} alpine2")[1]
    assert re.search(r"alpine1\s+-\s*$", after_disconnect, re.M)
    assert re.search(r"alpine1\s+\d+\.\d+\.\d+\.\d+\s*$", after_connect, re.M)


def test_demo_stops_when_alpine_net_exists(server: Server) -> None:
    server.ok("network", "create", "--subnet", "10.91.0.0/24", NETWORK)
    out = io.StringIO()
    assert run_demo(Client(server.host), out, resolve_in=lambda c, n: "") == 1
    assert f"network {NETWORK!r} already exists" in out.getvalue()
    assert NETWORK in [n.name for n in server.ops.core.networks()]  # not the demo's to remove


def test_demo_cleans_up_on_ctrl_c(server: Server) -> None:
    def interrupted(container: str, name: str) -> str:
        raise KeyboardInterrupt

    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        run_demo(Client(server.host), out, resolve_in=interrupted)
    assert "$ netdns container rm alpine1" in out.getvalue()
    assert sorted(n.name for n in server.ops.core.networks()) == ["bridge", "host", "none"]
    assert server.ops.core.sandboxes() == []
