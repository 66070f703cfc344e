"""Fixtures for tests that make real namespaces and links (root only).

Everything a test makes carries its unique tag (`nd` + 6 hex digits) in its name: namespaces
`nd<tag>...`, links `br-nd<tag>...`, `vnd<tag>...`, `nd<tag>...`. Teardown removes every
namespace the test made and every host link whose name holds the tag, even when the test failed.
Subnets are random 10.x.y.0/24 (and fdxx::/64) ranges that overlap nothing the host routes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

import pytest
from pyroute2 import IPRoute

from drivers.namespaces import Namespaces

_used_subnets: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()


@dataclass
class Lab:
    """One test's namespaces, links and subnets; `cleanup` undoes all of it."""

    tag: str
    namespaces: Namespaces = field(default_factory=Namespaces)
    netns_names: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)
    counter: int = 0

    def unique(self, prefix: str = "") -> str:
        """A name holding the tag: PREFIX + nd<tag> + a counter (short enough for links)."""
        self.counter += 1
        return f"{prefix}nd{self.tag}{self.counter:x}"

    def netns(self) -> str:
        """A fresh named namespace (loopback up); returns its path."""
        name = self.unique()
        self.netns_names.append(name)
        return self.namespaces.create(name)

    def ipv4_subnet(self) -> IPv4Network:
        taken = _host_networks()
        while True:
            # 10.255/16 is left alone: the machine's resolver lives there.
            subnet = IPv4Network(f"10.{random.randint(1, 254)}.{random.randint(0, 255)}.0/24")
            if subnet not in _used_subnets and not any(subnet.overlaps(t) for t in taken):
                _used_subnets.add(subnet)
                return subnet

    def ipv6_subnet(self) -> IPv6Network:
        taken = _host_networks()
        while True:
            subnet = IPv6Network((int.from_bytes(b"\xfd" + secrets.token_bytes(7)) << 64, 64))
            if subnet not in _used_subnets and not any(subnet.overlaps(t) for t in taken):
                _used_subnets.add(subnet)
                return subnet

    def cleanup(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait(timeout=10)
        for name in self.netns_names:
            self.namespaces.remove(name)
        with IPRoute() as ipr:
            for link in ipr.link("dump"):
                if f"nd{self.tag}" in (link.get("ifname") or ""):
                    # A veth peer may have gone with its partner already.
                    with contextlib.suppress(Exception):
                        ipr.link("del", index=link["index"])


def _host_networks() -> list[IPv4Network | IPv6Network]:
    networks: list[IPv4Network | IPv6Network] = []
    with IPRoute() as ipr:
        for route in ipr.route("dump"):
            dst = route.get("dst")
            if dst and route["dst_len"]:
                networks.append(ipaddress.ip_network(f"{dst}/{route['dst_len']}", strict=False))
        for addr in ipr.addr("dump"):
            networks.append(
                ipaddress.ip_network(f"{addr.get('address')}/{addr['prefixlen']}", strict=False)
            )
    return networks


@pytest.fixture
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates namespaces and links")
    for tool in ("ip", "ping", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    made = Lab(tag=secrets.token_hex(3))
    try:
        yield made
    finally:
        made.cleanup()
