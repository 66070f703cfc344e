"""An in-memory stand-in for etcd and the ClusterStore, for unit tests of the DriverCore's
cluster logic (placement, claims, remote endpoints, resync) without sockets.

A double, not the real thing: the real ClusterStore against a real etcd server is tested in
tests/unit/test_cluster_store.py and end to end in tests/netns/test_cluster.py. This one
keeps the same key layout (drivers/cluster/keys.py) with revisions, so readings go through the
real ClusterView and the DriverCore gets the same Changes a real watch would give it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from drivers.cluster import keys
from drivers.cluster.view import ClusterView
from drivers.core import DriverCore
from drivers.errors import Conflict, Unavailable
from drivers.model import Endpoint, IPAddress, Network, Service
from drivers.overlay import OPT_VNI


@dataclass
class MemoryEtcd:
    data: dict[str, tuple[bytes, int, str]] = field(default_factory=dict)  # value, mod, lease
    revision: int = 0
    down: bool = False

    def put(self, key: str, value: bytes, lease: str = "") -> None:
        self._check()
        self.revision += 1
        self.data[key] = (value, self.revision, lease)

    def delete(self, key: str) -> None:
        self._check()
        if key in self.data:
            self.revision += 1
            del self.data[key]

    def create(self, key: str, value: bytes) -> bool:
        self._check()
        if key in self.data:
            return False
        self.put(key, value)
        return True

    def expire(self, lease: str) -> None:
        """A host's lease runs out: everything under it goes."""
        for key in [k for k, (_, _, owner) in self.data.items() if owner == lease]:
            self.delete(key)

    def reading(self) -> tuple[list, int]:
        self._check()
        kvs = [_KV(k, v, mod) for k, (v, mod, _) in sorted(self.data.items())]
        return kvs, self.revision

    def _check(self) -> None:
        if self.down:
            raise Unavailable("cluster store (memory) is down")


@dataclass(frozen=True)
class _KV:
    key: str
    value: bytes
    mod_revision: int


class MemoryCluster:
    """One host's ClusterStore over a shared MemoryEtcd."""

    def __init__(self, etcd: MemoryEtcd, host: str, vtep: str) -> None:
        self.etcd, self.host, self.vtep = etcd, host, IPv4Address(vtep)
        self.view = ClusterView(host)
        etcd.put(keys.host_key(host), keys.encode_host(self.vtep), lease=host)

    def sync(self, core: DriverCore) -> None:
        """What the ClusterStore does after (re)connecting: publish this host's endpoints
        again (its lease may have run out), then hand a full reading to the core."""
        for endpoint in core.cluster_endpoints():
            self.publish(endpoint)
        kvs, revision = self.etcd.reading()
        core.apply_cluster(self.view.load(kvs, revision), self.view.own_records(kvs))

    def hosts(self) -> list[str]:
        return self.view.hosts() or [self.host]

    def create_network(self, network: Network) -> Network:
        vni = 4096 + sum(1 for k in self.etcd.data if k.startswith(keys.CLAIMS + "vni/"))
        network = replace(network, options=(*network.options, (OPT_VNI, str(vni))))
        if not self.etcd.create(keys.network_name_key(network.name), network.id.encode()):
            raise Conflict(f"network name {network.name!r} is already used by a cluster network")
        self.etcd.put(keys.vni_key(vni), network.id.encode())
        self.etcd.put(keys.network_key(network.id), keys.encode_network(network))
        return network

    def remove_network(self, network: Network) -> None:
        for key in (keys.network_name_key(network.name), keys.network_key(network.id)):
            self.etcd.delete(key)

    def claim(self, network_id: str, address: IPAddress, owner: str) -> bool:
        key = keys.address_key(network_id, address)
        value = keys.encode_claim(self.host, owner)
        return self.etcd.create(key, value) or self.etcd.data[key][0] == value

    def release(self, network_id: str, address: IPAddress, owner: str) -> None:
        key = keys.address_key(network_id, address)
        if self.etcd.data.get(key, (b"",))[0] == keys.encode_claim(self.host, owner):
            self.etcd.delete(key)

    def publish(self, endpoint: Endpoint) -> None:
        value = keys.encode_endpoint(endpoint, self.host, self.vtep)
        self.etcd.put(keys.endpoint_key(endpoint), value, lease=self.host)

    def withdraw(self, endpoint: Endpoint) -> None:
        self.etcd.delete(keys.endpoint_key(endpoint))

    def create_service(self, service: Service) -> None:
        if not self.etcd.create(keys.service_name_key(service.name), service.id.encode()):
            raise Conflict(f"service name {service.name!r} is already used in the cluster")
        self.update_service(service)

    def update_service(self, service: Service) -> None:
        self.etcd.put(keys.service_key(service.id), keys.encode_service(service))

    def remove_service(self, service: Service) -> None:
        self.etcd.delete(keys.service_key(service.id))
        self.etcd.delete(keys.service_name_key(service.name))
