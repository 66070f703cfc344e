"""ADD, DEL and CHECK against the netdns daemon's admin API: the container registered on the
netdns twin of its CNI network (made on first use), removed, or checked."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netdns.client import DEFAULT_HOST, HOST_ENV, Client, ClientError
from netdns.cni_plugin.probe import probe_listener
from netdns.cni_plugin.spec import (
    DRIVER,
    CniError,
    Config,
    ContainerAddresses,
    Env,
    ErrorCode,
    build_result,
    container_addresses,
    container_aliases,
    container_name,
)

log = logging.getLogger("netdns-cni")


def daemon_host(config: Config, environ: Mapping[str, str]) -> str:
    """NETDNS_HOST (tests, operators) over the configuration's "daemon" over the default."""
    return environ.get(HOST_ENV) or config.daemon or DEFAULT_HOST


def daemon_error(exc: ClientError, where: str, doing: str) -> CniError:
    """A failed admin call as a CNI error: unreachable or busy is worth a retry (11), a refused
    input is a configuration error (7), anything else is the daemon's refusal (100)."""
    details = f"while trying to {doing} (netdns daemon at {where}, HTTP {exc.status})"
    if exc.status in (0, 503):
        return CniError(ErrorCode.TRY_AGAIN_LATER, exc.message, details)
    if exc.status == 400:
        return CniError(ErrorCode.INVALID_CONFIG, exc.message, details)
    return CniError(ErrorCode.DAEMON_REFUSED, exc.message, details)


@dataclass(frozen=True, slots=True)
class Attachment:
    """What netdns holds for one container on one network (from `container inspect`)."""

    ipv4: str
    ipv6: str

    def matches(self, addresses: ContainerAddresses) -> bool:
        want6 = str(addresses.ipv6.ip) if addresses.ipv6 else ""
        return self.ipv4 == str(addresses.ipv4.ip) and self.ipv6 == want6


def _attachments(container: Mapping[str, Any]) -> dict[str, Attachment]:
    networks = container.get("NetworkSettings", {}).get("Networks") or {}
    return {
        name: Attachment(info.get("IPAddress", ""), info.get("GlobalIPv6Address", ""))
        for name, info in networks.items()
    }


def _sandbox_key(container: Mapping[str, Any]) -> str:
    return container.get("NetworkSettings", {}).get("SandboxKey", "")


class Registrar:
    """ADD, DEL and CHECK against the daemon's admin API."""

    def __init__(self, client: Client, env: Env, config: Config) -> None:
        self.client = client
        self.env = env
        self.config = config

    def _call(self, doing: str, fn: Any, *args: Any, missing_ok: bool = False, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except ClientError as exc:
            if missing_ok and exc.status == 404:
                return None
            raise daemon_error(exc, self.client.where, doing) from None

    # -- lookups --------------------------------------------------------------------------

    def network(self) -> dict[str, Any] | None:
        name = self.config.name
        found = self._call(f"look up network {name}", self.client.network, name, missing_ok=True)
        # The API also finds by id prefix: only the exact name is this CNI network.
        return found if found is not None and found.get("Name") == name else None

    def container(self, name: str) -> dict[str, Any] | None:
        found = self._call(
            f"look up container {name}", self.client.container, name, missing_ok=True
        )
        return found if found is not None and found.get("Name") == f"/{name}" else None

    def owns(self, container: Mapping[str, Any], addresses: ContainerAddresses | None) -> bool:
        """Whether a container of that name is this CNI container: same namespace; without
        CNI_NETNS (a DEL may lack it), same addresses; without either, by name alone."""
        if self.env.netns:
            return _sandbox_key(container) == self.env.netns
        if addresses is not None:
            attached = _attachments(container).get(self.config.name)
            return attached is not None and attached.matches(addresses)
        return True

    # -- ADD ------------------------------------------------------------------------------

    def ensure_network(self, addresses: ContainerAddresses) -> None:
        """The netdns network named after the CNI network, with driver cni and the result's
        subnets: created when missing, CniError(7) when it exists with other subnets."""
        network = self.network()
        if network is None:
            spec: dict[str, Any] = {
                "name": self.config.name,
                "driver": DRIVER,
                "subnets": list(addresses.subnets),
                "ipv6": addresses.ipv6 is not None,
            }
            if addresses.gateway4:
                spec["gateway"] = addresses.gateway4
            try:
                self.client.create_network(**spec)
                return
            except ClientError as exc:
                if exc.status != 409:  # 409: another container's ADD made it meanwhile
                    doing = f"create network {spec['name']}"
                    raise daemon_error(exc, self.client.where, doing) from None
            network = self.network()
            if network is None:
                raise CniError(
                    ErrorCode.TRY_AGAIN_LATER,
                    f"network {self.config.name!r} was being created and removed at once",
                )
        check_network(network, self.config.name, addresses)

    def add(self) -> dict[str, Any]:
        addresses = container_addresses(self.config.prev_result, self.env.ifname)
        name = container_name(self.env, self.config)
        aliases = container_aliases(self.config, name)
        self.ensure_network(addresses)
        fields = {
            "aliases": list(aliases),
            "ip": str(addresses.ipv4.ip),
            "ip6": str(addresses.ipv6.ip) if addresses.ipv6 else None,
        }
        net = self.config.name
        existing = self.container(name)
        if existing is not None and not self.owns(existing, addresses):
            if os.path.exists(_sandbox_key(existing)):
                raise CniError(
                    ErrorCode.DAEMON_REFUSED,
                    f"container name {name!r} is already in use in netdns by another namespace "
                    f"({_sandbox_key(existing)})",
                    "give this container another name with CNI_ARGS NETDNS_NAME=NAME, or remove "
                    f"the other one (netdns container rm {name})",
                )
            log.warning("container %s: its namespace is gone; replacing the stale entry", name)
            self._call(f"remove stale container {name}", self.client.remove_container, name,
                       missing_ok=True)  # fmt: skip
            existing = None
        if existing is None:
            self._call(
                f"register container {name} on {net}",
                self.client.create_container,
                name=name, network=net, netns=self.env.netns,
                dns_search=list(self.config.search), **fields,
            )  # fmt: skip
            return build_result(self.config)
        # The same namespace again: another CNI network (or interface) of the same container.
        attached = _attachments(existing).get(net)
        if attached is not None and attached.matches(addresses):
            return build_result(self.config)
        if attached is not None:
            self._call(f"disconnect {name} from {net}", self.client.disconnect, net, name)
        self._call(f"connect {name} to {net}", self.client.connect, net, name, **fields)
        return build_result(self.config)

    # -- DEL ------------------------------------------------------------------------------

    def delete(self) -> None:
        """Take this network's registration away; whatever is missing already is success."""
        name = container_name(self.env, self.config)
        try:
            addresses = container_addresses(self.config.prev_result, self.env.ifname)
        except CniError:
            addresses = None  # DEL may come without (a usable) prevResult
        existing = self.container(name)
        if existing is None:
            log.info("container %s is not registered: nothing to delete", name)
            return
        if not self.owns(existing, addresses):
            log.warning("container %s in netdns is another namespace's: left alone", name)
            return
        attached = _attachments(existing)
        if self.config.name in attached and len(attached) > 1:
            self._call(f"disconnect {name} from {self.config.name}", self.client.disconnect,
                       self.config.name, name, missing_ok=True)  # fmt: skip
        elif self.config.name in attached or not attached:
            self._call(f"remove container {name}", self.client.remove_container, name,
                       missing_ok=True)  # fmt: skip

    # -- CHECK ----------------------------------------------------------------------------

    def check(self) -> None:
        addresses = container_addresses(self.config.prev_result, self.env.ifname)
        name = container_name(self.env, self.config)
        net = self.config.name
        network = self.network()
        if network is None:
            raise CniError(ErrorCode.NOT_REGISTERED, f"netdns has no network {net!r}")
        check_network(network, net, addresses)
        container = self.container(name)
        if container is None:
            raise CniError(ErrorCode.NOT_REGISTERED, f"netdns has no container {name!r}")
        if _sandbox_key(container) != self.env.netns:
            raise CniError(
                ErrorCode.REGISTRATION_DIFFERS,
                f"container {name!r} is registered with namespace {_sandbox_key(container)}, "
                f"not {self.env.netns}",
            )
        attached = _attachments(container).get(net)
        if attached is None:
            raise CniError(ErrorCode.NOT_REGISTERED, f"container {name!r} is not on {net!r}")
        if not attached.matches(addresses):
            have = ", ".join(a for a in (attached.ipv4, attached.ipv6) if a)
            raise CniError(
                ErrorCode.REGISTRATION_DIFFERS,
                f"container {name!r} is registered on {net!r} with {have}, not "
                f"{', '.join(str(a.ip) for a in (addresses.ipv4, addresses.ipv6) if a)}",
            )
        problem = probe_listener(self.env.netns, name, addresses.ipv4.ip)
        if problem:
            raise CniError(ErrorCode.NO_LISTENER, problem)


def check_network(network: Mapping[str, Any], name: str, addresses: ContainerAddresses) -> None:
    """CniError(7) unless the netdns network is a cni one holding the result's subnets."""
    if network.get("Driver") != DRIVER:
        raise CniError(
            ErrorCode.INVALID_CONFIG,
            f"netdns network {name!r} has driver {network.get('Driver')}, not {DRIVER}",
            "a CNI network's netdns twin must be of driver cni: rename one of the two",
        )
    held = {c.get("Subnet") for c in network.get("IPAM", {}).get("Config") or []}
    for subnet in addresses.subnets:
        if subnet not in held:
            raise CniError(
                ErrorCode.INVALID_CONFIG,
                f"CNI network {name!r} gave subnet {subnet} but netdns network {name!r} has "
                f"{', '.join(sorted(s for s in held if s)) or 'no subnets'}",
                f"the IPAM configuration changed: remove the netdns network once its containers "
                f"are gone (netdns network rm {name}) so the next ADD makes it anew",
            )
