"""A small pool of connected UDP sockets per upstream server, shared by forwarded queries (R11).

Opening, connecting and closing a socket for every forwarded query costs more than the query
itself. Here each upstream has up to `size` connected UDP sockets; a query takes a random one,
a random 16-bit id not pending on it, and its reply is routed to it by that id. A reply counts
only as before (`is_reply_to`): from that upstream (the socket is connected), QR set, the
pending id and the same question; anything else is ignored.

Nothing is made per query but the pending entry and its timer: `send` writes the datagram
at once and returns; the socket's reader (a plain file descriptor callback on the event loop,
no transport, no task, no future) reads each reply and calls the query's `on_reply` from there,
and the timer calls `on_failure("timeout")`. `exchange` is the same as a coroutine, for callers
that await.

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
one event loop; used again once that loop is closed (a new `asyncio.run`), it drops its old
sockets first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from resolver.forward.entropy import Entropy
from resolver.forward.upstream import UDP_RECV_SIZE, Server, UpstreamFailed, is_reply_to
from resolver.wire import HEADER_SIZE, question_of

log = logging.getLogger(__name__)

POOL_SIZE = 16  # sockets per upstream server
MAX_USES = 100  # queries sent on one socket before it is retired (a new port)
MAX_AGE = 10.0  # seconds a socket is used for before it is retired
READS_PER_WAKEUP = 64  # replies read in one go before the loop serves others

OnReply = Callable[[bytes], None]
OnFailure = Callable[[str], None]


@dataclass(slots=True, eq=False)
class _Pending:
    question: bytes
    on_reply: OnReply
    on_failure: OnFailure
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False, slots=True)
class PooledSocket:
    """One connected UDP socket and the queries waiting for a reply on it."""

    server: Server
    sock: socket.socket
    born: float
    port: int  # the kernel-chosen source port
    pool: UdpPool
    pending: dict[int, _Pending] = field(default_factory=dict)
    uses: int = 0  # queries sent on it
    failed: str = ""  # why the socket is unusable ("" while it is fine)
    retired: bool = False
    closed: bool = False

    def usable(self, now: float, max_uses: int, max_age: float) -> bool:
        return (
            not self.failed
            and not self.retired
            and self.uses < max_uses
            and now - self.born < max_age
        )

    def free_id(self) -> int:
        """A random id not pending on this socket (at most `max_uses` are, so this ends soon)."""
        entropy = self.pool.entropy
        while True:
            query_id = entropy.u16()
            if query_id not in self.pending:
                return query_id

    def readable(self) -> None:
        """The loop's reader callback: route every reply waiting on the socket."""
        sock = self.sock
        for _ in range(READS_PER_WAKEUP):
            try:
                data = sock.recv(UDP_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                # ICMP port unreachable: nothing listens there. Fail over now rather than at
                # the timeout; forging this needs one of the pool's ports, and gains only that.
                self.fail("unreachable")
                return
            except OSError as exc:
                self.fail(f"error: {exc.strerror or exc}")
                return
            self.received(data)
            if self.closed:
                return

    def received(self, data: bytes) -> None:
        if len(data) < HEADER_SIZE:
            return
        query_id = data[0] << 8 | data[1]
        waiting = self.pending.get(query_id)
        if waiting is None or not is_reply_to(data, query_id, waiting.question):
            log.debug("ignored a UDP datagram from %s that does not answer our query", self.server)
            return
        del self.pending[query_id]
        if waiting.timer is not None:
            waiting.timer.cancel()
        self.pool.settle(self)
        waiting.on_reply(data)

    def timed_out(self, query_id: int, waiting: _Pending) -> None:
        if self.pending.get(query_id) is waiting:
            del self.pending[query_id]
            self.pool.settle(self)
            waiting.on_failure("timeout")

    def fail(self, reason: str) -> None:
        """Fail every query pending here with `reason`; the socket is not used again."""
        self.failed = self.failed or reason
        pending, self.pending = self.pending, {}
        self.pool.settle(self)
        for waiting in pending.values():
            if waiting.timer is not None:
                waiting.timer.cancel()
            waiting.on_failure(reason)

    def close(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if self.closed:
            return
        self.closed = True
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError, ValueError, OSError):
                loop.remove_reader(self.sock)
        self.sock.close()
        self.fail("closed")


class UdpPool:
    """Connected UDP sockets per upstream server; `send` sends one query on one of them."""

    def __init__(
        self, *, size: int = POOL_SIZE, max_uses: int = MAX_USES, max_age: float = MAX_AGE
    ) -> None:
        self.size = size
        self.max_uses = max_uses
        self.max_age = max_age
        self._slots: dict[Server, list[PooledSocket | None]] = {}
        self._retiring: set[PooledSocket] = set()  # out of the pool, replies still awaited
        self._loop: asyncio.AbstractEventLoop | None = None
        self.entropy = Entropy()
        self.sockets_opened = 0  # for metrics and tests

    def sockets(self) -> list[PooledSocket]:
        """Every socket still open: in the pool or retired with queries pending."""
        live = [s for slots in self._slots.values() for s in slots if s is not None]
        return live + list(self._retiring)

    def send(
        self,
        server: Server,
        query: bytes,
        question: bytes,
        *,
        timeout: float,
        on_reply: OnReply,
        on_failure: OnFailure,
    ) -> None:
        """Send `query` (any id) to `server` now; later exactly one of `on_reply(reply)` (its
        id, not the query's) or `on_failure(reason)` ("timeout", "unreachable", ...) is called,
        from the event loop, never from inside this call. QUESTION is `question_of(query)`."""
        loop = self._loop
        if loop is None or loop.is_closed():
            # asyncio.get_running_loop() costs a getpid(2) in CPython: asked only when the
            # pool's loop is gone (a new asyncio.run), whose sockets are then dropped.
            self.close()
            loop = self._loop = asyncio.get_running_loop()
        try:
            pooled = self._take(server, loop)
        except UpstreamFailed as failure:
            loop.call_soon(on_failure, failure.reason)
            return
        query_id = pooled.free_id()
        waiting = _Pending(question, on_reply, on_failure)
        try:
            pooled.sock.send(query_id.to_bytes(2, "big") + query[2:])
        except ConnectionRefusedError:
            # An ICMP error from an earlier query on this socket, reported to this send: it
            # fails them all, as the reader would have.
            loop.call_soon(on_failure, "unreachable")
            pooled.fail("unreachable")
            return
        except OSError as exc:
            # A full send buffer or a routing error: this query fails, the socket stays.
            loop.call_soon(on_failure, f"error: {exc.strerror or exc}")
            return
        pooled.pending[query_id] = waiting
        waiting.timer = loop.call_later(max(0.0, timeout), pooled.timed_out, query_id, waiting)

    async def exchange(self, server: Server, query: bytes, *, timeout: float) -> bytes:
        """`send` as a coroutine: the reply, or UpstreamFailed, as upstream.exchange_udp."""
        question = question_of(query)
        if question is None:
            raise UpstreamFailed("query has no question")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def on_reply(reply: bytes) -> None:
            if not future.done():
                future.set_result(reply)

        def on_failure(reason: str) -> None:
            if not future.done():
                future.set_exception(UpstreamFailed(reason))

        self.send(
            server, query, question, timeout=timeout, on_reply=on_reply, on_failure=on_failure
        )
        return await future

    def _take(self, server: Server, loop: asyncio.AbstractEventLoop) -> PooledSocket:
        """A random socket of `server`'s pool, replaced first when it is used up, too old or
        failed; counted as used."""
        slots = self._slots.get(server)
        if slots is None:
            slots = self._slots[server] = [None] * self.size
        index = self.entropy.below(self.size)
        pooled = slots[index]
        if pooled is None or not pooled.usable(time.monotonic(), self.max_uses, self.max_age):
            if pooled is not None:
                self._retire(pooled)
            pooled = self._open(server, loop)
            slots[index] = pooled
        pooled.uses += 1
        return pooled

    def _open(self, server: Server, loop: asyncio.AbstractEventLoop) -> PooledSocket:
        """A new socket on a new kernel-chosen port, read by the loop from now on."""
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
        pooled = PooledSocket(server, sock, time.monotonic(), sock.getsockname()[1], self)
        loop.add_reader(sock, pooled.readable)
        self.sockets_opened += 1
        return pooled

    def _retire(self, pooled: PooledSocket) -> None:
        pooled.retired = True
        if pooled.pending:
            self._retiring.add(pooled)
        else:
            pooled.close(self._loop)

    def settle(self, pooled: PooledSocket) -> None:
        """Close a retired socket once nothing waits on it; drop a failed one from the pool."""
        if pooled.failed and not pooled.retired:
            slots = self._slots.get(pooled.server, [])
            for index, candidate in enumerate(slots):
                if candidate is pooled:
                    slots[index] = None
            self._retire(pooled)
        elif pooled.retired and not pooled.pending and not pooled.closed:
            self._retiring.discard(pooled)
            pooled.close(self._loop)

    def close(self) -> None:
        """Close every socket; queries still pending fail with "closed"."""
        sockets = self.sockets()
        self._slots.clear()
        self._retiring.clear()
        for pooled in sockets:
            pooled.retired = True
            pooled.close(self._loop)
