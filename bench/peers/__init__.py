"""The DNS servers the bench compares, and what a started one looks like to dnsperf.

One module per peer, each with a context manager that starts the server in the lab
(bench/netlab.py) with the zone's names and the bench's upstream, waits until it answers from
its client namespace, yields a `Target`, and stops it however the bench leaves:
  netdns.py    the netdns listener on 127.0.0.11 inside the client namespace (port-53 redirect)
  aardvark.py  aardvark-dns on the bridge gateway, clients known by source address
  dnsmasq.py   dnsmasq as a caching resolver on the bridge
  ceiling.py   the Python ceiling (bench/ceiling.py): canned answers through netdns's redirect
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from bench.errors import Invalid


class Peer(enum.StrEnum):
    NETDNS = "netdns"
    AARDVARK = "aardvark-dns"
    DNSMASQ = "dnsmasq"
    CEILING = "ceiling"

    @property
    def tag(self) -> str:
        """Short name for the peer's client namespace (ndc-<tag>-<suffix>)."""
        return _TAGS[self]


_TAGS = {Peer.NETDNS: "nd", Peer.AARDVARK: "aa", Peer.DNSMASQ: "dm", Peer.CEILING: "ce"}
_ALIASES = {
    "netdns": Peer.NETDNS,
    "aardvark": Peer.AARDVARK,
    "aardvark-dns": Peer.AARDVARK,
    "dnsmasq": Peer.DNSMASQ,
    "ceiling": Peer.CEILING,
}
CHOICES = "netdns, aardvark, dnsmasq, ceiling"


def parse_peers(text: str) -> list[Peer]:
    """Peers named by a comma-separated list ("netdns,aardvark"), in order, without repeats."""
    chosen: list[Peer] = []
    for raw in text.split(","):
        key = raw.strip().lower()
        if not key:
            continue
        if key not in _ALIASES:
            raise Invalid(f"unknown peer {raw!r}: choose from {CHOICES}")
        if _ALIASES[key] not in chosen:
            chosen.append(_ALIASES[key])
    if not chosen:
        raise Invalid(f"no peer in {text!r}: name at least one of {CHOICES}")
    return chosen


@dataclass(frozen=True, slots=True)
class Target:
    """One DNS server under test, as dnsperf reaches it."""

    name: str  # a Peer value
    address: str
    port: int
    netns: str | None = None  # the client namespace dnsperf runs in; None: the bench's own
    log_path: Path | None = None  # its output, for a failure report
    pid: int | None = None  # the server process, whose CPU time the bench reads from /proc
