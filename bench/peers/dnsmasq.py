"""dnsmasq as a resolver peer: the zone's containers as host-record lines, a cache as large as
netdns's, the bench's upstream, listening on the bridge of the lab's host namespace.

--domain-needed keeps single-label names (the container names) local, as a container resolver
must: without it AAAA of an IPv4-only container would be forwarded (W2). Local answers carry
the TTL netdns gives them (5 s, R9). `host_records` is pure.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

from bench.errors import NotFound
from bench.netlab import LabNet
from bench.peers import Peer, Target
from bench.process import answers, child_process, wait_until
from bench.upstream import require_dnsmasq
from bench.workloads import Zone

log = logging.getLogger(__name__)

DNS_PORT = 53
CACHE_SIZE = 10_000  # netdns's answer cache holds 10,000 entries; dnsmasq's default is 150
LOCAL_TTL = 5


def missing() -> str | None:
    try:
        require_dnsmasq()
    except NotFound as exc:  # with the install hint
        return str(exc)
    return None


def version() -> str:
    try:
        done = subprocess.run(
            [require_dnsmasq(), "--version"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = done.stdout.splitlines()[0] if done.stdout else ""
    return first.removeprefix("Dnsmasq version").split("Copyright")[0].strip() or "unknown"


def host_records(zone: Zone) -> Iterator[str]:
    """One `host-record=` line per container: its name, then its aliases, then its address.

    dnsmasq answers PTR with the first name (the container's, as netdns does) and A of a name
    on several lines with every address (the shared alias, W3).
    """
    for index, name in enumerate(zone.container_names()):
        names = ",".join((name, *zone.aliases(index)))
        yield f"host-record={names},{zone.container_address(index)}\n"


def command(conf: Path, net: LabNet, log_path: Path) -> list[str]:
    return [
        "ip", "netns", "exec", net.host_netns,
        require_dnsmasq(),
        "--keep-in-foreground",
        f"--conf-file={conf}",  # and not the machine's /etc/dnsmasq.conf
        "--no-resolv",
        "--no-poll",
        "--no-hosts",
        "--domain-needed",
        f"--server={net.upstream}",
        f"--listen-address={net.resolver}",
        "--bind-interfaces",
        f"--port={DNS_PORT}",
        f"--cache-size={CACHE_SIZE}",
        f"--local-ttl={LOCAL_TTL}",
        "--pid-file=",
        f"--log-facility={log_path}",
    ]  # fmt: skip


@contextlib.contextmanager
def running(zone: Zone, net: LabNet, workdir: Path) -> Iterator[Target]:
    client = net.client(Peer.DNSMASQ)
    conf = workdir / "dnsmasq-peer.conf"
    conf.write_text("".join(host_records(zone)))
    log_path = workdir / "dnsmasq-peer.log"
    address = str(net.resolver)
    with child_process(command(conf, net, log_path), workdir / "dnsmasq-peer.stderr") as proc:
        probe = next(zone.container_names())
        wait_until(
            lambda: answers(address, DNS_PORT, probe, client.netns),
            proc,
            f"dnsmasq peer on {address}:{DNS_PORT}",
            log_path,
        )
        log.info(
            "dnsmasq %s on %s:%d in %s, %d container names, upstream %s",
            version(),
            address,
            DNS_PORT,
            net.host_netns,
            zone.names,
            net.upstream,
        )
        yield Target(Peer.DNSMASQ, address, DNS_PORT, client.netns, log_path, proc.pid)
