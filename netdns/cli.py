"""The `netdns` command: docker's words for networks, containers and services, over the admin
API.

Every command talks to the daemon through netdns.client (except `daemon`, which is the
daemon, and `exec`, which also runs a process in the container's namespace). Output is a table
or text by default and JSON with `--format json`; `inspect` always prints a JSON array, as
docker does. Failures print one line, `netdns: <reason>`, on stderr and exit with the code of
the error's class (drivers/errors.py), mapped from the API's HTTP status in one place
(`exit_code`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from drivers.errors import Conflict, Invalid, NetdnsError, NotFound, Unavailable, Unsupported
from netdns import docker_json
from netdns.client import DEFAULT_HOST, HOST_ENV, Client, ClientError

PROG = "netdns"
HELP_WIDTH = 78
NAMED_NETNS_DIR = "/run/netns/"

# -- errors and exit codes (the one place) ---------------------------------------------------

_ERROR_CLASSES = (Invalid, NotFound, Conflict, Unsupported, Unavailable)
_EXIT_BY_STATUS = {cls.http_status: cls.exit_code for cls in _ERROR_CLASSES}


def exit_code(status: int) -> int:
    """The exit code for an API error's HTTP status (0: no answer at all -> the generic 1)."""
    return _EXIT_BY_STATUS.get(status, NetdnsError.exit_code)


def report(message: str, err: TextIO) -> None:
    """One line on stderr, whatever the message holds."""
    print(f"{PROG}: {' '.join(message.split())}", file=err)


def fail(exc: BaseException, err: TextIO) -> int:
    if isinstance(exc, ClientError):
        report(exc.message, err)
        return exit_code(exc.status)
    if isinstance(exc, NetdnsError):
        report(str(exc), err)
        return exc.exit_code
    raise exc


# -- output helpers ---------------------------------------------------------------------------


def print_json(value: Any, out: TextIO) -> None:
    print(json.dumps(value, indent=4), file=out)


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Columns padded as docker pads them: the widest cell plus three spaces."""
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    for line in [list(columns), *rows]:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=True)]
        print("   ".join(cells).rstrip(), file=out)


def option_pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise Invalid(f"{flag} {value!r}: expected KEY=VALUE (for example parent=eth0)")
        pairs[key] = val
    return pairs


# -- commands ---------------------------------------------------------------------------------


class Context:
    """What a command handler gets: its arguments, the output streams and the client."""

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.args = args
        self.out = out
        self.err = err
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.args.host)
        return self._client

    @property
    def json(self) -> bool:
        return getattr(self.args, "format", "table") == "json"


def cmd_network_create(ctx: Context) -> int:
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


def print_created(ctx: Context, created: dict) -> int:
    if ctx.json:
        print_json(created, ctx.out)
    else:
        print(created["Id"], file=ctx.out)
    return 0


def print_rows(ctx: Context, rows: list[dict], columns: Sequence[str]) -> int:
    if ctx.args.quiet:
        for row in rows:
            print(row["ID"], file=ctx.out)
    elif ctx.json:
        print_json(rows, ctx.out)
    else:
        print_table(columns, [docker_json.row_cells(r) for r in rows], ctx.out)
    return 0


def cmd_network_ls(ctx: Context) -> int:
    rows = [docker_json.network_row(n) for n in ctx.client.networks()]
    return print_rows(ctx, rows, docker_json.NETWORK_COLUMNS)


def _inspect_each(ctx: Context, fetch: Callable[[str], Any]) -> int:
    """docker's inspect: the array of those found, one error line for each one that is not."""
    found, code = [], 0
    for name in ctx.args.names:
        try:
            found.append(fetch(name))
        except ClientError as exc:
            code = fail(exc, ctx.err)
    print_json(found, ctx.out)
    return code


def _remove_each(ctx: Context, remove: Callable[[str], Any]) -> int:
    """docker's rm: remove each, print each name removed; go on past failures."""
    code = 0
    for name in ctx.args.names:
        try:
            remove(name)
        except ClientError as exc:
            code = fail(exc, ctx.err)
        else:
            print(name, file=ctx.out)
    return code


def cmd_network_inspect(ctx: Context) -> int:
    return _inspect_each(ctx, ctx.client.network)


def cmd_network_rm(ctx: Context) -> int:
    return _remove_each(ctx, ctx.client.remove_network)


def cmd_network_connect(ctx: Context) -> int:
    a = ctx.args
    endpoint = ctx.client.connect(a.network, a.container, aliases=a.alias, ip=a.ip, ip6=a.ip6)
    if ctx.json:
        print_json(endpoint, ctx.out)
    return 0


def cmd_network_disconnect(ctx: Context) -> int:
    endpoint = ctx.client.disconnect(ctx.args.network, ctx.args.container)
    if ctx.json:
        print_json(endpoint, ctx.out)
    return 0


def cmd_container_create(ctx: Context) -> int:
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


def cmd_container_ls(ctx: Context) -> int:
    rows = [docker_json.container_row(c) for c in ctx.client.containers()]
    return print_rows(ctx, rows, docker_json.CONTAINER_COLUMNS)


def cmd_container_inspect(ctx: Context) -> int:
    return _inspect_each(ctx, ctx.client.container)


def cmd_container_rm(ctx: Context) -> int:
    return _remove_each(ctx, ctx.client.remove_container)


def cmd_service_create(ctx: Context) -> int:
    a = ctx.args
    created = ctx.client.create_service(
        name=a.name,
        networks=a.network,
        replicas=a.replicas,
        endpoint_mode=a.endpoint_mode,
        publish=a.publish,
        port_name=a.port_name,
    )
    if ctx.json:
        print_json(created, ctx.out)
    else:
        print(created["ID"], file=ctx.out)
    return 0


def scale_pairs(values: Sequence[str]) -> list[tuple[str, int]]:
    """`NAME=N` arguments of `service scale`, checked before any is sent."""
    pairs = []
    for value in values:
        name, sep, count = value.rpartition("=")
        if not sep or not name or not count.isdigit():
            raise Invalid(f"service scale {value!r}: expected NAME=N (for example web=3)")
        pairs.append((name, int(count)))
    return pairs


def cmd_service_scale(ctx: Context) -> int:
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


def cmd_service_ls(ctx: Context) -> int:
    rows = [docker_json.service_row(s) for s in ctx.client.services()]
    return print_rows(ctx, rows, docker_json.SERVICE_COLUMNS)


def cmd_service_inspect(ctx: Context) -> int:
    return _inspect_each(ctx, ctx.client.service)


def cmd_service_rm(ctx: Context) -> int:
    return _remove_each(ctx, ctx.client.remove_service)


def exec_argv(sandbox_key: str, command: Sequence[str]) -> list[str]:
    """How to run `command` in a container whose namespace is at `sandbox_key`: a named
    namespace through `ip netns exec` (which also bind-mounts its /etc/netns resolv.conf), an
    adopted one through nsenter, a host-network container (no namespace) as it is."""
    if not sandbox_key:
        return list(command)
    if sandbox_key.startswith(NAMED_NETNS_DIR) and "/" not in sandbox_key[len(NAMED_NETNS_DIR) :]:
        return ["ip", "netns", "exec", sandbox_key[len(NAMED_NETNS_DIR) :], *command]
    return ["nsenter", f"--net={sandbox_key}", *command]


def cmd_exec(ctx: Context) -> int:
    command = list(ctx.args.argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise Invalid("exec: no command given: netdns exec NAME -- CMD [ARG...]")
    container = ctx.client.container(ctx.args.name)
    argv = exec_argv(container["NetworkSettings"]["SandboxKey"], command)
    try:
        return subprocess.run(argv, check=False).returncode
    except FileNotFoundError as exc:
        raise NetdnsError(f"exec: cannot run {argv[0]!r}: {exc.strerror}") from None


def format_explanation(result: dict[str, Any]) -> list[str]:
    """`netdns resolve` as text: the answer, the rule and path, and where the name lives."""
    asker = f"from {result['from']}" if result.get("from") else "from no container"
    lines = [f"{result['name']} {result['type']} {asker}: {result['rcode']}"]
    lines += [f"  {rr}" for rr in result.get("answers", [])]
    lines += [f"  (additional) {rr}" for rr in result.get("additional", [])]
    if not result.get("answers"):
        lines.append("  (no records)")
    rule = f"rule {result['rule']} ({result['outcome']}"
    rule += f", network {result['network']})" if result.get("network") else ")"
    path = result["path"]
    if result.get("upstream"):
        path += f" via {result['upstream']}"
    if path != "local":  # a local answer takes no measurable time
        path += f" in {result.get('elapsed_ms', 0):g} ms"
    lines.append(f"{rule}; path {path}")
    if result.get("path") != "local" or result.get("outcome") in ("forward", "nxdomain"):
        holding = result.get("networks_holding") or []
        lines.append(
            f"not local to this container; networks holding {result['name']!r}: "
            + (", ".join(holding) if holding else "none")
        )
    return lines


def cmd_resolve(ctx: Context) -> int:
    a = ctx.args
    result = ctx.client.resolve(a.name, source=a.source, qtype=a.type)
    if ctx.json:
        print_json(result, ctx.out)
    else:
        for line in format_explanation(result):
            print(line, file=ctx.out)
    return 0


# Fields of an event line shown as key=value in text, in this order (the rest is in --format json).
EVENT_FIELDS = ("container", "network", "service", "addresses", "aliases", "vips", "host", "driver")


def format_event(event: dict[str, Any]) -> str:
    """`netdns events` as text: time, seq, type, then the short fields."""
    if event.get("type") == "gap":
        return (
            f"-- events {event.get('from')}..{event.get('to')} not shown "
            f"({event.get('reason', 'lost')}) --"
        )
    parts = [str(event.get("time", "")), f"#{event.get('seq')}", str(event.get("type"))]
    for key in EVENT_FIELDS:
        value = event.get(key)
        if value in (None, "", []):
            continue
        parts.append(f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}")
    return " ".join(parts)


def cmd_events(ctx: Context) -> int:
    a = ctx.args
    # A follower started by a script in the background inherits SIGINT ignored, and Python
    # then keeps it ignored: `kill -INT` must still end it, as it ends `docker events`.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        # With --until the daemon ends the stream at that seq or time.
        for event in ctx.client.events(since=a.since, until=a.until, follow=not a.no_follow):
            if ctx.json:
                print(json.dumps(event), file=ctx.out)
            else:
                print(format_event(event), file=ctx.out)
            ctx.out.flush()
    except KeyboardInterrupt:
        pass  # how a follower is meant to stop, as with `docker events`
    return 0


def describe_sample(sample: float) -> str:
    if sample <= 0:
        return "query log: off"
    if sample >= 1:
        return "query log: every query (sample 1)"
    return f"query log: {sample * 100:g}% of queries (sample {sample:g})"


def cmd_querylog(ctx: Context) -> int:
    a = ctx.args
    if a.off:
        setting = ctx.client.set_querylog(0)
    elif a.sample is not None:
        setting = ctx.client.set_querylog(a.sample)
    else:
        setting = ctx.client.querylog()
    if ctx.json:
        print_json(setting, ctx.out)
    else:
        print(describe_sample(float(setting["sample"])), file=ctx.out)
    return 0


def sample_rate(text: str) -> float:
    """--sample: a number from 0 to 1 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a number from 0 (off) to 1 (every query), e.g. 0.01"
        )
    return value


def cmd_demo(ctx: Context) -> int:
    from netdns.demo import run_demo

    return run_demo(ctx.client, out=ctx.out)


def cmd_daemon(ctx: Context) -> int:
    # Imported here: the daemon pulls in the resolver, drivers and pyroute2, which the other
    # commands do not need.
    from netdns import daemon

    parser = argparse.ArgumentParser(
        prog=f"{PROG} daemon",
        description=textwrap.fill(DAEMON_DESCRIPTION, HELP_WIDTH),
        epilog=DAEMON_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    daemon.add_arguments(parser)
    return daemon.main(parser.parse_args(ctx.args.daemon_args))


# -- the parser -------------------------------------------------------------------------------

DAEMON_DESCRIPTION = (
    "Run the netdns daemon: networks, containers and the embedded DNS server (127.0.0.11 in "
    "every container on a user-defined network), with the admin API on a root-only unix socket."
)
DAEMON_EXAMPLES = """examples:
  netdns daemon
  netdns daemon --dns 127.0.0.53 --local-ttl 5
  netdns daemon --root /tmp/nd --admin unix:///tmp/nd/admin.sock --dns 127.1.2.3
  netdns daemon --log-format json     # one JSON object per log line
"""


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _format_option(parser: argparse.ArgumentParser, *choices: str) -> None:
    parser.add_argument(
        "--format",
        choices=choices or ("table", "json"),
        default=(choices or ("table",))[0],
        help="output format (default %(default)s)",
    )


class _Subcommands:
    """Adds subcommands with a description, examples and a handler each."""

    def __init__(self, parser: argparse.ArgumentParser, dest: str, title: str) -> None:
        self._sub = parser.add_subparsers(dest=dest, metavar="COMMAND", title=title)
        self._sub.required = True

    def add(
        self,
        name: str,
        handler: Callable[[Context], int] | None,
        summary: str,
        description: str,
        examples: Sequence[str],
        aliases: Sequence[str] = (),
        **kwargs: Any,
    ) -> argparse.ArgumentParser:
        parser = self._sub.add_parser(
            name,
            aliases=list(aliases),
            help=summary,
            description=textwrap.fill(description, HELP_WIDTH),
            epilog=_examples(*examples) if examples else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kwargs,
        )
        if handler is not None:
            parser.set_defaults(handler=handler)
        return parser


def _add_ls_inspect_rm(
    commands: _Subcommands,
    noun: str,
    handlers: tuple[Callable[[Context], int], Callable[[Context], int], Callable[[Context], int]],
    texts: tuple[str, str, str],
    examples: tuple[Sequence[str], Sequence[str]],
) -> None:
    """`ls`, `inspect` and `rm` of a noun, with docker's words and options for every one:
    HANDLERS and TEXTS (descriptions) in that order, EXAMPLES of inspect and rm."""
    ls, inspect, rm = handlers
    plural = f"{noun}s"
    p = commands.add(
        "ls",
        ls,
        f"list {plural}",
        texts[0],
        [f"netdns {noun} ls", f"netdns {noun} ls --format json"],
        aliases=["list"],
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the ids")
    _format_option(p)
    p = commands.add("inspect", inspect, f"show {plural} in detail (JSON)", texts[1], examples[0])
    p.add_argument("names", nargs="+", metavar="NAME")
    _format_option(p, "json")
    p = commands.add("rm", rm, f"remove {plural}", texts[2], examples[1], aliases=["remove"])
    p.add_argument("names", nargs="+", metavar="NAME")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("netdns")
    except Exception:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=textwrap.fill(
            "netdns: embedded DNS and service discovery for container networks. Networks and "
            "containers (network namespaces) as docker makes them, and 127.0.0.11 in each "
            "container answering the names of its networks.",
            HELP_WIDTH,
        ),
        epilog=_examples(
            "netdns network create alpine-net",
            "netdns container create --name alpine1 --network alpine-net",
            "netdns exec alpine1 -- getent hosts alpine1",
            "netdns resolve --from alpine1 alpine1",
            "netdns demo",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    parser.add_argument(
        "--host",
        default=None,
        metavar="unix:///PATH|tcp://HOST:PORT",
        help=f"the daemon's admin API (default ${HOST_ENV}, else {DEFAULT_HOST}); over tcp "
        "the token comes from $NETDNS_TOKEN",
    )
    commands = _Subcommands(parser, "command", "commands")

    # network ...
    network = commands.add(
        "network",
        None,
        "manage networks",
        "Create, list, inspect and remove networks; connect containers to them.",
        ["netdns network ls", "netdns network create --subnet 10.10.0.0/24 app"],
    )
    networks = _Subcommands(network, "network_command", "network commands")
    p = networks.add(
        "create",
        cmd_network_create,
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
    _format_option(p)

    _add_ls_inspect_rm(
        networks,
        "network",
        (cmd_network_ls, cmd_network_inspect, cmd_network_rm),
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

    p = networks.add(
        "connect",
        cmd_network_connect,
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
    _format_option(p)

    p = networks.add(
        "disconnect",
        cmd_network_disconnect,
        "disconnect a container from a network",
        "Disconnect a container from a network; its names there stop answering at once.",
        ["netdns network disconnect alpine-net alpine2"],
    )
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    _format_option(p)

    # container ...
    container = commands.add(
        "container",
        None,
        "manage containers (network namespaces)",
        "A container is a network namespace: netdns makes a named one (`ip netns exec NAME` "
        "enters it) or adopts one made by another runtime (--netns).",
        ["netdns container ls", "netdns container create --name web --network app"],
    )
    containers = _Subcommands(container, "container_command", "container commands")
    p = containers.add(
        "create",
        cmd_container_create,
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
    _format_option(p)

    _add_ls_inspect_rm(
        containers,
        "container",
        (cmd_container_ls, cmd_container_inspect, cmd_container_rm),
        (
            "List containers: id, name, networks and addresses.",
            "Print a JSON array with each container as `docker container inspect` shows its "
            "network part: SandboxKey (the namespace), DNS settings, and each network's addresses.",
            "Disconnect containers from all networks and remove the namespaces netdns made; "
            "prints each name removed.",
        ),
        (["netdns container inspect alpine1"], ["netdns container rm alpine1 alpine2"]),
    )

    # service ...
    service = commands.add(
        "service",
        None,
        "manage services (replicated tasks behind one name)",
        "A service is N tasks, each a container named <svc>.<slot>.<taskid> on the service's "
        "network. `<svc>` answers the service's virtual IP (endpoint mode vip; connections to "
        "it are spread over the tasks) or every task address (dnsrr); `tasks.<svc>` every task "
        "address; `_<port-name>._<proto>.<svc>` SRV one record per task.",
        ["netdns service ls", "netdns service create --name web --network app --replicas 3"],
    )
    services = _Subcommands(service, "service_command", "service commands")
    p = services.add(
        "create",
        cmd_service_create,
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
    _format_option(p)

    p = services.add(
        "scale",
        cmd_service_scale,
        "change the number of tasks",
        "Start or stop tasks until each service has N (stopping the highest slots first); "
        "answers change before the command returns.",
        ["netdns service scale web=5", "netdns service scale web=1 db=2"],
    )
    p.add_argument("scales", nargs="+", metavar="NAME=N")

    _add_ls_inspect_rm(
        services,
        "service",
        (cmd_service_ls, cmd_service_inspect, cmd_service_rm),
        (
            "List services: id, name, mode, running/desired tasks, endpoint mode, ports.",
            "Print a JSON array with each service as `docker service inspect` shows it (Spec, "
            "Endpoint.VirtualIPs, Endpoint.Ports), plus its running Tasks.",
            "Stop every task of the services, give their VIPs back; prints each name removed.",
        ),
        (["netdns service inspect web"], ["netdns service rm web"]),
    )

    # the rest
    p = commands.add(
        "exec",
        cmd_exec,
        "run a command inside a container",
        "Run a command in the container's network namespace and exit with its exit code "
        "(a named namespace through `ip netns exec`, so it sees the container's resolv.conf; "
        "an adopted one through nsenter).",
        ["netdns exec alpine1 -- getent hosts alpine2", "netdns exec alpine1 -- ip addr"],
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")

    p = commands.add(
        "resolve",
        cmd_resolve,
        "what a container would get for a name, and why",
        "Ask the daemon what a query from CONTAINER would get: the answers, the rule "
        "(R-number, see RESOLUTION.md) that decided, the path (local, cache, upstream), and "
        "for a name that is not local the networks that hold it.",
        [
            "netdns resolve --from alpine1 alpine2",
            "netdns resolve --from alpine1 --type AAAA alpine2",
            "netdns resolve --from alpine1 example.com --format json",
        ],
    )
    p.add_argument("--from", dest="source", default="", metavar="CONTAINER")
    p.add_argument("-t", "--type", default="A", help="record type (default %(default)s)")
    p.add_argument("name", metavar="NAME")
    _format_option(p)

    p = commands.add(
        "events",
        cmd_events,
        "show state changes as they happen",
        "Print every state change (network.create, container.create, endpoint.attach, "
        "endpoint.detach, endpoint.update, service.update, ...) with its sequence number: "
        "first what the daemon still holds (the last 10,000), then each new one as it "
        "happens, until Ctrl-C. One JSON object per line (seq, time, type, container, "
        "network, addresses, ..., and the object itself), or with --format text one short "
        "line each. --since resumes after a sequence number (or from a time); events no "
        "longer held show as a gap line. The log starts with the stored state, replayed when "
        "the daemon starts. Endpoints of other cluster hosts carry their host.",
        [
            "netdns events",
            "netdns events --no-follow                 # what is held, then exit",
            "netdns events --since 120                 # resume after seq 120",
            "netdns events --since 10m --until 1m      # from 10 to 1 minutes ago",
            "netdns events --since 2026-01-02T03:04:05Z --format text",
        ],
    )
    p.add_argument(
        "--since",
        default="",
        metavar="SEQ|TIME",
        help="after this sequence number, or from this time: RFC 3339 or a duration ago "
        "(10m, 1h30m, 45s)",
    )
    p.add_argument(
        "--until",
        default="",
        metavar="SEQ|TIME",
        help="up to this sequence number or time, then exit (a future time waits for it)",
    )
    p.add_argument(
        "--no-follow", action="store_true", help="print what the daemon holds, then exit"
    )
    # JSON lines by default: the interface contract (docs/INTERFACE.md) promised them first.
    _format_option(p, "json", "text")

    p = commands.add(
        "querylog",
        cmd_querylog,
        "log a sample of DNS queries",
        "Show or change the share of queries the daemon logs (logger netdns.query, INFO: "
        "container, name, type, rcode, path, upstream, elapsed microseconds). Takes effect "
        "at once, without a restart; 0 is off and costs nothing.",
        [
            "netdns querylog                   # the current setting",
            "netdns querylog --sample 0.01     # one query in a hundred",
            "netdns querylog --sample 1        # every query",
            "netdns querylog --off",
        ],
    )
    rate = p.add_mutually_exclusive_group()
    rate.add_argument(
        "--sample",
        type=sample_rate,
        default=None,
        metavar="RATE",
        help="log this share of queries, 0 to 1",
    )
    rate.add_argument("--off", action="store_true", help="log no queries (--sample 0)")
    _format_option(p, "text", "json")

    commands.add(
        "demo",
        cmd_demo,
        "play docker's standalone-containers networking tutorial, live",
        "Create alpine-net and containers alpine1..alpine4 as docker's tutorial does, show "
        "which names each resolves (real getent in each namespace), disconnect and reconnect "
        "one live, then remove everything it made. Needs a running daemon and root.",
        ["netdns demo"],
    )

    # The daemon's flags (and its --help) belong to its own parser, built in cmd_daemon: main
    # hands it every argument after `daemon`.
    commands.add("daemon", cmd_daemon, "run the daemon", DAEMON_DESCRIPTION, [], add_help=False)
    return parser


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "daemon":
        args.daemon_args = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    ctx = Context(args, out, err)
    try:
        return args.handler(ctx)
    except (ClientError, NetdnsError) as exc:
        return fail(exc, err)
    except KeyboardInterrupt:
        report("interrupted", err)
        return 130
    except BrokenPipeError:
        # `netdns network ls | head`: the reader left; not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
