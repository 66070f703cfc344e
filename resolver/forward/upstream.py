"""One exchange with one upstream server, over UDP or TCP (R11).

Each exchange opens a fresh socket, so the kernel picks a random source port, and sends the
query under a fresh random id. A reply counts only when it comes from that upstream (the socket
is connected to it), has QR set, that id and the same question (name case-insensitively, type,
class); anything else is ignored and the wait goes on until the timeout, so a spoofer can
neither slip an answer in nor make the exchange fail early. Sockets come from an `Opener`, so
a caller can create them inside a sandbox's network namespace.

The forwarder's own UDP tries without an opener share the connected sockets of
resolver/forward/pool.py instead; its docstring weighs the trade-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from drivers.errors import Invalid
from resolver.wire import HEADER_SIZE, QR_BIT, question_of

log = logging.getLogger(__name__)

Opener = Callable[[int, int], socket.socket]  # (family, type) -> socket

DNS_PORT = 53
UDP_RECV_SIZE = 65535  # oversized UDP replies are accepted (R11)


@dataclass(frozen=True, slots=True)
class Server:
    """An upstream's address; `str()` gives the canonical "IP:PORT" / "[IPv6]:PORT" form."""

    host: str
    port: int = DNS_PORT
    # str() of it, made once: forwarded queries key the cache and the counters with it.
    text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.family == socket.AF_INET6:
            text = f"[{self.host}]:{self.port}"
        else:
            text = f"{self.host}:{self.port}"
        object.__setattr__(self, "text", text)

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __str__(self) -> str:
        return self.text


def parse_server(text: str) -> Server:
    """Parse "IP", "IP:PORT", "IPv6" or "[IPv6]:PORT" (port 53 unless given); Invalid if bad."""
    spec = text.strip()
    port_text = ""
    if spec.startswith("["):
        host, bracket, rest = spec[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise Invalid(f"upstream {text!r}: expected [IPv6]:PORT, e.g. [2001:db8::1]:53")
        port_text = rest[1:] if rest else str(DNS_PORT)
    elif spec.count(":") == 1:
        host, _, port_text = spec.partition(":")
    else:
        host, port_text = spec, str(DNS_PORT)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise Invalid(
            f"upstream {text!r}: {host!r} is not an IP address; give IP, IP:PORT, IPv6 or "
            "[IPv6]:PORT (names are not resolved)"
        ) from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise Invalid(f"upstream {text!r}: scoped IPv6 addresses (%zone) are not supported")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise Invalid(f"upstream {text!r}: port {port_text!r} must be a number from 1 to 65535")
    return Server(str(address), int(port_text))


class UpstreamFailed(Exception):
    """One exchange got no acceptable reply; `reason` is short ("timeout", "unreachable", ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_reply_to(data: bytes, query_id: int, question: bytes) -> bool:
    return (
        len(data) >= HEADER_SIZE
        and data[2] & QR_BIT != 0
        and int.from_bytes(data[:2], "big") == query_id
        and question_of(data) == question
    )


def _with_fresh_id(query: bytes) -> tuple[int, bytes]:
    query_id = secrets.randbits(16)
    return query_id, query_id.to_bytes(2, "big") + query[2:]


def _prepare(
    query: bytes, opener: Opener | None, server: Server, kind: int
) -> tuple[bytes, int, bytes, socket.socket]:
    """The query's question, a fresh id and the query with it, and a new non-blocking socket
    (a new one per query, so the kernel picks a new random source port)."""
    question = question_of(query)
    if question is None:
        raise UpstreamFailed("query has no question")
    query_id, packet = _with_fresh_id(query)
    try:
        sock = (opener or socket.socket)(server.family, kind)
    except OSError as exc:
        raise UpstreamFailed(f"socket: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return question, query_id, packet, sock


async def exchange_udp(
    server: Server,
    query: bytes,
    *,
    timeout: float,
    opener: Opener | None = None,
) -> bytes:
    """Send `query` (any id) over UDP; the upstream's reply (its id, not the query's)."""
    question, query_id, packet, sock = _prepare(query, opener, server, socket.SOCK_DGRAM)
    loop = asyncio.get_running_loop()
    # ICMP port unreachable fails over at once rather than at the timeout; forging it needs
    # our random source port, and gains only that.
    try:
        with upstream_failures(refused="unreachable"):
            async with asyncio.timeout(timeout):
                # Connected: the kernel drops datagrams from any other address or port.
                sock.connect(server.address)
                await loop.sock_sendall(sock, packet)
                while True:
                    data = await loop.sock_recv(sock, UDP_RECV_SIZE)
                    if is_reply_to(data, query_id, question):
                        return data
                    log.debug("ignored a UDP datagram from %s not answering our query", server)
    finally:
        sock.close()


@contextlib.contextmanager
def upstream_failures(*, refused: str | None = None) -> Iterator[None]:
    """Timeouts and socket errors of one exchange as UpstreamFailed, named for the tries log.

    `refused`: the reason for ConnectionRefusedError, when the transport tells it apart."""
    try:
        yield
    except TimeoutError:
        raise UpstreamFailed("timeout") from None
    except ConnectionRefusedError as exc:
        if refused is None:
            raise UpstreamFailed(f"error: {exc.strerror or exc}") from None
        raise UpstreamFailed(refused) from None
    except OSError as exc:
        raise UpstreamFailed(f"error: {exc.strerror or exc}") from None


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = await loop.sock_recv(sock, size - len(chunks))
        if not chunk:
            raise UpstreamFailed("closed")
        chunks += chunk
    return bytes(chunks)


async def exchange_tcp(
    server: Server, query: bytes, *, timeout: float, opener: Opener | None = None
) -> bytes:
    """Send `query` over TCP (2-byte length framing); the upstream's reply, as exchange_udp."""
    question, query_id, packet, sock = _prepare(query, opener, server, socket.SOCK_STREAM)
    loop = asyncio.get_running_loop()
    try:
        with upstream_failures(refused="refused connection"):
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, server.address)
                await loop.sock_sendall(sock, len(packet).to_bytes(2, "big") + packet)
                while True:
                    size = int.from_bytes(await _recv_exactly(loop, sock, 2), "big")
                    data = await _recv_exactly(loop, sock, size)
                    if is_reply_to(data, query_id, question):
                        return data
                    log.debug("ignored a TCP message from %s not answering our query", server)
    finally:
        sock.close()
