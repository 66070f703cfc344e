"""Which VIPs each sandbox reaches: every vip service on its networks, to that service's
tasks. The core rewrites a sandbox's whole table (through drivers/vip.py) after each change
that alters it, best effort: a failure is logged and the next change rewrites it again."""

from __future__ import annotations

from collections.abc import Iterable

from drivers.core.core_base import CoreBase, best_effort
from drivers.local_store import State
from drivers.model import EndpointMode, Sandbox
from drivers.vip import VipRoute


class VipRouting(CoreBase):
    def _routes_vips(self, network_id: str) -> bool:
        """Whether sandboxes on the network carry VIP routes (a vip service uses it)."""
        return any(
            s.mode is EndpointMode.VIP and network_id in s.networks
            for s in self._state.services.values()
        )

    def _route_vips(self, network_ids: Iterable[str]) -> None:
        """Rewrite the VIP table of every sandbox on these networks (the tasks included)."""
        wanted = set(network_ids)
        sandbox_ids = {
            e.sandbox_id for e in self._state.endpoints.values() if e.network_id in wanted
        }
        for sandbox in self._state.sandboxes.values():
            if sandbox.id in sandbox_ids:
                self._route_vips_in(sandbox)

    def _route_vips_in(self, sandbox: Sandbox) -> None:
        if sandbox.netns:
            routes = vip_routes(self._state, sandbox.id)
            best_effort(
                f"set VIP routes in {sandbox.name}", self._vip_routes.apply, sandbox.netns, routes
            )


def vip_routes(state: State, sandbox_id: str) -> list[VipRoute]:
    """The VIP routes a sandbox needs: every vip service on its networks, to the tasks'
    IPv4 addresses on that network (slot order)."""
    attached = {e.network_id for e in state.endpoints.values() if e.sandbox_id == sandbox_id}
    routes = []
    for service in state.services.values():
        if service.mode is not EndpointMode.VIP:
            continue
        for vip in service.vips:
            if vip.network_id not in attached or vip.address.version != 4:
                continue
            backends = sorted(
                (e.task.slot, e.ipv4)  # type: ignore[union-attr]
                for e in state.endpoints.values()
                if e.network_id == vip.network_id
                and e.ipv4 is not None
                and e.task is not None
                and e.task.service_id == service.id
            )
            routes.append(VipRoute(vip.address, service.ports, tuple(a for _, a in backends)))  # type: ignore[arg-type]
    return routes
