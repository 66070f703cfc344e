"""The Python ceiling: a canned-answer UDP responder on uvloop, the least a Python DNS server
can do per query.

    python -m bench.ceiling --netns /run/netns/NAME

It listens where netdns listens (127.0.0.11 inside the namespace, 127.0.0.11:53 redirected there
by the same nftables rule) and answers every datagram with the same A record behind the query's
own id and question: no parsing beyond finding the question's end, no table, no cache, one
`sendto` per reply. The bench measures it beside netdns, so every report says what share of this
limit netdns reaches on the same machine, through the same redirect, in the same run. It is not
a DNS server: it ignores the question's type, drops any EDNS record, and never answers TCP.
Prints "ready <address> <port>" on stdout once it listens; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from bench.serve import serve_in_netns
from resolver.netns import LISTENER_ADDRESS, ListenerSockets

log = logging.getLogger(__name__)

HEADER_SIZE = 12
# QR, RD, RA, NOERROR; one question, one answer, nothing else.
FLAGS_AND_COUNTS = b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
# The owner a pointer to the question's name, A IN, TTL 5, 4 bytes of an address.
CANNED_ANSWER = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04\x0a\x80\x00\x02"


def canned_reply(query: bytes) -> bytes | None:
    """The canned answer behind QUERY's id and question; None for a datagram without one."""
    if len(query) < HEADER_SIZE + 5:
        return None
    # The question's name ends at its first zero octet: plain labels hold none (dnsperf's do not).
    name_end = query.find(b"\x00", HEADER_SIZE)
    if name_end < 0 or name_end + 5 > len(query):
        return None
    return query[:2] + FLAGS_AND_COUNTS + query[HEADER_SIZE : name_end + 5] + CANNED_ANSWER


class CannedProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.answered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = canned_reply(data)
        if reply is not None:
            self.answered += 1
            self.transport.sendto(reply, addr)  # type: ignore[union-attr]


async def serve(sockets: ListenerSockets) -> None:
    sockets.tcp.close()  # UDP only: dnsperf asks over UDP
    udp, port = sockets.udp, sockets.port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    udp.setblocking(False)
    transport, protocol = await loop.create_datagram_endpoint(CannedProtocol, sock=udp)
    try:
        print(f"ready {LISTENER_ADDRESS} {port}", flush=True)
        await stop.wait()
        log.info("stopping: answered %d queries", protocol.answered)
    finally:
        transport.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ceiling",
        description="Answer every UDP query on 127.0.0.11 inside NETNS (port 53 redirected by "
        "nftables, as for netdns) with one canned A record: the bench's Python ceiling.",
    )
    parser.add_argument("--netns", required=True, help="namespace path (/run/netns/NAME)")
    parser.add_argument("--log-level", default="info", help="logging level (stderr)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="bench.ceiling: %(message)s"
    )
    return serve_in_netns(args.netns, serve)


if __name__ == "__main__":
    sys.exit(main())
