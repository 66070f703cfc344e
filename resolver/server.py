"""Listeners: one UDP and one TCP socket on the same address, serving one sandbox's view (R15, R16).

Transport only, no DNS: a listener hands each message's bytes to a Handler together with the
sandbox it serves and sends back whatever bytes the handler returns (already fitted to UDP by
the handler), or nothing. Many listeners share one event loop; every query runs in a task the
listener owns, so a slow or failing one holds up nothing and stops nothing.

A listener may also have a fast handler: a plain function tried first, in the protocol callback,
for every message; when it returns bytes they are sent at once, with no task, no future and no
log line (the hot path, resolver/hot.py). When it returns None, a UDP message is offered to the
soon handler, if there is one: a plain function too, that either takes the message, and sends
its reply later through the `respond` it is given (a forwarded query, driven by callbacks), or
declines it. What neither takes goes to the handler in a task as above.

TCP follows RFC 7766 (resolver/tcp.py: one connection); the listener caps open connections.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import gc
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from drivers.errors import Conflict, Invalid
from resolver import mmsg
from resolver.listener_settings import DEFAULT_CONFIG, ListenerConfig, ListenerStats
from resolver.logs import LogThrottle
from resolver.tcp import TcpConnection

log = logging.getLogger(__name__)
T = TypeVar("T")

BIND_ATTEMPTS = 8
TCP_BACKLOG = 128
GC_THRESHOLD = 20_000  # allocations between young-generation collections (Python's: 700)
ERROR_LOG_INTERVAL = 10.0  # seconds between handler tracebacks, so bad input cannot flood logs


class Handler(Protocol):
    async def __call__(self, sandbox_id: str, data: bytes, tcp: bool) -> bytes | None:
        """The reply to one message (for UDP already truncated per R15), or None to drop it."""
        ...


# (sandbox id, message, tcp) -> the reply (UDP: already fitted, R15), or None for the handler.
FastHandler = Callable[[str, bytes, bool], bytes | None]
Respond = Callable[[bytes], None]
# (sandbox id, message, tcp, respond) -> whether it took the message: then it calls respond with
# the reply (already fitted) later, or never to drop it; when not, the handler answers.
SoonHandler = Callable[[str, bytes, bool, Respond], bool]
# A client's address -> the sandbox it is, for a listener many sandboxes share.
Who = Callable[[str], str]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed, else the standard one."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the loop new_event_loop() makes, with the collector tuned for serving."""
    tune_gc()
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


def tune_gc() -> None:
    """Fewer cyclic-GC passes: a forwarded query makes a dozen short-lived objects, freed by
    reference counting, yet each 700 of them start a collection (5% of a forwarding run's
    CPU, perf). Collect at 20,000 instead, and keep what is alive at start (modules,
    classes) out of every pass: about 9% fewer CPU microseconds a forward on bench W7."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


def bind_pair(host: str, port: int = 0) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same host and port, TCP already listening.

    With port 0 the kernel picks UDP's port and TCP takes the same one; when another socket
    holds that TCP port, try again with a new one.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(BIND_ATTEMPTS):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            udp.bind((host, port))
            chosen = udp.getsockname()[1]
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                # Lets a restarted listener take its port while old connections sit in TIME_WAIT.
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((host, chosen))
                # Listening now, not later, so a port another listener also bound fails here.
                tcp.listen(TCP_BACKLOG)
            except OSError as exc:
                tcp.close()
                if exc.errno == errno.EADDRINUSE and port == 0:
                    udp.close()
                    continue
                raise
        except OSError as exc:
            udp.close()
            if exc.errno == errno.EADDRINUSE:
                raise Conflict(
                    f"{host}:{port} is in use: stop what holds it or choose another port"
                ) from exc
            raise
        return udp, tcp
    raise Conflict(f"no port free on {host} for both UDP and TCP after {BIND_ATTEMPTS} tries")


class Listener:
    """One sandbox's DNS server: UDP and TCP on one address, answers from `handler`."""

    def __init__(
        self,
        handler: Handler,
        sandbox_id: str,
        config: ListenerConfig,
        fast: FastHandler | None = None,
        soon: SoonHandler | None = None,
        who: Who | None = None,
    ) -> None:
        self.sandbox_id = sandbox_id
        self.who = who
        self.config = config
        self.stats = ListenerStats()
        self._handler = handler
        self._fast = fast
        self._soon = soon
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[TcpConnection] = set()
        self._udp: _UdpReader | None = None
        self._server: asyncio.AbstractServer | None = None
        self._address: tuple[str, int] = ("", 0)
        self._closing = False
        self._error_log = LogThrottle(ERROR_LOG_INTERVAL)

    @classmethod
    async def start(
        cls,
        handler: Handler,
        sandbox_id: str,
        host: str = "127.0.0.11",
        port: int = 0,
        *,
        udp_sock: socket.socket | None = None,
        tcp_sock: socket.socket | None = None,
        config: ListenerConfig = DEFAULT_CONFIG,
        fast: FastHandler | None = None,
        soon: SoonHandler | None = None,
        who: Who | None = None,
    ) -> Listener:
        """Serve on (host, port), or on the given sockets: already bound, TCP maybe not listening
        (made inside a sandbox's namespace). The listener owns the sockets from here on.
        `fast`, when given, is tried first for every message, then `soon` for UDP ones (see the
        module docstring). `who`, for a listener many sandboxes share (netdns-aardvark, on a
        network's gateway address), names the sandbox of each client address; without it
        every message is from `sandbox_id`."""
        if (udp_sock is None) != (tcp_sock is None):
            raise Invalid("Listener.start: pass both udp_sock and tcp_sock, or neither")
        if udp_sock is None or tcp_sock is None:
            udp_sock, tcp_sock = bind_pair(host, port)
        listener = cls(handler, sandbox_id, config, fast, soon, who)
        try:
            await listener._serve(udp_sock, tcp_sock)
        except BaseException:
            await listener.close()
            udp_sock.close()
            tcp_sock.close()
            raise
        return listener

    async def _serve(self, udp_sock: socket.socket, tcp_sock: socket.socket) -> None:
        address = udp_sock.getsockname()
        self._address = (address[0], address[1])
        udp_sock.setblocking(False)
        tcp_sock.setblocking(False)
        self._udp = _UdpReader(self, udp_sock, self._loop)
        self._server = await self._loop.create_server(
            lambda: TcpConnection(self), sock=tcp_sock, backlog=TCP_BACKLOG
        )

    @property
    def host(self) -> str:
        return self._address[0]

    @property
    def port(self) -> int:
        return self._address[1]

    @property
    def closing(self) -> bool:
        return self._closing

    async def close(self) -> None:
        """Close both sockets and every TCP connection; cancel the queries in flight."""
        if self._closing:
            return
        self._closing = True
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        # Transports close their sockets on the next loop turn; let that happen before returning
        # so the port is free for whoever binds it next.
        await asyncio.sleep(0)

    # -- shared by both transports -------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("listener %s: query task failed", self.sandbox_id, exc_info=exc)

    def sandbox_of(self, host: str) -> str:
        """The sandbox a client at `host` is (always `sandbox_id` without `who`)."""
        return self.sandbox_id if self.who is None else self.who(host)

    def answer_fast(self, data: bytes, sandbox_id: str, *, tcp: bool) -> bytes | None:
        """The fast handler's reply, or None (no fast handler, it declined, or it failed)."""
        fast = self._fast
        if fast is None:
            return None
        try:
            reply = fast(sandbox_id, data, tcp)
        except Exception:
            # The slow path answers instead; the failure is reported like a handler's.
            self.stats.handler_errors += 1
            self._log_handler_error()
            return None
        if reply is not None:
            self.stats.fast_answers += 1
        return reply

    def answer_soon(self, data: bytes, sandbox_id: str, respond: Respond) -> bool:
        """Whether the soon handler took this UDP message (it then calls `respond` itself)."""
        soon = self._soon
        if soon is None:
            return False
        try:
            return soon(sandbox_id, data, False, respond)
        except Exception:
            self.stats.handler_errors += 1
            self._log_handler_error()
            return False

    async def answer(self, data: bytes, sandbox_id: str, *, tcp: bool) -> bytes | None:
        """The handler's reply, or None; a handler failure is logged and drops the query."""
        try:
            reply = await self._handler(sandbox_id, data, tcp)
        except Exception:
            self.stats.handler_errors += 1
            self.stats.dropped += 1
            self._log_handler_error()
            return None
        if reply is None:
            self.stats.dropped += 1
        return reply

    def _log_handler_error(self) -> None:
        failures = self._error_log.due(time.monotonic())
        if failures is None:
            return
        log.exception(
            "listener %s: handler failed (%d more failures since the last report)",
            self.sandbox_id,
            failures - 1,
        )

    def admit(self, connection: TcpConnection) -> bool:
        if self._closing or len(self._connections) >= self.config.max_tcp_connections:
            self.stats.tcp_rejected += 1
            return False
        self._connections.add(connection)
        self.stats.tcp_connections = len(self._connections)
        return True

    def forget(self, connection: TcpConnection) -> None:
        self._connections.discard(connection)
        self.stats.tcp_connections = len(self._connections)


class _UdpReader:
    """The listener's UDP socket, read by the loop's fd callback a batch at a time (mmsg.py):
    replies the fast handler has at once leave together in one sendmmsg, the others (forwarded,
    slow path) together at the end of the loop turn they became ready in."""

    def __init__(
        self, listener: Listener, sock: socket.socket, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._listener = listener
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = loop
        self._batch = mmsg.thread_batch()
        self._later: list[tuple[bytes, bytes]] = []  # replies for the end of this loop turn
        self._closed = False
        loop.add_reader(self._fd, self.readable)

    def readable(self) -> None:
        listener = self._listener
        if listener.closing:
            return
        try:
            datagrams = self._batch.receive(self._fd)
        except OSError as exc:
            # An ICMP error of a client that went away, say: nothing to do about it.
            log.debug("listener %s: udp receive: %s", listener.sandbox_id, exc)
            return
        listener.stats.udp_queries += len(datagrams)
        ready: list[tuple[bytes, bytes]] = []
        who, sandbox_id = listener.who, listener.sandbox_id
        for data, address in datagrams:
            if who is not None:
                sandbox_id = who(mmsg.host_of(address))
            reply = listener.answer_fast(data, sandbox_id, tcp=False)
            if reply is not None:
                ready.append((address, reply))
            elif not listener.answer_soon(
                data, sandbox_id, functools.partial(self.send_later, address)
            ):
                listener.spawn(self._answer(data, sandbox_id, address))
        if ready:
            try:
                sent = self._batch.send(self._fd, ready)
            except OSError as exc:
                log.debug("listener %s: udp send: %s", listener.sandbox_id, exc)
                sent = 0
            listener.stats.dropped += len(ready) - sent

    async def _answer(self, data: bytes, sandbox_id: str, address: bytes) -> None:
        reply = await self._listener.answer(data, sandbox_id, tcp=False)
        if reply is not None:
            self.send_later(address, reply)

    def send_later(self, address: bytes, reply: bytes) -> None:
        """Send a reply that was not ready in its batch (the listener may be gone by now).

        Replies that come in one turn of the loop (the upstream replies one pool reader
        read, say) are sent together at the end of it, in one sendmmsg."""
        if self._closed:
            self._listener.stats.dropped += 1
            return
        if not self._later:
            self._loop.call_soon(self._flush_later)
        self._later.append((address, reply))

    def _flush_later(self) -> None:
        later, self._later = self._later, []
        if self._closed:
            self._listener.stats.dropped += len(later)
            return
        try:
            sent = self._batch.send(self._fd, later)
        except OSError as exc:
            log.debug("listener %s: udp send: %s", self._listener.sandbox_id, exc)
            sent = 0
        # No room in the socket: a UDP client asks again.
        self._listener.stats.dropped += len(later) - sent

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._fd)
            self._sock.close()
