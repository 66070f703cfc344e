"""The bench's name space and the dnsperf data files (workloads) that query it.

A `Zone` fixes every name a run uses: the containers `c0..c{N-1}` every peer knows locally
(and their addresses), the alias `web` the first ten of them share, the forwarded names
`fwd<i>.bench.test` the upstream serves, and the unknown names `nx<i>.bench.test` the upstream
answers NXDOMAIN for. The servers, the upstream and the workloads all derive their names from
one Zone, so they cannot disagree.

Workloads (ids stable across issues):
  W1  A of container names: local answers from the name table.
  W2  AAAA of the same, IPv4-only, names: NODATA (R6).
  W3  A of the shared alias: ten addresses in one answer (R4).
  W4  A of forwarded names, a small set repeated: after the first round, cache hits (R13).
  W5  A of unknown names, many distinct ones: forwarded, the upstream says NXDOMAIN.
  W6  PTR of container addresses (R8).
  W7  A of forwarded names the upstream gives TTL 0: no cache may keep them, every query is a
      real forward (the cost of a cache miss).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from bench.errors import Invalid

FORWARD_DOMAIN = "bench.test"
# 10.128.0.0/9 leaves room for far more containers than a bench will create.
CONTAINER_SUBNET = IPv4Network("10.128.0.0/9")
CONTAINER_GATEWAY = CONTAINER_SUBNET[1]
FORWARD_SUBNET = IPv4Network("10.64.0.0/10")
MAX_NAMES = 1_000_000
SHARED_NAME = "web"  # the alias of W3; no container is called that
SHARED_MEMBERS = 10


@dataclass(frozen=True, slots=True)
class Zone:
    names: int = 1000  # containers c0..c{names-1}
    forwarded: int = 1000  # fwd<i>.bench.test served by the upstream
    unknown: int = 50_000  # nx<i>.bench.test: more than a run sends of each, so mostly misses
    uncached: int = 1000  # ttl0-<i>.bench.test: served with TTL 0, so never cached

    def __post_init__(self) -> None:
        for field_name in ("names", "forwarded", "unknown", "uncached"):
            count = getattr(self, field_name)
            if not 1 <= count <= MAX_NAMES:
                raise Invalid(f"zone {field_name}={count}: choose between 1 and {MAX_NAMES}")

    def container_names(self) -> Iterator[str]:
        return (f"c{i}" for i in range(self.names))

    def container_address(self, index: int) -> IPv4Address:
        # +2: skip the network address and the gateway
        return CONTAINER_SUBNET[index + 2]

    def shared_members(self) -> range:
        """Indices of the containers that carry the shared alias (all of them below ten)."""
        return range(min(SHARED_MEMBERS, self.names))

    def aliases(self, index: int) -> tuple[str, ...]:
        return (SHARED_NAME,) if index in self.shared_members() else ()

    def reverse_names(self) -> Iterator[str]:
        """The in-addr.arpa name of each container address, in container order."""
        return (self.container_address(i).reverse_pointer for i in range(self.names))

    def forwarded_names(self) -> Iterator[str]:
        return (f"fwd{i}.{FORWARD_DOMAIN}" for i in range(self.forwarded))

    def forwarded_records(self) -> Iterator[tuple[str, IPv4Address]]:
        """What the upstream serves: each forwarded name and its address."""
        return ((name, FORWARD_SUBNET[i + 1]) for i, name in enumerate(self.forwarded_names()))

    def uncached_names(self) -> Iterator[str]:
        return (f"ttl0-{i}.{FORWARD_DOMAIN}" for i in range(self.uncached))

    def uncached_records(self) -> Iterator[tuple[str, IPv4Address]]:
        """What the upstream serves with TTL 0: each name and its address."""
        first = self.forwarded + 1
        return ((name, FORWARD_SUBNET[first + i]) for i, name in enumerate(self.uncached_names()))

    def unknown_names(self) -> Iterator[str]:
        return (f"nx{i}.{FORWARD_DOMAIN}" for i in range(self.unknown))


@dataclass(frozen=True, slots=True)
class Workload:
    id: str
    title: str
    queries: Callable[[Zone], Iterator[str]]  # dnsperf data lines: "<name> <type>"

    def write(self, zone: Zone, directory: Path) -> Path:
        """The dnsperf data file for this workload, written under `directory`."""
        path = directory / f"{self.id.lower()}.txt"
        with path.open("w") as out:
            for line in self.queries(zone):
                out.write(line + "\n")
        return path


def _queries(names: Iterator[str], qtype: str = "A") -> Iterator[str]:
    return (f"{name} {qtype}" for name in names)


def _a_queries(names: Iterator[str]) -> Iterator[str]:
    return _queries(names, "A")


W1 = Workload("W1", "A, container names (local)", lambda z: _a_queries(z.container_names()))
W2 = Workload(
    "W2",
    "AAAA, IPv4-only container names (NODATA)",
    lambda z: _queries(z.container_names(), "AAAA"),
)
W3 = Workload(
    "W3",
    f"A, a name with {SHARED_MEMBERS} addresses (shared alias)",
    lambda z: iter((f"{SHARED_NAME} A",)),
)
W4 = Workload(
    "W4", "A, forwarded names (repeated: cache hits)", lambda z: _a_queries(z.forwarded_names())
)
W5 = Workload(
    "W5", "A, unknown names (forwarded, NXDOMAIN)", lambda z: _a_queries(z.unknown_names())
)

W6 = Workload(
    "W6", "PTR, container addresses (local)", lambda z: _queries(z.reverse_names(), "PTR")
)

W7 = Workload(
    "W7",
    "A, forwarded names with TTL 0 (every query a real forward)",
    lambda z: _a_queries(z.uncached_names()),
)

WORKLOADS: dict[str, Workload] = {w.id: w for w in (W1, W2, W3, W4, W5, W6, W7)}


def select(ids: str) -> list[Workload]:
    """Workloads named by a comma-separated list of ids ("W1,W4"), in the order given."""
    chosen = []
    for raw in ids.split(","):
        key = raw.strip().upper()
        if key not in WORKLOADS:
            raise Invalid(f"unknown workload {raw!r}: choose from {', '.join(WORKLOADS)}")
        chosen.append(WORKLOADS[key])
    return chosen
