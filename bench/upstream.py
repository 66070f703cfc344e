"""The bench's upstream: dnsmasq in the lab's host namespace, on the bridge, serving the zone.

Every peer forwards the names it does not hold here, so they all see the same upstream at the
same distance. It runs with --no-resolv: it serves the zone's forwarded names from a conf file
of host-record lines (its uncached names with TTL 0, so no resolver may keep them), answers
NXDOMAIN for any other name under bench.test (--local), and never asks anyone else. It does
not log queries: at thousands a second that would cost the CPU being measured.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from bench.errors import NotFound
from bench.netlab import LabNet
from bench.process import answers, child_process, wait_until
from bench.workloads import FORWARD_DOMAIN, Zone

log = logging.getLogger(__name__)

UPSTREAM_TTL = 300  # TTL of forwarded names, so resolvers can cache them (W4)


def require_dnsmasq() -> str:
    path = shutil.which("dnsmasq")
    if path is None:
        raise NotFound("dnsmasq is not installed (the bench's upstream): apt-get install dnsmasq")
    return path


def command(zone_conf: Path, net: LabNet, log_path: Path) -> list[str]:
    return [
        "ip", "netns", "exec", net.host_netns,
        require_dnsmasq(),
        "--keep-in-foreground",
        # Read as root at start (dnsmasq drops to nobody before it reads hosts files, which a
        # private temporary directory would hide); and not the machine's /etc/dnsmasq.conf.
        f"--conf-file={zone_conf}",
        "--no-resolv",  # never the machine's resolv.conf servers
        "--no-poll",
        "--no-hosts",
        f"--local=/{FORWARD_DOMAIN}/",  # other names there: NXDOMAIN, never forwarded
        f"--listen-address={net.upstream}",
        "--bind-interfaces",
        "--port=53",
        f"--local-ttl={UPSTREAM_TTL}",
        "--pid-file=",
        f"--log-facility={log_path}",
    ]  # fmt: skip


@contextlib.contextmanager
def upstream_dnsmasq(zone: Zone, net: LabNet, workdir: Path) -> Iterator[str]:
    """Start the upstream at net.upstream:53; yields that address once it answers."""
    zone_conf = workdir / "upstream.conf"
    zone_conf.write_text(
        "".join(f"host-record={name},{ip}\n" for name, ip in zone.forwarded_records())
        + "".join(f"host-record={name},{ip},0\n" for name, ip in zone.uncached_records())
    )
    log_path = workdir / "upstream-dnsmasq.log"
    address = str(net.upstream)
    with child_process(
        command(zone_conf, net, log_path), workdir / "upstream-dnsmasq.stderr"
    ) as proc:
        probe = next(zone.forwarded_names())
        wait_until(
            lambda: answers(address, 53, probe, net.host_netns),
            proc,
            f"upstream dnsmasq on {address}:53",
            log_path,
        )
        log.info(
            "upstream dnsmasq on %s:53 in %s serves %d forwarded names under %s",
            address,
            net.host_netns,
            zone.forwarded,
            FORWARD_DOMAIN,
        )
        yield address
