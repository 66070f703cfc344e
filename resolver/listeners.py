"""One listener per DNS sandbox, kept true to the events (R1, R17, R18).

The manager applies each event to the name table first, then brings the affected sandboxes'
listeners in line: a sandbox on at least one DNS network gets 127.0.0.11 (sockets made inside
its namespace, the port-53 redirect, a resolv.conf naming 127.0.0.11); one on none gets no
listener and the host's nameservers. Everything runs on the event loop; blocking namespace
work goes to the default executor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drivers.model import (
    EndpointAttached,
    EndpointDetached,
    EndpointUpdated,
    Event,
    Sandbox,
    SandboxCreated,
    SandboxRemoved,
)
from resolver import netns
from resolver.names import NameTable
from resolver.server import FastHandler, Handler, Listener, ListenerConfig, SoonHandler

log = logging.getLogger(__name__)

NAMED_NETNS_DIR = "/run/netns/"


def netns_name(sandbox: Sandbox) -> str | None:
    """The `ip netns` name of a namespace netns made, or None for an adopted one."""
    if sandbox.netns.startswith(NAMED_NETNS_DIR):
        return sandbox.netns[len(NAMED_NETNS_DIR) :]
    return None


def affected_sandboxes(event: Event) -> tuple[str, ...]:
    match event:
        case SandboxCreated(sandbox) | SandboxRemoved(sandbox):
            return (sandbox.id,)
        case EndpointAttached(endpoint) | EndpointDetached(endpoint) | EndpointUpdated(endpoint):
            # Another host's endpoint: its sandbox has no listener here.
            return () if endpoint.remote else (endpoint.sandbox_id,)
    return ()


@dataclass(slots=True)
class RunningListener:
    sandbox: Sandbox
    listener: Listener


class ListenerManager:
    def __init__(
        self,
        table: NameTable,
        handler: Handler,
        *,
        host_resolv: Callable[[], tuple[list[str], list[str]]],
        etc_netns: Path = Path("/etc/netns"),
        config: ListenerConfig | None = None,
        fast: FastHandler | None = None,
        soon: SoonHandler | None = None,
    ) -> None:
        self.table = table
        self.handler = handler
        self.fast = fast
        self.soon = soon
        self.host_resolv = host_resolv
        self.etc_netns = etc_netns
        self.config = config or ListenerConfig()
        self._running: dict[str, RunningListener] = {}
        self._dns_state: dict[str, bool] = {}  # what each sandbox's resolv.conf says now
        self.failures = 0

    @property
    def running(self) -> dict[str, RunningListener]:
        return self._running

    async def apply(self, event: Event) -> None:
        """Apply one event to the table, then to the listeners (R18: before the caller returns)."""
        self.table.apply(event)
        for sandbox_id in affected_sandboxes(event):
            try:
                if isinstance(event, SandboxRemoved):
                    await self._forget(event.sandbox)
                else:
                    await self.reconcile(sandbox_id)
            except Exception:
                # The state change has happened; a listener that cannot follow it must not
                # undo it or stop the others. reconcile() tries again on the next event.
                self.failures += 1
                log.exception("listener of sandbox %s could not follow %s", sandbox_id, event)

    async def reconcile(self, sandbox_id: str) -> None:
        view = self.table.view(sandbox_id)
        sandbox = view.sandbox
        wanted = bool(view.networks) and bool(sandbox.netns)
        running = self._running.get(sandbox_id)
        if wanted and running is None:
            await self._start(sandbox)
        elif not wanted and running is not None:
            await self._stop(sandbox_id)
        if sandbox.netns and self._dns_state.get(sandbox_id) != wanted:
            await asyncio.to_thread(self._write_resolv_conf, sandbox, wanted)
            self._dns_state[sandbox_id] = wanted

    async def _start(self, sandbox: Sandbox) -> None:
        sockets = await asyncio.to_thread(netns.open_listener_sockets, sandbox.netns)
        try:
            listener = await Listener.start(
                self.handler, sandbox.id, udp_sock=sockets.udp, tcp_sock=sockets.tcp,
                config=self.config, fast=self.fast, soon=self.soon,
            )  # fmt: skip
            await asyncio.to_thread(netns.install_redirect, sandbox.netns, sockets.port)
        except BaseException:
            sockets.udp.close()
            sockets.tcp.close()
            raise
        self._running[sandbox.id] = RunningListener(sandbox, listener)
        log.info("listener for %s on 127.0.0.11:%d", sandbox.name, sockets.port)

    async def _stop(self, sandbox_id: str, *, namespace_alive: bool = True) -> None:
        running = self._running.pop(sandbox_id, None)
        if running is None:
            return
        await running.listener.close()
        if namespace_alive:
            try:
                await asyncio.to_thread(netns.remove_redirect, running.sandbox.netns)
            except Exception as exc:  # the namespace may be gone already
                log.debug("redirect of %s not removed: %s", running.sandbox.name, exc)
        log.info("listener for %s stopped", running.sandbox.name)

    async def _forget(self, sandbox: Sandbox) -> None:
        await self._stop(sandbox.id, namespace_alive=False)
        self._dns_state.pop(sandbox.id, None)
        name = netns_name(sandbox)
        if name is not None:
            await asyncio.to_thread(netns.remove_resolv_conf, name, self.etc_netns)

    def _write_resolv_conf(self, sandbox: Sandbox, dns: bool) -> None:
        name = netns_name(sandbox)
        if name is None:
            return  # an adopted namespace's resolv.conf belongs to the runtime that made it
        nameservers, search = self.host_resolv()
        text = netns.resolv_conf_text(
            dns=dns, search=sandbox.dns_search, options=sandbox.dns_options,
            host_nameservers=nameservers, host_search=search, nameservers=sandbox.dns_servers,
        )  # fmt: skip
        netns.write_resolv_conf(name, text, self.etc_netns)

    async def close(self) -> None:
        """Stop serving; redirects and resolv.conf stay so a restarted daemon takes over."""
        for sandbox_id in list(self._running):
            running = self._running.pop(sandbox_id)
            await running.listener.close()
