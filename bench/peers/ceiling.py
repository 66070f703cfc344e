"""The Python ceiling as a peer (bench/ceiling.py): canned answers on 127.0.0.11 inside its
client namespace, through the same port-53 redirect as netdns."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from bench.netlab import LabNet
from bench.peers import Peer, Target
from bench.peers.netdns import missing, python_server
from bench.workloads import Zone

__all__ = ["missing", "running"]


@contextlib.contextmanager
def running(zone: Zone, net: LabNet, workdir: Path) -> Iterator[Target]:
    with python_server(
        Peer.CEILING, "bench.ceiling", ["--log-level", "info"], zone, net, workdir / "ceiling.log"
    ) as target:
        yield target
