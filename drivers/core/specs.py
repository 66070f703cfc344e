"""What the core is asked for (one spec per changing call, as the API and the CLI give it), what
it is given to work with (the cluster store and the namespaces, as protocols), and the
predefined networks."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol

from drivers.model import Driver, Endpoint, IPAddress, Network, Service

# The networks every daemon has.
BRIDGE = "bridge"
HOST = "host"
NONE = "none"
PREDEFINED = (BRIDGE, HOST, NONE)
# Drivers that only the predefined networks use, and that may be absent from the mapping
# (neither makes any Linux object).
SINGLETON_DRIVERS = {Driver.HOST: HOST, Driver.NULL: NONE}


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    name: str
    driver: str = "bridge"
    subnets: tuple[str, ...] = ()
    gateway: str | None = None
    ip_range: str | None = None
    ipv6: bool = False
    internal: bool = False
    attachable: bool = False
    options: tuple[tuple[str, str], ...] = ()
    dns_servers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    name: str
    hostname: str = ""
    network: str = "bridge"
    aliases: tuple[str, ...] = ()
    ip: str | None = None
    ip6: str | None = None
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    netns: str = ""  # adopt this namespace (/proc/PID/ns/net or a bind mount) instead of making one


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    networks: tuple[str, ...]
    replicas: int = 1
    endpoint_mode: str = "vip"
    publish: tuple[str, ...] = ()  # "PORT/PROTO" (PROTO defaults to tcp)
    # Names every published port in SRV (`_<port_name>._<proto>.<svc>`); default: the port
    # number itself (`_80._tcp.web`), the same on every machine (no /etc/services lookup).
    port_name: str = ""


@dataclass(frozen=True, slots=True)
class ConnectSpec:
    network: str
    container: str
    aliases: tuple[str, ...] = ()
    ip: str | None = None
    ip6: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """A validated request to attach one sandbox to one network."""

    network: Network
    aliases: tuple[str, ...] = ()
    ipv4: IPv4Address | None = None
    ipv6: IPv6Address | None = None


class Cluster(Protocol):
    """What the core needs of the cluster store (drivers/cluster/store.py): blocking calls,
    Conflict when another host holds what is asked for, Unavailable when etcd is away."""

    host: str

    def hosts(self) -> list[str]: ...

    def create_network(self, network: Network) -> Network: ...

    def remove_network(self, network: Network) -> None: ...

    def claim(self, network_id: str, address: IPAddress, owner: str) -> bool: ...

    def release(self, network_id: str, address: IPAddress, owner: str) -> None: ...

    def publish(self, endpoint: Endpoint) -> None: ...

    def withdraw(self, endpoint: Endpoint) -> None: ...

    def create_service(self, service: Service) -> None: ...

    def update_service(self, service: Service) -> None: ...

    def remove_service(self, service: Service) -> None: ...


class Namespaces(Protocol):
    """What the core needs of drivers/namespaces.py."""

    def create(self, name: str) -> str:
        """Make the named namespace; returns its path (/run/netns/NAME)."""
        ...

    def remove(self, name: str) -> None: ...

    def exists(self, path: str) -> bool: ...
