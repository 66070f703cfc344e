"""Protocol-test harness: a real resolver behind real listeners, in a thread, queried from tests.

`ServerThread` runs an event loop (uvloop) in a thread with a Resolver over a given NameTable
and one Listener per sandbox, each on its own random loopback address (port 53 when it is free
there, so `dig @addr` works as in a container; tests still pass the port). `sample_table()`
builds the table the protocol tests ask about, only from events, as the daemon does. `dig()`
runs the real dig against one listener and parses what it prints.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import TypeVar

from drivers.errors import Conflict
from drivers.model import (
    Driver,
    Endpoint,
    EndpointAttached,
    EndpointMode,
    Event,
    IPAMConfig,
    Network,
    NetworkCreated,
    Sandbox,
    SandboxCreated,
    Service,
    ServicePort,
    ServiceUpdated,
    Task,
    VirtualIP,
)
from resolver.forward import Forwarder
from resolver.names import NameTable
from resolver.resolve import Resolver
from resolver.server import Listener, ListenerConfig, new_event_loop

T = TypeVar("T")
START_TIMEOUT = 10.0


def random_loopback() -> str:
    """A loopback address unlikely to be anyone else's (never 127.0.0.0/24)."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


class ServerThread:
    """Listeners for `sandbox_ids` over a Resolver of `table`, served from a background thread.

    Non-local names go to `upstreams` (servers the test started; never anything else). Use as a
    context manager; `address(sandbox_id)` and `port(sandbox_id)` say where each one listens.
    """

    def __init__(
        self,
        table: NameTable,
        sandbox_ids: Sequence[str],
        *,
        upstreams: Sequence[str] = (),
        local_ttl: int = 5,
        config: ListenerConfig | None = None,
        prefer_port_53: bool = True,
    ) -> None:
        self.table = table
        self.sandbox_ids = tuple(sandbox_ids)
        self.upstreams = list(upstreams)
        self.local_ttl = local_ttl
        self.config = config or ListenerConfig()
        self.prefer_port_53 = prefer_port_53
        self.listeners: dict[str, Listener] = {}
        self.resolver: Resolver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------------

    def __enter__(self) -> ServerThread:
        self._thread = threading.Thread(target=self._run, name="netdns-proto", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError(f"listeners did not start within {START_TIMEOUT} s")
        if self._error is not None:
            self._thread.join(START_TIMEOUT)
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(START_TIMEOUT)

    def _run(self) -> None:
        loop = new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            upstreams = self.upstreams
            forwarder = Forwarder(default_servers=lambda: list(upstreams))
            self.resolver = Resolver(self.table, forwarder, local_ttl=self.local_ttl)
            for sandbox_id in self.sandbox_ids:
                self.listeners[sandbox_id] = await self._start_listener(sandbox_id)
        except BaseException as exc:
            self._error = exc
        self._ready.set()
        if self._error is None:
            await self._stop.wait()
        for listener in self.listeners.values():
            await listener.close()

    async def _start_listener(self, sandbox_id: str) -> Listener:
        assert self.resolver is not None
        ports = (53, 0) if self.prefer_port_53 else (0,)
        for port in ports:
            try:
                return await Listener.start(
                    self.resolver.handle, sandbox_id, random_loopback(), port,
                    config=self.config, fast=self.resolver.fast, soon=self.resolver.start,
                )  # fmt: skip
            except (Conflict, PermissionError):
                if port == 0:
                    raise
        raise AssertionError("unreachable")

    # -- use from tests --------------------------------------------------------------------------

    def address(self, sandbox_id: str) -> str:
        return self.listeners[sandbox_id].host

    def port(self, sandbox_id: str) -> int:
        return self.listeners[sandbox_id].port

    def call(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        """Run `fn` on the server's loop (for example `table.apply(event)`), return its result."""
        assert self._loop is not None

        async def on_loop() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(on_loop(), self._loop).result(timeout)


# -- dig ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RR:
    owner: str
    ttl: int
    rtype: str
    rdata: str


@dataclass(frozen=True, slots=True)
class DigResult:
    status: str
    flags: frozenset[str]
    answer: tuple[RR, ...]
    additional: tuple[RR, ...]
    has_opt: bool
    udp_size: int | None  # the EDNS size the server's OPT record names
    text: str = field(repr=False)

    def rdata(self, rtype: str | None = None) -> list[str]:
        return [rr.rdata for rr in self.answer if rtype is None or rr.rtype == rtype]


def dig(server: ServerThread, sandbox_id: str, *args: str, timeout: float = 10.0) -> DigResult:
    """`dig @<the sandbox's listener> ARGS`, one try with a 2 s wait, parsed."""
    command = [
        "dig",
        f"@{server.address(sandbox_id)}",
        "-p",
        str(server.port(sandbox_id)),
        "+tries=1",
        "+time=2",
        "+nocmd",
        "+nostats",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}")
    return parse_dig(done.stdout)


def parse_dig(text: str) -> DigResult:
    status, flags, udp_size, has_opt = "", frozenset[str](), None, False
    sections: dict[str, list[RR]] = {"ANSWER": [], "ADDITIONAL": []}
    current: list[RR] | None = None
    for line in text.splitlines():
        if ";; ->>HEADER<<-" in line:
            status = line.split("status:")[1].split(",")[0].strip()
        elif line.startswith(";; flags:"):
            flags = frozenset(line.split(":")[1].split(";")[0].split())
        elif line.startswith(";; OPT PSEUDOSECTION"):
            has_opt = True
        elif line.startswith("; EDNS:") and "udp:" in line:
            udp_size = int(line.split("udp:")[1].split()[0])
        elif line.startswith(";; ") and line.rstrip().endswith("SECTION:"):
            current = sections.get(line[3:].split()[0])
        elif not line.strip():
            current = None
        elif current is not None and not line.startswith(";"):
            owner, ttl, _class, rtype, *rdata = line.split()
            current.append(RR(owner, int(ttl), rtype, " ".join(rdata)))
    return DigResult(
        status,
        flags,
        tuple(sections["ANSWER"]),
        tuple(sections["ADDITIONAL"]),
        has_opt,
        udp_size,
        text,
    )


# -- the sample table --------------------------------------------------------------------------


def sandbox_id(name: str) -> str:
    """A 64-hex container id derived from the name, as docker ids look."""
    return hashlib.sha256(name.encode()).hexdigest()


APPNET = Network(
    id="n-appnet",
    name="appnet",
    driver=Driver.BRIDGE,
    ipam=(IPAMConfig(IPv4Network("10.10.0.0/16"), IPv4Address("10.10.0.1")),),
)
V6NET = Network(
    id="n-v6net",
    name="v6net",
    driver=Driver.BRIDGE,
    ipv6=True,
    ipam=(
        IPAMConfig(IPv4Network("10.20.0.0/24"), IPv4Address("10.20.0.1")),
        IPAMConfig(IPv6Network("fd00:20::/64"), IPv6Address("fd00:20::1")),
    ),
)
SECRET = Network(
    id="n-secret",
    name="secret",
    driver=Driver.BRIDGE,
    internal=True,
    ipam=(IPAMConfig(IPv4Network("10.30.0.0/24")),),
)

# Listener sandboxes: on one network, on two (appnet first, then v6net), on an internal one only.
CLIENT1 = sandbox_id("client1")
CLIENT2 = sandbox_id("client2")
CLIENT_INTERNAL = sandbox_id("client-internal")
CLIENTS = (CLIENT1, CLIENT2, CLIENT_INTERNAL)

WEB_V4 = "10.10.0.2"
DB_V4 = "10.10.0.3"
POOL_V4 = ("10.10.0.4", "10.10.0.5")
DUAL_APPNET_V4 = "10.10.0.12"
DUAL_V6NET_V4 = "10.20.0.12"
DUAL_V6 = "fd00:20::12"
SIX_V4 = "10.20.0.2"
SIX_V6 = "fd00:20::2"
VAULT_V4 = "10.30.0.2"
MANY_V4 = tuple(f"10.10.1.{i}" for i in range(1, 41))  # R15: too many for 512 bytes
API_VIP = "10.10.0.250"
API_TASKS_V4 = ("10.10.0.201", "10.10.0.202")
API_TASK_IDS = ("t0api1xxxxxx", "t0api2xxxxxx")
RR_TASKS_V4 = ("10.10.0.211", "10.10.0.212", "10.10.0.213")


def _container(
    name: str,
    network: Network,
    ipv4: str,
    ipv6: str | None = None,
    aliases: tuple[str, ...] = (),
    task: Task | None = None,
) -> Iterator[Event]:
    sid = sandbox_id(name)
    yield SandboxCreated(Sandbox(id=sid, name=name, netns=f"/run/netns/{name}"))
    yield from _attach(name, network, ipv4, ipv6, aliases, task)


def _attach(
    name: str,
    network: Network,
    ipv4: str,
    ipv6: str | None = None,
    aliases: tuple[str, ...] = (),
    task: Task | None = None,
) -> Iterator[Event]:
    yield EndpointAttached(
        Endpoint(
            id=f"ep-{network.name}-{name}",
            network_id=network.id,
            sandbox_id=sandbox_id(name),
            name=name,
            aliases=aliases,
            ipv4=IPv4Address(ipv4),
            ipv6=IPv6Address(ipv6) if ipv6 else None,
            task=task,
        )
    )


def sample_events() -> list[Event]:
    events: list[Event] = [NetworkCreated(n) for n in (APPNET, V6NET, SECRET)]
    events += _container("web", APPNET, WEB_V4, aliases=("www", "Front"))
    events += _container("db", APPNET, DB_V4)
    events += _container("cache1", APPNET, POOL_V4[0], aliases=("pool",))
    events += _container("cache2", APPNET, POOL_V4[1], aliases=("pool",))
    for i, address in enumerate(MANY_V4):
        events += _container(f"many{i}", APPNET, address, aliases=("many",))
    events += _container("dual", APPNET, DUAL_APPNET_V4)
    events += _attach("dual", V6NET, DUAL_V6NET_V4, DUAL_V6)
    events += _container("six", V6NET, SIX_V4, SIX_V6)
    events += _container("vault", SECRET, VAULT_V4)

    api = Service(
        id="s-api",
        name="api",
        networks=(APPNET.id,),
        mode=EndpointMode.VIP,
        vips=(VirtualIP(APPNET.id, ip_address(API_VIP)),),
        ports=(ServicePort("http", "tcp", 80),),
        replicas=2,
    )
    rr = Service(id="s-rr", name="rr", networks=(APPNET.id,), mode=EndpointMode.DNSRR, replicas=3)
    events += [ServiceUpdated(api), ServiceUpdated(rr)]
    for slot, (address, task_id) in enumerate(zip(API_TASKS_V4, API_TASK_IDS, strict=True), 1):
        task = Task(api.id, api.name, slot, task_id)
        events += _container(task.name, APPNET, address, task=task)
    for slot, address in enumerate(RR_TASKS_V4, 1):
        task = Task(rr.id, rr.name, slot, f"t0rr{slot}xxxxxxx")
        events += _container(task.name, APPNET, address, task=task)

    events += _container("client1", APPNET, "10.10.0.10")
    events += _container("client2", APPNET, "10.10.0.11")
    events += _attach("client2", V6NET, "10.20.0.11", "fd00:20::11")
    events += _container("client-internal", SECRET, "10.30.0.10")
    return events


def sample_table() -> NameTable:
    table = NameTable()
    table.apply_all(sample_events())
    return table


def api_task_names() -> tuple[str, ...]:
    """R2: a task's name is `<svc>.<slot>.<taskid>`."""
    return tuple(f"api.{slot}.{task_id}" for slot, task_id in enumerate(API_TASK_IDS, 1))
