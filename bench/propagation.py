"""`python -m bench.propagation`: how fast a name made on one host answers on another
(issue 5), and what 10,000 endpoints across the cluster cost.

Runs on the test suite's cluster lab (bench/labs/cluster.py: three host namespaces on an
underlay bridge, a real etcd, a real `netdns daemon` in each host namespace; root only):

1. attach -> answer: N times, a container on host1 is connected to an overlay network through
   host1's admin API; a probe container on host3 asks its own 127.0.0.11 (a UDP socket made
   inside its namespace) for `NAME.NETWORK` every millisecond until the new address comes back.
   Timed from the API call's return (the attach is done on host1) and from the request. The
   container is then disconnected and the probe waits until the address is no longer
   answered: detach -> gone.
2. 10,000 endpoints: synthetic endpoints of three made-up hosts written straight into etcd
   (the same records a daemon publishes, under one lease, 100 per transaction), since 10,000
   real namespaces would take this machine most of an hour. Measured: how long until host3
   answers the last one, the watch lag per batch (transaction return -> host3 answers that
   batch's last name), etcd's key count, each daemon's RSS before and after, the time a
   restarted daemon takes to read it all back, and attach -> answer again with 10,000 present.

Prints a markdown report and writes it to bench/results/propagation-<date>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from dnslib import QTYPE, DNSRecord

from bench.labs.cluster import ClusterHost, ClusterLab, cluster_lab
from bench.machine import environment
from bench.stats import percentile
from drivers.cluster import keys
from drivers.cluster.etcd import EtcdClient
from drivers.cluster.etcd_wire import Put
from drivers.model import Endpoint
from resolver.netns import in_netns

log = logging.getLogger("bench.propagation")
RESULTS = Path(__file__).resolve().parent / "results"
POLL = 0.001  # between probe queries
GIVE_UP = 15.0  # one attach that does not show in this long is reported as lost
TXN_OPS = 100  # etcd's default limit is 128 operations per transaction


@dataclass
class Report:
    attach: list[float] = field(default_factory=list)  # API return -> answer on host3
    attach_request: list[float] = field(default_factory=list)  # request -> answer
    detach: list[float] = field(default_factory=list)
    lost: int = 0
    attach_at_scale: list[float] = field(default_factory=list)
    endpoints: int = 0
    load_seconds: float = 0.0
    watch_lag: list[float] = field(default_factory=list)
    etcd_keys: int = 0
    rss_before: dict[str, int] = field(default_factory=dict)
    rss_after: dict[str, int] = field(default_factory=dict)
    restart_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class Probe:
    """A UDP socket inside a container's namespace, asking its 127.0.0.11."""

    def __init__(self, netns: str) -> None:
        self.sock = in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        self.sock.connect(("127.0.0.11", 53))
        self.sock.settimeout(POLL)

    def ask(self, name: str) -> tuple[int, list[str]]:
        """(rcode, A records), or (-1, []) when no answer came within the poll interval."""
        query = DNSRecord.question(name, "A")
        self.sock.send(query.pack())
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:
            try:
                reply = DNSRecord.parse(self.sock.recv(4096))
            except TimeoutError:
                return -1, []
            if reply.header.id == query.header.id:
                answers = [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
                return reply.header.rcode, answers
        return -1, []

    def wait(self, name: str, done, give_up: float = GIVE_UP) -> float | None:
        """Seconds until done(rcode, answers) holds, polling; None after `give_up`."""
        start = time.perf_counter()
        while time.perf_counter() - start < give_up:
            if done(*self.ask(name)):
                return time.perf_counter()
            time.sleep(POLL)
        return None

    def close(self) -> None:
        self.sock.close()


def rss(host: ClusterHost) -> int:
    for line in Path(f"/proc/{host.daemon.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def measure_attaches(
    lab: ClusterLab, network: str, probe: Probe, pool: list[str], count: int
) -> tuple[list[float], list[float], list[float], int]:
    source = lab.host(1).client
    after_return: list[float] = []
    after_request: list[float] = []
    detach: list[float] = []
    lost = 0
    for i in range(count):
        name = pool[i % len(pool)]
        qname = f"{name}.{network}"
        requested = time.perf_counter()
        endpoint = source.post(f"/v1/networks/{network}/connect", {"container": name})
        returned = time.perf_counter()
        address = endpoint["IPv4Address"].split("/")[0]
        seen = probe.wait(qname, lambda rcode, answers, a=address: a in answers)
        if seen is None:
            lost += 1
        else:
            after_return.append(max(seen - returned, 0.0))
            after_request.append(seen - requested)
        source.post(f"/v1/networks/{network}/disconnect", {"container": name})
        left = time.perf_counter()
        gone = probe.wait(qname, lambda rcode, answers, a=address: rcode >= 0 and a not in answers)
        if gone is not None:
            detach.append(gone - left)
        if (i + 1) % 50 == 0:
            log.info("%d/%d attaches", i + 1, count)
    return after_return, after_request, detach, lost


async def write_endpoints(
    url: str, network_id: str, subnet: IPv4Network, count: int, probe: Probe, network: str
) -> tuple[list[float], float, int]:
    """`count` synthetic endpoints of three made-up hosts under one lease; returns the watch
    lag per batch, the seconds until host3 answered the last one, and the etcd key count."""
    lags: list[float] = []
    hosts = [f"synthetic{i}" for i in range(3)]
    addresses = subnet.hosts()
    for _ in range(1024):  # the first 1,024 are left to the real containers
        next(addresses)
    async with EtcdClient(url, timeout=10) as client:
        lease = await client.grant(3600)
        began = time.perf_counter()
        for start in range(0, count, TXN_OPS):
            batch = []
            for i in range(start, min(start + TXN_OPS, count)):
                endpoint = Endpoint(
                    id=secrets.token_hex(32), network_id=network_id,
                    sandbox_id=secrets.token_hex(32), name=f"syn{i}", ipv4=next(addresses),
                    mac="02:42:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(4)),
                )  # fmt: skip
                host = hosts[i % 3]
                value = keys.encode_endpoint(endpoint, host, IPv4Address("192.0.2.1"))
                batch.append(Put(keys.endpoint_key(endpoint), value, lease=lease))
            await client.txn([], batch)
            written = time.perf_counter()
            last = f"syn{start + len(batch) - 1}.{network}"
            seen = await asyncio.to_thread(probe.wait, last, lambda rcode, answers: bool(answers))
            if seen is not None:
                lags.append(seen - written)
        total = time.perf_counter() - began
        kvs, _ = await client.get_prefix(keys.PREFIX)
    return lags, total, len(kvs)


def run(args: argparse.Namespace, report: Report) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="netdns-propagation-") as tmp,
        cluster_lab(Path(tmp), hosts=3) as lab,
    ):
        source, target = lab.host(1), lab.host(3)
        network = lab.name("ov")
        subnet = IPv4Network(f"10.{secrets.randbelow(200) + 20}.0.0/16")
        created = source.client.post(
            "/v1/networks",
            {"name": network, "driver": "overlay", "attachable": True, "subnets": [str(subnet)]},
        )
        probe_name = lab.name("probe")
        deadline = time.monotonic() + 15
        while True:  # host3 learns the network through the watch
            try:
                target.client.post("/v1/containers", {"name": probe_name, "network": network})
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        probe = Probe(f"/run/netns/{probe_name}")
        pool = [lab.name("a") for _ in range(args.pool)]
        for name in pool:
            source.client.post("/v1/containers", {"name": name, "network": "none"})
        log.info("attach -> answer, %d times", args.attaches)
        report.attach, report.attach_request, report.detach, report.lost = measure_attaches(
            lab, network, probe, pool, args.attaches
        )
        report.rss_before = {h.name: rss(h) for h in lab.hosts}
        log.info("%d synthetic endpoints into etcd", args.endpoints)
        assert lab.etcd is not None
        report.watch_lag, report.load_seconds, report.etcd_keys = asyncio.run(
            write_endpoints(lab.etcd.url, created["Id"], subnet, args.endpoints, probe, network)
        )
        report.endpoints = args.endpoints
        report.rss_after = {h.name: rss(h) for h in lab.hosts}
        log.info("restart host2 with %d endpoints in the store", args.endpoints)
        began = time.perf_counter()
        lab.restart(lab.host(2))
        report.restart_seconds = time.perf_counter() - began
        log.info("attach -> answer with %d endpoints present", args.endpoints)
        report.attach_at_scale, _, _, lost = measure_attaches(
            lab, network, probe, pool, args.attaches_at_scale
        )
        report.lost += lost
        probe.close()


def _ms(samples: list[float], p: float) -> str:
    return f"{percentile(sorted(samples), p) * 1000:.1f} ms" if samples else "-"


def render(report: Report, env: dict[str, str], when: datetime, args: argparse.Namespace) -> str:
    mib = 1024 * 1024
    lines = [
        f"# netdns multi-host propagation, {when:%Y-%m-%d %H:%M} UTC",
        "",
        "Three host namespaces on one underlay bridge, one etcd, a real daemon per host "
        "(bench/labs/cluster.py); the probe asks 127.0.0.11 inside a container on host3.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in env.items()),
        "",
        "## Attach on host1 -> answer on host3",
        "",
        "| | attaches | p50 | p90 | p99 | max |",
        "|---|---|---|---|---|---|",
    ]
    rows = (
        ("from the API's return", report.attach),
        ("from the request", report.attach_request),
        ("detach -> address gone", report.detach),
        (f"from the API's return, {report.endpoints:,} endpoints present", report.attach_at_scale),
    )
    for label, samples in rows:
        lines.append(
            f"| {label} | {len(samples)} | {_ms(samples, 50)} | {_ms(samples, 90)} | "
            f"{_ms(samples, 99)} | {_ms(samples, 100)} |"
        )
    lines += [
        "",
        f"Lost (not seen within {GIVE_UP:g} s): {report.lost}.",
        "",
        f"## {report.endpoints:,} endpoints across the cluster",
        "",
        f"- written in {report.load_seconds:.1f} s ({TXN_OPS} per transaction, three synthetic "
        "hosts); host3 answered each batch's last name after (watch lag): "
        f"p50 {_ms(report.watch_lag, 50)}, p99 {_ms(report.watch_lag, 99)}, "
        f"max {_ms(report.watch_lag, 100)}",
        f"- etcd keys under {keys.PREFIX}: {report.etcd_keys:,}",
        "- daemon RSS before -> after: "
        + ", ".join(
            f"{h} {report.rss_before.get(h, 0) / mib:.0f} -> {report.rss_after.get(h, 0) / mib:.0f}"
            " MiB"
            for h in sorted(report.rss_after)
        ),
        "- per remote endpoint: "
        + ", ".join(
            f"{h} {(report.rss_after[h] - report.rss_before.get(h, 0)) / report.endpoints:.0f} B"
            for h in sorted(report.rss_after)
        )
        if report.endpoints
        else "",
        f"- host2 restarted (SIGTERM, start, first full reading, admin API up) in "
        f"{report.restart_seconds:.1f} s",
        "",
        f"Run: `python -m bench.propagation --attaches {args.attaches} --endpoints "
        f"{args.endpoints}`.",
        *report.notes,
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.propagation",
        description="Multi-host propagation: attach on one host -> answer on another, and "
        "10,000 endpoints across three hosts (root; builds its own namespaces and etcd).",
    )
    parser.add_argument("--attaches", type=int, default=500, help="default %(default)s")
    parser.add_argument("--attaches-at-scale", type=int, default=100, help="default %(default)s")
    parser.add_argument("--endpoints", type=int, default=10_000, help="default %(default)s")
    parser.add_argument("--pool", type=int, default=20, help="containers attached in turn")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if min(args.attaches, args.pool) < 1 or args.endpoints < 0:
        parser.error("--attaches and --pool must be >= 1, --endpoints >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="bench: %(message)s")
    if os.geteuid() != 0:
        log.error("needs root: it creates namespaces, links and daemons")
        return 1
    when = datetime.now(UTC)
    report = Report()
    began = time.monotonic()
    run(args, report)
    report.notes.append(f"Whole run: {time.monotonic() - began:.0f} s.")
    text = render(report, environment(), when, args)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"propagation-{when:%Y-%m-%d-%H%M}.md"
    path.write_text(text + "\n")
    log.info("report written to %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
