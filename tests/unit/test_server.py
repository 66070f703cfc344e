"""The listener's transport (R15, R16 transport side), with a small handler and no DNS logic.

Every test runs on both loops the daemon may use (asyncio's and uvloop's), on its own random
loopback address.
"""

from __future__ import annotations

import asyncio
import gc
import random
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from drivers.errors import Conflict, Invalid
from resolver.server import (
    GC_THRESHOLD,
    Listener,
    ListenerConfig,
    bind_pair,
    new_event_loop,
    run,
)

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": new_event_loop,
}


@pytest.fixture(params=sorted(LOOPS))
def arun(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    factory = LOOPS[request.param]

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)

    return run


def random_loopback() -> str:
    # Away from 127.0.0.0/24 (127.0.0.1, .11, .53 are taken on real hosts).
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


class EchoHandler:
    """Replies `<sandbox>|<tcp>|<data>`; `slow...` waits, `boom` raises, `drop` returns None,
    `wait...` waits for `release`."""

    def __init__(self, slow: float = 0.5) -> None:
        self.slow = slow
        self.release = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.cancelled = 0

    async def __call__(self, sandbox_id: str, data: bytes, tcp: bool) -> bytes | None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if data.startswith(b"slow"):
                await asyncio.sleep(self.slow)
            elif data.startswith(b"wait"):
                await self.release.wait()
            elif data == b"boom":
                raise RuntimeError("handler bug")
            elif data == b"drop":
                return None
            elif data == b"big":
                return b"x" * 60000
            return f"{sandbox_id}|{int(tcp)}|".encode() + data
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1


async def start(
    handler: EchoHandler, sandbox_id: str = "sb1", **config: Any
) -> tuple[Listener, str, int]:
    listener = await Listener.start(
        handler, sandbox_id, random_loopback(), config=ListenerConfig(**config)
    )
    return listener, listener.host, listener.port


async def udp_ask(host: str, port: int, data: bytes, timeout: float = 1.0) -> bytes | None:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, reply: bytes, addr: Any) -> None:
            if not answer.done():
                answer.set_result(reply)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(host, port))
    try:
        transport.sendto(data)
        return await asyncio.wait_for(answer, timeout)
    except TimeoutError:
        return None
    finally:
        transport.close()


def frame(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


async def read_frame(reader: asyncio.StreamReader, timeout: float = 2.0) -> bytes:
    length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), timeout), "big")
    return await asyncio.wait_for(reader.readexactly(length), timeout)


async def closed_within(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Whether the server closes the connection (EOF or reset) within `timeout` seconds."""
    try:
        return await asyncio.wait_for(reader.read(1), timeout) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_udp_round_trip_gives_the_handler_the_sandbox_and_transport(arun) -> None:
    async def main() -> None:
        handler = EchoHandler()
        listener, host, port = await start(handler, "sandbox-a")
        try:
            assert await udp_ask(host, port, b"hello") == b"sandbox-a|0|hello"
            assert listener.stats.udp_queries == 1
        finally:
            await listener.close()

    arun(main())


def test_replies_ready_in_one_loop_turn_all_leave_each_to_its_client(arun) -> None:
    # 40 clients wait on one event: their replies become ready in the same turn of the loop
    # and leave in one batch; none is lost or sent to the wrong client.
    async def main() -> None:
        handler = EchoHandler()
        listener, host, port = await start(handler)
        try:
            asks = [
                asyncio.create_task(udp_ask(host, port, f"wait{i}".encode(), 3.0))
                for i in range(40)
            ]
            for _ in range(100):
                if handler.in_flight == 40:
                    break
                await asyncio.sleep(0.01)
            assert handler.in_flight == 40
            handler.release.set()
            replies = await asyncio.gather(*asks)
            assert replies == [f"sb1|0|wait{i}".encode() for i in range(40)]
            assert listener.stats.dropped == 0
        finally:
            await listener.close()

    arun(main())


def test_run_tunes_the_collector_for_serving() -> None:
    before = gc.get_threshold()
    try:
        assert run(asyncio.sleep(0, result="done")) == "done"
        assert gc.get_threshold()[0] == GC_THRESHOLD
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_r15_tcp_on_the_same_address_and_port_as_udp(arun) -> None:
    async def main() -> None:
        listener, host, port = await start(EchoHandler(), "sandbox-a")
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(frame(b"hello"))
            assert await read_frame(reader) == b"sandbox-a|1|hello"
            assert listener.stats.tcp_queries == 1
            assert listener.stats.tcp_connections == 1
            writer.close()
        finally:
            await listener.close()

    arun(main())


def test_r15_tcp_pipelined_queries_are_answered_as_soon_as_ready(arun) -> None:
    async def main() -> None:
        listener, host, port = await start(EchoHandler(slow=0.5))
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(frame(b"slow-1") + frame(b"fast-2") + frame(b"fast-3"))
            started = time.monotonic()
            first, second = await read_frame(reader), await read_frame(reader)
            fast_elapsed = time.monotonic() - started
            last = await read_frame(reader)
            assert {first, second} == {b"sb1|1|fast-2", b"sb1|1|fast-3"}
            assert fast_elapsed < 0.4, "fast answers waited for the slow one"
            assert last == b"sb1|1|slow-1"
            writer.close()
        finally:
            await listener.close()

    arun(main())


def test_tcp_message_split_over_many_writes_is_reassembled(arun) -> None:
    async def main() -> None:
        listener, host, port = await start(EchoHandler())
        try:
            reader, writer = await asyncio.open_connection(host, port)
            for byte in frame(b"piecewise") + frame(b"next")[:3]:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.002)
            assert await read_frame(reader) == b"sb1|1|piecewise"
            writer.write(frame(b"next")[3:])
            assert await read_frame(reader) == b"sb1|1|next"
            writer.close()
        finally:
            await listener.close()

    arun(main())


def test_tcp_idle_connection_is_closed_after_the_idle_timeout(arun) -> None:
    async def main() -> None:
        listener, host, port = await start(EchoHandler(), tcp_idle_timeout=0.3)
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(frame(b"one"))
            assert await read_frame(reader) == b"sb1|1|one"
            started = time.monotonic()
            assert await closed_within(reader, 2.0)
            assert 0.2 < time.monotonic() - started < 1.5
            writer.close()
            await asyncio.sleep(0.05)
            assert listener.stats.tcp_connections == 0
        finally:
            await listener.close()

    arun(main())


def test_tcp_connection_with_a_query_in_flight_is_not_idle(arun) -> None:
    async def main() -> None:
        listener, host, port = await start(EchoHandler(slow=0.8), tcp_idle_timeout=0.3)
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(frame(b"slow"))
            assert await read_frame(reader) == b"sb1|1|slow"
            assert await closed_within(reader, 2.0)
            writer.close()
        finally:
            await listener.close()

    arun(main())


def test_tcp_client_that_stops_reading_is_dropped_after_the_idle_timeout(arun) -> None:
    async def main() -> None:
        listener, host, port = await start(EchoHandler(), tcp_idle_timeout=0.3)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            # About 12 MB of answers that are never read: they fill every buffer on the way.
            await asyncio.get_running_loop().sock_sendall(sock, frame(b"big") * 200)
            deadline = time.monotonic() + 5
            while listener.stats.tcp_connections and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert listener.stats.tcp_connections == 0
            sock.close()
        finally:
            await listener.close()

    arun(main())


def test_tcp_unfinished_message_closes_after_the_read_timeout(arun) -> None:
    async def main() -> None:
        listener, host, port = await start(
            EchoHandler(), tcp_idle_timeout=30.0, tcp_read_timeout=0.3
        )
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write((100).to_bytes(2, "big") + b"only ten b")
            started = time.monotonic()
            assert await closed_within(reader, 2.0)
            assert time.monotonic() - started < 1.5
            writer.close()
        finally:
            await listener.close()

    arun(main())


def test_tcp_slow_trickle_cannot_stretch_the_read_timeout(arun) -> None:
    async def main() -> None:
        listener, host, port = await start(
            EchoHandler(), tcp_idle_timeout=30.0, tcp_read_timeout=0.4
        )
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write((200).to_bytes(2, "big"))
            started = time.monotonic()
            closed = False
            for _ in range(40):  # one byte every 50 ms: activity, but the message never ends
                try:
                    writer.write(b"x")
                    await writer.drain()
                except ConnectionError:
                    closed = True
                    break
                if await closed_within(reader, 0.05):
                    closed = True
                    break
            assert closed
            assert time.monotonic() - started < 1.2
            writer.close()
        finally:
            await listener.close()

    arun(main())


def test_tcp_zero_length_message_closes_the_connection(arun) -> None:
    async def main() -> None:
        listener, host, port = await start(EchoHandler())
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"\x00\x00")
            assert await closed_within(reader, 1.0)
            writer.close()
            assert await udp_ask(host, port, b"still") == b"sb1|0|still"
        finally:
            await listener.close()

    arun(main())


def test_tcp_connections_beyond_the_limit_are_closed_at_once(arun) -> None:
    async def main() -> None:
        listener, host, port = await start(EchoHandler(), max_tcp_connections=2)
        try:
            kept = []
            for i in range(2):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(frame(b"q%d" % i))
                assert await read_frame(reader) == b"sb1|1|q%d" % i
                kept.append((reader, writer))
            reader, writer = await asyncio.open_connection(host, port)
            assert await closed_within(reader, 1.0)
            writer.close()
            assert listener.stats.tcp_rejected == 1
            assert listener.stats.tcp_connections == 2

            kept[0][1].close()  # room again
            await asyncio.sleep(0.1)
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(frame(b"again"))
            assert await read_frame(reader) == b"sb1|1|again"
            writer.close()
            kept[1][1].close()
        finally:
            await listener.close()

    arun(main())


def test_tcp_pipeline_limit_bounds_queries_in_flight_per_connection(arun) -> None:
    async def main() -> None:
        handler = EchoHandler()
        listener, host, port = await start(handler, max_tcp_pipeline=2)
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"".join(frame(b"wait-%d" % i) for i in range(5)))
            await asyncio.sleep(0.2)
            assert handler.in_flight == 2
            handler.release.set()
            answers = {await read_frame(reader) for _ in range(5)}
            assert answers == {b"sb1|1|wait-%d" % i for i in range(5)}
            assert handler.most_in_flight == 2
            writer.close()
        finally:
            await listener.close()

    arun(main())


def test_tcp_half_closed_client_still_gets_its_answers(arun) -> None:
    async def main() -> None:
        listener, host, port = await start(EchoHandler(slow=0.2))
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(frame(b"slow") + frame(b"fast"))
            writer.write_eof()
            answers = {await read_frame(reader), await read_frame(reader)}
            assert answers == {b"sb1|1|slow", b"sb1|1|fast"}
            assert await closed_within(reader, 1.0)
            writer.close()
        finally:
            await listener.close()

    arun(main())


def test_handler_exceptions_do_not_stop_the_listener(arun) -> None:
    async def main() -> None:
        listener, host, port = await start(EchoHandler())
        try:
            assert await udp_ask(host, port, b"boom", timeout=0.3) is None
            assert await udp_ask(host, port, b"after") == b"sb1|0|after"
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(frame(b"boom") + frame(b"same-conn"))
            assert await read_frame(reader) == b"sb1|1|same-conn"
            writer.close()
            assert listener.stats.handler_errors == 2
            assert listener.stats.dropped == 2
        finally:
            await listener.close()

    arun(main())


def test_handler_none_drops_the_query(arun) -> None:
    async def main() -> None:
        listener, host, port = await start(EchoHandler())
        try:
            assert await udp_ask(host, port, b"drop", timeout=0.3) is None
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(frame(b"drop") + frame(b"next"))
            assert await read_frame(reader) == b"sb1|1|next"
            writer.close()
            assert listener.stats.dropped == 2
            assert listener.stats.handler_errors == 0
        finally:
            await listener.close()

    arun(main())


def test_many_listeners_share_one_loop_each_with_its_own_view(arun) -> None:
    async def main() -> None:
        handler = EchoHandler()
        listeners = [
            await Listener.start(handler, f"sandbox-{i}", random_loopback()) for i in range(40)
        ]
        try:

            async def ask(i: int, listener: Listener) -> tuple[bytes | None, bytes]:
                udp = await udp_ask(listener.host, listener.port, b"q")
                reader, writer = await asyncio.open_connection(listener.host, listener.port)
                writer.write(frame(b"q"))
                tcp = await read_frame(reader)
                writer.close()
                return udp, tcp

            results = await asyncio.gather(*(ask(i, li) for i, li in enumerate(listeners)))
            for i, (udp, tcp) in enumerate(results):
                assert udp == f"sandbox-{i}|0|q".encode()
                assert tcp == f"sandbox-{i}|1|q".encode()
        finally:
            for listener in listeners:
                await listener.close()

    arun(main())


def test_close_cancels_queries_in_flight_and_frees_the_port(arun) -> None:
    async def main() -> None:
        handler = EchoHandler()
        listener, host, port = await start(handler)
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(frame(b"wait"))
        assert await udp_ask(host, port, b"wait", timeout=0.2) is None
        assert handler.in_flight == 2
        await listener.close()
        assert handler.cancelled == 2
        assert await closed_within(reader, 1.0)
        writer.close()
        again = await Listener.start(handler, "sb2", host, port)
        try:
            assert (again.host, again.port) == (host, port)
            assert await udp_ask(host, port, b"x") == b"sb2|0|x"
        finally:
            await again.close()

    arun(main())


def test_premade_sockets_are_served_as_given(arun) -> None:
    async def main() -> None:
        host = random_loopback()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((host, 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind((host, udp.getsockname()[1]))  # bound, not listening: as netns.py makes them
        listener = await Listener.start(EchoHandler(), "sb", udp_sock=udp, tcp_sock=tcp)
        try:
            assert (listener.host, listener.port) == (host, udp.getsockname()[1])
            assert await udp_ask(host, listener.port, b"u") == b"sb|0|u"
            reader, writer = await asyncio.open_connection(host, listener.port)
            writer.write(frame(b"t"))
            assert await read_frame(reader) == b"sb|1|t"
            writer.close()
        finally:
            await listener.close()

    arun(main())


def test_start_wants_both_sockets_or_none(arun) -> None:
    async def main() -> None:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            with pytest.raises(Invalid, match="both"):
                await Listener.start(EchoHandler(), "sb", udp_sock=udp)
        finally:
            udp.close()

    arun(main())


def test_a_port_in_use_is_a_conflict() -> None:
    host = random_loopback()
    udp, tcp = bind_pair(host)
    try:
        assert udp.getsockname() == tcp.getsockname()
        with pytest.raises(Conflict, match=host):
            bind_pair(host, udp.getsockname()[1])
    finally:
        udp.close()
        tcp.close()
