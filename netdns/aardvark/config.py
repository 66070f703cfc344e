"""The files netavark writes for aardvark-dns (its config.md), read and checked.

One file per network, named after it. The first line: the addresses to listen on (the
network's gateways), comma-separated, then optionally a space and the network's DNS servers.
Each further line is a container: `ID IPV4S IPV6S NAMES [DNS_SERVERS]`, each field a
comma-separated list, IPV4S or IPV6S possibly empty (two spaces in a row). Files named
`aardvark.pid` (the server's own) and dot files are not networks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from drivers.errors import Invalid
from drivers.model import IPAddress

log = logging.getLogger(__name__)

PID_FILE = "aardvark.pid"


@dataclass(frozen=True, slots=True)
class ContainerEntry:
    id: str
    ipv4: tuple[IPv4Address, ...]
    ipv6: tuple[IPv6Address, ...]
    names: tuple[str, ...]  # the container's name first, then its aliases and short id
    dns_servers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NetworkFile:
    name: str
    bind: tuple[IPAddress, ...]
    dns_servers: tuple[str, ...] = ()
    containers: tuple[ContainerEntry, ...] = ()


def _addresses(text: str, where: str) -> tuple[IPAddress, ...]:
    if not text:
        return ()
    try:
        return tuple(ip_address(part) for part in text.split(","))
    except ValueError:
        raise Invalid(f"{where}: {text!r} is not a list of IP addresses") from None


def _servers(text: str, where: str) -> tuple[str, ...]:
    return tuple(str(a) for a in _addresses(text, where))


def parse_network_file(name: str, text: str) -> NetworkFile:
    """One network's file; Invalid naming the file and line of the first thing wrong."""
    lines = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    if not lines:
        raise Invalid(f"network file {name!r} is empty: the first line names its addresses")
    first_no, first = lines[0]
    head = first.split(" ")
    bind = _addresses(head[0], f"{name}:{first_no}")
    if not bind:
        raise Invalid(f"{name}:{first_no}: no address to listen on")
    dns = _servers(head[1], f"{name}:{first_no}") if len(head) > 1 else ()
    containers = []
    for number, line in lines[1:]:
        where = f"{name}:{number}"
        parts = line.split(" ")
        if len(parts) < 4:
            raise Invalid(f"{where}: expected ID IPV4S IPV6S NAMES [DNS], got {line!r}")
        v4 = _addresses(parts[1], where)
        v6 = _addresses(parts[2], where)
        if any(a.version != 4 for a in v4) or any(a.version != 6 for a in v6):
            raise Invalid(f"{where}: IPv4 addresses come second and IPv6 ones third")
        names = tuple(n for n in parts[3].split(",") if n)
        if not parts[0] or not names:
            raise Invalid(f"{where}: a container needs an id and at least one name")
        dns_servers = _servers(parts[4], where) if len(parts) > 4 else ()
        containers.append(ContainerEntry(parts[0], v4, v6, names, dns_servers))  # type: ignore[arg-type]
    return NetworkFile(name, bind, dns, tuple(containers))


def is_network_file(path: Path) -> bool:
    return path.is_file() and path.name != PID_FILE and not path.name.startswith(".")


def read_config(directory: Path, previous: dict[str, NetworkFile]) -> dict[str, NetworkFile]:
    """Every network's file. One that cannot be read or parsed is logged and kept as it was
    read last time (netavark rewrites whole files, so a half-written one is fixed by the next
    SIGHUP): a bad line never takes the other networks' names away."""
    networks: dict[str, NetworkFile] = {}
    for path in sorted(directory.iterdir()):
        if not is_network_file(path):
            continue
        try:
            networks[path.name] = parse_network_file(path.name, path.read_text())
        except (OSError, UnicodeDecodeError, Invalid) as exc:
            log.error("network file %s: %s; keeping what was read before", path, exc)
            if path.name in previous:
                networks[path.name] = previous[path.name]
    return networks
