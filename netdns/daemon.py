"""`netdns daemon`: the composition root.

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

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import os
import secrets
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from drivers import validation
from drivers.cluster.etcd import EtcdClient, parse_store_url
from drivers.cluster.keys import Record
from drivers.cluster.store import DEFAULT_LEASE_TTL, ClusterStore, route_source
from drivers.cluster.view import Change
from drivers.core import ConnectSpec, DriverCore, NetworkSpec, SandboxSpec, ServiceSpec
from drivers.errors import Invalid, NetdnsError
from drivers.ipam import parse_address
from drivers.local_store import LocalStore
from drivers.model import Endpoint, Event, Network, Sandbox, SandboxRemoved, Service
from drivers.namespaces import Namespaces
from drivers.registry import default_drivers
from netdns import logs
from netdns.admin import make_app
from netdns.events import EventLog
from netdns.metrics import Metrics, Sources
from netdns.page import is_page_request, page_url
from resolver import netns
from resolver.explain import explain
from resolver.forward import AnswerCache, Forwarder, HostResolvConf
from resolver.listeners import ListenerManager
from resolver.names import NameTable
from resolver.resolve import Opener, Resolver
from resolver.server import run
from resolver.stats import Histogram

log = logging.getLogger(__name__)
T = TypeVar("T")

BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
DEFAULT_ROOT = Path("/var/lib/netdns")
DEFAULT_ADMIN = "unix:///run/netdns/netdns.sock"
# How long a starting daemon waits for its first reading of the cluster store; after that it
# serves its local state and goes on trying.
CLUSTER_START_WAIT = 10.0
# How long a stopping daemon lets admin requests finish (an event stream ends at once).
ADMIN_SHUTDOWN_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    root: Path = DEFAULT_ROOT
    admin: str = DEFAULT_ADMIN
    admin_tcp: str = ""
    store: str = "local"  # or etcd://HOST:PORT
    host_name: str = field(default_factory=socket.gethostname)
    advertise_addr: IPv4Address | None = None  # this host's VTEP; default: the way to etcd
    lease_ttl: int = DEFAULT_LEASE_TTL
    bridge: str = "netdns0"  # the Linux bridge of the default `bridge` network
    log_level: str = "info"
    log_format: str = "text"  # or "json" (netdns/logs.py)
    dns: tuple[str, ...] = ()
    local_ttl: int = 5
    no_cache: bool = False
    max_inflight: int = 1024
    max_inflight_per_sandbox: int | None = None  # None: a quarter of max_inflight, at least 8
    resolv_conf: Path = Path("/etc/resolv.conf")
    etc_netns: Path = Path("/etc/netns")

    @property
    def admin_path(self) -> Path:
        if not self.admin.startswith("unix://"):
            raise Invalid(f"--admin {self.admin!r}: expected unix:///path/to/socket")
        return Path(self.admin[len("unix://") :])


class Daemon:
    """The running daemon; also the admin API's operations (netdns.admin.AdminOps)."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.host_resolv = HostResolvConf(str(config.resolv_conf))
        self.table = NameTable()
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
        app.middlewares.append(self._token_middleware())
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
                page_url(host or "127.0.0.1", int(port)), self.config.root / "admin.token",
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

    async def create_network(self, spec: NetworkSpec) -> Network:
        return await self._call(self.core.create_network, spec)

    async def remove_network(self, ref: str) -> Network:
        return await self._call(self.core.remove_network, ref)

    async def connect(self, spec: ConnectSpec) -> Endpoint:
        return await self._call(self.core.connect, spec)

    async def disconnect(self, network_ref: str, container_ref: str) -> Endpoint:
        return await self._call(self.core.disconnect, network_ref, container_ref)

    async def create_sandbox(self, spec: SandboxSpec) -> Sandbox:
        return await self._call(self.core.create_sandbox, spec)

    async def remove_sandbox(self, ref: str) -> Sandbox:
        return await self._call(self.core.remove_sandbox, ref)

    async def create_service(self, spec: ServiceSpec) -> Service:
        return await self._call(self.core.create_service, spec)

    async def scale_service(self, ref: str, replicas: int) -> Service:
        return await self._call(self.core.scale_service, ref, replicas)

    async def remove_service(self, ref: str) -> Service:
        return await self._call(self.core.remove_service, ref)

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

    def _token_middleware(self) -> Callable:
        token = self._admin_token()

        @web.middleware
        async def require_token(request: web.Request, handler: Callable) -> web.StreamResponse:
            sock = request.transport.get_extra_info("socket") if request.transport else None
            # The page's own files hold no state: a browser gets them without the token, and
            # its script sends the token for /v1/ (netdns/page.py).
            if sock is not None and sock.family != socket.AF_UNIX and not is_page_request(request):
                given = request.headers.get("Authorization", "")
                if not secrets.compare_digest(given, f"Bearer {token}"):
                    return web.json_response(
                        {"message": "missing or wrong token: send 'Authorization: Bearer "
                         f"<token>' (the token is in {self.config.root}/admin.token)",
                         "status": 401},
                        status=401,
                    )  # fmt: skip
            return await handler(request)

        return require_token

    def _admin_token(self) -> str:
        path = self.config.root / "admin.token"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        return path.read_text().strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The daemon's flags (INTERFACE.md); the CLI's `daemon` subcommand calls this."""
    parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help="state directory (default %(default)s)"
    )
    parser.add_argument(
        "--admin", default=DEFAULT_ADMIN, help="admin API socket, root only (default %(default)s)"
    )
    parser.add_argument(
        "--admin-tcp",
        default="",
        metavar="HOST:PORT",
        help="also serve the admin API on TCP; requests need the token in ROOT/admin.token",
    )
    parser.add_argument(
        "--store",
        default="local",
        help="state store: local (default), or etcd://HOST:PORT to share overlay networks and "
        "services with the other hosts of a cluster",
    )
    parser.add_argument(
        "--host-name",
        default=socket.gethostname(),
        help="this host's name in a cluster, unique among its hosts (default: the hostname)",
    )
    parser.add_argument(
        "--advertise-addr",
        default="",
        metavar="IP",
        help="this host's underlay IPv4 address, where the other hosts send its overlay "
        "traffic (default: the source address of the route to etcd)",
    )
    parser.add_argument(
        "--lease-ttl",
        type=int,
        default=DEFAULT_LEASE_TTL,
        metavar="SECONDS",
        help="how long this host's endpoints outlive its daemon in the other hosts' answers "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--bridge",
        default="netdns0",
        metavar="NAME",
        help="Linux bridge of the default `bridge` network (default %(default)s)",
    )
    parser.add_argument(
        "--resolv-conf",
        type=Path,
        default=Path("/etc/resolv.conf"),
        metavar="PATH",
        help="the host's resolv.conf: default upstreams without --dns, and the nameservers of "
        "containers without embedded DNS (default %(default)s)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=[f.value for f in logs.LogFormat],
        help="text lines, or json: one object per line with time, level, logger, message "
        "and the record's fields (default %(default)s)",
    )
    parser.add_argument(
        "--dns",
        action="append",
        default=[],
        metavar="IP[:PORT]",
        help="default upstream, repeatable (default: the host's resolv.conf "
        "nameservers, re-read when it changes)",
    )
    parser.add_argument(
        "--local-ttl",
        type=int,
        default=5,
        metavar="SECONDS",
        help="TTL of local answers (default %(default)s, R9)",
    )
    parser.add_argument("--no-cache", action="store_true", help="do not cache forwarded answers")
    parser.add_argument("--max-inflight", type=int, default=1024, metavar="N",
                        help="most forwarded queries in flight (default %(default)s)")  # fmt: skip
    parser.add_argument("--max-inflight-per-sandbox", type=int, metavar="N",
                        help="most forwarded queries in flight from one sandbox, so a flooding "
                        "container cannot take every slot (default: a quarter of "
                        "--max-inflight, at least 8)")  # fmt: skip


def config_from_args(args: argparse.Namespace) -> DaemonConfig:
    if args.store != "local":
        parse_store_url(args.store)  # Invalid naming the bad URL
        validation.check_hostname(args.host_name)
    elif args.advertise_addr:
        raise Invalid("--advertise-addr is for a cluster: give --store etcd://HOST:PORT too")
    advertise = (
        parse_address(args.advertise_addr, "--advertise-addr", 4) if args.advertise_addr else None
    )
    if args.local_ttl < 0 or args.max_inflight < 1:
        raise Invalid("--local-ttl must be >= 0 and --max-inflight >= 1")
    if args.max_inflight_per_sandbox is not None and args.max_inflight_per_sandbox < 1:
        raise Invalid(f"--max-inflight-per-sandbox {args.max_inflight_per_sandbox}: give 1 or more")
    if not 2 <= args.lease_ttl <= 3600:
        raise Invalid(f"--lease-ttl {args.lease_ttl}: give 2 to 3600 seconds")
    from resolver.forward.upstream import parse_server

    for server in args.dns:
        parse_server(server)  # fails early with a clear message
    return DaemonConfig(
        root=args.root, admin=args.admin, admin_tcp=args.admin_tcp, store=args.store,
        host_name=args.host_name, advertise_addr=advertise, lease_ttl=args.lease_ttl,
        bridge=args.bridge, log_level=args.log_level, log_format=args.log_format,
        dns=tuple(args.dns),
        local_ttl=args.local_ttl, no_cache=args.no_cache, max_inflight=args.max_inflight,
        max_inflight_per_sandbox=args.max_inflight_per_sandbox, resolv_conf=args.resolv_conf,
    )  # fmt: skip


def _quiet_children() -> None:
    """In a forked child (pyroute2 forks to work in other namespaces): forget the loop's
    signal handling. The child inherits the wakeup fd, and the SIGTERM its parent later sends
    it would otherwise reach the daemon's loop as if the daemon itself were told to stop."""
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)


async def serve(config: DaemonConfig) -> None:
    os.register_at_fork(after_in_child=_quiet_children)
    daemon = Daemon(config)
    await daemon.start()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("stopping")
    await daemon.stop()


def main(args: argparse.Namespace) -> int:
    logs.configure(args.log_level, args.log_format)
    # Its debug output is every netlink message in full: pages per container, nothing of ours.
    logging.getLogger("pyroute2").setLevel(max(logging.INFO, logging.getLogger().level))
    if os.geteuid() != 0:
        raise NetdnsError("netdns daemon must run as root: it creates namespaces and links")
    run(serve(config_from_args(args)))
    return 0
