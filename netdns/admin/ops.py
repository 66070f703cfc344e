"""What the admin API drives: the daemon, seen through the one protocol the routes use."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from drivers.core import ConnectSpec, DriverCore, NetworkSpec, SandboxSpec, ServiceSpec
from drivers.model import Endpoint, Network, Sandbox, Service
from netdns.events import EventLog
from netdns.metrics import Metrics


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


def ops(request: web.Request) -> AdminOps:
    return request.app[OPS_KEY]
