"""Endpoints: attaching a sandbox to a network and detaching it. An attachment is checked
whole before anything changes; then its addresses are taken (here, and on a cluster network
claimed in etcd), then the driver joins; each step registers its undo."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from drivers import cni, validation
from drivers.core.core_base import best_effort, unused_id
from drivers.core.specs import SINGLETON_DRIVERS, Attachment, ConnectSpec
from drivers.core.transaction import Transaction
from drivers.core.vip_routing import VipRouting
from drivers.errors import Conflict, Invalid, NotFound
from drivers.ipam import parse_address
from drivers.local_store import Intent
from drivers.model import (
    Driver,
    Endpoint,
    EndpointAttached,
    EndpointDetached,
    IPAddress,
    Network,
    Sandbox,
    Scope,
    Task,
)

log = logging.getLogger(__name__)

# Picks of a cluster address another host took first, before giving up on one allocation.
CLAIM_TRIES = 64


class Endpoints(VipRouting):
    def connect(self, spec: ConnectSpec) -> Endpoint:
        """Attach a container to a network; Conflict when it already is."""
        with self._lock:
            network = self.network(spec.network)
            sandbox = self.sandbox(spec.container)
            if network.driver in SINGLETON_DRIVERS:
                raise Invalid(
                    f"containers join {network.name!r} only when created "
                    f"(--network {network.name}); it cannot be connected later"
                )
            for endpoint in self.endpoints(sandbox_id=sandbox.id):
                if self._state.networks[endpoint.network_id].driver is Driver.HOST:
                    raise Conflict(
                        f"container {sandbox.name!r} uses the host's network stack: it cannot be "
                        "connected to other networks"
                    )
            attachment = self._check_attach(network, sandbox, spec.aliases, spec.ip, spec.ip6)
            with self._transaction() as txn:
                endpoint = self._allocate(attachment, sandbox, txn)
                txn.begin(Intent("connect", endpoints=(endpoint,)))
                endpoint = self._join(network, endpoint, sandbox, txn)
                state = self._state.copy()
                state.endpoints[endpoint.id] = endpoint
                txn.save(state)
                self._state = state
                log.info(
                    "container %s connected to %s: %s",
                    sandbox.name, network.name, addresses(endpoint),
                )  # fmt: skip
                self._emit([EndpointAttached(endpoint)])
            self._publish([endpoint])
            if self._routes_vips(network.id):
                self._route_vips_in(sandbox)
            return endpoint

    def disconnect(self, network_ref: str, container_ref: str) -> Endpoint:
        with self._lock:
            network = self.network(network_ref)
            sandbox = self.sandbox(container_ref)
            endpoint = next(
                (e for e in self.endpoints(sandbox_id=sandbox.id) if e.network_id == network.id),
                None,
            )
            if endpoint is None:
                raise NotFound(
                    f"container {sandbox.name!r} is not connected to network {network.name!r}"
                )
            if network.driver is Driver.HOST:
                raise Invalid(
                    f"container {sandbox.name!r} cannot leave the host network: remove the "
                    "container instead"
                )
            if endpoint.task is not None:
                self._refuse_task(sandbox, "disconnected")
            driver = self._driver(network.driver)
            with self._transaction(
                Intent("disconnect", removing=True, endpoints=(endpoint,))
            ) as txn:
                if driver is not None:
                    driver.leave(network, endpoint, sandbox)
                    txn.on_undo(
                        f"re-join {network.name} for {sandbox.name}",
                        lambda: driver.join(network, endpoint, sandbox),
                    )
                state = self._state.copy()
                del state.endpoints[endpoint.id]
                txn.save(state)
                self._release([endpoint])
                self._state = state
                log.info("container %s disconnected from %s", sandbox.name, network.name)
                self._emit([EndpointDetached(endpoint)])
            if self._routes_vips(network.id):
                self._route_vips_in(sandbox)
            return endpoint

    def _check_attach(
        self,
        network: Network,
        sandbox: Sandbox,
        aliases: Iterable[str],
        ip: str | None,
        ip6: str | None,
    ) -> Attachment:
        """Everything that can be said about an attachment before anything changes."""
        for endpoint in self._state.endpoints.values():
            if endpoint.sandbox_id == sandbox.id and endpoint.network_id == network.id:
                raise Conflict(
                    f"container {sandbox.name!r} is already connected to network {network.name!r}"
                )
        if network.driver is Driver.OVERLAY and not network.attachable:
            raise Conflict(
                f"network {network.name!r} is not attachable: create it with --attachable to "
                "connect containers to it"
            )
        checked_aliases = validation.check_aliases(aliases)
        if checked_aliases and not network.dns:
            raise Invalid(
                f"--alias needs a user-defined network: {network.name!r} has no embedded DNS"
            )
        if (ip or ip6) and not network.dns:
            raise Invalid(
                f"--ip and --ip6 need a user-defined network, not {network.name!r}: create one "
                "with --subnet"
            )
        ipv4 = parse_address(ip, "--ip", 4) if ip else None
        ipv6 = parse_address(ip6, "--ip6", 6) if ip6 else None
        if ipv6 is not None and not self._ipam.has_family(network.id, 6):
            raise Invalid(
                f"--ip6 {ipv6}: network {network.name!r} has no IPv6 (create it with --ipv6)"
            )
        if network.driver is Driver.CNI:
            cni.check_addresses(network, ipv4, ipv6)  # the CNI plugins pick them, never netdns
        return Attachment(network, checked_aliases, ipv4, ipv6)  # type: ignore[arg-type]

    def _allocate(self, attachment: Attachment, sandbox: Sandbox, txn: Transaction) -> Endpoint:
        """The endpoint with its addresses taken from IPAM (Invalid/Conflict if they cannot
        be); their release is the transaction's to undo."""
        network = attachment.network
        endpoint_id = unused_id(self._state.endpoints)
        ipv4 = ipv6 = None
        if self._ipam.has_family(network.id, 4):
            ipv4 = self._take(network, 4, sandbox.name, endpoint_id, attachment.ipv4, txn)
        if network.ipv6 and self._ipam.has_family(network.id, 6):
            ipv6 = self._take(network, 6, sandbox.name, endpoint_id, attachment.ipv6, txn)
        return Endpoint(
            id=endpoint_id,
            network_id=network.id,
            sandbox_id=sandbox.id,
            name=sandbox.name,
            hostname=sandbox.hostname,
            aliases=attachment.aliases,
            ipv4=ipv4,  # type: ignore[arg-type]
            ipv6=ipv6,  # type: ignore[arg-type]
        )

    def _take(
        self,
        network: Network,
        version: int,
        owner: str,
        owner_id: str,
        requested: IPAddress | None,
        txn: Transaction,
    ) -> IPAddress:
        """An address from the network's pool for `owner` (a container name; `owner_id` is the
        endpoint or service id), released if `txn` fails. On a cluster network the local pool
        is a mirror of every host's claims and each pick is claimed in etcd; a pick another
        host took meanwhile stays marked and the next free one is tried."""
        for _ in range(CLAIM_TRIES):
            address = self._ipam.allocate(network, version, owner, requested)
            if network.scope is Scope.GLOBAL:
                cluster = self._cluster()
                try:
                    claimed = cluster.claim(network.id, address, owner_id)
                except BaseException:
                    self._ipam.release(network.id, address)
                    raise
                if not claimed:
                    self._ipam.release(network.id, address)
                    self._ipam.reserve(network, address, "a container on another host")
                    if requested is not None:
                        raise Conflict(
                            f"address {requested} is already in use on network "
                            f"{network.name!r} by a container on another host: pick another "
                            "one or leave it out"
                        )
                    continue
                txn.on_undo(
                    f"release the claim on {address}",
                    lambda a=address, c=cluster: c.release(network.id, a, owner_id),  # type: ignore[misc]
                )
            txn.on_undo(
                f"release {address}",
                lambda a=address: self._ipam.release(network.id, a),  # type: ignore[misc]
            )
            return address
        raise Conflict(
            f"no free address found on network {network.name!r} after {CLAIM_TRIES} tries: "
            "other hosts are taking them as fast; try again"
        )

    def _join(
        self, network: Network, endpoint: Endpoint, sandbox: Sandbox, txn: Transaction
    ) -> Endpoint:
        """The driver's join; returns the endpoint with the MAC it chose."""
        driver = self._driver(network.driver)
        if driver is None:
            return endpoint
        # A join that fails half way may have made the interface: leave tolerates a missing one.
        txn.on_undo(
            f"leave {network.name} for {sandbox.name}",
            lambda: driver.leave(network, endpoint, sandbox),
        )
        joined = driver.join(network, endpoint, sandbox)
        if joined.id != endpoint.id or joined.addresses != endpoint.addresses:
            raise RuntimeError(f"driver {network.driver} changed more than the MAC of {endpoint}")
        return joined

    def _release(self, endpoints: Iterable[Endpoint]) -> None:
        """Give back the addresses of endpoints that left, here and in the cluster store;
        withdraw those on cluster networks from the other hosts' answers."""
        for endpoint in endpoints:
            network = self._state.networks.get(endpoint.network_id)
            for address in endpoint.addresses:
                self._ipam.release(endpoint.network_id, address)
                if network is not None and network.scope is Scope.GLOBAL:
                    best_effort(
                        f"release {address} in the cluster store",
                        self._cluster().release, network.id, address, endpoint.id,
                    )  # fmt: skip
            if network is not None and network.scope is Scope.GLOBAL:
                best_effort(f"withdraw {endpoint.name}", self._cluster().withdraw, endpoint)

    def _publish(self, endpoints: Iterable[Endpoint]) -> None:
        """Show this host's new endpoints on cluster networks to the other hosts."""
        for endpoint in endpoints:
            if self._state.networks[endpoint.network_id].scope is Scope.GLOBAL:
                self._cluster().publish(endpoint)

    def _refuse_task(self, sandbox: Sandbox, what: str) -> None:
        task = self._task_of(sandbox.id)
        if task is not None:
            raise Conflict(
                f"container {sandbox.name!r} is a task of service {task.service_name!r} and "
                f"cannot be {what} alone: use `netdns service scale {task.service_name}=N` or "
                f"`netdns service rm {task.service_name}`"
            )

    def _task_of(self, sandbox_id: str) -> Task | None:
        for endpoint in self._state.endpoints.values():
            if endpoint.sandbox_id == sandbox_id and endpoint.task is not None:
                return endpoint.task
        return None


def addresses(endpoint: Endpoint) -> str:
    return ", ".join(map(str, endpoint.addresses)) or "no addresses"
