"""netdns-cni: a CNI 1.0 chained plugin that gives containers wired by CNI netdns's names.

It runs after the plugins that make the container's interface and address (for example the
reference `bridge` with `host-local` IPAM) and, through the daemon's admin API:

- ADD registers the container with the addresses of the previous result (`prevResult`) on a
  netdns network of driver `cni` named after the CNI network (created on first use, from the
  result's subnets), adopting CNI_NETNS, so netdns injects 127.0.0.11 there as for any adopted
  namespace; it prints the previous result with `dns.nameservers` set to 127.0.0.11.
- DEL removes that registration (or only this network's attachment); missing is success.
- CHECK verifies the registration (namespace, addresses) and that 127.0.0.11 answers inside the
  namespace with the container's own address.
- VERSION answers the spec versions it speaks.

The parsing, the choice of name and aliases and the result are pure functions (tested in
tests/unit/test_cni_plugin.py); `Registrar` holds the daemon calls; `main` is the executable
(`netdns-cni`, or `python -m netdns.cni_plugin`). Errors are the spec's error object on stdout
with a non-zero exit; logs go to stderr. See docs/CNI.md.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import json
import logging
import os
import secrets
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface, ip_interface
from typing import Any

from drivers import validation
from drivers.errors import Invalid
from netdns.client import DEFAULT_HOST, HOST_ENV, Client, ClientError

log = logging.getLogger("netdns-cni")

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0")
DEFAULT_VERSION = "1.0.0"
LISTENER_ADDRESS = "127.0.0.11"
DRIVER = "cni"
# CNI_ARGS keys that name the container, strongest first: ours, then the one kubelet and
# podman's CNI backend (ocicni) pass.
NAME_ARGS = ("NETDNS_NAME", "K8S_POD_NAME")
SHORT_ID = 12
# CHECK: 127.0.0.11 is up by the time ADD returns (R18); a few tries cover a loaded machine.
PROBE_TRIES = 3
PROBE_TIMEOUT = 1.0

USAGE = """\
netdns-cni: a CNI chained plugin that registers containers with the netdns daemon.

A container runtime runs it, with CNI_COMMAND=ADD|DEL|CHECK|VERSION, CNI_CONTAINERID,
CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH in the environment and the network configuration on
stdin; put it after the plugins that make the interface (e.g. bridge + host-local) in a
conflist. Plugin keys: "daemon" (default unix:///run/netdns/netdns.sock; NETDNS_HOST overrides)
and "search" (search domains for the result's dns). See docs/CNI.md.
"""


class Command(enum.StrEnum):
    ADD = "ADD"
    DEL = "DEL"
    CHECK = "CHECK"
    VERSION = "VERSION"


class ErrorCode(enum.IntEnum):
    """The spec's well-known codes (1-99), then netdns-cni's own (100+)."""

    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT = 4
    IO_FAILURE = 5
    DECODING_FAILURE = 6
    INVALID_CONFIG = 7
    TRY_AGAIN_LATER = 11
    DAEMON_REFUSED = 100  # the daemon answered the request with an error (a name in use, ...)
    NOT_REGISTERED = 101  # CHECK: the network or container is not known to netdns
    REGISTRATION_DIFFERS = 102  # CHECK: known, with another namespace or other addresses
    NO_LISTENER = 103  # CHECK: 127.0.0.11 does not answer inside the namespace
    INTERNAL = 199  # a bug in netdns-cni: see its stderr


class CniError(Exception):
    def __init__(self, code: ErrorCode, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


@dataclass(frozen=True, slots=True)
class Env:
    """The CNI_* environment of one invocation."""

    command: Command
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: tuple[tuple[str, str], ...] = ()
    path: str = ""

    def arg(self, key: str) -> str:
        return dict(self.args).get(key, "")


@dataclass(frozen=True, slots=True)
class Config:
    """The plugin configuration a runtime streams on stdin (one plugin of a conflist)."""

    cni_version: str
    name: str  # the CNI network's name, also the netdns network's
    prev_result: Mapping[str, Any] | None = None
    daemon: str = ""  # "" means NETDNS_HOST or the default socket
    search: tuple[str, ...] = ()
    args: Mapping[str, Any] | None = None
    runtime_config: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ContainerAddresses:
    """The addresses the previous plugins gave the container's interface CNI_IFNAME."""

    ipv4: IPv4Interface
    ipv6: IPv6Interface | None = None
    gateway4: str | None = None

    @property
    def subnets(self) -> tuple[str, ...]:
        found = [self.ipv4.network, *([self.ipv6.network] if self.ipv6 else [])]
        return tuple(str(s) for s in found)


# -- parsing (pure) ------------------------------------------------------------------------


def parse_cni_args(text: str) -> tuple[tuple[str, str], ...]:
    """CNI_ARGS ("K=V;K2=V2") as pairs; CniError(4) for a pair without '='."""
    pairs = []
    for item in text.split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(
                ErrorCode.INVALID_ENVIRONMENT,
                f"CNI_ARGS item {item!r} is not KEY=VALUE",
                f"CNI_ARGS={text!r}: expected KEY=VALUE pairs separated by ';'",
            )
        pairs.append((key, value))
    return tuple(pairs)


def parse_env(environ: Mapping[str, str]) -> Env:
    """The invocation's parameters; CniError(4) naming a missing or bad variable."""
    raw = environ.get("CNI_COMMAND", "")
    try:
        command = Command(raw)
    except ValueError:
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            f"CNI_COMMAND {raw!r} is not ADD, DEL, CHECK or VERSION",
            "netdns-cni is a CNI plugin: a container runtime runs it (see netdns-cni --help)",
        ) from None
    env = Env(
        command=command,
        container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""),
        ifname=environ.get("CNI_IFNAME", ""),
        args=parse_cni_args(environ.get("CNI_ARGS", "")),
        path=environ.get("CNI_PATH", ""),
    )
    required = {
        Command.ADD: ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
        Command.CHECK: ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
        Command.DEL: ("CNI_CONTAINERID", "CNI_IFNAME"),
        Command.VERSION: (),
    }[command]
    missing = [name for name in required if not environ.get(name)]
    if missing:
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            f"{', '.join(missing)} must be set for {command}",
            "the runtime passes CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME",
        )
    if env.netns and not env.netns.startswith("/"):
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            f"CNI_NETNS {env.netns!r} is not an absolute path",
            "expected a namespace file such as /run/netns/NAME or /proc/PID/ns/net",
        )
    return env


def config_version(raw: bytes) -> str:
    """The configuration's cniVersion if it has a readable one, else the default: what an error
    object must carry."""
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        data = json.loads(raw)
        if isinstance(data, dict) and isinstance(data.get("cniVersion"), str):
            return data["cniVersion"]
    return DEFAULT_VERSION


def parse_config(raw: bytes) -> Config:
    """The plugin configuration: CniError 6 (not JSON), 1 (version) or 7 (a bad field)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniError(
            ErrorCode.DECODING_FAILURE, "the network configuration on stdin is not JSON", str(exc)
        ) from None
    if not isinstance(data, dict):
        raise CniError(ErrorCode.INVALID_CONFIG, "the network configuration must be an object")
    version = data.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise CniError(ErrorCode.INVALID_CONFIG, "the network configuration has no cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            ErrorCode.INCOMPATIBLE_VERSION,
            f"cniVersion {version} is not supported",
            f"netdns-cni speaks {', '.join(SUPPORTED_VERSIONS)}",
        )
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise CniError(ErrorCode.INVALID_CONFIG, "the network configuration has no name")
    try:
        validation.check_network_name(name)
    except Invalid as exc:
        raise CniError(
            ErrorCode.INVALID_CONFIG, f"network name {name!r} cannot be a netdns name", str(exc)
        ) from None
    daemon = data.get("daemon", "")
    if not isinstance(daemon, str):
        raise CniError(ErrorCode.INVALID_CONFIG, '"daemon" must be a string: unix:///PATH')
    search = data.get("search", [])
    if not isinstance(search, list) or not all(isinstance(s, str) for s in search):
        raise CniError(ErrorCode.INVALID_CONFIG, '"search" must be a list of domain names')
    try:
        checked_search = validation.check_dns_search(search)
    except Invalid as exc:
        raise CniError(ErrorCode.INVALID_CONFIG, '"search" holds a bad domain', str(exc)) from None
    fields: dict[str, Mapping[str, Any] | None] = {}
    for key in ("prevResult", "args", "runtimeConfig"):
        value = data.get(key)
        if value is not None and not isinstance(value, dict):
            raise CniError(ErrorCode.INVALID_CONFIG, f'"{key}" must be an object')
        fields[key] = value
    return Config(
        cni_version=version,
        name=name,
        prev_result=fields["prevResult"],
        daemon=daemon,
        search=checked_search,
        args=fields["args"],
        runtime_config=fields["runtimeConfig"],
    )


def container_addresses(prev_result: Mapping[str, Any] | None, ifname: str) -> ContainerAddresses:
    """The first IPv4 (and IPv6) address the previous result gives interface IFNAME inside the
    container; IPs without an interface index (an IPAM-style result) count as the container's.
    CniError(7) when there is no IPv4 one."""
    if prev_result is None:
        raise CniError(
            ErrorCode.INVALID_CONFIG,
            "no prevResult: netdns-cni is a chained plugin",
            "put it after the plugins that make the interface (e.g. bridge + host-local) in a "
            "conflist, so the runtime hands it their result",
        )
    interfaces = prev_result.get("interfaces") or []
    ips = prev_result.get("ips") or []
    if not isinstance(interfaces, list) or not isinstance(ips, list):
        raise CniError(ErrorCode.INVALID_CONFIG, 'prevResult "interfaces" and "ips" must be lists')
    mine = {
        index
        for index, interface in enumerate(interfaces)
        if isinstance(interface, dict)
        and interface.get("name") == ifname
        and interface.get("sandbox")
    }
    ipv4: IPv4Interface | None = None
    ipv6: IPv6Interface | None = None
    gateway4 = None
    for entry in ips:
        if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
            raise CniError(ErrorCode.INVALID_CONFIG, 'each prevResult "ips" entry needs "address"')
        if "interface" in entry and entry["interface"] not in mine:
            continue
        try:
            if "/" not in entry["address"]:
                raise ValueError("no prefix length")
            address = ip_interface(entry["address"])
        except ValueError:
            raise CniError(
                ErrorCode.INVALID_CONFIG,
                f"prevResult address {entry['address']!r} is not an address in CIDR notation",
            ) from None
        if isinstance(address, IPv4Interface) and ipv4 is None:
            ipv4 = address
            gateway = entry.get("gateway")
            gateway4 = gateway if isinstance(gateway, str) and gateway else None
        elif isinstance(address, IPv6Interface) and ipv6 is None:
            ipv6 = address
    if ipv4 is None:
        raise CniError(
            ErrorCode.INVALID_CONFIG,
            f"prevResult has no IPv4 address for interface {ifname!r}",
            "netdns registers a container by its IPv4 address (and IPv6 if present): run "
            "netdns-cni after a plugin with IPAM that assigns one",
        )
    return ContainerAddresses(ipv4, ipv6, gateway4)


def container_name(env: Env, config: Config) -> str:
    """The name the container answers to: CNI_ARGS NETDNS_NAME, else K8S_POD_NAME, else the
    configuration's args.name, else the container id's first 12 characters (docker's short id).
    CniError(7) when the chosen one is not a valid container name."""
    for key in NAME_ARGS:
        if env.arg(key):
            return _checked_name(env.arg(key), f"CNI_ARGS {key}")
    from_args = (config.args or {}).get("name")
    if isinstance(from_args, str) and from_args:
        return _checked_name(from_args, "args.name")
    return _checked_name(env.container_id[:SHORT_ID], "CNI_CONTAINERID")


def _checked_name(name: str, source: str) -> str:
    try:
        return validation.check_container_name(name)
    except Invalid as exc:
        raise CniError(
            ErrorCode.INVALID_CONFIG,
            f"container name {name!r} from {source} is not valid",
            f"{exc}; pass another one with CNI_ARGS NETDNS_NAME=NAME",
        ) from None


def container_aliases(config: Config, name: str) -> tuple[str, ...]:
    """The network aliases of runtimeConfig.aliases for this network (podman's `aliases`
    capability: {network: [alias, ...]}), without the name itself; entries that are not DNS
    names are skipped with a warning rather than failing the container's start."""
    by_network = (config.runtime_config or {}).get("aliases")
    if not isinstance(by_network, dict):
        return ()
    wanted = by_network.get(config.name)
    if not isinstance(wanted, list):
        return ()
    aliases: list[str] = []
    for alias in wanted:
        if not isinstance(alias, str) or alias.lower() == name.lower():
            continue
        try:
            validation.check_dns_name(alias, "alias")
        except Invalid as exc:
            log.warning("alias skipped: %s", exc)
            continue
        if alias.lower() not in (a.lower() for a in aliases):
            aliases.append(alias)
    return tuple(aliases)


def build_result(config: Config) -> dict[str, Any]:
    """The previous result passed through, its version the configuration's, with the embedded
    resolver as the only nameserver (it forwards what it does not know) and the configured
    search domains."""
    result = copy.deepcopy(dict(config.prev_result or {}))
    result["cniVersion"] = config.cni_version
    dns = dict(result.get("dns") or {})
    dns["nameservers"] = [LISTENER_ADDRESS]
    if config.search:
        dns["search"] = list(config.search)
    result["dns"] = dns
    return result


def version_result(raw: bytes) -> dict[str, Any]:
    """VERSION: the input's cniVersion (the default when there is none) and ours."""
    return {"cniVersion": config_version(raw), "supportedVersions": list(SUPPORTED_VERSIONS)}


def error_result(cni_version: str, error: CniError) -> dict[str, Any]:
    return {
        "cniVersion": cni_version,
        "code": int(error.code),
        "msg": error.msg,
        "details": error.details,
    }


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


# -- the daemon's side -----------------------------------------------------------------------


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


def probe_listener(netns: str, name: str, expected: IPv4Address) -> str:
    """Ask 127.0.0.11:53 inside the namespace for NAME; "" when it answers EXPECTED, else what
    went wrong."""
    # Imported here: only CHECK needs them (namespaces, the wire format).
    from dnslib import QTYPE, DNSRecord

    from drivers.errors import NetdnsError
    from resolver.netns import in_netns

    try:
        sock = in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    except (NetdnsError, OSError) as exc:
        return f"cannot open a socket in {netns}: {exc}"
    with sock:
        sock.settimeout(PROBE_TIMEOUT)
        for _ in range(PROBE_TRIES):
            query = DNSRecord.question(name, "A")
            query.header.id = secrets.randbelow(65536)
            try:
                sock.sendto(query.pack(), (LISTENER_ADDRESS, 53))
                reply = DNSRecord.parse(sock.recv(4096))
            except (TimeoutError, OSError):
                continue
            if reply.header.id != query.header.id:
                continue
            answers = [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
            if str(expected) in answers:
                return ""
            return (
                f"{LISTENER_ADDRESS} in {netns} answers {name} with "
                f"{', '.join(answers) or QTYPE.get(reply.header.rcode, 'no address')}, "
                f"not {expected}"
            )
    return f"no answer from {LISTENER_ADDRESS}:53 in {netns} ({PROBE_TRIES} tries)"


# -- the executable ----------------------------------------------------------------------------


def run(env: Env, raw: bytes, environ: Mapping[str, str]) -> dict[str, Any] | None:
    """One invocation: the JSON to print (None for DEL and CHECK), or CniError."""
    if env.command is Command.VERSION:
        return version_result(raw)
    config = parse_config(raw)
    try:
        client = Client(daemon_host(config, environ))
    except ClientError as exc:
        raise CniError(ErrorCode.INVALID_CONFIG, exc.message, 'see the "daemon" key') from None
    registrar = Registrar(client, env, config)
    if env.command is Command.ADD:
        return registrar.add()
    if env.command is Command.DEL:
        registrar.delete()
    else:
        registrar.check()
    return None


def _read_stdin() -> bytes:
    if sys.stdin is None or sys.stdin.isatty():
        return b""
    try:
        return sys.stdin.buffer.read()
    except OSError as exc:
        raise CniError(
            ErrorCode.IO_FAILURE, "cannot read the configuration on stdin", str(exc)
        ) from None


def _emit(document: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("NETDNS_CNI_LOG_LEVEL", "WARNING").upper(),
        format="netdns-cni: %(levelname)s %(message)s",
    )
    version = DEFAULT_VERSION
    try:
        raw = _read_stdin()
        version = config_version(raw)
        env = parse_env(os.environ)
        result = run(env, raw, os.environ)
    except CniError as exc:
        log.debug("%s: %s (%s)", exc.code.name, exc.msg, exc.details)
        _emit(error_result(version, exc))
        return 1
    except Exception as exc:
        log.exception("internal error")
        _emit(error_result(version, CniError(ErrorCode.INTERNAL, "internal error", repr(exc))))
        return 1
    if result is not None:
        _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
