"""The verbs that run something: `exec` (a command inside a container), `demo` (docker's
networking tutorial, live) and `daemon` (the daemon itself, with its own flags)."""

from __future__ import annotations

import argparse
import subprocess
import textwrap
from collections.abc import Sequence

from drivers.errors import Invalid, NetdnsError
from netdns.cli.command import HELP_WIDTH, PROG, Context, Subcommands

NAMED_NETNS_DIR = "/run/netns/"

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


def register_exec(commands: Subcommands) -> None:
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


def register_demo_and_daemon(commands: Subcommands) -> None:
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
