"""The bench's network: namespaces, one bridge and veths, all made by the bench and all removed.

    host namespace ndh-<sfx>                        client namespaces ndc-<tag>-<sfx>
    ┌─────────────────────────────────────┐         ┌──────────────────────────────┐
    │ br-nd<sfx>  10.x.y.1  gateway        │─ veth ─│ eth0 10.x.y.10+i  (dnsperf)  │ one per peer
    │             10.x.y.2  upstream       │         └──────────────────────────────┘
    │             10.x.y.3  dnsmasq peer   │
    └─────────────────────────────────────┘

The host namespace stands for the machine a container runtime runs on: the bridge and its
gateway address (where aardvark-dns listens, as under Podman), the bench's upstream and the
dnsmasq peer live there, and so does the netdns process (its sockets in the client namespace).
Each peer gets its own client namespace, where dnsperf runs. No link leaves the lab and no
namespace has a default route, so no query can reach anything outside it.

`plan` is pure (names and addresses from a suffix and a subnet); `lab_network` makes the plan
real with `ip` and removes every namespace it made on the way out, even on failure.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from bench.errors import Conflict, Invalid, NotFound

log = logging.getLogger(__name__)

IP_TIMEOUT = 10.0
FIRST_CLIENT_HOST = 10  # clients take .10, .11, ...
MAX_CLIENTS = 200
# 10.x.y.0/24 with x below 64: clear of the zone's data addresses (10.64.0.0/10 forwarded,
# 10.128.0.0/9 containers), so a client's real address never equals a name's address.
SUBNET_FIRST_OCTET = range(1, 64)


@dataclass(frozen=True, slots=True)
class ClientNs:
    """The namespace one peer's queries come from."""

    peer: str
    netns: str
    address: IPv4Address
    veth: str  # the host-side end, a port of the bridge; the client side is eth0


@dataclass(frozen=True, slots=True)
class LabNet:
    suffix: str
    host_netns: str
    bridge: str
    subnet: IPv4Network
    clients: tuple[ClientNs, ...]

    @property
    def gateway(self) -> IPv4Address:
        """The bridge's first address: where aardvark-dns listens, as netavark sets it up."""
        return self.subnet[1]

    @property
    def upstream(self) -> IPv4Address:
        """The bench's upstream dnsmasq, which every peer forwards to."""
        return self.subnet[2]

    @property
    def resolver(self) -> IPv4Address:
        """dnsmasq as a resolver peer."""
        return self.subnet[3]

    def client(self, peer: str) -> ClientNs:
        for client in self.clients:
            if client.peer == peer:
                return client
        raise NotFound(f"the lab has no client namespace for peer {peer!r}")


def random_subnet(rng: random.Random | None = None) -> IPv4Network:
    rng = rng or random.Random()
    first = rng.choice(SUBNET_FIRST_OCTET)
    return IPv4Network(f"10.{first}.{rng.randrange(256)}.0/24")


def plan(
    peers: Sequence[tuple[str, str]],
    *,
    suffix: str | None = None,
    subnet: IPv4Network | None = None,
) -> LabNet:
    """Names and addresses of a lab for PEERS, each given as (peer name, short tag).

    Interface names stay within Linux's 15 characters: `br-nd` + 6 hex, `vnd` + 6 hex + index.
    """
    suffix = suffix or secrets.token_hex(3)
    if not (suffix.isalnum() and len(suffix) <= 6):
        raise Invalid(f"lab suffix {suffix!r}: use at most 6 letters or digits")
    subnet = subnet or random_subnet()
    if subnet.prefixlen > 24 or subnet.version != 4:
        raise Invalid(f"lab subnet {subnet}: give an IPv4 /24 or larger")
    if len(peers) > MAX_CLIENTS:
        raise Invalid(f"{len(peers)} peers: a lab holds at most {MAX_CLIENTS}")
    tags = [tag for _, tag in peers]
    if len(set(tags)) != len(tags):
        raise Invalid(f"peer tags {tags} repeat: each client namespace needs its own")
    clients = tuple(
        ClientNs(
            peer=name,
            netns=f"ndc-{tag}-{suffix}",
            address=subnet[FIRST_CLIENT_HOST + index],
            veth=f"vnd{suffix}{index}",
        )
        for index, (name, tag) in enumerate(peers)
    )
    return LabNet(
        suffix=suffix,
        host_netns=f"ndh-{suffix}",
        bridge=f"br-nd{suffix}",
        subnet=subnet,
        clients=clients,
    )


def _ip(*args: str) -> None:
    command = ["ip", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
    if done.returncode != 0:
        reason = done.stderr.strip() or f"exit status {done.returncode}"
        if "File exists" in reason:
            raise Conflict(f"{' '.join(command)}: {reason}; another lab holds the name")
        raise Invalid(f"{' '.join(command)}: {reason}")


def _delete_netns(name: str) -> None:
    # Deleting a namespace removes its links; a veth goes with either end, the bridge with
    # the host namespace.
    try:
        _ip("netns", "delete", name)
    except Invalid as exc:
        log.warning("could not remove namespace %s: %s", name, exc)


def _build(net: LabNet, made: list[str]) -> None:
    prefix = net.subnet.prefixlen
    host = net.host_netns
    _ip("netns", "add", host)
    made.append(host)
    _ip("-n", host, "link", "set", "lo", "up")
    _ip("-n", host, "link", "add", net.bridge, "type", "bridge")
    for address in (net.gateway, net.upstream, net.resolver):
        _ip("-n", host, "addr", "add", f"{address}/{prefix}", "dev", net.bridge)
    _ip("-n", host, "link", "set", net.bridge, "up")
    for client in net.clients:
        _ip("netns", "add", client.netns)
        made.append(client.netns)
        _ip("-n", client.netns, "link", "set", "lo", "up")
        # The peer end is made straight inside the client namespace: no name in any other.
        _ip(
            "-n", host, "link", "add", client.veth, "type", "veth",
            "peer", "name", "eth0", "netns", client.netns,
        )  # fmt: skip
        _ip("-n", host, "link", "set", client.veth, "master", net.bridge, "up")
        _ip("-n", client.netns, "addr", "add", f"{client.address}/{prefix}", "dev", "eth0")
        _ip("-n", client.netns, "link", "set", "eth0", "up")


@contextlib.contextmanager
def lab_network(net: LabNet) -> Iterator[LabNet]:
    """Make the namespaces, bridge and veths of NET; remove every namespace made on exit."""
    if shutil.which("ip") is None:
        raise NotFound("ip is not installed: apt-get install iproute2")
    made: list[str] = []
    try:
        _build(net, made)
        log.info(
            "lab network %s: bridge %s in %s, clients %s",
            net.subnet,
            net.bridge,
            net.host_netns,
            ", ".join(f"{c.peer} {c.netns} {c.address}" for c in net.clients),
        )
        yield net
    finally:
        for name in reversed(made):
            _delete_netns(name)
