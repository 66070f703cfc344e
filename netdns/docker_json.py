"""Docker's JSON shapes for netdns state: `network inspect`, `container inspect`,
`service inspect`, the `ls` rows.

Pure functions from the model (drivers/model.py) to plain dicts, so the admin API returns what
users of `docker network inspect` already read, and the CLI turns the same dicts into rows.
Keys and their spelling follow Docker's Engine API; values Docker fills that netdns has no
notion of (labels, IPAM options) are present and empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from drivers.model import Endpoint, IPAddress, IPNetwork, Network, Sandbox, Service, Task
from resolver.lookup import endpoint_names

SHORT_ID = 12

NETWORK_COLUMNS = ("NETWORK ID", "NAME", "DRIVER", "SCOPE")
CONTAINER_COLUMNS = ("CONTAINER ID", "NAME", "NETWORKS", "IPS")
SERVICE_COLUMNS = ("ID", "NAME", "MODE", "REPLICAS", "ENDPOINT MODE", "PORTS")


def _timestamp(created: str) -> str:
    # Docker writes UTC as "...Z"; the model keeps datetime.isoformat() ("...+00:00").
    return created.removesuffix("+00:00") + "Z" if created.endswith("+00:00") else created


def _subnet_of(network: Network, address: IPAddress | None) -> IPNetwork | None:
    if address is None:
        return None
    for config in network.ipam:
        if config.subnet.version == address.version and address in config.subnet:
            return config.subnet
    return None


def _gateway(network: Network, version: int) -> str:
    for config in network.ipam:
        if config.subnet.version == version and config.gateway is not None:
            return str(config.gateway)
    return ""


def _with_prefix(network: Network, address: IPAddress | None) -> str:
    """ "10.0.1.2/24" as Docker's network inspect writes it; "" without an address."""
    if address is None:
        return ""
    subnet = _subnet_of(network, address)
    prefix = subnet.prefixlen if subnet is not None else address.max_prefixlen
    return f"{address}/{prefix}"


def _prefixlen(network: Network, address: IPAddress | None) -> int:
    subnet = _subnet_of(network, address)
    return subnet.prefixlen if subnet is not None else 0


def endpoint_json(endpoint: Endpoint, network: Network) -> dict[str, Any]:
    """An endpoint as the connect/disconnect calls return it."""
    return {
        "EndpointID": endpoint.id,
        "NetworkID": endpoint.network_id,
        "Network": network.name,
        "ContainerID": endpoint.sandbox_id,
        "Name": endpoint.name,
        "Aliases": list(endpoint.aliases),
        "MacAddress": endpoint.mac,
        "IPv4Address": _with_prefix(network, endpoint.ipv4),
        "IPv6Address": _with_prefix(network, endpoint.ipv6),
    }


def network_inspect(
    network: Network, endpoints: Iterable[Endpoint], sandboxes: Iterable[Sandbox]
) -> dict[str, Any]:
    """`docker network inspect` of one network; `endpoints` are those on this network."""
    names_by_id = {s.id: s.name for s in sandboxes}
    containers = {
        e.sandbox_id: {
            "Name": names_by_id.get(e.sandbox_id, e.name),
            "EndpointID": e.id,
            "MacAddress": e.mac,
            "IPv4Address": _with_prefix(network, e.ipv4),
            "IPv6Address": _with_prefix(network, e.ipv6),
        }
        for e in endpoints
        if e.network_id == network.id
    }
    config = []
    for c in network.ipam:
        entry = {"Subnet": str(c.subnet)}
        if c.ip_range is not None:
            entry["IPRange"] = str(c.ip_range)
        if c.gateway is not None:
            entry["Gateway"] = str(c.gateway)
        config.append(entry)
    return {
        "Name": network.name,
        "Id": network.id,
        "Created": _timestamp(network.created),
        "Scope": str(network.scope),
        "Driver": str(network.driver),
        "EnableIPv6": network.ipv6,
        "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        "Internal": network.internal,
        "Attachable": network.attachable,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": containers,
        "Options": dict(network.options),
        "Labels": {},
    }


def container_inspect(
    sandbox: Sandbox, endpoints: Iterable[Endpoint], networks: Iterable[Network]
) -> dict[str, Any]:
    """The network part of `docker container inspect`; `endpoints` are the sandbox's, in
    connect order, and `networks` must include theirs."""
    networks_by_id = {n.id: n for n in networks}
    attached: dict[str, Any] = {}
    for e in endpoints:
        network = networks_by_id.get(e.network_id)
        if e.sandbox_id != sandbox.id or network is None:
            continue
        attached[network.name] = {
            "IPAMConfig": None,
            "Links": None,
            "Aliases": list(e.aliases),
            "MacAddress": e.mac,
            "DriverOpts": None,
            "NetworkID": network.id,
            "EndpointID": e.id,
            "Gateway": _gateway(network, 4) if e.ipv4 is not None else "",
            "IPAddress": str(e.ipv4) if e.ipv4 is not None else "",
            "IPPrefixLen": _prefixlen(network, e.ipv4),
            "IPv6Gateway": _gateway(network, 6) if e.ipv6 is not None else "",
            "GlobalIPv6Address": str(e.ipv6) if e.ipv6 is not None else "",
            "GlobalIPv6PrefixLen": _prefixlen(network, e.ipv6),
            # Docker lists DNS names only on networks with embedded DNS (R1, R2).
            "DNSNames": list(endpoint_names(e)) if network.dns else None,
        }
    return {
        "Id": sandbox.id,
        "Name": f"/{sandbox.name}",
        "Config": {"Hostname": sandbox.hostname or sandbox.short_id},
        "HostConfig": {
            "NetworkMode": next(iter(attached), "none"),
            "Dns": list(sandbox.dns_servers),
            "DnsSearch": list(sandbox.dns_search),
            "DnsOptions": list(sandbox.dns_options),
        },
        "NetworkSettings": {"SandboxKey": sandbox.netns, "Networks": attached},
    }


def service_inspect(
    service: Service,
    tasks: Sequence[tuple[Task, Sandbox]],
    endpoints: Iterable[Endpoint],
    networks: Iterable[Network],
) -> dict[str, Any]:
    """`docker service inspect` of one service (the network part), plus its running tasks
    (docker keeps those in `docker service ps`): `tasks` by slot, `endpoints` must include
    theirs and `networks` the service's."""
    networks_by_id = {n.id: n for n in networks}
    ports = [{"Name": p.name, "Protocol": p.protocol, "TargetPort": p.port} for p in service.ports]
    vips = [
        {
            "NetworkID": vip.network_id,
            "Addr": _with_prefix(networks_by_id[vip.network_id], vip.address)
            if vip.network_id in networks_by_id
            else str(vip.address),
        }
        for vip in service.vips
    ]
    by_sandbox: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        by_sandbox.setdefault(endpoint.sandbox_id, []).append(endpoint)
    task_list = [
        {
            "ID": task.task_id,
            "Name": task.name,
            "Slot": task.slot,
            "ContainerID": sandbox.id,
            "SandboxKey": sandbox.netns,
            "NetworksAttachments": [
                {
                    "NetworkID": e.network_id,
                    "Addresses": [
                        _with_prefix(networks_by_id[e.network_id], a)
                        for a in e.addresses
                        if e.network_id in networks_by_id
                    ],
                }
                for e in by_sandbox.get(sandbox.id, [])
            ],
        }
        for task, sandbox in tasks
    ]
    return {
        "ID": service.id,
        "Spec": {
            "Name": service.name,
            "Mode": {"Replicated": {"Replicas": service.replicas}},
            "TaskTemplate": {"Networks": [{"Target": n} for n in service.networks]},
            "EndpointSpec": {"Mode": str(service.mode), "Ports": ports},
        },
        "Endpoint": {
            "Spec": {"Mode": str(service.mode), "Ports": ports},
            "Ports": ports,
            "VirtualIPs": vips,
        },
        "Tasks": task_list,
    }


# -- `ls` rows, made from the inspect dicts above (all the CLI receives) ---------------------


def network_row(inspect: dict[str, Any]) -> dict[str, str]:
    """One `network ls` row: ID (12), Name, Driver, Scope."""
    return {
        "ID": inspect["Id"][:SHORT_ID],
        "Name": inspect["Name"],
        "Driver": inspect["Driver"],
        "Scope": inspect["Scope"],
    }


def container_row(inspect: dict[str, Any]) -> dict[str, Any]:
    """One `container ls` row: ID (12), Name, Networks and IPs (connect order)."""
    networks = inspect["NetworkSettings"]["Networks"]
    ips = [
        address
        for settings in networks.values()
        for address in (settings["IPAddress"], settings["GlobalIPv6Address"])
        if address
    ]
    return {
        "ID": inspect["Id"][:SHORT_ID],
        "Name": inspect["Name"].removeprefix("/"),
        "Networks": list(networks),
        "IPs": ips,
    }


def row_cells(row: dict[str, Any]) -> list[str]:
    """A row's values as table cells: lists joined with commas, in column order."""
    return [",".join(v) if isinstance(v, list) else str(v) for v in row.values()]


def service_row(inspect: dict[str, Any]) -> dict[str, Any]:
    """One `service ls` row: ID (12), Name, Mode, Replicas (running/desired), endpoint mode,
    Ports (80/tcp)."""
    spec = inspect["Spec"]
    return {
        "ID": inspect["ID"][:SHORT_ID],
        "Name": spec["Name"],
        "Mode": "replicated",
        "Replicas": f"{len(inspect['Tasks'])}/{spec['Mode']['Replicated']['Replicas']}",
        "EndpointMode": spec["EndpointSpec"]["Mode"],
        "Ports": [f"{p['TargetPort']}/{p['Protocol']}" for p in spec["EndpointSpec"]["Ports"]],
    }
