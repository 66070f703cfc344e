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
from netdns.admin.body import read_body, read_spec
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


async def create_network(request: web.Request) -> web.Response:
    daemon = ops(request)
    network = await daemon.create_network(await read_spec(request, NetworkSpec))
    return web.json_response(network_json(daemon.core, network), status=201)


async def connect(request: web.Request) -> web.Response:
    given = {"network": request.match_info["ref"]}
    spec = await read_spec(request, ConnectSpec, required=("container",), given=given)
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


async def create_container(request: web.Request) -> web.Response:
    daemon = ops(request)
    sandbox = await daemon.create_sandbox(await read_spec(request, SandboxSpec))
    return web.json_response(container_json(daemon.core, sandbox), status=201)


async def create_service(request: web.Request) -> web.Response:
    daemon = ops(request)
    service = await daemon.create_service(await read_spec(request, ServiceSpec))
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
