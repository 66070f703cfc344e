"""The `netdns` parser, made of every noun's and verb's own registration, and `main`."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import TextIO

from drivers.errors import NetdnsError
from netdns.cli import container, network, observe, run, service
from netdns.cli.command import HELP_WIDTH, PROG, Context, Subcommands, examples, fail, report
from netdns.client import DEFAULT_HOST, HOST_ENV, ClientError


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
        epilog=examples(
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
    commands = Subcommands(parser, "command", "commands")
    # In the order `netdns --help` lists them.
    for part in (network, container, service):
        part.register(commands)
    run.register_exec(commands)
    observe.register(commands)
    run.register_demo_and_daemon(commands)
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
