"""The CNI side of netdns-cni, as pure functions: the spec's commands, errors and results, the
environment and the network configuration read and checked, and the container's name,
aliases and addresses taken from them and from the previous plugin's result."""

from __future__ import annotations

import contextlib
import copy
import enum
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface, ip_interface
from typing import Any

from drivers import validation
from drivers.errors import Invalid

log = logging.getLogger("netdns-cni")

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0")
DEFAULT_VERSION = "1.0.0"
LISTENER_ADDRESS = "127.0.0.11"
DRIVER = "cni"
# CNI_ARGS keys that name the container, strongest first: ours, then the one kubelet and
# podman's CNI backend (ocicni) pass.
NAME_ARGS = ("NETDNS_NAME", "K8S_POD_NAME")
SHORT_ID = 12


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
    # VERSION takes nothing but CNI_COMMAND: libcni validates a conflist by running every plugin
    # with VERSION and placeholders (CNI_NETNS=dummy), which must not fail.
    if command is not Command.VERSION and env.netns and not env.netns.startswith("/"):
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
