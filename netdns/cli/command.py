"""What every verb of the `netdns` command shares: its context, its output, its errors (the
one place an API status becomes an exit code) and the parser helpers each noun registers its
verbs with."""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from drivers.errors import Conflict, Invalid, NetdnsError, NotFound, Unavailable, Unsupported
from netdns import docker_json
from netdns.client import Client, ClientError

PROG = "netdns"
HELP_WIDTH = 78

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


# -- the context of a verb ---------------------------------------------------------------------


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


Handler = Callable[[Context], int]

# -- output -----------------------------------------------------------------------------------


def print_json(value: Any, out: TextIO) -> None:
    print(json.dumps(value, indent=4), file=out)


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Columns padded as docker pads them: the widest cell plus three spaces."""
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    for line in [list(columns), *rows]:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=True)]
        print("   ".join(cells).rstrip(), file=out)


def print_created(ctx: Context, created: dict, id_key: str = "Id") -> int:
    if ctx.json:
        print_json(created, ctx.out)
    else:
        print(created[id_key], file=ctx.out)
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


def print_if_json(ctx: Context, value: Any) -> int:
    """Verbs that print nothing on success in text (docker's connect/disconnect)."""
    if ctx.json:
        print_json(value, ctx.out)
    return 0


# -- the parser -------------------------------------------------------------------------------


def examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def format_option(parser: argparse.ArgumentParser, *choices: str) -> None:
    parser.add_argument(
        "--format",
        choices=choices or ("table", "json"),
        default=(choices or ("table",))[0],
        help="output format (default %(default)s)",
    )


class Subcommands:
    """Adds subcommands with a description, examples and a handler each."""

    def __init__(self, parser: argparse.ArgumentParser, dest: str, title: str) -> None:
        self._sub = parser.add_subparsers(dest=dest, metavar="COMMAND", title=title)
        self._sub.required = True

    def add(
        self,
        name: str,
        handler: Handler | None,
        summary: str,
        description: str,
        example_lines: Sequence[str],
        aliases: Sequence[str] = (),
        **kwargs: Any,
    ) -> argparse.ArgumentParser:
        parser = self._sub.add_parser(
            name,
            aliases=list(aliases),
            help=summary,
            description=textwrap.fill(description, HELP_WIDTH),
            epilog=examples(*example_lines) if example_lines else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kwargs,
        )
        if handler is not None:
            parser.set_defaults(handler=handler)
        return parser

    def noun(
        self, name: str, summary: str, description: str, example_lines: Sequence[str]
    ) -> Subcommands:
        """A noun (`network`, `container`, ...): a subcommand whose own subcommands are verbs."""
        parser = self.add(name, None, summary, description, example_lines)
        return Subcommands(parser, f"{name}_command", f"{name} commands")


@dataclass(frozen=True, slots=True)
class Listing:
    """How a noun's `ls`, `inspect` and `rm` reach the daemon, and its docker-shaped rows."""

    items: Callable[[Client], list[dict]]
    row: Callable[[dict], dict]
    columns: Sequence[str]
    inspect: Callable[[Client, str], Any]
    remove: Callable[[Client, str], Any]


def add_ls_inspect_rm(
    verbs: Subcommands,
    noun: str,
    listing: Listing,
    texts: tuple[str, str, str],
    example_lines: tuple[Sequence[str], Sequence[str]],
) -> None:
    """`ls`, `inspect` and `rm` of a noun, with docker's words, options and output for every
    one: TEXTS (descriptions) in that order, EXAMPLE_LINES of inspect and rm."""
    plural = f"{noun}s"

    def ls(ctx: Context) -> int:
        rows = [listing.row(item) for item in listing.items(ctx.client)]
        return print_rows(ctx, rows, listing.columns)

    def inspect(ctx: Context) -> int:
        """docker's inspect: the array of those found, one error line for each one not."""
        found, code = [], 0
        for name in ctx.args.names:
            try:
                found.append(listing.inspect(ctx.client, name))
            except ClientError as exc:
                code = fail(exc, ctx.err)
        print_json(found, ctx.out)
        return code

    def rm(ctx: Context) -> int:
        """docker's rm: remove each, print each name removed; go on past failures."""
        code = 0
        for name in ctx.args.names:
            try:
                listing.remove(ctx.client, name)
            except ClientError as exc:
                code = fail(exc, ctx.err)
            else:
                print(name, file=ctx.out)
        return code

    p = verbs.add(
        "ls",
        ls,
        f"list {plural}",
        texts[0],
        [f"netdns {noun} ls", f"netdns {noun} ls --format json"],
        aliases=["list"],
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the ids")
    format_option(p)
    p = verbs.add("inspect", inspect, f"show {plural} in detail (JSON)", texts[1], example_lines[0])
    p.add_argument("names", nargs="+", metavar="NAME")
    format_option(p, "json")
    p = verbs.add("rm", rm, f"remove {plural}", texts[2], example_lines[1], aliases=["remove"])
    p.add_argument("names", nargs="+", metavar="NAME")
