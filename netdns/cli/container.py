"""`netdns container ...`: create, ls, inspect, rm."""

from __future__ import annotations

from netdns import docker_json
from netdns.cli.command import (
    Context,
    Listing,
    Subcommands,
    add_ls_inspect_rm,
    format_option,
    print_created,
)
from netdns.client import Client


def cmd_create(ctx: Context) -> int:
    a = ctx.args
    created = ctx.client.create_container(
        name=a.name,
        hostname=a.hostname,
        network=a.network,
        aliases=a.network_alias,
        ip=a.ip,
        ip6=a.ip6,
        dns=a.dns,
        dns_search=a.dns_search,
        dns_options=a.dns_option,
        netns=a.netns,
    )
    return print_created(ctx, created)


def register(commands: Subcommands) -> None:
    verbs = commands.noun(
        "container",
        "manage containers (network namespaces)",
        "A container is a network namespace: netdns makes a named one (`ip netns exec NAME` "
        "enters it) or adopts one made by another runtime (--netns).",
        ["netdns container ls", "netdns container create --name web --network app"],
    )
    p = verbs.add(
        "create",
        cmd_create,
        "create a container",
        "Create a container (a network namespace) on a network and print its id. On a "
        "user-defined network it gets 127.0.0.11 in its resolv.conf.",
        [
            "netdns container create --name alpine1 --network alpine-net",
            "netdns container create --name alpine3            # the default bridge",
            "netdns container create --name db --network app --network-alias database "
            "--ip 10.10.0.5",
            "netdns container create --name c1 --netns /proc/1234/ns/net --network app",
        ],
    )
    p.add_argument("--name", required=True, help="container name (required)")
    p.add_argument("--hostname", default="", help="host name (default: the name)")
    p.add_argument("--network", default="bridge", help="network to join (default %(default)s)")
    p.add_argument(
        "--network-alias",
        action="append",
        default=[],
        metavar="NAME",
        help="extra name on that network (repeatable)",
    )
    p.add_argument("--ip", metavar="IP", help="IPv4 address on the network")
    p.add_argument("--ip6", metavar="IP", help="IPv6 address on the network")
    p.add_argument(
        "--dns", action="append", default=[], metavar="IP", help="upstream server (repeatable)"
    )
    p.add_argument(
        "--dns-search", action="append", default=[], metavar="DOMAIN", help="(repeatable)"
    )
    p.add_argument("--dns-option", action="append", default=[], metavar="OPT", help="e.g. ndots:2")
    p.add_argument(
        "--netns", default="", metavar="PATH", help="adopt this namespace (/proc/PID/ns/net)"
    )
    format_option(p)

    add_ls_inspect_rm(
        verbs,
        "container",
        Listing(
            Client.containers,
            docker_json.container_row,
            docker_json.CONTAINER_COLUMNS,
            Client.container,
            Client.remove_container,
        ),
        (
            "List containers: id, name, networks and addresses.",
            "Print a JSON array with each container as `docker container inspect` shows its "
            "network part: SandboxKey (the namespace), DNS settings, and each network's addresses.",
            "Disconnect containers from all networks and remove the namespaces netdns made; "
            "prints each name removed.",
        ),
        (["netdns container inspect alpine1"], ["netdns container rm alpine1 alpine2"]),
    )
