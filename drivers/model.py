"""The state netdns keeps about container networks, and the events that change it.

Plain data and no I/O. The DriverCore makes these; the NameTable (resolver/names.py) and the
stores only consume them. Everything a resolver answer depends on travels in an event, so a
replay of the event log rebuilds the name table exactly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


class Driver(enum.StrEnum):
    BRIDGE = "bridge"
    HOST = "host"
    NULL = "null"  # docker's name for the driver of the `none` network
    MACVLAN = "macvlan"
    IPVLAN = "ipvlan"
    OVERLAY = "overlay"
    CNI = "cni"  # a CNI network: the CNI plugins make its links and addresses


class Scope(enum.StrEnum):
    LOCAL = "local"
    GLOBAL = "global"  # shared by every host through the cluster store (overlay)


class EndpointMode(enum.StrEnum):
    VIP = "vip"
    DNSRR = "dnsrr"


@dataclass(frozen=True, slots=True)
class IPAMConfig:
    subnet: IPNetwork
    gateway: IPAddress | None = None
    ip_range: IPNetwork | None = None


@dataclass(frozen=True, slots=True)
class Network:
    id: str
    name: str
    driver: Driver
    scope: Scope = Scope.LOCAL
    # Embedded DNS (R1): off for the default `bridge`, `host` and `none`, on for the others.
    dns: bool = True
    internal: bool = False
    attachable: bool = False
    ipv6: bool = False
    ipam: tuple[IPAMConfig, ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    # Upstreams named for this network (R11), queried from inside the sandbox's namespace.
    dns_servers: tuple[str, ...] = ()
    created: str = ""

    def option(self, key: str, default: str = "") -> str:
        return dict(self.options).get(key, default)


@dataclass(frozen=True, slots=True)
class Sandbox:
    """A container: one network namespace and the DNS settings its resolv.conf gets (R17)."""

    id: str
    name: str
    netns: str = ""
    hostname: str = ""
    dns_servers: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def ndots(self) -> int:
        """The ndots option the sandbox's resolv.conf carries; R17's default is 0."""
        ndots = 0
        for option in self.dns_options:
            key, _, value = option.partition(":")
            if key == "ndots" and value.isdigit():
                ndots = int(value)
        return ndots


@dataclass(frozen=True, slots=True)
class Task:
    """What makes an endpoint a service task: `<service>.<slot>.<task id>` (R2, R5)."""

    service_id: str
    service_name: str
    slot: int
    task_id: str

    @property
    def name(self) -> str:
        return f"{self.service_name}.{self.slot}.{self.task_id}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One sandbox attached to one network."""

    id: str
    network_id: str
    sandbox_id: str
    name: str  # the container name
    hostname: str = ""
    aliases: tuple[str, ...] = ()
    ipv4: IPv4Address | None = None
    ipv6: IPv6Address | None = None
    mac: str = ""
    task: Task | None = None
    # The cluster host that runs the sandbox when it is another one (learnt from the cluster
    # store); "" for this host's own endpoints.
    host: str = ""

    @property
    def short_id(self) -> str:
        return self.sandbox_id[:12]

    @property
    def remote(self) -> bool:
        return bool(self.host)

    @property
    def addresses(self) -> tuple[IPAddress, ...]:
        return tuple(a for a in (self.ipv4, self.ipv6) if a is not None)


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str  # the SRV port name: `_<name>._<protocol>.<service>`
    protocol: str  # "tcp" or "udp"
    port: int


@dataclass(frozen=True, slots=True)
class VirtualIP:
    network_id: str
    address: IPAddress


@dataclass(frozen=True, slots=True)
class Service:
    id: str
    name: str
    networks: tuple[str, ...]  # network ids
    mode: EndpointMode = EndpointMode.VIP
    vips: tuple[VirtualIP, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    replicas: int = 1
    # Cluster services (on overlay networks): the host that runs each slot, slot 1 first.
    # Empty for a local service, whose tasks all run here.
    placement: tuple[str, ...] = ()

    def vips_on(self, network_id: str) -> tuple[IPAddress, ...]:
        return tuple(v.address for v in self.vips if v.network_id == network_id)


@dataclass(frozen=True, slots=True)
class NetworkCreated:
    network: Network


@dataclass(frozen=True, slots=True)
class NetworkRemoved:
    network: Network


@dataclass(frozen=True, slots=True)
class SandboxCreated:
    sandbox: Sandbox


@dataclass(frozen=True, slots=True)
class SandboxRemoved:
    sandbox: Sandbox


@dataclass(frozen=True, slots=True)
class EndpointAttached:
    endpoint: Endpoint


@dataclass(frozen=True, slots=True)
class EndpointDetached:
    endpoint: Endpoint


@dataclass(frozen=True, slots=True)
class EndpointUpdated:
    """Same endpoint id, new names or addresses (for example an alias added)."""

    endpoint: Endpoint


@dataclass(frozen=True, slots=True)
class ServiceUpdated:
    """A service created or changed (VIPs, ports, mode); its tasks attach as endpoints."""

    service: Service


@dataclass(frozen=True, slots=True)
class ServiceRemoved:
    service: Service


Event = (
    NetworkCreated
    | NetworkRemoved
    | SandboxCreated
    | SandboxRemoved
    | EndpointAttached
    | EndpointDetached
    | EndpointUpdated
    | ServiceUpdated
    | ServiceRemoved
)

EVENT_TYPES: tuple[type, ...] = (
    NetworkCreated,
    NetworkRemoved,
    SandboxCreated,
    SandboxRemoved,
    EndpointAttached,
    EndpointDetached,
    EndpointUpdated,
    ServiceUpdated,
    ServiceRemoved,
)
