"""netdns as a peer: `python -m bench.serve --netns` run in the lab's host namespace, its
listener on 127.0.0.11 inside the netdns client namespace, reached through the port-53
redirect (a stateless nft port rewrite), the path a container's query takes.

`python_server` starts any of the bench's Python servers that way (the ceiling too)."""

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
    return [
        "--names", str(zone.names),
        "--upstream", str(net.upstream),
        "--log-level", "info",
    ]  # fmt: skip


@contextlib.contextmanager
def python_server(
    peer: Peer, module: str, arguments: list[str], zone: Zone, net: LabNet, log_path: Path
) -> Iterator[Target]:
    """`python -m MODULE --netns <peer's client> ARGUMENTS` in the host namespace, once it
    answers through the redirect; the bench's stop line from its log is reported at the end."""
    client = net.client(peer)
    full = [
        "ip", "netns", "exec", net.host_netns,
        sys.executable, "-m", module, "--netns", netns_path(client.netns), *arguments,
    ]  # fmt: skip
    # The child imports bench/, resolver/, drivers/ from this repository, whatever the cwd.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    try:
        with child_process(full, log_path, stdout=subprocess.PIPE, env=env) as proc:
            host, port = read_ready(proc, log_path, module)
            probe = next(zone.container_names())
            wait_until(
                lambda: answers(host, DNS_PORT, probe, client.netns),
                proc,
                f"{peer} via {host}:{DNS_PORT} in {client.netns}",
                log_path,
            )
            log.info(
                "%s on %s:%d in %s (redirected from :%d), pid %d",
                peer, host, port, client.netns, DNS_PORT, proc.pid,
            )  # fmt: skip
            # `ip netns exec` execs the command: the pid is the server's own.
            yield Target(peer, host, DNS_PORT, client.netns, log_path, proc.pid)
    finally:
        # What the server counted (queries, drops, cache hits), once it has stopped.
        for line in log_tail(log_path).splitlines():
            if "stopping:" in line:
                log.info("%s %s", peer, line[line.index("stopping:") :])


@contextlib.contextmanager
def running(zone: Zone, net: LabNet, workdir: Path) -> Iterator[Target]:
    log.info("netdns: %d container names", zone.names)
    with python_server(
        Peer.NETDNS, "bench.serve", command(zone, net), zone, net, workdir / "netdns.log"
    ) as target:
        yield target
