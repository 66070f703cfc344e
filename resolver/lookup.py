"""What a lookup decides, as data: the rule (RESOLUTION.md) and outcome, the records' data,
where a query goes upstream, a sandbox's view, what an event changes; and the pure name
helpers the name table (resolver/names.py) and the caches share."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from drivers.model import Endpoint, IPAddress, Network, Sandbox
from resolver.wire import QTYPE_A, QTYPE_AAAA, QTYPE_PTR, QTYPE_SRV

TASKS_PREFIX = "tasks."


class Rule(enum.StrEnum):
    R2_NAME = "R2"
    R3B_DOMAIN = "R3b"
    R4_SHARED = "R4"
    R5_SERVICE = "R5"
    R6_NODATA = "R6"
    R7_OTHER_TYPE = "R7"
    R8_PTR = "R8"
    R11_FORWARD = "R11"
    R12_INTERNAL = "R12"
    R12B_NDOTS = "R12b"


class Outcome(enum.StrEnum):
    RECORDS = "records"  # answer locally with the records below
    NODATA = "nodata"  # NOERROR, empty answer
    NXDOMAIN = "nxdomain"
    FORWARD = "forward"  # not local: send upstream


@dataclass(frozen=True, slots=True)
class SrvTarget:
    port: int
    target: str  # a task name, resolvable locally (R2)
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True, slots=True)
class Upstreams:
    """Where a query that is not local goes (R11)."""

    servers: tuple[str, ...] = ()  # empty: the daemon-level upstreams
    # Servers named for the sandbox or its network are queried from inside its namespace.
    from_sandbox: bool = False


@dataclass(frozen=True, slots=True)
class Lookup:
    rule: Rule
    outcome: Outcome
    network: str = ""  # name of the network that answered
    addresses: tuple[IPAddress, ...] = ()
    ptr: tuple[str, ...] = ()  # PTR targets, fully qualified with the trailing dot
    srv: tuple[SrvTarget, ...] = ()
    upstreams: Upstreams = Upstreams()


@dataclass(frozen=True, slots=True)
class View:
    """What one sandbox's listener sees: its settings and its DNS networks in connect order."""

    sandbox: Sandbox
    networks: tuple[Network, ...]

    @property
    def internal_only(self) -> bool:
        return bool(self.networks) and all(n.internal for n in self.networks)

    @property
    def upstreams(self) -> Upstreams:
        if self.sandbox.dns_servers:
            return Upstreams(self.sandbox.dns_servers, from_sandbox=True)
        for network in self.networks:
            if network.dns_servers:
                return Upstreams(network.dns_servers, from_sandbox=True)
        return Upstreams()


@dataclass(frozen=True, slots=True)
class Change:
    """What one event may change in answers, worked out before the table applies it.

    For caches of finished answers (resolver/hot.py): an answer must be dropped when one of the
    names it depended on (`lookup_dependencies`) is in `names`, when it was given to a sandbox in
    `sandboxes` (its view changed: networks, order, settings), or always when `everything`.
    """

    names: frozenset[str] = frozenset()  # normalized names and reverse (PTR) names
    sandboxes: frozenset[str] = frozenset()
    everything: bool = False


ChangeWatcher = Callable[[Change], None]


def normalize(name: str) -> str:
    """Case-insensitive, trailing dot ignored (R2)."""
    return name.rstrip(".").lower()


def endpoint_names(endpoint: Endpoint) -> tuple[str, ...]:
    """Every name an endpoint answers to on its network (R2), lowercased, without repeats."""
    names = [endpoint.name, *endpoint.aliases, endpoint.short_id]
    if endpoint.hostname and endpoint.hostname != endpoint.name:
        names.append(endpoint.hostname)
    if endpoint.task is not None:
        names.append(endpoint.task.name)
    return tuple(dict.fromkeys(normalize(n) for n in names if n))


def reverse_address(qname: str) -> IPAddress | None:
    """The address an in-addr.arpa / ip6.arpa name stands for, or None if it is not a full one."""
    labels = normalize(qname).split(".")
    try:
        if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
            if all(label.isdigit() and len(label) <= 3 for label in labels[:4]):
                return IPv4Address(".".join(reversed(labels[:4])))
        elif labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
            nibbles = labels[:32]
            if all(len(n) == 1 and n in "0123456789abcdef" for n in nibbles):
                return IPv6Address(int("".join(reversed(nibbles)), 16))
    except ValueError:
        return None
    return None


def _prefixes(labels: list[str]) -> Iterator[str]:
    for end in range(1, len(labels) + 1):
        yield ".".join(labels[:end])


def lookup_dependencies(qname: str, qtype: int) -> tuple[str, ...]:
    """The names whose change can change `lookup(sandbox, qname, qtype)`, besides the view.

    Mirrors lookup: a name is tried whole and as every R3 prefix (`a.b` of `a.b.c`), which also
    covers `tasks.<svc>`; an SRV question also tries its service part after `_port._proto.`;
    PTR of a reverse name depends on the address only, named by its canonical reverse name;
    PTR of any other name is an R7 question about that name.
    """
    name = normalize(qname)
    if qtype == QTYPE_PTR and (address := reverse_address(name)) is not None:
        return (address.reverse_pointer,)
    labels = name.split(".") if name else []
    names = dict.fromkeys(_prefixes(labels))
    if qtype == QTYPE_SRV and len(labels) >= 3:
        names.update(dict.fromkeys(_prefixes(labels[2:])))
    return tuple(names)


def family_matches(address: IPAddress, qtype: int) -> bool:
    return (qtype == QTYPE_A and address.version == 4) or (
        qtype == QTYPE_AAAA and address.version == 6
    )
