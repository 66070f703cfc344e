"""The admin HTTP API: the CLI's operations as JSON under /v1/, served by the daemon.

Routes (JSON in and out):
    GET    /healthz
    GET    /v1/networks                        every network, as `docker network inspect`
    POST   /v1/networks                        {"name", "driver", "subnets", "gateway",
                                                "ip_range", "ipv6", "internal", "attachable",
                                                "options": {k: v}, "dns_servers"}
    GET    /v1/networks/{ref}                  by name, id or unique id prefix
    DELETE /v1/networks/{ref}
    POST   /v1/networks/{ref}/connect          {"container", "aliases", "ip", "ip6"}
    POST   /v1/networks/{ref}/disconnect       {"container"}
    GET    /v1/containers                      every container, as `docker container inspect`
    POST   /v1/containers                      {"name", "hostname", "network", "aliases", "ip",
                                                "ip6", "dns", "dns_search", "dns_options",
                                                "netns"}
    GET    /v1/containers/{ref}
    DELETE /v1/containers/{ref}
    GET    /v1/services                        every service, as `docker service inspect`
    POST   /v1/services                        {"name", "networks", "replicas",
                                                "endpoint_mode", "publish", "port_name"}
    GET    /v1/services/{ref}
    DELETE /v1/services/{ref}
    POST   /v1/services/{ref}/scale            {"replicas": N}
    GET    /v1/resolve?from=C&name=N&type=T    what C would get for N, and which rule says so
    GET    /v1/events?since=S&until=U&follow=B JSON lines, one per state change (resolver/
                                                events.py); S, U: a seq, an RFC 3339 time or
                                                a duration ago (10m); follow (default true)
                                                keeps the stream open for new events
    GET    /v1/querylog                        {"sample": R}: the share of queries logged
    PUT    /v1/querylog                        {"sample": R}, 0 (off) to 1 (every query)
    GET    /metrics                            Prometheus text format (netdns/metrics.py)
    GET    /, /ui/, /ui/{file}                 the read-only web page (netdns/page.py); over
                                                --admin-tcp its files need no token, its API
                                                calls do

Every error is {"message": ..., "status": N}. The status of a NetdnsError comes from its class
(drivers/errors.py), mapped here in one place (the error middleware); a malformed request is an
Invalid naming the field; a bug is a 500 whose message points at the daemon's log, never a
traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from drivers.core import ConnectSpec, DriverCore, NetworkSpec, SandboxSpec, ServiceSpec
from drivers.errors import Invalid, NetdnsError
from drivers.model import Endpoint, Network, Sandbox, Service
from netdns import docker_json
from netdns.events import Bound, EventLog, parse_bound
from netdns.metrics import Metrics
from netdns.page import add_page_routes
from resolver.logs import check_sample

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminOps(Protocol):
    """What the API drives: the daemon. Changes are async (they run off the loop and return
    once the answers changed, R18); reads go straight to the DriverCore's snapshot."""

    @property
    def core(self) -> DriverCore: ...

    async def create_network(self, spec: NetworkSpec) -> Network: ...

    async def remove_network(self, ref: str) -> Network: ...

    async def connect(self, spec: ConnectSpec) -> Endpoint: ...

    async def disconnect(self, network_ref: str, container_ref: str) -> Endpoint: ...

    async def create_sandbox(self, spec: SandboxSpec) -> Sandbox: ...

    async def remove_sandbox(self, ref: str) -> Sandbox: ...

    async def create_service(self, spec: ServiceSpec) -> Service: ...

    async def scale_service(self, ref: str, replicas: int) -> Service: ...

    async def remove_service(self, ref: str) -> Service: ...

    async def explain(self, sandbox_ref: str, name: str, qtype: str) -> dict[str, Any]:
        """rcode, answers as zone text, rule, path, the networks holding the name, ..."""
        ...

    @property
    def events(self) -> EventLog: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def query_sample(self) -> float: ...

    def set_query_sample(self, sample: float) -> None: ...


OPS_KEY = web.AppKey("ops", AdminOps)


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"message": message, "status": status}, status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where errors become HTTP statuses."""
    try:
        return await handler(request)
    except NetdnsError as exc:
        return error_response(exc.http_status, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            message = f"no such API route: {request.method} {request.path} (see /v1/...)"
        elif exc.status == 405:
            message = f"method {request.method} is not allowed on {request.path}"
        else:
            message = exc.reason
        return error_response(exc.status, message)
    except Exception:
        log.exception("admin API: %s %s failed", request.method, request.path)
        return error_response(500, "internal error in the netdns daemon: see its log")


# -- request bodies ------------------------------------------------------------------------


class Body:
    """A request's JSON object, read field by field; each wrong field is an Invalid naming it."""

    def __init__(self, data: dict[str, Any], allowed: tuple[str, ...]) -> None:
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise Invalid(
                f"unknown field(s) {', '.join(unknown)} in the request body; "
                f"known fields: {', '.join(allowed)}"
            )
        self._data = data

    def text(self, field: str, *, required: bool = False, default: str = "") -> str:
        value = self._data.get(field)
        if value is None:
            if required:
                raise Invalid(f"field {field!r} is required (a string)")
            return default
        if not isinstance(value, str):
            raise Invalid(f"field {field!r} must be a string, not {_json_type(value)}")
        if required and not value:
            raise Invalid(f"field {field!r} must not be empty")
        return value

    def optional_text(self, field: str) -> str | None:
        return self.text(field) or None

    def flag(self, field: str) -> bool:
        value = self._data.get(field, False)
        if not isinstance(value, bool):
            raise Invalid(f"field {field!r} must be true or false, not {_json_type(value)}")
        return value

    def integer(self, field: str, *, default: int | None = None) -> int:
        value = self._data.get(field)
        if value is None:
            if default is None:
                raise Invalid(f"field {field!r} is required (a number)")
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            shown = repr(value) if isinstance(value, float) else _json_type(value)
            raise Invalid(f"field {field!r} must be a whole number, not {shown}")
        return value

    def number(self, field: str) -> float:
        value = self._data.get(field)
        if value is None:
            raise Invalid(f"field {field!r} is required (a number)")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise Invalid(f"field {field!r} must be a number, not {_json_type(value)}")
        try:
            return float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise Invalid(f"field {field!r} is out of range") from None

    def texts(self, field: str) -> tuple[str, ...]:
        value = self._data.get(field)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Invalid(f"field {field!r} must be a list of strings")
        return tuple(value)

    def pairs(self, field: str) -> tuple[tuple[str, str], ...]:
        value = self._data.get(field)
        if value is None:
            return ()
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise Invalid(f"field {field!r} must be an object of string values")
        return tuple(value.items())


def _json_type(value: object) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), "null")


async def read_body(request: web.Request, allowed: tuple[str, ...]) -> Body:
    raw = await request.read()
    if not raw.strip():
        data: object = {}
    else:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Invalid(f"the request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise Invalid("the request body is nested too deeply to be read") from None
    if not isinstance(data, dict):
        raise Invalid(f"the request body must be a JSON object, not {_json_type(data)}")
    return Body(data, allowed)


# -- handlers ------------------------------------------------------------------------------


def _ops(request: web.Request) -> AdminOps:
    return request.app[OPS_KEY]


def _network_json(core: DriverCore, network: Network) -> dict[str, Any]:
    return docker_json.network_inspect(
        network, core.endpoints(network_id=network.id), core.sandboxes()
    )


def _container_json(core: DriverCore, sandbox: Sandbox) -> dict[str, Any]:
    return docker_json.container_inspect(
        sandbox, core.endpoints(sandbox_id=sandbox.id), core.networks()
    )


async def healthz(request: web.Request) -> web.Response:
    core = _ops(request).core
    return web.json_response(
        {"status": "ok", "networks": len(core.networks()), "containers": len(core.sandboxes())}
    )


NETWORK_FIELDS = (
    "name",
    "driver",
    "subnets",
    "gateway",
    "ip_range",
    "ipv6",
    "internal",
    "attachable",
    "options",
    "dns_servers",
)


async def create_network(request: web.Request) -> web.Response:
    body = await read_body(request, NETWORK_FIELDS)
    spec = NetworkSpec(
        name=body.text("name", required=True),
        driver=body.text("driver", default="bridge"),
        subnets=body.texts("subnets"),
        gateway=body.optional_text("gateway"),
        ip_range=body.optional_text("ip_range"),
        ipv6=body.flag("ipv6"),
        internal=body.flag("internal"),
        attachable=body.flag("attachable"),
        options=body.pairs("options"),
        dns_servers=body.texts("dns_servers"),
    )
    ops = _ops(request)
    network = await ops.create_network(spec)
    return web.json_response(_network_json(ops.core, network), status=201)


async def connect(request: web.Request) -> web.Response:
    body = await read_body(request, ("container", "aliases", "ip", "ip6"))
    spec = ConnectSpec(
        network=request.match_info["ref"],
        container=body.text("container", required=True),
        aliases=body.texts("aliases"),
        ip=body.optional_text("ip"),
        ip6=body.optional_text("ip6"),
    )
    ops = _ops(request)
    endpoint = await ops.connect(spec)
    network = ops.core.network(endpoint.network_id)
    return web.json_response(docker_json.endpoint_json(endpoint, network))


async def disconnect(request: web.Request) -> web.Response:
    body = await read_body(request, ("container",))
    ops = _ops(request)
    endpoint = await ops.disconnect(
        request.match_info["ref"], body.text("container", required=True)
    )
    network = ops.core.network(endpoint.network_id)
    return web.json_response(docker_json.endpoint_json(endpoint, network))


CONTAINER_FIELDS = (
    "name",
    "hostname",
    "network",
    "aliases",
    "ip",
    "ip6",
    "dns",
    "dns_search",
    "dns_options",
    "netns",
)


async def create_container(request: web.Request) -> web.Response:
    body = await read_body(request, CONTAINER_FIELDS)
    spec = SandboxSpec(
        name=body.text("name", required=True),
        hostname=body.text("hostname"),
        network=body.text("network", default="bridge"),
        aliases=body.texts("aliases"),
        ip=body.optional_text("ip"),
        ip6=body.optional_text("ip6"),
        dns=body.texts("dns"),
        dns_search=body.texts("dns_search"),
        dns_options=body.texts("dns_options"),
        netns=body.text("netns"),
    )
    ops = _ops(request)
    sandbox = await ops.create_sandbox(spec)
    return web.json_response(_container_json(ops.core, sandbox), status=201)


def _service_json(core: DriverCore, service: Service) -> dict[str, Any]:
    return docker_json.service_inspect(
        service, core.tasks(service.id), core.endpoints(), core.networks()
    )


@dataclass(frozen=True, slots=True)
class _Resource:
    """What `GET /v1/KIND`, `GET /v1/KIND/{ref}` and `DELETE /v1/KIND/{ref}` do for one kind:
    the same three routes for networks, containers and services."""

    kind: str  # the path segment
    every: Callable[[DriverCore], list[Any]]
    one: Callable[[DriverCore, str], Any]
    shown: Callable[[DriverCore, Any], dict[str, Any]]  # docker's inspect shape
    remove: Callable[[AdminOps, str], Awaitable[Any]]
    id_key: str = "Id"  # docker's spelling in the removal's answer ("ID" for services)

    async def list_handler(self, request: web.Request) -> web.Response:
        core = _ops(request).core
        return web.json_response([self.shown(core, item) for item in self.every(core)])

    async def get_handler(self, request: web.Request) -> web.Response:
        core = _ops(request).core
        return web.json_response(self.shown(core, self.one(core, request.match_info["ref"])))

    async def remove_handler(self, request: web.Request) -> web.Response:
        removed = await self.remove(_ops(request), request.match_info["ref"])
        return web.json_response({"Name": removed.name, self.id_key: removed.id})


RESOURCES = (
    _Resource(
        "networks", lambda core: core.networks(), lambda core, ref: core.network(ref),
        _network_json, lambda ops, ref: ops.remove_network(ref),
    ),
    _Resource(
        "containers", lambda core: core.sandboxes(), lambda core, ref: core.sandbox(ref),
        _container_json, lambda ops, ref: ops.remove_sandbox(ref),
    ),
    _Resource(
        "services", lambda core: core.services(), lambda core, ref: core.service(ref),
        _service_json, lambda ops, ref: ops.remove_service(ref), id_key="ID",
    ),
)  # fmt: skip


SERVICE_FIELDS = ("name", "networks", "replicas", "endpoint_mode", "publish", "port_name")


async def create_service(request: web.Request) -> web.Response:
    body = await read_body(request, SERVICE_FIELDS)
    spec = ServiceSpec(
        name=body.text("name", required=True),
        networks=body.texts("networks"),
        replicas=body.integer("replicas", default=1),
        endpoint_mode=body.text("endpoint_mode", default="vip"),
        publish=body.texts("publish"),
        port_name=body.text("port_name"),
    )
    ops = _ops(request)
    service = await ops.create_service(spec)
    return web.json_response(_service_json(ops.core, service), status=201)


async def scale_service(request: web.Request) -> web.Response:
    body = await read_body(request, ("replicas",))
    ops = _ops(request)
    service = await ops.scale_service(request.match_info["ref"], body.integer("replicas"))
    return web.json_response(_service_json(ops.core, service))


async def resolve(request: web.Request) -> web.Response:
    query = request.query
    unknown = sorted(set(query) - {"from", "name", "type"})
    if unknown:
        raise Invalid(f"unknown query parameter(s) {', '.join(unknown)}: use from, name, type")
    name = query.get("name", "")
    if not name:
        raise Invalid("query parameter 'name' is required: /v1/resolve?name=NAME[&from=C][&type=A]")
    result = await _ops(request).explain(query.get("from", ""), name, query.get("type") or "A")
    return web.json_response(result)


TRUE_WORDS = frozenset({"1", "true", "yes"})
FALSE_WORDS = frozenset({"0", "false", "no"})


def _flag(query: Any, field: str, default: bool) -> bool:
    value = query.get(field)
    if value is None:
        return default
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise Invalid(f"query parameter {field!r}: {value!r} is not true or false")


async def events(request: web.Request) -> web.StreamResponse:
    """The event log as JSON lines, written as they happen (flushed per line)."""
    query = request.query
    unknown = sorted(set(query) - {"since", "until", "follow"})
    if unknown:
        raise Invalid(f"unknown query parameter(s) {', '.join(unknown)}: use since, until, follow")
    since = parse_bound(query["since"], "since") if query.get("since") else Bound()
    until = parse_bound(query["until"], "until") if query.get("until") else Bound()
    follow = _flag(query, "follow", True)
    event_log = _ops(request).events
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    try:
        async with contextlib.aclosing(event_log.stream(since, until, follow=follow)) as lines:
            async for line in lines:
                await response.write(line)
        await response.write_eof()
    except ConnectionError:
        pass  # the reader went away: nothing to tell anyone
    return response


async def get_querylog(request: web.Request) -> web.Response:
    return web.json_response({"sample": _ops(request).query_sample})


async def put_querylog(request: web.Request) -> web.Response:
    body = await read_body(request, ("sample",))
    ops = _ops(request)
    ops.set_query_sample(check_sample(body.number("sample")))
    return web.json_response({"sample": ops.query_sample})


async def metrics(request: web.Request) -> web.Response:
    ops = _ops(request)
    return web.Response(
        body=ops.metrics.render(), headers={"Content-Type": ops.metrics.CONTENT_TYPE}
    )


def make_app(ops: AdminOps) -> web.Application:
    app = web.Application(middlewares=[errors_as_json])
    app[OPS_KEY] = ops
    app.router.add_get("/healthz", healthz)
    for resource in RESOURCES:
        app.router.add_get(f"/v1/{resource.kind}", resource.list_handler)
        app.router.add_get(f"/v1/{resource.kind}/{{ref}}", resource.get_handler)
        app.router.add_delete(f"/v1/{resource.kind}/{{ref}}", resource.remove_handler)
    app.router.add_post("/v1/networks", create_network)
    app.router.add_post("/v1/networks/{ref}/connect", connect)
    app.router.add_post("/v1/networks/{ref}/disconnect", disconnect)
    app.router.add_post("/v1/containers", create_container)
    app.router.add_post("/v1/services", create_service)
    app.router.add_post("/v1/services/{ref}/scale", scale_service)
    app.router.add_get("/v1/resolve", resolve)
    app.router.add_get("/v1/events", events)
    app.router.add_get("/v1/querylog", get_querylog)
    app.router.add_put("/v1/querylog", put_querylog)
    app.router.add_get("/metrics", metrics)
    add_page_routes(app)  # GET /, /ui/: the read-only web page (netdns/page.py)
    return app
