"""A standalone netdns listener for benchmarks: one process, uvloop, a name table of N containers.

    python -m bench.serve --address 127.x.y.z --names N --upstream 127.a.b.c [--port 53]
    python -m bench.serve --netns /run/netns/NAME --names N --upstream IP

The name table is built only from events, as the daemon builds it: one network `benchnet`, the
containers c0..c{N-1} on it (addresses from bench.workloads.Zone), the shared alias of workload
W3 on the first ten, and the client sandbox the listener serves. Non-local names go to
`--upstream` (the bench's own dnsmasq). With --netns the sockets are made where the daemon
makes them: 127.0.0.11 inside that namespace, with 127.0.0.11:53 redirected there by nftables,
while this process (and so the forwarder) stays in its own namespace. Prints
"ready <address> <port>" on stdout once both sockets listen; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from bench.workloads import CONTAINER_GATEWAY, CONTAINER_SUBNET, Zone
from drivers.errors import NetdnsError
from drivers.model import (
    Driver,
    Endpoint,
    EndpointAttached,
    EndpointUpdated,
    Event,
    IPAMConfig,
    Network,
    NetworkCreated,
    Sandbox,
    SandboxCreated,
)
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

NETWORK = Network(
    id="n-benchnet",
    name="benchnet",
    driver=Driver.BRIDGE,
    ipam=(IPAMConfig(CONTAINER_SUBNET, CONTAINER_GATEWAY),),
)
CLIENT_NAME = "bench-client"


def container_id(name: str) -> str:
    """A 64-hex id derived from the name, shaped like a docker container id."""
    return hashlib.sha256(name.encode()).hexdigest()


CLIENT_ID = container_id(CLIENT_NAME)


def bench_events(zone: Zone) -> Iterator[Event]:
    """The network, its N containers and the client sandbox, as the driver core would emit,
    then the shared alias (W3) on its members, as an alias update would."""
    yield NetworkCreated(NETWORK)
    members = [(name, zone.container_address(i)) for i, name in enumerate(zone.container_names())]
    # The client takes the address after the last container.
    members.append((CLIENT_NAME, zone.container_address(zone.names)))
    updates: list[Event] = []
    for index, (name, address) in enumerate(members):
        sandbox = Sandbox(id=container_id(name), name=name)
        endpoint = Endpoint(
            id=f"ep-{name}", network_id=NETWORK.id, sandbox_id=sandbox.id, name=name, ipv4=address
        )
        yield SandboxCreated(sandbox)
        yield EndpointAttached(endpoint)
        if name != CLIENT_NAME and index in zone.shared_members():
            aliases = zone.aliases(index)
            updates.append(EndpointUpdated(dataclasses.replace(endpoint, aliases=aliases)))
    yield from updates


def bench_table(zone: Zone) -> NameTable:
    table = NameTable()
    table.apply_all(bench_events(zone))
    return table


async def serve(
    where: tuple[str, int] | ListenerSockets,
    zone: Zone,
    upstream: str,
    *,
    local_ttl: int,
    cache: bool,
) -> None:
    """Serve on (address, port), or on sockets already made inside a namespace."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # As the daemon does: the answer cache is on unless --no-cache (R13).
    answer_cache = AnswerCache() if cache else None
    forwarder = Forwarder(default_servers=lambda: [upstream], cache=answer_cache)
    resolver = Resolver(bench_table(zone), forwarder, local_ttl=local_ttl)
    # As the daemon does: the hot path first, then forwarding by callbacks, the task-per-query
    # handler for what both decline.
    if isinstance(where, ListenerSockets):
        listener = await Listener.start(
            resolver.handle, CLIENT_ID, udp_sock=where.udp, tcp_sock=where.tcp,
            fast=resolver.fast, soon=resolver.start,
        )  # fmt: skip
        shown = (LISTENER_ADDRESS, where.port)
    else:
        listener = await Listener.start(
            resolver.handle, CLIENT_ID, *where, fast=resolver.fast, soon=resolver.start
        )
        shown = (listener.host, listener.port)
    try:
        # The parent waits for this line: it means both sockets accept queries now.
        print(f"ready {shown[0]} {shown[1]}", flush=True)
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
        # bench/lab.py reports this line: it shows whether the queries went where meant.
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
        prog="python -m bench.serve",
        description="Run one netdns listener (uvloop) over a table of N containers c0..c{N-1}, "
        "forwarding other names to --upstream. Prints 'ready ADDRESS PORT' when listening; "
        "stops on SIGTERM.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--address", help="loopback address to listen on")
    where.add_argument(
        "--netns",
        help="namespace path (/run/netns/NAME): listen on 127.0.0.11 there, port 53 redirected",
    )
    parser.add_argument("--port", type=int, default=53, help="UDP+TCP port (0: any; default 53)")
    parser.add_argument("--names", type=int, default=1000, help="containers in the table")
    parser.add_argument("--upstream", required=True, help="upstream server, IP[:PORT]")
    parser.add_argument("--local-ttl", type=int, default=5, help="TTL of local answers (R9)")
    parser.add_argument("--no-cache", action="store_true", help="no answer cache (R13)")
    parser.add_argument("--log-level", default="warning", help="logging level (stderr)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="bench.serve: %(message)s"
    )
    zone = Zone(names=args.names)
    options = {"local_ttl": args.local_ttl, "cache": not args.no_cache}
    if args.address:
        run(serve((args.address, args.port), zone, args.upstream, **options))
        return 0
    return serve_in_netns(
        args.netns, lambda sockets: serve(sockets, zone, args.upstream, **options)
    )


def serve_in_netns(
    netns: str, serving: Callable[[ListenerSockets], Coroutine[Any, Any, None]]
) -> int:
    """Run SERVING on listener sockets made inside NETNS, 127.0.0.11:53 redirected to them,
    the redirect removed at the end; the exit code (a NetdnsError's when they cannot be made)."""
    try:
        sockets = open_listener_sockets(netns)
        install_redirect(netns, sockets.port)
    except NetdnsError as exc:
        log.error("cannot listen in %s: %s", netns, exc)
        return exc.exit_code
    try:
        run(serving(sockets))
    finally:
        with contextlib.suppress(NetdnsError):
            remove_redirect(netns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
