"""`python -m bench.scale`: netdns at 10,000 containers on 1,000 networks (issue 4, point 4).

Four measurements, all on loopback, all in this process except the throughput one:

1. attach -> answer: a NameTable and a Resolver wired as the daemon wires them (the hot cache
   watching the table) hold the containers, built from events; then each new container is
   attached (SandboxCreated + EndpointAttached applied) and a peer on its network asks for it at
   once through the real path (Resolver.fast, then Resolver.handle on the bytes). The peer asked
   for the name once before the attach too, so a cached NXDOMAIN must be dropped by the event
   (R18). A second, smaller round does the same through real listeners and a UDP socket.
2. memory per endpoint: tracemalloc over building the table from events (the table keeps the
   Endpoint and Sandbox objects, so they count), divided by endpoints; the top allocation sites
   say where the space goes. The RSS delta of a second build is shown beside it.
3. W1 throughput at N names vs 100 names: two `python -m bench.serve` processes on random
   loopback addresses, dnsperf with each one's W1 data, runs interleaved, medians and ratio.
4. listener count: 2,000 listeners (UDP + TCP each) on distinct 127.a.b.c:53 addresses in one
   event loop, RLIMIT_NOFILE raised as needed; 200 of them answer one query each. Network
   namespaces per sandbox are left out: the loopback addresses prove the process side (fds,
   memory, start time), which is what a namespace per sandbox would not change.

Prints a markdown report and writes it to bench/results/scale-<date>.md; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import linecache
import logging
import math
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from dnslib import QTYPE, DNSRecord

from bench import dnsperf
from bench.dnsperf import DnsperfRun
from bench.errors import BenchError, Invalid
from bench.machine import environment
from bench.process import child_process, read_ready
from bench.stats import format_ms, percentile
from bench.workloads import W1, Zone
from drivers.errors import NetdnsError
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
from resolver.forward import Forwarder
from resolver.names import NameTable
from resolver.resolve import Resolver
from resolver.server import Listener, run

log = logging.getLogger("bench.scale")

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


# -- 1. attach -> answer ----------------------------------------------------------------------


@dataclass(slots=True)
class AttachResult:
    latencies: list[float] = field(default_factory=list)  # seconds, event applied -> answer
    wrong: int = 0  # answers without the new address
    stale_before: int = 0  # the pre-attach query did not say NXDOMAIN / no address
    hot_after: int = 0  # second queries the hot path answered


def wire_resolver(table: NameTable) -> Resolver:
    """As the daemon wires it: the resolver's hot cache watches the table."""
    forwarder = Forwarder(default_servers=lambda: [DEAD_UPSTREAM])
    return Resolver(table, forwarder)


async def ask(resolver: Resolver, sandbox_id: str, data: bytes) -> bytes | None:
    """The listener's order: the hot path first, the handler when it declines."""
    reply = resolver.fast(sandbox_id, data, False)
    if reply is None:
        reply = await resolver.handle(sandbox_id, data, False)
    return reply


async def attach_in_process(
    resolver: Resolver, layout: Layout, first: int, count: int, rng: random.Random
) -> AttachResult:
    result = AttachResult()
    table = resolver.table
    for k in range(first, first + count):
        querier, name, want = layout.querier(k), layout.name(k), str(layout.address(k))
        data = query_bytes(name, rng)
        before = await ask(resolver, querier, data)
        # Asked twice: the second time the negative answer comes from the hot cache (if kept).
        before = await ask(resolver, querier, data)
        if before is None or want in reply_addresses(before):
            result.stale_before += 1
        events = layout.attach_events(k)
        start = time.perf_counter()
        for event in events:
            table.apply(event)
        reply = await ask(resolver, querier, data)
        result.latencies.append(time.perf_counter() - start)
        if reply is None or want not in reply_addresses(reply):
            result.wrong += 1
        if resolver.fast(querier, data, False) is not None:
            result.hot_after += 1
    return result


async def udp_ask(sock: socket.socket, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, data)
    return await asyncio.wait_for(loop.sock_recv(sock, 4096), QUERY_TIMEOUT)


async def attach_over_udp(
    resolver: Resolver, layout: Layout, first: int, count: int, rng: random.Random
) -> AttachResult:
    """Like attach_in_process, but each querier has a real listener on loopback and asks it
    over a UDP socket from this same event loop."""
    result = AttachResult()
    table = resolver.table
    addresses = loopback_addresses(count, rng)
    listeners: list[Listener] = []
    sockets: list[socket.socket] = []
    try:
        for k, address in zip(range(first, first + count), addresses, strict=True):
            listener = await Listener.start(
                resolver.handle, layout.querier(k), address, 0, fast=resolver.fast
            )
            listeners.append(listener)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sockets.append(sock)
            sock.setblocking(False)
            sock.connect((listener.host, listener.port))
            name, want = layout.name(k), str(layout.address(k))
            data = query_bytes(name, rng)
            before = await udp_ask(sock, data)
            if want in reply_addresses(before):
                result.stale_before += 1
            events = layout.attach_events(k)
            start = time.perf_counter()
            for event in events:
                table.apply(event)
            reply = await udp_ask(sock, data)
            result.latencies.append(time.perf_counter() - start)
            if want not in reply_addresses(reply):
                result.wrong += 1
            before_fast = listener.stats.fast_answers
            await udp_ask(sock, data)
            result.hot_after += listener.stats.fast_answers - before_fast
    finally:
        for sock in sockets:
            sock.close()
        for listener in listeners:
            await listener.close()
    return result


# -- 2. memory per endpoint -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryResult:
    endpoints: int
    traced: int  # bytes tracemalloc saw retained by the built table
    rss_delta: int  # bytes of RSS growth over an untraced build (done first)
    top: tuple[tuple[str, int, int], ...]  # (site, bytes, blocks), largest first

    @property
    def per_endpoint(self) -> float:
        return self.traced / self.endpoints


def site_text(filename: str, lineno: int) -> str:
    """`file.py:N` and the code on that line, for the report's table."""
    code = linecache.getline(filename, lineno).strip().replace("|", "\\|")
    short = f"{Path(filename).name}:{lineno}"
    return f"{short} `{code}`" if code else short


def measure_memory(layout: Layout, top: int = 8) -> MemoryResult:
    # RSS first, before tracemalloc has grown and freed the same amount (freed arenas would be
    # reused and hide the growth).
    gc.collect()
    rss_before = rss_bytes()
    first = NameTable()
    first.apply_all(layout.events())
    gc.collect()
    rss_delta = rss_bytes() - rss_before
    del first
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.take_snapshot()
        table = NameTable()
        # The events are made inside the traced region and dropped after: what stays is what
        # the table keeps (Sandbox and Endpoint objects included).
        table.apply_all(layout.events())
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    stats = snapshot.compare_to(baseline, "lineno")
    sites = tuple(
        (site_text(s.traceback[0].filename, s.traceback[0].lineno), s.size_diff, s.count_diff)
        for s in stats[:top]
    )
    retained = sum(s.size_diff for s in stats)
    del table, snapshot, baseline, stats
    gc.collect()
    return MemoryResult(layout.containers, retained, rss_delta, sites)


# -- 3. W1 throughput -------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class ThroughputResult:
    config: ThroughputConfig
    qps: tuple[float, ...]
    lost: tuple[int, ...]
    server_line: str  # the server's own "stopping: ..." line: hot path answers, drops

    @property
    def median(self) -> float:
        return statistics.median(self.qps) if self.qps else math.nan


def stopping_line(log_text: str) -> str:
    """The last "stopping: ..." line bench.serve logs, without its prefix; "" when none."""
    found = [line for line in log_text.splitlines() if "stopping:" in line]
    return found[-1].split("stopping:", 1)[1].strip() if found else ""


@contextlib.contextmanager
def bench_server(names: int, address: str, log_path: Path) -> Iterator[tuple[str, int]]:
    command = [
        sys.executable, "-m", "bench.serve", "--address", address, "--port", "53",
        "--names", str(names), "--upstream", DEAD_UPSTREAM, "--log-level", "info",
    ]  # fmt: skip
    with child_process(command, log_path, stdout=subprocess.PIPE) as proc:
        yield read_ready(proc, log_path, f"bench.serve --names {names}")


def measure_throughput(
    configs: Sequence[ThroughputConfig],
    runs: int,
    duration: float,
    clients: int,
    rng: random.Random,
) -> list[ThroughputResult]:
    """One bench.serve per config (all running, idle but for the one measured), runs
    interleaved config by config, each after a warm-up that fills the hot cache."""
    qps: dict[ThroughputConfig, list[float]] = {c: [] for c in configs}
    lost: dict[ThroughputConfig, list[int]] = {c: [] for c in configs}
    addresses = loopback_addresses(len(configs), rng)
    with tempfile.TemporaryDirectory(prefix="netdns-scale-") as tmp:
        workdir = Path(tmp)
        logs = {c: workdir / f"serve-{n}.log" for n, c in enumerate(configs)}
        with contextlib.ExitStack() as servers:
            targets = {}
            for n, (config, address) in enumerate(zip(configs, addresses, strict=True)):
                (workdir / f"w{n}").mkdir()
                datafile = W1.write(Zone(names=config.queried), workdir / f"w{n}")
                host, port = servers.enter_context(
                    bench_server(config.table, address, logs[config])
                )
                targets[config] = DnsperfRun(host, port, datafile, duration, clients=clients)
            for config, target in targets.items():
                # Every name once through the slow path (about 10k/s) before measuring.
                warm = 1.0 + config.queried / WARM_NAMES_PER_SECOND
                log.info("W1 warm-up, %s (%.0f s)", config.label, warm)
                dnsperf.run_dnsperf(DnsperfRun(target.address, target.port, target.datafile, warm))
            for run_no in range(1, runs + 1):
                for config, target in targets.items():
                    summary = dnsperf.run_dnsperf(target)
                    log.info(
                        "W1 run %d/%d, %s: %.0f q/s, %d lost",
                        run_no, runs, config.label, summary.qps, summary.lost,
                    )  # fmt: skip
                    qps[config].append(summary.qps)
                    lost[config].append(summary.lost)
        # The servers have stopped (SIGTERM): their last log line counts what they answered.
        return [
            ThroughputResult(
                c, tuple(qps[c]), tuple(lost[c]), stopping_line(logs[c].read_text(errors="replace"))
            )
            for c in configs
        ]


# -- 4. listener count ------------------------------------------------------------------------


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


def raise_nofile(needed: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        new_hard = max(hard, needed)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, new_hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


async def many_listeners(
    resolver: Resolver, layout: Layout, count: int, sample: int, rng: random.Random
) -> ListenerResult:
    nofile = raise_nofile(open_fds() + 2 * count + 256)
    addresses = loopback_addresses(count, rng)
    listeners: list[tuple[int, Listener]] = []
    failed = 0
    gc.collect()
    fds_before, rss_before = open_fds(), rss_bytes()
    start = time.perf_counter()
    try:
        for k, address in enumerate(addresses):
            try:
                listener = await Listener.start(
                    resolver.handle, layout.sandbox_id(k), address, 53, fast=resolver.fast
                )
            except NetdnsError as exc:  # an address someone else holds: count it, go on
                log.warning("listener %d on %s: %s", k, address, exc)
                failed += 1
                continue
            listeners.append((k, listener))
            if len(listeners) % 500 == 0:
                log.info("%d listeners started", len(listeners))
        started = time.perf_counter() - start
        fds, rss_delta = open_fds() - fds_before, rss_bytes() - rss_before
        answered = 0
        chosen = rng.sample(listeners, min(sample, len(listeners)))
        for k, listener in chosen:
            # Each asks for the next container on its own network.
            peer = k + layout.networks
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.connect((listener.host, listener.port))
                reply = await udp_ask(sock, query_bytes(layout.name(peer), rng))
            if str(layout.address(peer)) in reply_addresses(reply):
                answered += 1
    finally:
        close_start = time.perf_counter()
        for _, listener in listeners:
            await listener.close()
        closed = time.perf_counter() - close_start
    return ListenerResult(
        len(listeners), failed, fds, rss_delta, started, closed, len(chosen), answered, nofile
    )


# -- the report -------------------------------------------------------------------------------


@dataclass(slots=True)
class ScaleReport:
    layout: Layout
    build_seconds: float = 0.0
    in_process: AttachResult | None = None
    over_udp: AttachResult | None = None
    memory: MemoryResult | None = None
    throughput: list[ThroughputResult] = field(default_factory=list)
    listeners: ListenerResult | None = None
    notes: list[str] = field(default_factory=list)


def _attach_row(label: str, result: AttachResult) -> str:
    p50, p99, worst = quantiles(result.latencies)
    return (
        f"| {label} | {len(result.latencies)} | {format_ms(p50)} | {format_ms(p99)} | "
        f"{format_ms(worst)} | {result.wrong} | {result.stale_before} | {result.hot_after} | "
        f"{met(p99 < ATTACH_P99_TARGET)} |"
    )


def render(report: ScaleReport, machine: dict[str, str], when: datetime) -> str:
    lay = report.layout
    lines = [
        f"# netdns at scale: {lay.containers:,} containers on {lay.networks:,} networks",
        "",
        f"{when:%Y-%m-%d %H:%M} UTC. Machine:",
        "",
        *(f"- {key}: {value}" for key, value in machine.items()),
        "",
        f"Table built from events in {report.build_seconds:.2f} s (Resolver with hot cache "
        "watching it, as the daemon wires it).",
        "",
    ]
    if report.in_process or report.over_udp:
        lines += [
            "## Attach -> answer",
            "",
            "From just before the attach events are applied to the reply carrying the new "
            "address, asked by a peer on the new container's network that had asked (and got "
            "NXDOMAIN) just before. Target p99 < 5 ms.",
            "",
            "| path | attaches | p50 ms | p99 ms | max ms | wrong | not NXDOMAIN before | "
            "hot on 2nd ask | target |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        if report.in_process:
            lines.append(_attach_row("in-process: Resolver.fast, then .handle", report.in_process))
        if report.over_udp:
            lines.append(_attach_row("real listener, UDP socket on loopback", report.over_udp))
        lines.append("")
    if report.memory:
        m = report.memory
        lines += [
            "## Memory per endpoint (name table)",
            "",
            f"tracemalloc, retained after building the table from events: {m.traced / KiB:,.0f} "
            f"KiB for {m.endpoints:,} endpoints (with their sandboxes and {lay.networks:,} "
            f"networks) = **{m.per_endpoint:,.0f} B per endpoint** "
            f"(target < {MEMORY_TARGET} B: {met(m.per_endpoint < MEMORY_TARGET)}). "
            f"RSS growth of an untraced build (measured first): {m.rss_delta / KiB:,.0f} KiB "
            f"({m.rss_delta / m.endpoints:,.0f} B per endpoint).",
            "",
            "Largest allocation sites (retained):",
            "",
            "| site | KiB | blocks | B per endpoint |",
            "|---|---:|---:|---:|",
            *(
                f"| {site} | {size / KiB:,.0f} | {blocks:,} | {size / m.endpoints:,.0f} |"
                for site, size, blocks in m.top
            ),
            "",
        ]
    if report.throughput:
        base = report.throughput[0]
        lines += [
            "## W1 throughput vs table size",
            "",
            "`python -m bench.serve` on a random loopback address (no namespace, no redirect), "
            "dnsperf on the same 2 cores, W1 data over the first N names of the table, runs "
            "interleaved after a warm-up each (1 s + 1 s per 5,000 names: fills the hot cache).",
            "",
            "| table | W1 over | runs q/s | median q/s | lost | vs first | server counters |",
            "|---:|---:|---|---:|---:|---:|---|",
        ]
        for t in report.throughput:
            ratio = t.median / base.median if base.median else math.nan
            lines.append(
                f"| {t.config.table:,} | {t.config.queried:,} | "
                f"{', '.join(f'{q:,.0f}' for q in t.qps)} | {t.median:,.0f} | {sum(t.lost)} | "
                f"{ratio:.2f}x | {t.server_line} |"
            )
        lines.append("")
    if report.listeners:
        r = report.listeners
        per = r.rss_delta / r.listeners if r.listeners else math.nan
        lines += [
            "## Listener count",
            "",
            f"{r.listeners:,} listeners (UDP + TCP each) on distinct 127.a.b.c:53 addresses in "
            f"one event loop ({r.failed_binds} addresses failed to bind); RLIMIT_NOFILE "
            f"{r.nofile[0]}/{r.nofile[1]}. No network namespace per sandbox here: loopback "
            "addresses prove the process side (fds, memory, start time).",
            "",
            "| listeners | fds | RSS growth | per listener | start | close | answered |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {r.listeners:,} | {r.fds:,} | {r.rss_delta / KiB / KiB:.1f} MiB | "
            f"{per / KiB:.1f} KiB | {r.start_seconds:.2f} s | {r.close_seconds:.2f} s | "
            f"{r.answered}/{r.asked} |",
            "",
        ]
    if report.notes:
        lines += ["## Notes", "", *(f"- {note}" for note in report.notes), ""]
    return "\n".join(lines)


# -- the command ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description="netdns at scale, on loopback: attach->answer latency, name-table memory "
        "per endpoint, W1 throughput at many vs 100 names, and many listeners in one process. "
        "Prints a markdown report and writes it to OUT/scale-<date>.md.",
    )
    parser.add_argument("--containers", type=int, default=10_000)
    parser.add_argument("--networks", type=int, default=1000)
    parser.add_argument("--attaches", type=int, default=1000, help="measured in-process")
    parser.add_argument("--udp-attaches", type=int, default=100, help="measured over UDP")
    parser.add_argument("--listeners", type=int, default=2000)
    parser.add_argument("--listener-sample", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3, help="W1 runs per size")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per W1 run")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf clients")
    parser.add_argument("--skip", default="", help="comma list of: attach,memory,w1,listeners")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.duration > 60 or args.runs < 1 or args.runs > 10:
        parser.error("--duration must be in (0, 60] and --runs in [1, 10]")
    if args.listeners < 1 or args.listeners > 10_000:
        parser.error("--listeners must be between 1 and 10000")
    return args


async def in_loop(args: argparse.Namespace, report: ScaleReport, rng: random.Random) -> None:
    layout = report.layout
    skip = set(args.skip.split(","))
    log.info("building the table: %d containers on %d networks", layout.containers,
             layout.networks)  # fmt: skip
    table = NameTable()
    resolver = wire_resolver(table)
    start = time.perf_counter()
    table.apply_all(layout.events())
    report.build_seconds = time.perf_counter() - start
    if "attach" not in skip:
        log.info("attach -> answer, in-process: %d attaches", args.attaches)
        report.in_process = await attach_in_process(
            resolver, layout, layout.containers, args.attaches, rng
        )
        if args.udp_attaches:
            log.info("attach -> answer, over UDP: %d attaches", args.udp_attaches)
            report.over_udp = await attach_over_udp(
                resolver, layout, layout.containers + args.attaches, args.udp_attaches, rng
            )
    if "listeners" not in skip:
        log.info("starting %d listeners", args.listeners)
        report.listeners = await many_listeners(
            resolver, layout, args.listeners, args.listener_sample, rng
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="bench.scale: %(message)s")
    rng = random.Random(args.seed)
    when = datetime.now(UTC)
    try:
        layout = Layout(networks=args.networks, containers=args.containers)
        # Room for every attach the run makes, checked before anything starts.
        layout.address(layout.containers + args.attaches + args.udp_attaches - 1)
        skip = set(args.skip.split(","))
        report = ScaleReport(layout)
        began = time.monotonic()
        if "memory" not in skip:
            log.info("memory: tracemalloc over building %d endpoints", layout.containers)
            report.memory = measure_memory(layout)
        run(in_loop(args, report, rng))
        if "w1" not in skip:
            if dnsperf.available():
                report.throughput = measure_throughput(
                    throughput_configs(layout.containers),
                    args.runs,
                    args.duration,
                    args.clients,
                    rng,
                )
            else:
                report.notes.append("dnsperf not installed: W1 throughput not measured")
        report.notes.append(f"whole run: {time.monotonic() - began:.0f} s")
    except (BenchError, NetdnsError) as exc:
        log.error("%s", exc)
        return exc.exit_code
    text = render(report, environment(), when)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"scale-{when:%Y-%m-%d-%H%M}.md"
    path.write_text(text + "\n")
    log.info("report written to %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
