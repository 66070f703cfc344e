"""`netdns service ...`: create, scale, ls, inspect, rm."""

from __future__ import annotations

from collections.abc import Sequence

from drivers.errors import Invalid
from netdns import docker_json
from netdns.cli.command import (
    Context,
    Listing,
    Subcommands,
    add_ls_inspect_rm,
    fail,
    format_option,
    print_created,
)
from netdns.client import Client, ClientError


def cmd_create(ctx: Context) -> int:
    a = ctx.args
    created = ctx.client.create_service(
        name=a.name,
        networks=a.network,
        replicas=a.replicas,
        endpoint_mode=a.endpoint_mode,
        publish=a.publish,
        port_name=a.port_name,
    )
    return print_created(ctx, created, "ID")


def scale_pairs(values: Sequence[str]) -> list[tuple[str, int]]:
    """`NAME=N` arguments of `service scale`, checked before any is sent."""
    pairs = []
    for value in values:
        name, sep, count = value.rpartition("=")
        if not sep or not name or not count.isdigit():
            raise Invalid(f"service scale {value!r}: expected NAME=N (for example web=3)")
        pairs.append((name, int(count)))
    return pairs


def cmd_scale(ctx: Context) -> int:
    """docker's scale: each NAME=N in turn, a line per service scaled; go on past failures."""
    code = 0
    for name, replicas in scale_pairs(ctx.args.scales):
        try:
            scaled = ctx.client.scale_service(name, replicas)
        except ClientError as exc:
            code = fail(exc, ctx.err)
        else:
            print(f"{scaled['Spec']['Name']} scaled to {replicas}", file=ctx.out)
    return code


def register(commands: Subcommands) -> None:
    verbs = commands.noun(
        "service",
        "manage services (replicated tasks behind one name)",
        "A service is N tasks, each a container named <svc>.<slot>.<taskid> on the service's "
        "network. `<svc>` answers the service's virtual IP (endpoint mode vip; connections to "
        "it are spread over the tasks) or every task address (dnsrr); `tasks.<svc>` every task "
        "address; `_<port-name>._<proto>.<svc>` SRV one record per task.",
        ["netdns service ls", "netdns service create --name web --network app --replicas 3"],
    )
    p = verbs.add(
        "create",
        cmd_create,
        "create a service",
        "Create a service on a user-defined network (bridge, macvlan, ipvlan), start its tasks "
        "and print its id. Names answer before the command returns.",
        [
            "netdns service create --name web --network app --replicas 3 --publish 80/tcp "
            "--port-name http",
            "netdns service create --name db --network app --endpoint-mode dnsrr",
        ],
    )
    p.add_argument("--name", required=True, help="service name (required; one DNS label)")
    p.add_argument(
        "--network", action="append", required=True, metavar="NET", help="network (required)"
    )
    p.add_argument("--replicas", type=int, default=1, metavar="N", help="tasks (default 1)")
    p.add_argument(
        "--endpoint-mode",
        choices=["vip", "dnsrr"],
        default="vip",
        help="vip: one virtual IP spread over the tasks; dnsrr: the name answers every task "
        "(default %(default)s)",
    )
    p.add_argument(
        "--publish",
        action="append",
        default=[],
        metavar="PORT/PROTO",
        help="service port (tcp or udp; repeatable): the VIP forwards only these, and SRV "
        "names them; without any the VIP forwards every port",
    )
    p.add_argument(
        "--port-name",
        default="",
        metavar="NAME",
        help="SRV name of the published ports, `_NAME._PROTO.SVC` (default: the port number)",
    )
    format_option(p)

    p = verbs.add(
        "scale",
        cmd_scale,
        "change the number of tasks",
        "Start or stop tasks until each service has N (stopping the highest slots first); "
        "answers change before the command returns.",
        ["netdns service scale web=5", "netdns service scale web=1 db=2"],
    )
    p.add_argument("scales", nargs="+", metavar="NAME=N")

    add_ls_inspect_rm(
        verbs,
        "service",
        Listing(
            Client.services,
            docker_json.service_row,
            docker_json.SERVICE_COLUMNS,
            Client.service,
            Client.remove_service,
        ),
        (
            "List services: id, name, mode, running/desired tasks, endpoint mode, ports.",
            "Print a JSON array with each service as `docker service inspect` shows it (Spec, "
            "Endpoint.VirtualIPs, Endpoint.Ports), plus its running Tasks.",
            "Stop every task of the services, give their VIPs back; prints each name removed.",
        ),
        (["netdns service inspect web"], ["netdns service rm web"]),
    )
