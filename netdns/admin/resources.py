"""The routes of networks, containers and services: list, get and remove alike for the three
(`Resource`), then each one's create and its own verbs (connect, disconnect, scale)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from drivers.core import ConnectSpec, DriverCore, NetworkSpec, SandboxSpec, ServiceSpec
from drivers.model import Network, Sandbox, Service
from netdns import docker_json
from netdns.admin.body import read_body
from netdns.admin.ops import AdminOps, ops


def network_json(core: DriverCore, network: Network) -> dict[str, Any]:
    return docker_json.network_inspect(
        network, core.endpoints(network_id=network.id), core.sandboxes()
    )


def container_json(core: DriverCore, sandbox: Sandbox) -> dict[str, Any]:
    return docker_json.container_inspect(
        sandbox, core.endpoints(sandbox_id=sandbox.id), core.networks()
    )


def service_json(core: DriverCore, service: Service) -> dict[str, Any]:
    return docker_json.service_inspect(
        service, core.tasks(service.id), core.endpoints(), core.networks()
    )


@dataclass(frozen=True, slots=True)
class Resource:
    """What `GET /v1/KIND`, `GET /v1/KIND/{ref}` and `DELETE /v1/KIND/{ref}` do for one kind:
    the same three routes for networks, containers and services."""

    kind: str  # the path segment
    every: Callable[[DriverCore], list[Any]]
    one: Callable[[DriverCore, str], Any]
    shown: Callable[[DriverCore, Any], dict[str, Any]]  # docker's inspect shape
    remove: Callable[[AdminOps, str], Awaitable[Any]]
    id_key: str = "Id"  # docker's spelling in the removal's answer ("ID" for services)

    async def list_handler(self, request: web.Request) -> web.Response:
        core = ops(request).core
        return web.json_response([self.shown(core, item) for item in self.every(core)])

    async def get_handler(self, request: web.Request) -> web.Response:
        core = ops(request).core
        return web.json_response(self.shown(core, self.one(core, request.match_info["ref"])))

    async def remove_handler(self, request: web.Request) -> web.Response:
        removed = await self.remove(ops(request), request.match_info["ref"])
        return web.json_response({"Name": removed.name, self.id_key: removed.id})


RESOURCES = (
    Resource(
        "networks", DriverCore.networks, DriverCore.network, network_json,
        lambda o, ref: o.remove_network(ref),
    ),
    Resource(
        "containers", DriverCore.sandboxes, DriverCore.sandbox, container_json,
        lambda o, ref: o.remove_sandbox(ref),
    ),
    Resource(
        "services", DriverCore.services, DriverCore.service, service_json,
        lambda o, ref: o.remove_service(ref), id_key="ID",
    ),
)  # fmt: skip

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
    daemon = ops(request)
    network = await daemon.create_network(spec)
    return web.json_response(network_json(daemon.core, network), status=201)


async def connect(request: web.Request) -> web.Response:
    body = await read_body(request, ("container", "aliases", "ip", "ip6"))
    spec = ConnectSpec(
        network=request.match_info["ref"],
        container=body.text("container", required=True),
        aliases=body.texts("aliases"),
        ip=body.optional_text("ip"),
        ip6=body.optional_text("ip6"),
    )
    daemon = ops(request)
    endpoint = await daemon.connect(spec)
    network = daemon.core.network(endpoint.network_id)
    return web.json_response(docker_json.endpoint_json(endpoint, network))


async def disconnect(request: web.Request) -> web.Response:
    body = await read_body(request, ("container",))
    daemon = ops(request)
    endpoint = await daemon.disconnect(
        request.match_info["ref"], body.text("container", required=True)
    )
    network = daemon.core.network(endpoint.network_id)
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
    daemon = ops(request)
    sandbox = await daemon.create_sandbox(spec)
    return web.json_response(container_json(daemon.core, sandbox), status=201)


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
    daemon = ops(request)
    service = await daemon.create_service(spec)
    return web.json_response(service_json(daemon.core, service), status=201)


async def scale_service(request: web.Request) -> web.Response:
    body = await read_body(request, ("replicas",))
    daemon = ops(request)
    service = await daemon.scale_service(request.match_info["ref"], body.integer("replicas"))
    return web.json_response(service_json(daemon.core, service))


def add_routes(router: web.UrlDispatcher) -> None:
    for resource in RESOURCES:
        router.add_get(f"/v1/{resource.kind}", resource.list_handler)
        router.add_get(f"/v1/{resource.kind}/{{ref}}", resource.get_handler)
        router.add_delete(f"/v1/{resource.kind}/{{ref}}", resource.remove_handler)
    router.add_post("/v1/networks", create_network)
    router.add_post("/v1/networks/{ref}/connect", connect)
    router.add_post("/v1/networks/{ref}/disconnect", disconnect)
    router.add_post("/v1/containers", create_container)
    router.add_post("/v1/services", create_service)
    router.add_post("/v1/services/{ref}/scale", scale_service)
