"""The daemon's flags (INTERFACE.md) and the configuration they make, checked before anything
starts: each bad value is an Invalid naming the flag."""

from __future__ import annotations

import argparse
import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from drivers import validation
from drivers.cluster.etcd_wire import parse_store_url
from drivers.cluster.store import DEFAULT_LEASE_TTL
from drivers.errors import Invalid
from drivers.ipam import parse_address
from netdns import logs

DEFAULT_ROOT = Path("/var/lib/netdns")
DEFAULT_ADMIN = "unix:///run/netdns/netdns.sock"


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    root: Path = DEFAULT_ROOT
    admin: str = DEFAULT_ADMIN
    admin_tcp: str = ""
    store: str = "local"  # or etcd://HOST:PORT
    host_name: str = field(default_factory=socket.gethostname)
    advertise_addr: IPv4Address | None = None  # this host's VTEP; default: the way to etcd
    lease_ttl: int = DEFAULT_LEASE_TTL
    bridge: str = "netdns0"  # the Linux bridge of the default `bridge` network
    log_level: str = "info"
    log_format: str = "text"  # or "json" (netdns/logs.py)
    dns: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()  # R3b: zones that stand for every network of the asker
    local_ttl: int = 5
    no_cache: bool = False
    max_inflight: int = 1024
    max_inflight_per_sandbox: int | None = None  # None: a quarter of max_inflight, at least 8
    resolv_conf: Path = Path("/etc/resolv.conf")
    etc_netns: Path = Path("/etc/netns")

    @property
    def admin_path(self) -> Path:
        if not self.admin.startswith("unix://"):
            raise Invalid(f"--admin {self.admin!r}: expected unix:///path/to/socket")
        return Path(self.admin[len("unix://") :])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The daemon's flags (INTERFACE.md); the CLI's `daemon` subcommand calls this."""
    parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help="state directory (default %(default)s)"
    )
    parser.add_argument(
        "--admin", default=DEFAULT_ADMIN, help="admin API socket, root only (default %(default)s)"
    )
    parser.add_argument(
        "--admin-tcp",
        default="",
        metavar="HOST:PORT",
        help="also serve the admin API on TCP; requests need the token in ROOT/admin.token",
    )
    parser.add_argument(
        "--store",
        default="local",
        help="state store: local (default), or etcd://HOST:PORT to share overlay networks and "
        "services with the other hosts of a cluster",
    )
    parser.add_argument(
        "--host-name",
        default=socket.gethostname(),
        help="this host's name in a cluster, unique among its hosts (default: the hostname)",
    )
    parser.add_argument(
        "--advertise-addr",
        default="",
        metavar="IP",
        help="this host's underlay IPv4 address, where the other hosts send its overlay "
        "traffic (default: the source address of the route to etcd)",
    )
    parser.add_argument(
        "--lease-ttl",
        type=int,
        default=DEFAULT_LEASE_TTL,
        metavar="SECONDS",
        help="how long this host's endpoints outlive its daemon in the other hosts' answers "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--bridge",
        default="netdns0",
        metavar="NAME",
        help="Linux bridge of the default `bridge` network (default %(default)s)",
    )
    parser.add_argument(
        "--resolv-conf",
        type=Path,
        default=Path("/etc/resolv.conf"),
        metavar="PATH",
        help="the host's resolv.conf: default upstreams without --dns, and the nameservers of "
        "containers without embedded DNS (default %(default)s)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=[f.value for f in logs.LogFormat],
        help="text lines, or json: one object per line with time, level, logger, message "
        "and the record's fields (default %(default)s)",
    )
    parser.add_argument(
        "--dns",
        action="append",
        default=[],
        metavar="IP[:PORT]",
        help="default upstream, repeatable (default: the host's resolv.conf "
        "nameservers, re-read when it changes)",
    )
    parser.add_argument(
        "--domain",
        action="append",
        default=[],
        metavar="ZONE",
        help="a zone that stands for every network of the asking container: NAME.ZONE answers "
        "NAME, any other name in it is NXDOMAIN (R3b; podman's is dns.podman); repeatable",
    )
    parser.add_argument(
        "--local-ttl",
        type=int,
        default=5,
        metavar="SECONDS",
        help="TTL of local answers (default %(default)s, R9)",
    )
    parser.add_argument("--no-cache", action="store_true", help="do not cache forwarded answers")
    parser.add_argument("--max-inflight", type=int, default=1024, metavar="N",
                        help="most forwarded queries in flight (default %(default)s)")  # fmt: skip
    parser.add_argument("--max-inflight-per-sandbox", type=int, metavar="N",
                        help="most forwarded queries in flight from one sandbox, so a flooding "
                        "container cannot take every slot (default: a quarter of "
                        "--max-inflight, at least 8)")  # fmt: skip


def config_from_args(args: argparse.Namespace) -> DaemonConfig:
    if args.store != "local":
        parse_store_url(args.store)  # Invalid naming the bad URL
        validation.check_hostname(args.host_name)
    elif args.advertise_addr:
        raise Invalid("--advertise-addr is for a cluster: give --store etcd://HOST:PORT too")
    advertise = (
        parse_address(args.advertise_addr, "--advertise-addr", 4) if args.advertise_addr else None
    )
    if args.local_ttl < 0 or args.max_inflight < 1:
        raise Invalid("--local-ttl must be >= 0 and --max-inflight >= 1")
    if args.max_inflight_per_sandbox is not None and args.max_inflight_per_sandbox < 1:
        raise Invalid(f"--max-inflight-per-sandbox {args.max_inflight_per_sandbox}: give 1 or more")
    if not 2 <= args.lease_ttl <= 3600:
        raise Invalid(f"--lease-ttl {args.lease_ttl}: give 2 to 3600 seconds")
    from resolver.forward.upstream import parse_server

    for server in args.dns:
        parse_server(server)  # fails early with a clear message
    return DaemonConfig(
        root=args.root, admin=args.admin, admin_tcp=args.admin_tcp, store=args.store,
        host_name=args.host_name, advertise_addr=advertise, lease_ttl=args.lease_ttl,
        bridge=args.bridge, log_level=args.log_level, log_format=args.log_format,
        dns=tuple(args.dns),
        domains=tuple(validation.check_dns_name(d.strip("."), "--domain") for d in args.domain),
        local_ttl=args.local_ttl, no_cache=args.no_cache, max_inflight=args.max_inflight,
        max_inflight_per_sandbox=args.max_inflight_per_sandbox, resolv_conf=args.resolv_conf,
    )  # fmt: skip
