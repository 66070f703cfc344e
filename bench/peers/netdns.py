"""netdns as a peer: `python -m bench.serve --netns` run in the lab's host namespace, its
listener on 127.0.0.11 inside the netdns client namespace, reached through the port-53
redirect (nft DNAT), the path a container's query takes."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from bench.netlab import LabNet
from bench.peers import Peer, Target
from bench.process import answers, child_process, log_tail, netns_path, read_ready, wait_until
from bench.workloads import Zone

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DNS_PORT = 53


def missing() -> str | None:
    """Why netdns cannot run here, or None: the redirect needs nft and nsenter."""
    absent = [tool for tool in ("nft", "nsenter") if shutil.which(tool) is None]
    if absent:
        return f"{' and '.join(absent)} not installed (apt-get install nftables util-linux)"
    return None


def command(zone: Zone, net: LabNet) -> list[str]:
    client = net.client(Peer.NETDNS)
    return [
        "ip", "netns", "exec", net.host_netns,
        sys.executable, "-m", "bench.serve",
        "--netns", netns_path(client.netns),
        "--names", str(zone.names),
        "--upstream", str(net.upstream),
        "--log-level", "info",
    ]  # fmt: skip


@contextlib.contextmanager
def running(zone: Zone, net: LabNet, workdir: Path) -> Iterator[Target]:
    client = net.client(Peer.NETDNS)
    log_path = workdir / "netdns.log"
    # The child imports bench/, resolver/, drivers/ from this repository, whatever the cwd.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    try:
        with child_process(command(zone, net), log_path, stdout=subprocess.PIPE, env=env) as proc:
            host, port = read_ready(proc, log_path, "bench.serve")
            probe = next(zone.container_names())
            wait_until(
                lambda: answers(host, DNS_PORT, probe, client.netns),
                proc,
                f"netdns via {host}:{DNS_PORT} in {client.netns}",
                log_path,
            )
            log.info(
                "netdns on %s:%d in %s (redirected from :%d), %d container names",
                host,
                port,
                client.netns,
                DNS_PORT,
                zone.names,
            )
            yield Target(Peer.NETDNS, host, DNS_PORT, client.netns, log_path)
    finally:
        # What the server counted (queries, drops, cache hits), once it has stopped.
        for line in log_tail(log_path).splitlines():
            if "stopping:" in line:
                log.info("netdns %s", line[line.index("stopping:") :])
