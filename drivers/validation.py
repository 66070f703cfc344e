"""Validation of what users name: containers, networks, hostnames, aliases, DNS settings,
services and their ports.

Docker's rules, plus what the name table needs: every name a container answers to is a DNS
name (labels of 1-63 characters, at most 253 in all), so it can be asked for and can carry a
network suffix (R3). Each check raises Invalid naming the bad input and the rule it broke, and
returns the value to use; nothing here has side effects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from ipaddress import ip_address

from drivers.errors import Invalid
from drivers.model import ServicePort
from drivers.vip import PROTOCOLS

# Docker's container and network name rule.
NAME_RULE = "[a-zA-Z0-9][a-zA-Z0-9_.-]*"
_NAME_RE = re.compile(rf"^{NAME_RULE}$")
# Named namespaces are files named after the container (drivers/namespaces.py allows 200).
NAME_MAX = 200

# One DNS label of an alias, hostname or search domain: letters, digits, '-' and '_' (compose
# service names use '_'), not starting or ending with '-'.
LABEL_MAX = 63
DNS_NAME_MAX = 253
_LABEL_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?$")

_DNS_OPTION_RE = re.compile(r"^[A-Za-z0-9_-]+(?::[A-Za-z0-9_.-]+)?$")

# Services: docker's swarm service-name rule (one DNS label, so `tasks.<svc>` and
# `_<port>._<proto>.<svc>` are names too).
SERVICE_NAME_MAX = 63
_SERVICE_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[-_]*[A-Za-z0-9]+)*$")
_PORT_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
# Each task is a namespace with listeners: a bound that keeps a typo from making 10^6 of them.
MAX_REPLICAS = 1000


def check_name(name: str, what: str = "container name") -> str:
    """A container or network name: docker's rule, at most NAME_MAX, DNS-sized labels."""
    if not name:
        raise Invalid(f"{what} is empty: give one matching {NAME_RULE}")
    if not _NAME_RE.match(name):
        raise Invalid(
            f"{what} {name!r} is not valid: it must match {NAME_RULE} "
            "(start with a letter or digit; then letters, digits, '_', '.', '-')"
        )
    if len(name) > NAME_MAX:
        raise Invalid(f"{what} {name[:20]!r}... is {len(name)} characters long: at most {NAME_MAX}")
    _check_labels(name, what, dns_chars=False)
    return name


def check_container_name(name: str) -> str:
    return check_name(name, "container name")


def check_network_name(name: str) -> str:
    return check_name(name, "network name")


def check_dns_name(name: str, what: str = "alias") -> str:
    """An alias, hostname or search domain: a DNS name without a trailing dot."""
    if not name:
        raise Invalid(f"{what} is empty: give a DNS name such as 'db' or 'db.internal'")
    if len(name) > DNS_NAME_MAX:
        raise Invalid(
            f"{what} {name[:20]!r}... is {len(name)} characters long: a DNS name has at most "
            f"{DNS_NAME_MAX}"
        )
    _check_labels(name, what, dns_chars=True)
    return name


def check_aliases(aliases: Iterable[str]) -> tuple[str, ...]:
    """Each alias a DNS name; repeats dropped (the first spelling kept)."""
    seen: dict[str, str] = {}
    for alias in aliases:
        check_dns_name(alias, "alias")
        seen.setdefault(alias.lower(), alias)
    return tuple(seen.values())


def check_hostname(hostname: str) -> str:
    return check_dns_name(hostname, "hostname")


def check_dns_server(server: str, what: str = "--dns") -> str:
    """An upstream: IP, IP:PORT or [IPv6]:PORT (resolv.conf itself takes plain IPs only)."""
    host, port = server, ""
    if server.startswith("["):
        host, sep, rest = server[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise Invalid(f"{what} {server!r} is not an address: use IP, IP:PORT or [IPv6]:PORT")
        port = rest[1:]
    elif server.count(":") == 1:
        host, _, port = server.partition(":")
    try:
        ip_address(host)
    except ValueError:
        raise Invalid(
            f"{what} {server!r} is not an IP address: use IP, IP:PORT or [IPv6]:PORT "
            "(names cannot be upstreams)"
        ) from None
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise Invalid(f"{what} {server!r}: port {port!r} is not a number from 1 to 65535")
    return server


def check_dns_servers(servers: Iterable[str], what: str = "--dns") -> tuple[str, ...]:
    return tuple(check_dns_server(s, what) for s in servers)


def check_dns_search(domains: Iterable[str]) -> tuple[str, ...]:
    return tuple(check_dns_name(d, "--dns-search domain") for d in domains)


def check_dns_options(options: Iterable[str]) -> tuple[str, ...]:
    """resolv.conf options: `name` or `name:value`, e.g. ndots:2, timeout:1, edns0."""
    result = []
    for option in options:
        if not _DNS_OPTION_RE.match(option):
            raise Invalid(
                f"--dns-option {option!r} is not a resolv.conf option: use NAME or NAME:VALUE "
                "(e.g. ndots:2, edns0)"
            )
        result.append(option)
    return tuple(result)


def _check_labels(name: str, what: str, *, dns_chars: bool) -> None:
    for label in name.split("."):
        if not label:
            raise Invalid(
                f"{what} {name!r} has an empty label (a leading, trailing or doubled '.'): "
                "DNS labels are 1-63 characters"
            )
        if len(label) > LABEL_MAX:
            raise Invalid(
                f"{what} {name!r}: label {label[:20]!r}... is {len(label)} characters long; "
                f"DNS labels are at most {LABEL_MAX}"
            )
        if dns_chars and not _LABEL_RE.match(label):
            raise Invalid(
                f"{what} {name!r}: label {label!r} is not a DNS label; use letters, digits, "
                "'-' and '_', not starting or ending with '-'"
            )


def check_service_name(name: str) -> str:
    if not name:
        raise Invalid("service name is empty: give --name NAME")
    if len(name) > SERVICE_NAME_MAX or not _SERVICE_NAME_RE.match(name):
        raise Invalid(
            f"service name {name!r} is not valid: one DNS label of at most {SERVICE_NAME_MAX} "
            "letters, digits, '-' and '_', starting and ending with a letter or digit"
        )
    return name


def check_replicas(replicas: object) -> int:
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        raise Invalid(f"replicas {replicas!r} is not a number: give 0 to {MAX_REPLICAS}")
    if not 0 <= replicas <= MAX_REPLICAS:
        raise Invalid(f"replicas {replicas} is out of range: give 0 to {MAX_REPLICAS}")
    return replicas


def parse_ports(publish: Iterable[str], port_name: str = "") -> tuple[ServicePort, ...]:
    """`--publish PORT[/PROTO]` (PROTO tcp or udp, default tcp) as service ports, named
    `port_name` for SRV, else after the port number."""
    publish = list(publish)
    if port_name and not publish:
        raise Invalid(f"--port-name {port_name!r} names published ports: add --publish PORT/PROTO")
    if port_name and (len(port_name) > 63 or not _PORT_NAME_RE.match(port_name)):
        raise Invalid(
            f"--port-name {port_name!r} is not a DNS label: letters, digits and '-', "
            "not starting or ending with '-' (e.g. http)"
        )
    ports: dict[tuple[int, str], ServicePort] = {}
    for text in publish:
        number, sep, protocol = text.partition("/")
        protocol = protocol.lower() if sep else "tcp"
        if ":" in number:
            raise Invalid(
                f"--publish {text!r}: netdns publishes a service port on the service's networks "
                "only, not on the host: give PORT/PROTO such as 80/tcp"
            )
        if not number.isdigit() or not 0 < int(number) < 65536:
            raise Invalid(f"--publish {text!r}: the port must be a number from 1 to 65535")
        if protocol not in PROTOCOLS:
            raise Invalid(f"--publish {text!r}: the protocol must be tcp or udp")
        port = int(number)
        ports.setdefault((port, protocol), ServicePort(port_name or str(port), protocol, port))
    return tuple(ports.values())
