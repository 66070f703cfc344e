"""The pure parts of `python -m bench.scale` (bench/scale.py): the layout of networks and
containers, the targets, what each measurement returns, and small helpers."""

from __future__ import annotations

import math
import os
import random
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from dnslib import QTYPE, DNSRecord

from bench.errors import Invalid
from bench.stats import percentile
from drivers.model import (
    Driver,
    Endpoint,
    EndpointAttached,
    Event,
    IPAMConfig,
    Network,
    NetworkCreated,
    Sandbox,
    SandboxCreated,
)

RESULTS = Path(__file__).resolve().parent / "results"
SUBNETS = IPv4Network("10.128.0.0/9")  # split into one /24 per network
NETWORK_PREFIX = 24
MAX_SLOTS = 250  # addresses per /24 past the network address and gateway, with a margin
# Nothing listens here: the bench's names are all local, so nothing is ever forwarded; a query
# that were forwarded would fail visibly (SERVFAIL) rather than leave the machine.
DEAD_UPSTREAM = "127.254.254.254"
QUERY_TIMEOUT = 2.0
ATTACH_P99_TARGET = 0.005  # seconds
MEMORY_TARGET = 2048  # bytes per endpoint
KiB = 1024
WARM_NAMES_PER_SECOND = 5000  # slow-path answers a second, with a margin


# -- the layout: pure -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """Containers c<k> spread round-robin over networks n<i>, one /24 each.

    Container k sits on network k % networks, in slot k // networks of it (address slot + 2).
    Containers past `containers` are the ones attached while measuring; the querier for any
    container is the first one on its network (container i for network i).
    """

    networks: int = 1000
    containers: int = 10_000

    def __post_init__(self) -> None:
        if self.networks < 1 or self.containers < self.networks:
            raise Invalid(
                f"layout of {self.containers} containers on {self.networks} networks: need at "
                "least one network and one container per network"
            )
        if self.networks > 2 ** (NETWORK_PREFIX - SUBNETS.prefixlen):
            raise Invalid(f"{self.networks} networks do not fit in {SUBNETS}: choose fewer")

    def network_index(self, k: int) -> int:
        return k % self.networks

    def slot(self, k: int) -> int:
        return k // self.networks

    def subnet(self, i: int) -> IPv4Network:
        size = 2 ** (32 - NETWORK_PREFIX)
        return IPv4Network((int(SUBNETS.network_address) + i * size, NETWORK_PREFIX))

    def network(self, i: int) -> Network:
        subnet = self.subnet(i)
        return Network(
            id=f"net-{i}",
            name=f"n{i}",
            driver=Driver.BRIDGE,
            ipam=(IPAMConfig(subnet, subnet[1]),),  # type: ignore[arg-type]
        )

    def name(self, k: int) -> str:
        return f"c{k}"

    def sandbox_id(self, k: int) -> str:
        return f"sb-{k:08d}"

    def address(self, k: int) -> IPv4Address:
        slot = self.slot(k)
        if slot >= MAX_SLOTS:
            raise Invalid(f"container {k} is in slot {slot} of its network: use more networks")
        return self.subnet(self.network_index(k))[slot + 2]

    def querier(self, k: int) -> str:
        """The sandbox that asks for container k: the first container on its network."""
        return self.sandbox_id(self.network_index(k))

    def attach_events(self, k: int) -> tuple[Event, Event]:
        sandbox = Sandbox(id=self.sandbox_id(k), name=self.name(k))
        endpoint = Endpoint(
            id=f"ep-{k}",
            network_id=f"net-{self.network_index(k)}",
            sandbox_id=sandbox.id,
            name=sandbox.name,
            ipv4=self.address(k),
        )
        return SandboxCreated(sandbox), EndpointAttached(endpoint)

    def events(self) -> Iterator[Event]:
        """Every network, then every container, as the driver core would emit them."""
        for i in range(self.networks):
            yield NetworkCreated(self.network(i))
        for k in range(self.containers):
            yield from self.attach_events(k)


# -- small pure helpers -----------------------------------------------------------------------


def query_bytes(name: str, rng: random.Random) -> bytes:
    query = DNSRecord.question(name, "A")
    query.header.id = rng.randrange(0x10000)
    return bytes(query.pack())


def reply_addresses(reply: bytes) -> tuple[str, ...]:
    """The A addresses in a reply's answer section."""
    record = DNSRecord.parse(reply)
    return tuple(str(rr.rdata) for rr in record.rr if rr.rtype == QTYPE.A)


def rss_bytes(status: str | None = None) -> int:
    """VmRSS from /proc/self/status (or the given text), in bytes."""
    if status is None:
        status = Path("/proc/self/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit.lower() != "kb":
                raise Invalid(f"VmRSS in unit {unit!r}: expected kB")
            return int(value) * KiB
    raise Invalid("no VmRSS line in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def loopback_addresses(count: int, rng: random.Random) -> list[str]:
    """COUNT distinct 127.a.b.c addresses under one random a, away from 127.0.0.0/16 (where
    127.0.0.1, .11 and .53 live) and from DEAD_UPSTREAM."""
    if not 1 <= count <= 250 * 250:
        raise Invalid(f"{count} loopback addresses: choose between 1 and {250 * 250}")
    a = rng.randrange(16, 250)
    b0 = rng.randrange(1, 250 - count // 250)
    return [f"127.{a}.{b0 + i // 250}.{i % 250 + 2}" for i in range(count)]


def quantiles(samples: Sequence[float]) -> tuple[float, float, float]:
    """p50, p99 and max (nearest rank) of the samples; NaN when empty."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan, math.nan, math.nan
    return percentile(ordered, 50), percentile(ordered, 99), ordered[-1]


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"


@dataclass(frozen=True, slots=True)
class ThroughputConfig:
    """A bench.serve table of `table` names, queried by W1 over its first `queried` names."""

    table: int
    queried: int

    @property
    def label(self) -> str:
        return f"{self.table:,} names, W1 over {self.queried:,}"


def throughput_configs(names: int, small: int = 100) -> tuple[ThroughputConfig, ...]:
    """The small table, the big one, and the big table queried over the small working set: the
    third tells table size apart from the number of distinct names cycled through."""
    configs = [ThroughputConfig(small, small), ThroughputConfig(names, names)]
    if names > small:
        configs.append(ThroughputConfig(names, small))
    return tuple(dict.fromkeys(configs))


@dataclass(slots=True)
class AttachResult:
    latencies: list[float] = field(default_factory=list)  # seconds, event applied -> answer
    wrong: int = 0  # answers without the new address
    stale_before: int = 0  # the pre-attach query did not say NXDOMAIN / no address
    hot_after: int = 0  # second queries the hot path answered


@dataclass(frozen=True, slots=True)
class MemoryResult:
    endpoints: int
    traced: int  # bytes tracemalloc saw retained by the built table
    rss_delta: int  # bytes of RSS growth over an untraced build (done first)
    top: tuple[tuple[str, int, int], ...]  # (site, bytes, blocks), largest first

    @property
    def per_endpoint(self) -> float:
        return self.traced / self.endpoints


@dataclass(frozen=True, slots=True)
class ThroughputResult:
    config: ThroughputConfig
    qps: tuple[float, ...]
    lost: tuple[int, ...]
    server_line: str  # the server's own "stopping: ..." line: hot path answers, drops

    @property
    def median(self) -> float:
        return statistics.median(self.qps) if self.qps else math.nan


@dataclass(frozen=True, slots=True)
class ListenerResult:
    listeners: int
    failed_binds: int
    fds: int  # fds opened by the listeners
    rss_delta: int
    start_seconds: float
    close_seconds: float
    asked: int
    answered: int
    nofile: tuple[int, int]
