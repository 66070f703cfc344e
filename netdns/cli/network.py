"""`netdns network ...`: create, ls, inspect, rm, connect, disconnect."""

from __future__ import annotations

from collections.abc import Sequence

from drivers.errors import Invalid
from netdns import docker_json
from netdns.cli.command import (
    Context,
    Listing,
    Subcommands,
    add_ls_inspect_rm,
    format_option,
    print_created,
    print_if_json,
)
from netdns.client import Client


def option_pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise Invalid(f"{flag} {value!r}: expected KEY=VALUE (for example parent=eth0)")
        pairs[key] = val
    return pairs


def cmd_create(ctx: Context) -> int:
    a = ctx.args
    created = ctx.client.create_network(
        name=a.name,
        driver=a.driver,
        subnets=a.subnet,
        gateway=a.gateway,
        ip_range=a.ip_range,
        ipv6=a.ipv6,
        internal=a.internal,
        attachable=a.attachable,
        options=option_pairs(a.opt, "-o"),
        dns_servers=a.dns,
    )
    return print_created(ctx, created)


def cmd_connect(ctx: Context) -> int:
    a = ctx.args
    endpoint = ctx.client.connect(a.network, a.container, aliases=a.alias, ip=a.ip, ip6=a.ip6)
    return print_if_json(ctx, endpoint)


def cmd_disconnect(ctx: Context) -> int:
    return print_if_json(ctx, ctx.client.disconnect(ctx.args.network, ctx.args.container))


def register(commands: Subcommands) -> None:
    verbs = commands.noun(
        "network",
        "manage networks",
        "Create, list, inspect and remove networks; connect containers to them.",
        ["netdns network ls", "netdns network create --subnet 10.10.0.0/24 app"],
    )
    p = verbs.add(
        "create",
        cmd_create,
        "create a network",
        "Create a network and print its id. Containers on it resolve each other by name "
        "(not on the default bridge). Without --subnet a free one is picked.",
        [
            "netdns network create alpine-net",
            "netdns network create --subnet 10.10.0.0/24 --gateway 10.10.0.1 app",
            "netdns network create --ipv6 --subnet fd00:10::/64 --internal backend",
            "netdns network create -d macvlan --subnet 192.0.2.0/24 -o parent=eth0.50 vlan50",
        ],
    )
    p.add_argument(
        "-d",
        "--driver",
        default="bridge",
        choices=["bridge", "macvlan", "ipvlan", "overlay"],
        help="network driver (default %(default)s)",
    )
    p.add_argument("--subnet", action="append", default=[], metavar="CIDR", help="repeatable")
    p.add_argument("--gateway", metavar="IP", help="gateway of the IPv4 subnet")
    p.add_argument("--ip-range", metavar="CIDR", help="allocate container addresses from this")
    p.add_argument("--ipv6", action="store_true", help="give containers IPv6 addresses too")
    p.add_argument("--internal", action="store_true", help="no route out; names never forwarded")
    p.add_argument(
        "--attachable", action="store_true", help="(overlay) allow standalone containers"
    )
    p.add_argument(
        "-o",
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="driver option, e.g. parent=eth0, macvlan_mode=bridge, ipvlan_mode=l2 (repeatable)",
    )
    p.add_argument(
        "--dns", action="append", default=[], metavar="IP[:PORT]", help="upstream for this network"
    )
    p.add_argument("name", metavar="NAME")
    format_option(p)

    add_ls_inspect_rm(
        verbs,
        "network",
        Listing(
            Client.networks,
            docker_json.network_row,
            docker_json.NETWORK_COLUMNS,
            Client.network,
            Client.remove_network,
        ),
        (
            "List networks: id, name, driver, scope.",
            "Print a JSON array with each network as `docker network inspect` shows it: IPAM, "
            "options, and the containers on it with their addresses.",
            "Remove networks (they must have no containers); prints each name removed.",
        ),
        (
            ["netdns network inspect alpine-net", "netdns network inspect bridge alpine-net"],
            ["netdns network rm alpine-net"],
        ),
    )

    p = verbs.add(
        "connect",
        cmd_connect,
        "connect a container to a network",
        "Connect a container to one more network; its names there answer at once.",
        [
            "netdns network connect bridge alpine4",
            "netdns network connect --alias db --ip 10.10.0.50 app alpine2",
        ],
    )
    p.add_argument(
        "--alias", action="append", default=[], metavar="NAME", help="extra name (repeatable)"
    )
    p.add_argument("--ip", metavar="IP", help="IPv4 address on the network")
    p.add_argument("--ip6", metavar="IP", help="IPv6 address on the network")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    format_option(p)

    p = verbs.add(
        "disconnect",
        cmd_disconnect,
        "disconnect a container from a network",
        "Disconnect a container from a network; its names there stop answering at once.",
        ["netdns network disconnect alpine-net alpine2"],
    )
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    format_option(p)
