"""Networks: planning one (name, driver, addresses, options; nothing changes if that fails),
creating it through its driver (a cluster network is claimed in etcd first), removing it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from drivers import validation
from drivers.core.core_base import CoreBase, unused_id
from drivers.core.specs import BRIDGE, HOST, NONE, PREDEFINED, SINGLETON_DRIVERS, NetworkSpec
from drivers.errors import Conflict, Invalid, Unsupported
from drivers.ipam import DEFAULT_BRIDGE_SUBNET, plan_ipam
from drivers.local_store import Intent
from drivers.model import Driver, IPNetwork, Network, NetworkCreated, NetworkRemoved, Scope

log = logging.getLogger(__name__)


class Networks(CoreBase):
    def create_network(self, spec: NetworkSpec) -> Network:
        with self._lock:
            return self._create_network(spec, predefined=False)

    def _create_predefined(self) -> None:
        """The networks every daemon has (bridge, host, none), where missing."""
        existing = {n.name for n in self._state.networks.values()}
        predefined = (
            NetworkSpec(
                BRIDGE,
                Driver.BRIDGE,
                (str(DEFAULT_BRIDGE_SUBNET),),
                options=self._default_bridge_options,
            ),
            NetworkSpec(HOST, Driver.HOST),
            NetworkSpec(NONE, Driver.NULL),
        )
        for spec in predefined:
            if spec.name not in existing:
                self._create_network(spec, predefined=True)

    def _create_network(self, spec: NetworkSpec, *, predefined: bool) -> Network:
        network = self._plan_network(spec, predefined=predefined)
        driver = self._driver(network.driver)
        with self._transaction() as txn:
            if network.scope is Scope.GLOBAL:
                cluster = self._cluster()
                network = cluster.create_network(network)  # claims name, subnets and a VNI
                txn.on_undo(
                    f"remove cluster network {network.name}",
                    lambda n=network: cluster.remove_network(n),  # type: ignore[misc]
                )
                if driver is not None:
                    driver.validate(network)
            txn.begin(Intent("network create", networks=(network,)))
            if driver is not None:
                driver.create_network(network)
                txn.on_undo(
                    f"remove network {network.name}", lambda: driver.remove_network(network)
                )
            state = self._state.copy()
            state.networks[network.id] = network
            txn.save(state)
            self._ipam.add_network(network)
            self._state = state
            log.info("network %s (%s) created: %s", network.name, network.id[:12], subnets(network))
            self._emit([NetworkCreated(network)])
        return network

    def _plan_network(self, spec: NetworkSpec, *, predefined: bool) -> Network:
        validation.check_network_name(spec.name)
        for other in self._state.networks.values():
            if other.name == spec.name:
                raise Conflict(
                    f"network name {spec.name!r} is already in use by network {other.id[:12]}: "
                    "pick another name"
                )
        try:
            kind = Driver(spec.driver)
        except ValueError:
            choices = ", ".join(d.value for d in Driver if d not in SINGLETON_DRIVERS)
            raise Invalid(f"driver {spec.driver!r} is not known: use one of {choices}") from None
        if kind in SINGLETON_DRIVERS and not predefined:
            raise Invalid(
                f"driver {kind.value!r} belongs to the predefined network "
                f"{SINGLETON_DRIVERS[kind]!r} only; use --network {SINGLETON_DRIVERS[kind]} "
                "when creating a container"
            )
        driver = self._driver(kind)
        if driver is None and kind not in SINGLETON_DRIVERS:
            raise Unsupported(f"driver {kind.value!r} is not available in this netdns daemon")
        if kind is Driver.OVERLAY and self.cluster is None:
            raise Unsupported(
                "overlay networks need the cluster store: start the daemon with "
                "--store etcd://HOST:PORT --advertise-addr IP"
            )
        for key, _ in spec.options:
            if not key:
                raise Invalid("an -o option has an empty key: use -o KEY=VALUE")
        if kind in SINGLETON_DRIVERS:
            if spec.subnets or spec.gateway or spec.ip_range or spec.ipv6:
                raise Invalid(f"network {spec.name!r} ({kind.value}) takes no addresses")
            ipam = ()
        else:
            ipam = plan_ipam(
                spec.subnets,
                spec.gateway,
                spec.ip_range,
                ipv6=spec.ipv6,
                taken=self._taken_subnets(include_default_bridge=not predefined),
                network_name=spec.name,
            )
        network = Network(
            id=unused_id(self._state.networks),
            name=spec.name,
            driver=kind,
            scope=Scope.GLOBAL if kind is Driver.OVERLAY else Scope.LOCAL,
            dns=not predefined,
            internal=spec.internal,
            attachable=spec.attachable,
            ipv6=spec.ipv6,
            ipam=ipam,
            options=tuple(spec.options),
            dns_servers=validation.check_dns_servers(spec.dns_servers, "network --dns"),
            created=datetime.now(UTC).isoformat(),
        )
        if driver is not None:
            driver.check_supported()
            if network.scope is Scope.LOCAL:  # a cluster network is validated once it has a VNI
                driver.validate(network)
        return network

    def _taken_subnets(self, *, include_default_bridge: bool) -> list[IPNetwork]:
        taken = [c.subnet for n in self._state.networks.values() for c in n.ipam]
        # User networks never take the default bridge's subnet, even before it exists.
        if include_default_bridge:
            taken.append(DEFAULT_BRIDGE_SUBNET)
        return taken

    def remove_network(self, ref: str) -> Network:
        """Conflict for a predefined network or one with endpoints; nothing changes then."""
        with self._lock:
            network = self.network(ref)
            if network.name in PREDEFINED and not network.dns:
                raise Conflict(
                    f"network {network.name!r} is a predefined network and cannot be removed"
                )
            attached = self.endpoints(network_id=network.id)
            if attached:
                containers = ", ".join(e.name for e in attached)
                raise Conflict(
                    f"network {network.name!r} has active endpoints ({containers}): disconnect "
                    "or remove those containers first"
                )
            users = [s.name for s in self._state.services.values() if network.id in s.networks]
            if users:
                raise Conflict(
                    f"network {network.name!r} is used by service(s) {', '.join(users)}: "
                    "remove them first (netdns service rm)"
                )
            if network.scope is Scope.GLOBAL:
                # First: another host's endpoints refuse it while nothing has changed here.
                self._cluster().remove_network(network)
            driver = self._driver(network.driver)
            with self._transaction(Intent("network rm", removing=True, networks=(network,))) as txn:
                if driver is not None:
                    driver.remove_network(network)
                    txn.on_undo(
                        f"re-create network {network.name}",
                        lambda: driver.create_network(network),
                    )
                state = self._state.copy()
                del state.networks[network.id]
                txn.save(state)
                self._ipam.remove_network(network.id)
                self._state = state
                log.info("network %s (%s) removed", network.name, network.id[:12])
                self._emit([NetworkRemoved(network)])
            return network


def subnets(network: Network) -> str:
    return ", ".join(str(c.subnet) for c in network.ipam) or "no addresses"
