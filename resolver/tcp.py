"""One TCP client connection of a listener, after RFC 7766: 2-byte length framing, several
queries per connection, each answered as soon as it is ready (out of order), whole frames per
write, idle and slow-read timeouts, and a cap on queries in flight per connection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from resolver.listener_settings import ListenerConfig, ListenerStats

log = logging.getLogger(__name__)

FRAME_PREFIX = 2  # RFC 1035 4.2.2: each TCP message is preceded by its length, 2 bytes
MAX_FRAME = 0xFFFF


class TcpHost(Protocol):
    """What a connection needs of its listener (resolver/server.py's Listener)."""

    sandbox_id: str
    config: ListenerConfig
    stats: ListenerStats

    def admit(self, connection: TcpConnection) -> bool: ...

    def forget(self, connection: TcpConnection) -> None: ...

    def sandbox_of(self, host: str) -> str: ...

    def answer_fast(self, data: bytes, sandbox_id: str, *, tcp: bool) -> bytes | None: ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

    async def answer(self, data: bytes, sandbox_id: str, *, tcp: bool) -> bytes | None: ...


class TcpConnection(asyncio.Protocol):
    """One client connection: framing, pipelining, timeouts (RFC 7766)."""

    def __init__(self, listener: TcpHost) -> None:
        self._listener = listener
        self._sandbox_id = listener.sandbox_id  # the client's, once connected (sandbox_of)
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
        peer = transport.get_extra_info("peername")
        self._sandbox_id = self._listener.sandbox_of(peer[0] if peer else "")
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
        reply = self._listener.answer_fast(message, self._sandbox_id, tcp=True)
        if reply is not None:
            self._send(reply)
            return
        task = self._listener.spawn(self._answer(message))
        self._inflight.add(task)
        task.add_done_callback(self._query_done)

    async def _answer(self, message: bytes) -> None:
        reply = await self._listener.answer(message, self._sandbox_id, tcp=True)
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
