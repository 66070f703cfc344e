"""The Python ceiling: a canned-answer UDP responder on uvloop, the least a Python DNS server
can do per query.

    python -m bench.ceiling --netns /run/netns/NAME

It listens where netdns listens (127.0.0.11 inside the namespace, 127.0.0.11:53 redirected there
by the same nftables rule) and answers every datagram with the same A record behind the query's
own id and question: no parsing beyond finding the question's end, no table, no cache, the
datagrams read and written in batches as netdns's listeners do (resolver/mmsg.py). The bench
measures it beside netdns, so every report says what share of this limit netdns reaches on the
same machine, through the same redirect, in the same run. It is not a DNS server: it ignores
the question's type, drops any EDNS record, and never answers TCP.
Prints "ready <address> <port>" on stdout once it listens; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys

from bench.serve import serve_in_netns
from resolver import mmsg
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


class Canned:
    """Reads the socket as netdns's listeners do (resolver/mmsg.py: a batch of datagrams per
    recvmmsg, the replies in one sendmmsg), so the ceiling is the limit of the same I/O."""

    def __init__(self, sock: socket.socket) -> None:
        self.fd = sock.fileno()
        self.batch = mmsg.thread_batch()
        self.answered = 0

    def readable(self) -> None:
        replies = []
        for data, address in self.batch.receive(self.fd):
            reply = canned_reply(data)
            if reply is not None:
                replies.append((address, reply))
        if replies:
            self.answered += self.batch.send(self.fd, replies)


async def serve(sockets: ListenerSockets) -> None:
    sockets.tcp.close()  # UDP only: dnsperf asks over UDP
    udp, port = sockets.udp, sockets.port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    udp.setblocking(False)
    canned = Canned(udp)
    loop.add_reader(canned.fd, canned.readable)
    try:
        print(f"ready {LISTENER_ADDRESS} {port}", flush=True)
        await stop.wait()
        log.info("stopping: answered %d queries", canned.answered)
    finally:
        loop.remove_reader(canned.fd)
        udp.close()


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
