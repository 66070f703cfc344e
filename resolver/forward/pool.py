"""A small pool of connected UDP sockets per upstream server, shared by forwarded queries (R11).

Opening, connecting and closing a socket for every forwarded query costs more than the query
itself. Here each upstream has up to `size` connected UDP sockets; a query takes a random one,
a random 16-bit id not pending on it, and waits for the reply that the socket's datagram
protocol routes to it. A reply counts only as before (`is_reply_to`): from that upstream (the
socket is connected), QR set, the pending id and the same question; anything else is ignored.

Trade-off against a new source port per query (Kaminsky): with per-query sockets a spoofer
must guess the id and one port out of ~28,000 ephemeral ports for every query. With the pool
the query's port is one of at most `size` ports in use at the moment, and an off-path attacker
who learns them (e.g. by sending queries through us to a server it controls) only has to guess
the id among those ports: about 16 x 65,536 guesses instead of ~28,000 x 65,536. To keep that
window short each socket is retired after `max_uses` queries or `max_age` seconds and replaced
by a fresh one on a new kernel-chosen port; the question check and the cache's bailiwick-free
reply handling are unchanged. Queries made through a custom opener (sandbox namespaces) do not
come here and keep a socket each.

An ICMP error on a pooled socket (port unreachable) fails every query pending on it at once,
as a per-query socket did for its one query; the socket is then retired. The pool belongs to
one event loop; used from another (a new `asyncio.run`), it drops its old sockets first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import cast

from resolver.forward.upstream import (
    HEADER_SIZE,
    Server,
    UpstreamFailed,
    is_reply_to,
    question_of,
    upstream_failures,
)

log = logging.getLogger(__name__)

POOL_SIZE = 16  # sockets per upstream server
MAX_USES = 100  # queries sent on one socket before it is retired (a new port)
MAX_AGE = 10.0  # seconds a socket is used for before it is retired


@dataclass(slots=True)
class _Pending:
    question: bytes
    future: asyncio.Future[bytes]


@dataclass(eq=False, slots=True)
class PooledSocket(asyncio.DatagramProtocol):
    """One connected UDP socket and the queries waiting for a reply on it."""

    server: Server
    sock: socket.socket
    born: float
    port: int  # the kernel-chosen source port
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pending: dict[int, _Pending] = field(default_factory=dict)
    uses: int = 0  # queries sent or about to be
    users: int = 0  # queries holding it now (waiting for it to be ready, or for a reply)
    transport: asyncio.DatagramTransport | None = None
    failed: str = ""  # why the socket is unusable ("" while it is fine)
    retired: bool = False

    def usable(self, now: float, max_uses: int, max_age: float) -> bool:
        return (
            not self.failed
            and not self.retired
            and self.uses < max_uses
            and now - self.born < max_age
        )

    def free_id(self) -> int:
        """A random id not pending on this socket (at most `max_uses` are, so this ends soon)."""
        while True:
            query_id = secrets.randbits(16)
            if query_id not in self.pending:
                return query_id

    # -- asyncio.DatagramProtocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.ready.set()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) < HEADER_SIZE:
            return
        query_id = int.from_bytes(data[:2], "big")
        waiting = self.pending.get(query_id)
        if waiting is None or not is_reply_to(data, query_id, waiting.question):
            log.debug("ignored a UDP datagram from %s that does not answer our query", self.server)
            return
        del self.pending[query_id]
        if not waiting.future.done():
            waiting.future.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable: nothing listens there. Fail over now rather than at the
        # timeout; forging this needs one of the pool's ports, and gains only that.
        if isinstance(exc, ConnectionRefusedError):
            self.fail("unreachable")
        else:
            self.fail(f"error: {getattr(exc, 'strerror', None) or exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail("closed")

    def fail(self, reason: str) -> None:
        """Fail every query pending here with `reason`; the socket is not used again."""
        self.failed = self.failed or reason
        self.ready.set()  # queries waiting for the endpoint see `failed`
        pending, self.pending = self.pending, {}
        for waiting in pending.values():
            if not waiting.future.done():
                waiting.future.set_exception(UpstreamFailed(reason))

    def close(self) -> None:
        self.fail("closed")
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(RuntimeError):  # its loop is closed already
                self.transport.close()
        self.sock.close()


class UdpPool:
    """Connected UDP sockets per upstream server; `exchange` sends one query on one of them."""

    def __init__(
        self, *, size: int = POOL_SIZE, max_uses: int = MAX_USES, max_age: float = MAX_AGE
    ) -> None:
        self.size = size
        self.max_uses = max_uses
        self.max_age = max_age
        self._slots: dict[Server, list[PooledSocket | None]] = {}
        self._retiring: set[PooledSocket] = set()  # out of the pool, replies still awaited
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: set[asyncio.Task[None]] = set()  # endpoint set-ups in flight
        self.sockets_opened = 0  # for metrics and tests

    def sockets(self) -> list[PooledSocket]:
        """Every socket still open: in the pool or retired with queries pending."""
        live = [s for slots in self._slots.values() for s in slots if s is not None]
        return live + list(self._retiring)

    async def exchange(self, server: Server, query: bytes, *, timeout: float) -> bytes:
        """Send `query` (any id) to `server`; its reply (its id, not the query's) or
        UpstreamFailed ("timeout", "unreachable", ...), as upstream.exchange_udp."""
        question = question_of(query)
        if question is None:
            raise UpstreamFailed("query has no question")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self.close()
            self._loop = loop
        pooled = self._take(server, loop)
        query_id = -1
        future: asyncio.Future[bytes] = loop.create_future()
        try:
            with upstream_failures():
                async with asyncio.timeout(timeout):
                    await pooled.ready.wait()
                    if pooled.failed:
                        raise UpstreamFailed(pooled.failed)
                    query_id = pooled.free_id()
                    pooled.pending[query_id] = _Pending(question, future)
                    assert pooled.transport is not None
                    pooled.transport.sendto(query_id.to_bytes(2, "big") + query[2:])
                    return await future
        finally:
            waiting = pooled.pending.get(query_id)
            if waiting is not None and waiting.future is future:
                del pooled.pending[query_id]
            future.cancel()  # a no-op when done; no future is left behind
            pooled.users -= 1
            self._settle(pooled)

    def _take(self, server: Server, loop: asyncio.AbstractEventLoop) -> PooledSocket:
        """A random socket of `server`'s pool, replaced first when it is used up, too old or
        failed; the caller holds it (`users`) until its exchange ends."""
        slots = self._slots.setdefault(server, [None] * self.size)
        index = secrets.randbelow(self.size)
        pooled = slots[index]
        if pooled is None or not pooled.usable(time.monotonic(), self.max_uses, self.max_age):
            if pooled is not None:
                self._retire(pooled)
            pooled = self._open(server, loop)
            slots[index] = pooled
        # Counted now, not once the socket is ready: queries that pile onto a socket still
        # being set up must not take it past `max_uses`, nor see it closed under them.
        pooled.uses += 1
        pooled.users += 1
        return pooled

    def _open(self, server: Server, loop: asyncio.AbstractEventLoop) -> PooledSocket:
        """A new socket on a new kernel-chosen port; its endpoint is set up in the background
        and `ready` tells when (until then queries wait on it)."""
        try:
            sock = socket.socket(server.family, socket.SOCK_DGRAM)
        except OSError as exc:
            raise UpstreamFailed(f"socket: {exc.strerror or exc}") from None
        sock.setblocking(False)
        try:
            # Connected: the kernel drops datagrams from any other address or port.
            sock.connect(server.address)
        except OSError as exc:
            sock.close()
            raise UpstreamFailed(f"error: {exc.strerror or exc}") from None
        pooled = PooledSocket(server, sock, time.monotonic(), sock.getsockname()[1])
        self.sockets_opened += 1
        # A task of its own, so a query cancelled by its timeout cannot leave the endpoint
        # half made with other queries waiting on `ready`.
        task = loop.create_task(self._start(pooled, loop))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)
        return pooled

    @staticmethod
    async def _start(pooled: PooledSocket, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await loop.create_datagram_endpoint(lambda: pooled, sock=pooled.sock)
        except OSError as exc:
            pooled.fail(f"error: {exc.strerror or exc}")
            pooled.sock.close()
        except Exception as exc:
            # Anything else must still release the queries waiting on `ready`.
            pooled.fail(f"error: {exc}")
            pooled.sock.close()
            raise

    def _retire(self, pooled: PooledSocket) -> None:
        pooled.retired = True
        if pooled.users:
            self._retiring.add(pooled)
        else:
            pooled.close()

    def _settle(self, pooled: PooledSocket) -> None:
        """Close a retired socket once nothing waits on it; drop a failed one from the pool."""
        if pooled.failed and not pooled.retired:
            slots = self._slots.get(pooled.server, [])
            for index, candidate in enumerate(slots):
                if candidate is pooled:
                    slots[index] = None
            self._retire(pooled)
        elif pooled.retired and not pooled.users:
            self._retiring.discard(pooled)
            pooled.close()

    def close(self) -> None:
        """Close every socket; queries still pending fail with "closed"."""
        for task in self._starting:
            if not task.get_loop().is_closed():
                task.cancel()
        self._starting.clear()
        for pooled in self.sockets():
            pooled.close()
        self._slots.clear()
        self._retiring.clear()
