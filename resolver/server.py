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

TCP follows RFC 7766: 2-byte length framing, several queries per connection, each answered as
soon as it is ready (out of order), whole frames per write, idle and slow-read timeouts, a cap
on open connections and on queries in flight per connection.
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
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from drivers.errors import Conflict, Invalid
from resolver import mmsg
from resolver.logs import LogThrottle

log = logging.getLogger(__name__)
T = TypeVar("T")

FRAME_PREFIX = 2  # RFC 1035 4.2.2: each TCP message is preceded by its length, 2 bytes
MAX_FRAME = 0xFFFF
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


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    tcp_idle_timeout: float = 30.0  # a connection with nothing in flight is closed after this
    tcp_read_timeout: float = 10.0  # a started message must finish within it
    max_tcp_connections: int = 256  # beyond it, new connections are closed at once
    max_tcp_pipeline: int = 64  # queries in flight per connection; beyond it reading pauses


@dataclass(slots=True)
class ListenerStats:
    udp_queries: int = 0
    tcp_queries: int = 0
    tcp_connections: int = 0  # open now
    tcp_rejected: int = 0  # connections closed at once: over max_tcp_connections
    dropped: int = 0  # queries that got no reply: the handler said so, failed, or no room
    handler_errors: int = 0
    fast_answers: int = 0  # of udp_queries + tcp_queries, those the fast handler answered


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
    ) -> None:
        self.sandbox_id = sandbox_id
        self.config = config
        self.stats = ListenerStats()
        self._handler = handler
        self._fast = fast
        self._soon = soon
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[_TcpConnection] = set()
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
        config: ListenerConfig = ListenerConfig(),  # frozen, so one shared default is safe
        fast: FastHandler | None = None,
        soon: SoonHandler | None = None,
    ) -> Listener:
        """Serve on (host, port), or on the given sockets: already bound, TCP maybe not listening
        (made inside a sandbox's namespace). The listener owns the sockets from here on.
        `fast`, when given, is tried first for every message, then `soon` for UDP ones (see the
        module docstring)."""
        if (udp_sock is None) != (tcp_sock is None):
            raise Invalid("Listener.start: pass both udp_sock and tcp_sock, or neither")
        if udp_sock is None or tcp_sock is None:
            udp_sock, tcp_sock = bind_pair(host, port)
        listener = cls(handler, sandbox_id, config, fast, soon)
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
            lambda: _TcpConnection(self), sock=tcp_sock, backlog=TCP_BACKLOG
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

    def answer_fast(self, data: bytes, *, tcp: bool) -> bytes | None:
        """The fast handler's reply, or None (no fast handler, it declined, or it failed)."""
        fast = self._fast
        if fast is None:
            return None
        try:
            reply = fast(self.sandbox_id, data, tcp)
        except Exception:
            # The slow path answers instead; the failure is reported like a handler's.
            self.stats.handler_errors += 1
            self._log_handler_error()
            return None
        if reply is not None:
            self.stats.fast_answers += 1
        return reply

    def answer_soon(self, data: bytes, respond: Respond) -> bool:
        """Whether the soon handler took this UDP message (it then calls `respond` itself)."""
        soon = self._soon
        if soon is None:
            return False
        try:
            return soon(self.sandbox_id, data, False, respond)
        except Exception:
            self.stats.handler_errors += 1
            self._log_handler_error()
            return False

    async def answer(self, data: bytes, *, tcp: bool) -> bytes | None:
        """The handler's reply, or None; a handler failure is logged and drops the query."""
        try:
            reply = await self._handler(self.sandbox_id, data, tcp)
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

    def admit(self, connection: _TcpConnection) -> bool:
        if self._closing or len(self._connections) >= self.config.max_tcp_connections:
            self.stats.tcp_rejected += 1
            return False
        self._connections.add(connection)
        self.stats.tcp_connections = len(self._connections)
        return True

    def forget(self, connection: _TcpConnection) -> None:
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
        for data, address in datagrams:
            reply = listener.answer_fast(data, tcp=False)
            if reply is not None:
                ready.append((address, reply))
            elif not listener.answer_soon(data, functools.partial(self.send_later, address)):
                listener.spawn(self._answer(data, address))
        if ready:
            try:
                sent = self._batch.send(self._fd, ready)
            except OSError as exc:
                log.debug("listener %s: udp send: %s", listener.sandbox_id, exc)
                sent = 0
            listener.stats.dropped += len(ready) - sent

    async def _answer(self, data: bytes, address: bytes) -> None:
        reply = await self._listener.answer(data, tcp=False)
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


class _TcpConnection(asyncio.Protocol):
    """One client connection: framing, pipelining, timeouts (RFC 7766)."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._config = listener.config
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._inflight: set[asyncio.Task[None]] = set()
        self._partial_since = 0.0  # loop time the unfinished message in _buffer began
        self._last_activity = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._reading_paused = False
        self._writing_paused = False
        self._eof = False
        self._closed = False

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if not self._listener.admit(self):
            self._closed = True
            transport.close()
            return
        self._last_activity = self._loop.time()
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        if self._closed or self._eof:
            return  # after a zero-length message nothing more is read
        self._last_activity = self._loop.time()
        if not self._buffer:
            self._partial_since = self._last_activity
        self._buffer += data
        self._take_messages()
        self._arm_timer()

    def eof_received(self) -> bool:
        self._eof = True
        # Keep the write side open until the answers in flight are sent.
        return bool(self._inflight) and not self._closed

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._inflight:
            task.cancel()  # nobody is left to read the answer
        self._listener.forget(self)

    def pause_writing(self) -> None:
        # A client that does not read its answers gets no more queries read from it.
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()

    # -- framing and queries ---------------------------------------------------------------------

    def _take_messages(self) -> None:
        """Start a task for each whole message in the buffer, as far as the pipeline allows."""
        buffer = self._buffer
        offset = 0
        taken = False
        while len(self._inflight) < self._config.max_tcp_pipeline and len(buffer) - offset >= 2:
            length = int.from_bytes(buffer[offset : offset + FRAME_PREFIX], "big")
            if length == 0:
                self._stop_reading("zero-length message")
                return
            end = offset + FRAME_PREFIX + length
            if len(buffer) < end:
                break
            message = bytes(buffer[offset + FRAME_PREFIX : end])
            offset = end
            taken = True
            self._start_query(message)
        if offset:
            del buffer[:offset]
        if taken and buffer:
            self._partial_since = self._loop.time()  # what is left is the next message's start
        self._update_reading()

    def _stop_reading(self, reason: str) -> None:
        """Take no more messages (the client broke the framing), but send the answers already
        started before closing: like an EOF, not an abort."""
        self._eof = True
        self._buffer.clear()
        if not self._inflight:
            self._close(reason)

    def _start_query(self, message: bytes) -> None:
        self._listener.stats.tcp_queries += 1
        reply = self._listener.answer_fast(message, tcp=True)
        if reply is not None:
            self._send(reply)
            return
        task = self._listener.spawn(self._answer(message))
        self._inflight.add(task)
        task.add_done_callback(self._query_done)

    async def _answer(self, message: bytes) -> None:
        reply = await self._listener.answer(message, tcp=True)
        if reply is not None:
            self._send(reply)

    def _send(self, reply: bytes) -> None:
        if len(reply) > MAX_FRAME:
            log.warning(
                "listener %s: reply of %d bytes does not fit a TCP frame, dropped",
                self._listener.sandbox_id,
                len(reply),
            )
            self._listener.stats.dropped += 1
            return
        if self._closed or self._transport is None:
            return
        # One write per frame: answers finishing out of order never interleave (RFC 7766 8).
        self._transport.write(len(reply).to_bytes(FRAME_PREFIX, "big") + reply)

    def _query_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._closed:
            return
        self._last_activity = self._loop.time()
        if self._buffer:
            self._take_messages()  # messages held back by the pipeline limit
        if self._closed:
            return
        if self._eof and not self._inflight:
            self._close("client finished sending")
            return
        self._update_reading()
        self._arm_timer()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        pause = self._writing_paused or len(self._inflight) >= self._config.max_tcp_pipeline
        if pause and not self._reading_paused:
            transport.pause_reading()
            self._reading_paused = True
        elif not pause and self._reading_paused:
            transport.resume_reading()
            self._reading_paused = False

    # -- timeouts --------------------------------------------------------------------------------

    def _deadline(self) -> tuple[float, str] | None:
        """When this connection is to be closed if nothing changes, and why."""
        pipeline_full = len(self._inflight) >= self._config.max_tcp_pipeline
        if self._buffer and not pipeline_full:
            return self._partial_since + self._config.tcp_read_timeout, "unfinished message"
        if self._inflight:
            return None  # busy answering: not idle
        return self._last_activity + self._config.tcp_idle_timeout, "idle"

    def _arm_timer(self) -> None:
        """One timer per connection, moved only when the deadline comes earlier than it."""
        deadline = self._deadline()
        if self._closed or deadline is None:
            return
        when = deadline[0]
        if self._timer is not None:
            if self._timer_at <= when:
                return  # it fires first and re-checks
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline()
        if self._closed or deadline is None:
            return
        when, reason = deadline
        if self._loop.time() < when:
            self._arm_timer()
        elif self._transport is not None and self._transport.get_write_buffer_size():
            # A client that stopped reading would keep a graceful close waiting forever.
            log.debug("listener %s: aborting tcp connection: %s", self._listener.sandbox_id, reason)
            self.abort()
        else:
            self._close(reason)

    def _close(self, reason: str) -> None:
        log.debug("listener %s: closing tcp connection: %s", self._listener.sandbox_id, reason)
        self._closed = True
        if self._transport is not None:
            self._transport.close()  # sends the answers already written, then FIN

    def abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()
