"""ClusterStore: this host's link to the cluster state in etcd.

It keeps three things going on the daemon's event loop:
- a lease (`--lease-ttl`, default 10 s) kept alive at a third of its TTL, carrying this host's
  record and the endpoints it publishes; a lease lost while etcd was away is granted anew and
  everything republished under it;
- a watch on the whole prefix: each batch becomes `Change`s (drivers/cluster/view.py) handed to
  `on_changes`, which the daemon passes to DriverCore.apply_cluster;
- after any break (etcd down, compaction) a resync: a full re-read diffed against the view, then
  the watch again from the revision of that read.

The DriverCore calls the blocking methods (create_network, claim, publish, ...) from its
worker thread; they run on the loop and wait for the answer. Writes that must not half-happen
are single etcd transactions. When etcd cannot be reached those calls raise Unavailable with
a message that says so; answers go on from what this host last knew.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any, TypeVar
from urllib.parse import urlsplit

from drivers.cluster import keys
from drivers.cluster.etcd import EtcdClient
from drivers.cluster.etcd_wire import Compacted, Compare, Delete, EtcdUnavailable, Put
from drivers.cluster.keys import Record
from drivers.cluster.view import Change, ClusterView
from drivers.errors import Conflict, Unavailable
from drivers.ipam import overlapping
from drivers.model import Endpoint, IPAddress, Network, Service
from drivers.overlay import OPT_VNI

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_LEASE_TTL = 10
FIRST_VNI = 4096  # docker's first overlay VNI
MAX_VNI = 2**24 - 1
_RETRY_MIN, _RETRY_MAX = 0.2, 5.0
# Blocking calls wait this long beyond the client's own timeout before giving up on the loop.
_CALL_SLACK = 5.0


class ClusterStore:
    def __init__(
        self,
        client: EtcdClient,
        host: str,
        vtep: IPv4Address,
        *,
        on_changes: Callable[[list[Change], list[Record] | None], Awaitable[None]],
        mine: Callable[[], Iterable[Endpoint]],
        lease_ttl: int = DEFAULT_LEASE_TTL,
    ) -> None:
        self.client = client
        self.host = host
        self.vtep = vtep
        self.lease_ttl = lease_ttl
        self.view = ClusterView(host)
        self._on_changes = on_changes
        self._mine = mine  # this host's endpoints on cluster networks, from the DriverCore
        self._lease = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._synced = asyncio.Event()
        self._lease_lock = asyncio.Lock()
        self.connected = False
        self.resyncs = 0

    # -- life cycle (on the loop) -----------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the blocking calls run on; before start() when the DriverCore's own start
        may already need the store."""
        self._loop = loop

    async def start(self, *, wait: float) -> None:
        """Start the lease and the watch; wait up to `wait` seconds for the first full
        reading (a daemon started while etcd is down goes on from its local state)."""
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._watch_forever(), name="cluster-watch"),
            asyncio.create_task(self._keep_lease(), name="cluster-lease"),
        ]
        try:
            await asyncio.wait_for(self._synced.wait(), wait)
        except TimeoutError:
            log.warning(
                "cluster store %s not reachable yet: serving the local state, retrying",
                self.client.url,
            )

    async def stop(self) -> None:
        """Stop watching. The lease is left to run out rather than revoked: a daemon
        restarted within the TTL takes its endpoints over without them ever vanishing."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.client.close()

    async def _watch_forever(self) -> None:
        delay = _RETRY_MIN
        while True:
            try:
                await self._resync()
                delay = _RETRY_MIN
                async for batch in self.client.watch(keys.PREFIX, self.view.revision + 1):
                    changes = self.view.apply(batch)
                    if changes:
                        await self._on_changes(changes, None)
            except Compacted as exc:
                log.warning(
                    "cluster watch fell behind (compacted at %d): re-reading", exc.compact_revision
                )
            except EtcdUnavailable as exc:
                if self.connected:
                    log.warning("cluster store lost: %s; answering from the last state", exc)
                self.connected = False
                await asyncio.sleep(delay)
                # Back within a third of the lease, so a short etcd outage costs no lease.
                delay = min(delay * 2, _RETRY_MAX, self.lease_ttl / 3)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cluster watch failed; re-reading")
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)

    async def _resync(self) -> None:
        await self._ensure_lease()
        kvs, revision = await self.client.get_prefix(keys.PREFIX)
        changes = self.view.load(kvs, revision)
        # Always, even without changes: this host's own records are checked on each reading.
        await self._on_changes(changes, self.view.own_records(kvs))
        if not self.connected:
            log.info(
                "cluster store %s: in sync at revision %d (%d hosts)",
                self.client.url, revision, len(self.view.hosts()),
            )  # fmt: skip
        self.connected = True
        self.resyncs += 1
        self._synced.set()

    async def _ensure_lease(self) -> None:
        """A live lease carrying this host's record and every endpoint it publishes. One at a
        time: the keepalive loop and a resync may both find the lease gone."""
        async with self._lease_lock:
            if self._lease and await self.client.keepalive(self._lease) > 0:
                return
            if self._lease:
                log.warning("cluster lease %x ran out: registering again", self._lease)
            self._lease = await self.client.grant(self.lease_ttl)
            await self.client.put(
                keys.host_key(self.host), keys.encode_host(self.vtep), lease=self._lease
            )
            for endpoint in list(self._mine()):
                await self._put_endpoint(endpoint)

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(max(self.lease_ttl / 3, 0.2))
            if not self._lease:
                continue
            try:
                # Also while the watch is down: etcd may be back before the watch notices.
                if await self.client.keepalive(self._lease) <= 0 and self.connected:
                    await self._ensure_lease()
            except EtcdUnavailable as exc:
                log.debug("lease keepalive failed: %s", exc)

    # -- blocking calls from the DriverCore's thread ------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("ClusterStore used before start()")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self.client.timeout * 4 + _CALL_SLACK)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise Unavailable(
                f"cluster store {self.client.url} did not answer in time: try again"
            ) from None

    def hosts(self) -> list[str]:
        return self._run(self._read(self.view.hosts))

    def remote_endpoints(self, network_id: str) -> list[Endpoint]:
        return self._run(
            self._read(lambda: [r.endpoint for r in self.view.endpoints_on(network_id)])
        )

    @staticmethod
    async def _read(fn: Callable[[], T]) -> T:
        return fn()  # on the loop, where the view changes: a consistent reading

    def create_network(self, network: Network) -> Network:
        """Claim the name, the subnets and a VNI for `network` in one transaction; returns it
        with its VNI option set. Conflict naming what another host holds already."""
        return self._run(self._create_network(network))

    async def _create_network(self, network: Network) -> Network:
        """Overlap is not a key comparison: the subnets held are read and checked, and the
        transaction also bumps one serialising key, so two hosts creating overlapping
        networks at once cannot both pass the check."""
        taken = {n.option(OPT_VNI) for n in self.view.records(Network)}  # type: ignore[attr-defined]
        vni = next(v for v in range(FIRST_VNI, MAX_VNI) if str(v) not in taken)
        for _ in range(8):
            epoch = await self.client.get(keys.NETWORKS_EPOCH)
            held, _ = await self.client.get_prefix(keys.SUBNETS)
            for kv in held:
                subnet = keys.subnet_of_key(kv.key)
                clash = overlapping(subnet, [c.subnet for c in network.ipam])
                if clash is not None:
                    raise Conflict(
                        f"subnet {clash} overlaps {subnet} of cluster network "
                        f"{kv.value.decode()[:12]}: pick another --subnet"
                    )
            candidate = _with_option(network, OPT_VNI, str(vni))
            claims = [keys.network_name_key(network.name), keys.vni_key(vni)]
            claims += [keys.subnet_key(c.subnet) for c in network.ipam]
            result = await self.client.txn(
                [
                    *(Compare(key, "CREATE", "EQUAL", 0) for key in claims),
                    Compare(
                        keys.NETWORKS_EPOCH, "MOD", "EQUAL", epoch.mod_revision if epoch else 0
                    ),
                ],
                [
                    *(Put(key, network.id.encode()) for key in claims),
                    Put(keys.network_key(network.id), keys.encode_network(candidate)),
                    Put(keys.NETWORKS_EPOCH, b""),
                ],
            )
            if result.succeeded:
                return candidate
            await self._explain_claims(network)
            if await self.client.get(keys.vni_key(vni)) is not None:
                vni += 1
            # else another network was made meanwhile: read again
        raise Conflict(f"network {network.name!r} clashes with a cluster network: try again")

    async def _explain_claims(self, network: Network) -> None:
        if await self.client.get(keys.network_name_key(network.name)) is not None:
            raise Conflict(
                f"network name {network.name!r} is already used by a cluster network: pick "
                "another name"
            )
        for config in network.ipam:
            held = await self.client.get(keys.subnet_key(config.subnet))
            if held is not None:
                raise Conflict(
                    f"subnet {config.subnet} is already used by cluster network "
                    f"{held.value.decode()[:12]}: pick another --subnet"
                )

    def remove_network(self, network: Network) -> None:
        """Conflict while any host has an endpoint on it."""
        self._run(self._remove_network(network))

    async def _remove_network(self, network: Network) -> None:
        remote = self.view.endpoints_on(network.id)
        if remote:
            where = sorted({f"{r.endpoint.name} on {r.endpoint.host}" for r in remote})
            raise Conflict(
                f"network {network.name!r} has active endpoints on other hosts "
                f"({', '.join(where[:5])}): disconnect those containers first"
            )
        claims = [keys.network_name_key(network.name), keys.network_key(network.id)]
        claims += [keys.subnet_key(c.subnet) for c in network.ipam]
        if network.option(OPT_VNI):
            claims.append(keys.vni_key(int(network.option(OPT_VNI))))
        await self.client.txn([], [Delete(key) for key in claims])
        await self.client.delete(f"{keys.IPAM}{network.id}/", prefix=True)

    def claim(self, network_id: str, address: IPAddress, owner: str) -> bool:
        """Take `address` on the network for `owner` (an endpoint or service id) unless some
        other holder has it; True when it is this host's now (already held by `owner` too)."""
        return self._run(self._claim(network_id, address, owner))

    async def _claim(self, network_id: str, address: IPAddress, owner: str) -> bool:
        key = keys.address_key(network_id, address)
        value = keys.encode_claim(self.host, owner)
        result = await self.client.txn([Compare(key, "CREATE", "EQUAL", 0)], [Put(key, value)])
        if result.succeeded:
            return True
        held = await self.client.get(key)
        return held is not None and held.value == value

    def release(self, network_id: str, address: IPAddress, owner: str) -> None:
        """Give the address back if `owner` on this host still holds it."""
        self._run(self._release(network_id, address, owner))

    async def _release(self, network_id: str, address: IPAddress, owner: str) -> None:
        key = keys.address_key(network_id, address)
        await self.client.txn(
            [Compare(key, "VALUE", "EQUAL", keys.encode_claim(self.host, owner))], [Delete(key)]
        )

    def publish(self, endpoint: Endpoint) -> None:
        """Make this host's endpoint visible to the others (under the lease). Best effort:
        a failure is logged and the next resync publishes it."""
        self._run(self._best_effort(self._put_endpoint(endpoint), f"publish {endpoint.name}"))

    def withdraw(self, endpoint: Endpoint) -> None:
        key = keys.endpoint_key(endpoint)
        self._run(self._best_effort(self.client.delete(key), f"withdraw {endpoint.name}"))

    async def _put_endpoint(self, endpoint: Endpoint) -> None:
        value = keys.encode_endpoint(endpoint, self.host, self.vtep)
        await self.client.put(keys.endpoint_key(endpoint), value, lease=self._lease)

    @staticmethod
    async def _best_effort(coro: Coroutine[Any, Any, object], what: str) -> None:
        try:
            await coro
        except EtcdUnavailable as exc:
            log.warning("could not %s in the cluster store (%s); the next resync will", what, exc)

    def create_service(self, service: Service) -> None:
        """Claim the service name cluster-wide and write the service; Conflict if taken."""
        self._run(self._create_service(service))

    async def _create_service(self, service: Service) -> None:
        name_key = keys.service_name_key(service.name)
        result = await self.client.txn(
            [Compare(name_key, "CREATE", "EQUAL", 0)],
            [
                Put(name_key, service.id.encode()),
                Put(keys.service_key(service.id), keys.encode_service(service)),
            ],
        )
        if not result.succeeded:
            raise Conflict(
                f"service name {service.name!r} is already used in the cluster: pick another "
                "name or remove that service"
            )

    def update_service(self, service: Service) -> None:
        self._run(self.client.put(keys.service_key(service.id), keys.encode_service(service)))

    def remove_service(self, service: Service) -> None:
        self._run(
            self.client.txn(
                [],
                [Delete(keys.service_key(service.id)), Delete(keys.service_name_key(service.name))],
            )
        )


def _with_option(network: Network, key: str, value: str) -> Network:
    options = (*((k, v) for k, v in network.options if k != key), (key, value))
    return replace(network, options=options)


def route_source(url: str) -> IPv4Address:
    """The address this host sends from towards `url` (http://HOST:PORT): its underlay
    address when none is given. A UDP connect sends nothing; it only asks for the route."""
    host, _, port = urlsplit(url).netloc.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host.strip("[]"), int(port)))
        except OSError as exc:
            raise Unavailable(
                f"no route to the cluster store {url} ({exc.strerror}): give --advertise-addr"
            ) from exc
        return IPv4Address(probe.getsockname()[0])
