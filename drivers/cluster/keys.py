"""Where cluster state lives in etcd, and how it is written there. Pure: no I/O.

Everything sits under one prefix, so one watch sees every change:

    hosts/<host>                      {"vtep": ADDR}                 under the host's lease
    networks/<network id>             Network                        persistent
    claims/network-name/<name>        network id                     persistent (name unique)
    claims/subnet/<cidr>              network id                     persistent (read for overlap)
    claims/networks-epoch             ""                             bumped by each network create
    claims/vni/<vni>                  network id                     persistent
    services/<service id>             Service                        persistent
    claims/service-name/<name>        service id                     persistent
    endpoints/<network id>/<ep id>    {"vtep", "endpoint"}           under its host's lease
    ipam/<network id>/<address>       {"host", "owner"}              persistent until released

Endpoints ride on their host's lease, so a host whose daemon dies drops out of every answer
when the lease runs out. Address claims do not: a restarted daemon takes its own addresses
back, and no other host can be handed them while the dead host's containers may still use them.
Values are JSON built by drivers/local_store.py's field-by-field converters, so a field added to the
model later still reads from older values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, ip_address, ip_network
from typing import Any

from drivers.local_store import from_json, to_json
from drivers.model import Endpoint, IPAddress, IPNetwork, Network, Service

PREFIX = "/netdns/v1/"
HOSTS = PREFIX + "hosts/"
NETWORKS = PREFIX + "networks/"
SERVICES = PREFIX + "services/"
ENDPOINTS = PREFIX + "endpoints/"
IPAM = PREFIX + "ipam/"
CLAIMS = PREFIX + "claims/"
SUBNETS = CLAIMS + "subnet/"
# Bumped by every network creation: creations serialise on it (subnet overlap is checked by
# reading, not by a key comparison).
NETWORKS_EPOCH = CLAIMS + "networks-epoch"


def host_key(host: str) -> str:
    return HOSTS + host


def network_key(network_id: str) -> str:
    return NETWORKS + network_id


def service_key(service_id: str) -> str:
    return SERVICES + service_id


def endpoint_key(endpoint: Endpoint) -> str:
    return f"{ENDPOINTS}{endpoint.network_id}/{endpoint.id}"


def address_key(network_id: str, address: IPAddress) -> str:
    return f"{IPAM}{network_id}/{address}"


def network_name_key(name: str) -> str:
    return f"{CLAIMS}network-name/{name}"


def service_name_key(name: str) -> str:
    return f"{CLAIMS}service-name/{name}"


def subnet_key(subnet: IPNetwork) -> str:
    return f"{SUBNETS}{subnet.network_address}_{subnet.prefixlen}"


def subnet_of_key(key: str) -> IPNetwork:
    address, _, prefix = key[len(SUBNETS) :].rpartition("_")
    return ip_network(f"{address}/{prefix}")


def vni_key(vni: int) -> str:
    return f"{CLAIMS}vni/{vni}"


# -- values ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostRecord:
    name: str
    vtep: IPv4Address


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    """An endpoint as the other hosts see it: on `host`, reached through its VTEP."""

    endpoint: Endpoint  # with .host set
    vtep: IPv4Address


@dataclass(frozen=True, slots=True)
class AddressClaim:
    network_id: str
    address: IPAddress
    host: str
    owner: str


def _dump(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def encode_host(vtep: IPv4Address) -> bytes:
    return _dump({"vtep": str(vtep)})


def encode_network(network: Network) -> bytes:
    return _dump(to_json(network))


def encode_service(service: Service) -> bytes:
    return _dump(to_json(service))


def encode_endpoint(endpoint: Endpoint, host: str, vtep: IPv4Address) -> bytes:
    return _dump({"vtep": str(vtep), "endpoint": to_json(replace(endpoint, host=host))})


def encode_claim(host: str, owner: str) -> bytes:
    return _dump({"host": host, "owner": owner})


Record = HostRecord | Network | Service | EndpointRecord | AddressClaim


def decode(key: str, value: bytes) -> Record | None:
    """The record stored at `key`, or None for a key that holds no record (the claims).
    ValueError/TypeError/KeyError for a value that does not parse."""
    if key.startswith(CLAIMS):
        return None
    if key.startswith(HOSTS):
        return HostRecord(key[len(HOSTS) :], IPv4Address(json.loads(value)["vtep"]))
    if key.startswith(NETWORKS):
        return from_json(Network, json.loads(value))
    if key.startswith(SERVICES):
        return from_json(Service, json.loads(value))
    if key.startswith(ENDPOINTS):
        data = json.loads(value)
        return EndpointRecord(from_json(Endpoint, data["endpoint"]), IPv4Address(data["vtep"]))
    if key.startswith(IPAM):
        network_id, _, address = key[len(IPAM) :].partition("/")
        data = json.loads(value)
        return AddressClaim(network_id, ip_address(address), data["host"], data["owner"])
    return None
