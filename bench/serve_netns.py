"""The netdns listener of the bench, inside a client namespace, reached the way a container
reaches it: 127.0.0.11:53, redirected by nftables to the listener's own port.

    python -m bench.serve_netns --netns /run/netns/NAME --names N --upstream IP

This is bench/serve.py's server with its sockets made where the daemon makes them:
`resolver.netns.open_listener_sockets` binds 127.0.0.11 inside the namespace and
`install_redirect` sends 127.0.0.11:53 there, while this process (and so the forwarder's
sockets) stays in its own namespace, as the daemon does. The name table is bench.serve's
(`bench_events`: network `benchnet`, containers c0..c{N-1}, the client sandbox) plus the shared
alias of workload W3 on the first ten containers, applied as EndpointUpdated events.

It stands apart from bench/serve.py only because that file is being reworked for the hot path
right now; once that settles, a `--netns PATH` option there can replace this module. Until then
the Resolver/Forwarder composition below must follow bench.serve.serve's.

Prints "ready 127.0.0.11 PORT" (PORT: the listener's own) once both sockets listen and the
redirect is in place; stops on SIGTERM or SIGINT and removes the redirect.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
from collections.abc import Iterator

from bench.serve import CLIENT_ID, bench_events
from bench.workloads import Zone
from drivers.errors import NetdnsError
from drivers.model import EndpointAttached, EndpointUpdated, Event
from resolver.forward import AnswerCache, Forwarder
from resolver.names import NameTable
from resolver.netns import (
    LISTENER_ADDRESS,
    ListenerSockets,
    install_redirect,
    open_listener_sockets,
    remove_redirect,
)
from resolver.resolve import Resolver
from resolver.server import Listener, run

log = logging.getLogger(__name__)


def netns_events(zone: Zone) -> Iterator[Event]:
    """bench.serve's events, then the shared alias (W3) on its members, as an update would."""
    shared = {
        name: zone.aliases(index)
        for index, name in enumerate(zone.container_names())
        if index in zone.shared_members()
    }
    updates: list[Event] = []
    for event in bench_events(zone):
        yield event
        if isinstance(event, EndpointAttached) and event.endpoint.name in shared:
            aliases = shared[event.endpoint.name]
            updates.append(EndpointUpdated(dataclasses.replace(event.endpoint, aliases=aliases)))
    yield from updates


async def serve(
    sockets: ListenerSockets, zone: Zone, upstream: str, *, local_ttl: int, cache: bool
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    table = NameTable()
    table.apply_all(netns_events(zone))
    answer_cache = AnswerCache() if cache else None
    forwarder = Forwarder(default_servers=lambda: [upstream], cache=answer_cache)
    resolver = Resolver(table, forwarder, local_ttl=local_ttl)
    # As bench.serve and the daemon do: the hot path first, the task-per-query handler when
    # it declines.
    listener = await Listener.start(
        resolver.handle,
        CLIENT_ID,
        udp_sock=sockets.udp,
        tcp_sock=sockets.tcp,
        fast=resolver.fast,
    )
    try:
        print(f"ready {LISTENER_ADDRESS} {sockets.port}", flush=True)
        await stop.wait()
        stats = listener.stats
        cached = (
            f"cache hits {answer_cache.hits}, misses {answer_cache.misses}"
            if answer_cache is not None
            else "no cache"
        )
        hot = resolver.hot.stats if resolver.hot is not None else None
        if hot is not None:
            cached += f", hot path answered {stats.fast_answers} (declined {hot.declined})"
        # bench/peers/netdns.py reports this line: it shows whether queries went where meant.
        log.info(
            "stopping: %d udp and %d tcp queries, %d dropped, %d handler errors, "
            "%d forwards refused (in-flight cap), %s",
            stats.udp_queries,
            stats.tcp_queries,
            stats.dropped,
            stats.handler_errors,
            forwarder.overloaded,
            cached,
        )
    finally:
        await listener.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serve_netns",
        description="Run the bench's netdns listener on 127.0.0.11 inside the network "
        "namespace NETNS, with 127.0.0.11:53 redirected to it, over a table of N containers "
        "c0..c{N-1}; other names go to --upstream from this process's namespace. Prints "
        "'ready 127.0.0.11 PORT' when listening; stops on SIGTERM.",
    )
    parser.add_argument("--netns", required=True, help="namespace path, /run/netns/NAME")
    parser.add_argument("--names", type=int, default=1000, help="containers in the table")
    parser.add_argument("--upstream", required=True, help="upstream server, IP[:PORT]")
    parser.add_argument("--local-ttl", type=int, default=5, help="TTL of local answers (R9)")
    parser.add_argument("--no-cache", action="store_true", help="no answer cache (R13)")
    parser.add_argument("--log-level", default="warning", help="logging level (stderr)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="bench.serve_netns: %(message)s"
    )
    zone = Zone(names=args.names)
    try:
        sockets = open_listener_sockets(args.netns)
        install_redirect(args.netns, sockets.port)
    except NetdnsError as exc:
        log.error("cannot listen in %s: %s", args.netns, exc)
        return exc.exit_code
    try:
        run(serve(sockets, zone, args.upstream, local_ttl=args.local_ttl, cache=not args.no_cache))
    finally:
        with contextlib.suppress(NetdnsError):
            remove_redirect(args.netns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
