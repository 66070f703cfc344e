"""The verbs that look at a running daemon: `resolve` (what a container would get, and why),
`events` (state changes as they happen) and `querylog` (a sample of the queries)."""

from __future__ import annotations

import argparse
import json
import signal
from typing import Any

from netdns.cli.command import Context, Subcommands, format_option, print_json


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


def register(commands: Subcommands) -> None:
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
    format_option(p)

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
    format_option(p, "json", "text")

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
    format_option(p, "text", "json")
