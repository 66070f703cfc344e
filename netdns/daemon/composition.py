"""The composition root of `netdns daemon`.

Builds the DriverCore (state, plumbing), the NameTable and the listeners that follow its
events, the Resolver and Forwarder that answer, and the admin API that drives it all. The
DriverCore's blocking work runs on one worker thread, one call at a time; each event it emits
is handed to the event loop and applied there (table first, then listeners) before the
worker goes on, so an API call returns only once its answers have changed (R18). Each applied
event then goes to the event log (netdns/events.py, `GET /v1/events`) and the time it took
from the worker to there to the event-lag histogram; `/metrics` reads every counter at scrape
time (netdns/metrics.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from drivers.cluster.etcd import EtcdClient
from drivers.cluster.keys import Record
from drivers.cluster.store import ClusterStore, route_source
from drivers.cluster.view import Change
from drivers.core import DriverCore
from drivers.local_store import LocalStore
from drivers.model import Event, SandboxRemoved
from drivers.namespaces import Namespaces
from drivers.registry import default_drivers
from netdns.admin import make_app
from netdns.daemon.auth import TOKEN_FILE, token_middleware
from netdns.daemon.flags import DaemonConfig
from netdns.events import EventLog
from netdns.metrics import Metrics, Sources
from netdns.page import page_url
from resolver import netns
from resolver.explain import explain
from resolver.forward import AnswerCache, Forwarder, HostResolvConf
from resolver.listeners import ListenerManager
from resolver.names import NameTable
from resolver.resolve import Opener, Resolver
from resolver.stats import Histogram

log = logging.getLogger(__name__)
T = TypeVar("T")

BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
# How long a starting daemon waits for its first reading of the cluster store; after that it
# serves its local state and goes on trying.
CLUSTER_START_WAIT = 10.0
# How long a stopping daemon lets admin requests finish (an event stream ends at once).
ADMIN_SHUTDOWN_TIMEOUT = 5.0


def on_worker(method: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """An admin operation: the DriverCore's `method`, run on the daemon's worker thread."""
    name = method.__name__

    async def operation(self: Daemon, *args: Any) -> T:
        return await self._call(getattr(self.core, name), *args)

    operation.__name__ = operation.__qualname__ = name
    operation.__doc__ = method.__doc__
    return operation


class Daemon:
    """The running daemon; also the admin API's operations (netdns.admin.AdminOps)."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.host_resolv = HostResolvConf(str(config.resolv_conf))
        self.table = NameTable(domains=config.domains)
        cache = None if config.no_cache else AnswerCache()
        self.forwarder = Forwarder(
            default_servers=self._default_servers, max_inflight=config.max_inflight, cache=cache,
            max_inflight_per_sandbox=config.max_inflight_per_sandbox,
        )  # fmt: skip
        self.resolver = Resolver(
            self.table, self.forwarder, local_ttl=config.local_ttl,
            sandbox_openers=self._sandbox_opener,
        )  # fmt: skip
        self.listeners = ListenerManager(
            self.table, self.resolver.handle, host_resolv=self._host_resolv_for_sandboxes,
            etc_netns=config.etc_netns, fast=self.resolver.fast, soon=self.resolver.start,
        )  # fmt: skip
        self.cluster: ClusterStore | None = None
        advertise = None
        if config.store != "local":
            client = EtcdClient(config.store)
            advertise = config.advertise_addr or route_source(client.url)
            self.cluster = ClusterStore(
                client, config.host_name, advertise, on_changes=self._on_cluster_changes,
                mine=lambda: self.core.cluster_endpoints(), lease_ttl=config.lease_ttl,
            )  # fmt: skip
        self.core = DriverCore(
            LocalStore(config.root), default_drivers(advertise), Namespaces(),
            default_bridge_options=((BRIDGE_NAME_OPTION, config.bridge),),
        )  # fmt: skip
        self.core.cluster = self.cluster
        self.events = EventLog()
        self.event_lag = Histogram()
        self.metrics = Metrics(
            Sources(
                self.resolver, self.listeners, self.core, self.cluster, self.events,
                self.event_lag,
            )
        )  # fmt: skip
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="netdns-core")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._runner: web.AppRunner | None = None

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.config.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.core.subscribe(self._on_event)
        if self.cluster is not None:
            self.cluster.bind(self._loop)  # the core's start may already claim addresses
        await self._call(self.core.start)
        if self.cluster is not None:
            await self.cluster.start(wait=CLUSTER_START_WAIT)
        app = make_app(self)
        app.middlewares.append(token_middleware(self.config.root))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=ADMIN_SHUTDOWN_TIMEOUT)
        await self._runner.setup()
        path = self.config.admin_path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.is_socket():
            path.unlink()
        old_umask = os.umask(0o177)  # the socket is born 0600: root only, no window
        try:
            await web.UnixSite(self._runner, str(path)).start()
        finally:
            os.umask(old_umask)
        if self.config.admin_tcp:
            host, _, port = self.config.admin_tcp.rpartition(":")
            await web.TCPSite(self._runner, host or "127.0.0.1", int(port)).start()
            log.info(
                "admin page: %s#token=<the token in %s>",
                page_url(host or "127.0.0.1", int(port)), self.config.root / TOKEN_FILE,
            )  # fmt: skip
        log.info(
            "netdns daemon up: admin %s, %d networks, %d containers, %d listeners",
            path, len(self.core.networks()), len(self.core.sandboxes()),
            len(self.listeners.running),
        )  # fmt: skip

    async def stop(self) -> None:
        self.events.close()  # event streams end first, so the admin server can stop
        if self._runner is not None:
            await self._runner.cleanup()
        if self.cluster is not None:
            await self.cluster.stop()  # no more changes from other hosts
        # Off the loop: a core call still running needs the loop to apply its events.
        await asyncio.to_thread(self._worker.shutdown, True)
        await self.listeners.close()
        self.forwarder.close()

    # -- the DriverCore's events, brought onto the loop -------------------------------------

    def _on_event(self, event: Event) -> None:
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("DriverCore must be called through Daemon._call, not on the loop")
        emitted = time.perf_counter_ns()
        asyncio.run_coroutine_threadsafe(self._apply(event, emitted), self._loop).result()

    async def _apply(self, event: Event, emitted: int) -> None:
        try:
            await self.listeners.apply(event)
            if isinstance(event, SandboxRemoved):
                self.forwarder.health.forget(event.sandbox.id)  # its own upstreams' health
        finally:
            # Logged even when the table or a listener failed: the core's state has changed.
            self.event_lag.observe_ns(time.perf_counter_ns() - emitted)
            self.events.append(event)

    async def _on_cluster_changes(self, changes: list[Change], own: list[Record] | None) -> None:
        await self._call(self.core.apply_cluster, changes, own)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._worker, fn, *args)

    # -- admin operations -------------------------------------------------------------------

    create_network = on_worker(DriverCore.create_network)
    remove_network = on_worker(DriverCore.remove_network)
    connect = on_worker(DriverCore.connect)
    disconnect = on_worker(DriverCore.disconnect)
    create_sandbox = on_worker(DriverCore.create_sandbox)
    remove_sandbox = on_worker(DriverCore.remove_sandbox)
    create_service = on_worker(DriverCore.create_service)
    scale_service = on_worker(DriverCore.scale_service)
    remove_service = on_worker(DriverCore.remove_service)

    async def explain(self, sandbox_ref: str, name: str, qtype: str) -> dict[str, Any]:
        """What `sandbox_ref` would get for `name`, which rule gave it, and by which path."""
        sandbox_id = self.core.sandbox(sandbox_ref).id if sandbox_ref else ""
        return {"from": sandbox_ref, **await explain(self.resolver, sandbox_id, name, qtype)}

    # -- observing ----------------------------------------------------------------------------

    @property
    def query_sample(self) -> float:
        return self.resolver.query_sample

    def set_query_sample(self, sample: float) -> None:
        old, self.resolver.query_sample = self.resolver.query_sample, sample
        if old != sample:
            log.info("query log: sample %g (was %g)", sample, old)

    # -- helpers ----------------------------------------------------------------------------

    def _default_servers(self) -> list[str]:
        """R11: the daemon's --dns, else the host's resolv.conf, re-read when it changes."""
        return list(self.config.dns) or list(self.host_resolv.nameservers())

    def _host_resolv_for_sandboxes(self) -> tuple[list[str], list[str]]:
        return netns.host_resolv_conf(str(self.config.resolv_conf))

    def _sandbox_opener(self, sandbox_id: str) -> Opener | None:
        path = self.table.view(sandbox_id).sandbox.netns
        if not path:
            return None

        def opener(family: int, kind: int) -> socket.socket:
            # setns on the loop thread is safe: it is synchronous and switched straight back.
            return netns.in_netns(path, lambda: socket.socket(family, kind))

        return opener
