"""The admin HTTP API (netdns/admin.py): every route, its JSON, and its error shapes.

Requests go through aiohttp's real HTTP stack (TestServer/TestClient on a loopback port, inside
asyncio.run). The AdminOps behind it is `TableOps` below: a real DriverCore and a real NameTable,
but with in-test drivers and namespaces that record nothing and make no Linux objects (bridges,
veths and namespaces are covered by tests/netns/), and a real LocalStore in a temporary
directory. Its `explain` reports the name table's decision only (no forwarding), enough to check
how the API carries it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from drivers.core import ConnectSpec, DriverCore, NetworkSpec, SandboxSpec
from drivers.errors import Invalid
from drivers.local_store import LocalStore
from drivers.model import Driver, Endpoint, Network, Sandbox
from netdns.admin import AdminOps, make_app
from resolver.lookup import Outcome
from resolver.names import QTYPE_A, QTYPE_AAAA, QTYPE_PTR, QTYPE_SRV, NameTable
from tests.unit.doubles import PathNamespaces, QuietDriver

# -- the AdminOps under test ----------------------------------------------------------------


_QTYPES = {"A": QTYPE_A, "AAAA": QTYPE_AAAA, "PTR": QTYPE_PTR, "SRV": QTYPE_SRV}
_RCODES = {Outcome.RECORDS: "NOERROR", Outcome.NODATA: "NOERROR", Outcome.NXDOMAIN: "NXDOMAIN"}


class TableOps:
    """AdminOps over a DriverCore with quiet drivers; the name table follows its events."""

    def __init__(self, root: Path) -> None:
        self.namespaces = PathNamespaces()
        self.core = DriverCore(
            LocalStore(root), {k: QuietDriver(k) for k in Driver}, self.namespaces
        )
        self.table = NameTable()
        self.core.subscribe(self.table.apply)
        self.core.start()

    async def create_network(self, spec: NetworkSpec) -> Network:
        return await asyncio.to_thread(self.core.create_network, spec)

    async def remove_network(self, ref: str) -> Network:
        return await asyncio.to_thread(self.core.remove_network, ref)

    async def connect(self, spec: ConnectSpec) -> Endpoint:
        return await asyncio.to_thread(self.core.connect, spec)

    async def disconnect(self, network_ref: str, container_ref: str) -> Endpoint:
        return await asyncio.to_thread(self.core.disconnect, network_ref, container_ref)

    async def create_sandbox(self, spec: SandboxSpec) -> Sandbox:
        return await asyncio.to_thread(self.core.create_sandbox, spec)

    async def remove_sandbox(self, ref: str) -> Sandbox:
        return await asyncio.to_thread(self.core.remove_sandbox, ref)

    async def explain(self, sandbox_ref: str, name: str, qtype: str) -> dict[str, Any]:
        sandbox_id = self.core.sandbox(sandbox_ref).id if sandbox_ref else ""
        code = _QTYPES.get(qtype.upper())
        if code is None:
            raise Invalid(f"type {qtype!r}: this test double knows A, AAAA, PTR, SRV")
        lookup = self.table.lookup(sandbox_id, name, code)
        local = lookup.outcome is not Outcome.FORWARD
        record = "A" if code == QTYPE_A else "AAAA"
        return {
            "from": sandbox_ref,
            "name": name,
            "type": qtype.upper(),
            "rcode": _RCODES.get(lookup.outcome, "NXDOMAIN"),
            "answers": [f"{name}.\t5\tIN\t{record}\t{a}" for a in lookup.addresses],
            "additional": [],
            "rule": str(lookup.rule),
            "outcome": str(lookup.outcome),
            "network": lookup.network,
            "path": "local" if local else "upstream",
            "upstream": "" if local else "127.0.0.1:53",
            "elapsed_ms": 0.0,
            "networks_holding": list(self.table.networks_holding(name)),
        }


def _conforms(ops: AdminOps) -> AdminOps:
    return ops  # a type checker verifies TableOps against the protocol here


# -- plumbing --------------------------------------------------------------------------------

Call = Callable[..., Awaitable[tuple[int, Any]]]


def run_api(root: Path, scenario: Callable[[Call, TableOps], Awaitable[None]]) -> TableOps:
    """Serve make_app(TableOps) on loopback and run `scenario(call, ops)` against it."""
    ops = TableOps(root)

    async def main() -> None:
        async with TestClient(TestServer(make_app(_conforms(ops)))) as client:

            async def call(
                method: str, path: str, body: Any = None, *, raw: bytes | None = None
            ) -> tuple[int, Any]:
                data = raw if raw is not None else (None if body is None else json.dumps(body))
                headers = {"Content-Type": "application/json"} if data is not None else {}
                response = await client.request(method, path, data=data, headers=headers)
                assert response.content_type == "application/json", await response.text()
                return response.status, await response.json()

            await scenario(call, ops)

    asyncio.run(main())
    return ops


def assert_error(status: int, body: Any, expected: int, *words: str) -> None:
    assert status == expected, body
    assert set(body) == {"message", "status"}, body
    assert body["status"] == expected
    assert "Traceback" not in body["message"]
    for word in words:
        assert word in body["message"], body["message"]


# -- routes ------------------------------------------------------------------------------------


def test_healthz_and_predefined_networks(tmp_path: Path) -> None:
    async def scenario(call: Call, ops: TableOps) -> None:
        status, body = await call("GET", "/healthz")
        assert status == 200 and body["status"] == "ok"
        status, networks = await call("GET", "/v1/networks")
        assert status == 200
        assert sorted(n["Name"] for n in networks) == ["bridge", "host", "none"]

    run_api(tmp_path, scenario)


def test_network_create_get_list_and_remove(tmp_path: Path) -> None:
    async def scenario(call: Call, ops: TableOps) -> None:
        status, created = await call(
            "POST",
            "/v1/networks",
            {"name": "app", "subnets": ["10.77.0.0/24"], "gateway": "10.77.0.1",
             "internal": True, "options": {"com.example.k": "v"}},
        )  # fmt: skip
        assert status == 201, created
        assert created["Name"] == "app" and created["Driver"] == "bridge"
        assert created["IPAM"]["Config"] == [{"Subnet": "10.77.0.0/24", "Gateway": "10.77.0.1"}]
        assert created["Internal"] is True
        assert created["Options"] == {"com.example.k": "v"}
        # By name, by full id and by a unique id prefix.
        for ref in ("app", created["Id"], created["Id"][:12]):
            status, got = await call("GET", f"/v1/networks/{ref}")
            assert status == 200 and got["Id"] == created["Id"], ref
        status, networks = await call("GET", "/v1/networks")
        assert "app" in [n["Name"] for n in networks]
        status, removed = await call("DELETE", "/v1/networks/app")
        assert status == 200 and removed == {"Name": "app", "Id": created["Id"]}
        status, body = await call("GET", "/v1/networks/app")
        assert_error(status, body, 404, "app")

    ops = run_api(tmp_path, scenario)
    assert "app" not in [n.name for n in ops.core.networks()]


def test_container_create_connect_disconnect_remove(tmp_path: Path) -> None:
    async def scenario(call: Call, ops: TableOps) -> None:
        await call("POST", "/v1/networks", {"name": "front", "subnets": ["10.78.0.0/24"]})
        await call("POST", "/v1/networks", {"name": "back", "subnets": ["10.79.0.0/24"]})
        status, c1 = await call(
            "POST",
            "/v1/containers",
            {"name": "c1", "network": "front", "aliases": ["web"], "ip": "10.78.0.10",
             "dns_search": ["example.test"], "dns_options": ["ndots:2"]},
        )  # fmt: skip
        assert status == 201, c1
        assert c1["Name"] == "/c1"
        assert c1["NetworkSettings"]["SandboxKey"] == "/run/netns/c1"
        assert c1["HostConfig"]["DnsOptions"] == ["ndots:2"]
        front = c1["NetworkSettings"]["Networks"]["front"]
        assert front["IPAddress"] == "10.78.0.10" and front["Aliases"] == ["web"]

        status, endpoint = await call(
            "POST", "/v1/networks/back/connect", {"container": "c1", "aliases": ["api"]}
        )
        assert status == 200, endpoint
        assert endpoint["Network"] == "back" and endpoint["Aliases"] == ["api"]
        assert endpoint["IPv4Address"].startswith("10.79.0.")
        status, c1 = await call("GET", "/v1/containers/c1")
        assert list(c1["NetworkSettings"]["Networks"]) == ["front", "back"]  # connect order
        status, back = await call("GET", "/v1/networks/back")
        assert back["Containers"][c1["Id"]]["Name"] == "c1"

        status, endpoint = await call("POST", "/v1/networks/back/disconnect", {"container": "c1"})
        assert status == 200 and endpoint["Network"] == "back"
        status, c1 = await call("GET", "/v1/containers/c1")
        assert list(c1["NetworkSettings"]["Networks"]) == ["front"]

        status, listed = await call("GET", "/v1/containers")
        assert [c["Name"] for c in listed] == ["/c1"]
        status, removed = await call("DELETE", "/v1/containers/c1")
        assert status == 200 and removed["Name"] == "c1"
        status, listed = await call("GET", "/v1/containers")
        assert listed == []

    ops = run_api(tmp_path, scenario)
    assert ops.namespaces.live == set()


def test_r18_resolve_follows_connect_and_disconnect(tmp_path: Path) -> None:
    async def scenario(call: Call, ops: TableOps) -> None:
        await call("POST", "/v1/networks", {"name": "net", "subnets": ["10.80.0.0/24"]})
        await call("POST", "/v1/containers", {"name": "a", "network": "net"})
        await call("POST", "/v1/containers", {"name": "b", "network": "net", "ip": "10.80.0.20"})
        status, found = await call("GET", "/v1/resolve?from=a&name=b&type=A")
        assert status == 200, found
        assert found["rule"] == "R2" and found["rcode"] == "NOERROR"
        assert found["network"] == "net" and found["path"] == "local"
        assert any("10.80.0.20" in rr for rr in found["answers"])
        await call("POST", "/v1/networks/net/disconnect", {"container": "b"})
        status, gone = await call("GET", "/v1/resolve?from=a&name=b")
        assert gone["rule"] == "R11" and gone["path"] == "upstream"
        assert gone["networks_holding"] == []

    run_api(tmp_path, scenario)


# -- errors ------------------------------------------------------------------------------------


def test_errors_are_json_with_the_status_of_their_class(tmp_path: Path) -> None:
    async def scenario(call: Call, ops: TableOps) -> None:
        await call("POST", "/v1/networks", {"name": "dup", "subnets": ["10.81.0.0/24"]})
        await call("POST", "/v1/containers", {"name": "c", "network": "dup"})
        before = await call("GET", "/v1/networks")

        status, body = await call("GET", "/v1/networks/nope")
        assert_error(status, body, 404, "nope")
        status, body = await call("POST", "/v1/networks/nope/connect", {"container": "c"})
        assert_error(status, body, 404, "nope")
        status, body = await call("POST", "/v1/networks", {"name": "dup"})
        assert_error(status, body, 409, "dup")
        status, body = await call("POST", "/v1/networks/dup/connect", {"container": "c"})
        assert_error(status, body, 409, "already connected")
        status, body = await call("DELETE", "/v1/networks/dup")
        assert_error(status, body, 409, "c")
        status, body = await call("DELETE", "/v1/networks/bridge")
        assert_error(status, body, 409, "predefined")
        status, body = await call(
            "POST", "/v1/networks", {"name": "bad", "subnets": ["10.0.0.0/33"]}
        )
        assert_error(status, body, 400, "10.0.0.0/33")
        status, body = await call("POST", "/v1/containers", {"name": "x", "network": "nope"})
        assert_error(status, body, 404, "nope")

        assert await call("GET", "/v1/networks") == before

    ops = run_api(tmp_path, scenario)
    assert sorted(s.name for s in ops.core.sandboxes()) == ["c"]


@pytest.mark.parametrize(
    ("path", "raw", "words"),
    [
        ("/v1/networks", b"{not json", ("not valid JSON",)),
        ("/v1/networks", b"[1, 2]", ("JSON object", "a list")),
        ("/v1/networks", b"{}", ("'name'", "required")),
        ("/v1/networks", b'{"name": 5}', ("'name'", "string", "a number")),
        ("/v1/networks", b'{"name": "n", "subnets": "10.1.0.0/24"}', ("'subnets'", "list")),
        ("/v1/networks", b'{"name": "n", "ipv6": "yes"}', ("'ipv6'", "true or false")),
        ("/v1/networks", b'{"name": "n", "options": ["a=b"]}', ("'options'", "object")),
        ("/v1/networks", b'{"name": "n", "subnet": "10.1.0.0/24"}', ("subnet", "known fields")),
        ("/v1/containers", b'{"network": "bridge"}', ("'name'", "required")),
        ("/v1/containers", b'{"name": "c", "aliases": [1]}', ("'aliases'", "list of strings")),
        ("/v1/networks/bridge/connect", b"{}", ("'container'", "required")),
        ("/v1/networks/bridge/disconnect", b'{"container": ""}', ("'container'", "empty")),
    ],
)
def test_malformed_requests_are_400_naming_the_field(
    tmp_path: Path, path: str, raw: bytes, words: tuple[str, ...]
) -> None:
    async def scenario(call: Call, ops: TableOps) -> None:
        status, body = await call("POST", path, raw=raw)
        assert_error(status, body, 400, *words)

    ops = run_api(tmp_path, scenario)
    assert sorted(n.name for n in ops.core.networks()) == ["bridge", "host", "none"]
    assert ops.core.sandboxes() == []


def test_resolve_needs_a_name_and_a_known_container(tmp_path: Path) -> None:
    async def scenario(call: Call, ops: TableOps) -> None:
        status, body = await call("GET", "/v1/resolve")
        assert_error(status, body, 400, "'name'")
        status, body = await call("GET", "/v1/resolve?name=x&frm=a")
        assert_error(status, body, 400, "frm")
        status, body = await call("GET", "/v1/resolve?name=x&from=ghost")
        assert_error(status, body, 404, "ghost")
        status, body = await call("GET", "/v1/resolve?name=x&type=BOGUS")
        assert_error(status, body, 400, "BOGUS")

    run_api(tmp_path, scenario)


def test_unknown_route_and_method_are_json(tmp_path: Path) -> None:
    async def scenario(call: Call, ops: TableOps) -> None:
        status, body = await call("GET", "/v1/nothing-here")
        assert_error(status, body, 404, "/v1/nothing-here")
        status, body = await call("PUT", "/v1/networks")
        assert_error(status, body, 405, "PUT")

    run_api(tmp_path, scenario)


def test_a_bug_is_a_500_without_a_traceback(tmp_path: Path) -> None:
    class BrokenOps(TableOps):
        async def create_network(self, spec: NetworkSpec) -> Network:
            raise RuntimeError("secret internal detail")

    async def main() -> None:
        app = make_app(BrokenOps(tmp_path))
        async with TestClient(TestServer(app)) as client:
            response = await client.post("/v1/networks", json={"name": "n"})
            body = await response.json()
            assert response.status == 500
            assert body == {
                "message": "internal error in the netdns daemon: see its log",
                "status": 500,
            }

    asyncio.run(main())


def test_state_survives_a_restart_behind_the_api(tmp_path: Path) -> None:
    async def create(call: Call, ops: TableOps) -> None:
        status, _ = await call(
            "POST", "/v1/networks", {"name": "kept", "subnets": ["10.82.0.0/24"]}
        )
        assert status == 201

    async def read(call: Call, ops: TableOps) -> None:
        status, got = await call("GET", "/v1/networks/kept")
        assert status == 200 and got["IPAM"]["Config"][0]["Subnet"] == "10.82.0.0/24"

    run_api(tmp_path, create)
    run_api(tmp_path, read)


def test_app_answers_over_a_unix_socket(tmp_path: Path) -> None:
    """The daemon serves make_app on a unix socket; the same app works there."""
    import tempfile

    from netdns.client import Client

    ops = TableOps(tmp_path)
    sock_dir = Path(tempfile.mkdtemp(prefix="nd-admin-"))
    sock = sock_dir / "admin.sock"

    async def main() -> None:
        runner = web.AppRunner(make_app(ops))
        await runner.setup()
        await web.UnixSite(runner, str(sock)).start()
        try:
            client = Client(f"unix://{sock}")
            networks = await asyncio.to_thread(client.networks)
            assert sorted(n["Name"] for n in networks) == ["bridge", "host", "none"]
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        sock.unlink(missing_ok=True)
        sock_dir.rmdir()
