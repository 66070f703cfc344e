"""What a bench run needs running: the lab network, the upstream and every peer under test.

`lab` builds, in order, the network (bench/netlab.py: a host namespace with a bridge, a client
namespace per peer), the bench's upstream dnsmasq on the bridge (bench/upstream.py), then each
peer (bench/peers/), and yields their `Target`s. Everything is stopped and removed in reverse
order however the block is left: peers, upstream, then the namespaces with their links.

`available` says which of the asked peers can run on this machine, and why the others cannot,
so a missing peer is skipped with a message instead of failing the run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from bench.netlab import LabNet, lab_network, plan
from bench.peers import Peer, Target, aardvark, ceiling, dnsmasq, netdns
from bench.upstream import upstream_dnsmasq
from bench.workloads import Zone

log = logging.getLogger(__name__)

__all__ = ["Lab", "Target", "available", "lab"]

Starter = Callable[[Zone, LabNet, Path], AbstractContextManager[Target]]

STARTERS: dict[Peer, Starter] = {
    Peer.NETDNS: netdns.running,
    Peer.AARDVARK: aardvark.running,
    Peer.DNSMASQ: dnsmasq.running,
    Peer.CEILING: ceiling.running,
}
MISSING: dict[Peer, Callable[[], str | None]] = {
    Peer.NETDNS: netdns.missing,
    Peer.AARDVARK: aardvark.missing,
    Peer.DNSMASQ: dnsmasq.missing,
    Peer.CEILING: ceiling.missing,
}


@dataclass(frozen=True, slots=True)
class Lab:
    zone: Zone
    net: LabNet
    upstream: str  # address of the bench's dnsmasq, port 53, on the lab bridge
    targets: tuple[Target, ...]


def available(peers: Sequence[Peer]) -> tuple[list[Peer], list[tuple[Peer, str]]]:
    """(the peers that can run here, [(peer, why not), ...] for the others)."""
    runnable: list[Peer] = []
    skipped: list[tuple[Peer, str]] = []
    for peer in peers:
        reason = MISSING[peer]()
        if reason is None:
            runnable.append(peer)
        else:
            skipped.append((peer, reason))
    return runnable, skipped


@contextlib.contextmanager
def lab(zone: Zone, workdir: Path, peers: Sequence[Peer] = (Peer.NETDNS,)) -> Iterator[Lab]:
    """The network, the upstream and every peer, started in order and stopped in reverse."""
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(lab_network(plan([(p.value, p.tag) for p in peers])))
        upstream = stack.enter_context(upstream_dnsmasq(zone, net, workdir))
        targets = tuple(stack.enter_context(STARTERS[p](zone, net, workdir)) for p in peers)
        yield Lab(zone, net, upstream, targets)
