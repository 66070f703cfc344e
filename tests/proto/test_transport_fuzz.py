"""Issue 7: the real listener's transport under arbitrary bytes (R15, R16, RFC 1035 4.2.2, 7766).

One ServerThread (a Resolver over the sample table, real UDP and TCP listeners on a random
loopback address, a small pipeline limit so pausing is exercised) takes hypothesis-made input:

- TCP streams built from items (valid framed queries, frames of random or mangled bytes, empty
  frames, raw garbage that shifts the framing, a last frame cut short), sent in random chunks with
  tiny pauses. The test frames the stream as RFC 1035 4.2.2 says (`split_frames`, the model: an
  empty frame ends the reading, yet the frames before it are answered before the close; a cut
  frame is never answered), sends each whole frame's bytes
  to the UDP path too, and checks that the TCP connection answered exactly those frames, with the
  same verdict UDP gave (matched by id and rcode: RFC 7766 lets answers come in any order), in
  well-formed frames; then that the listener forgot the connection and still answers.
- UDP datagrams of 0..4096 bytes (random, valid queries with trailing bytes, cut queries): each
  gets R16's answer or nothing, and a good query after them is answered.
- Half-closes: queries then SHUT_WR; every answer arrives, then the server closes.
"""

from __future__ import annotations

import enum
import gc
import os
import select
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
from dnslib import QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from resolver.server import ListenerConfig
from resolver.tcp import TcpConnection as _TcpConnection
from tests.proto.harness import CLIENT1, WEB_V4, ServerThread, sample_table

HEADER = struct.Struct("!HHHHHH")
QR = 0x8000
OPCODE_MASK = 0x7800
PIPELINE = 3  # small, so a stream of a few slow-path queries fills it and reading pauses
REPLY_WAIT = 2.0  # the longest any socket wait may take
DROP_WAIT = 0.2  # how long silence must last to count as "dropped", once the rest answered
SETTLE_WAIT = 2.0  # for the listener to forget a closed connection
# CI runs these counts (~15 s); TRANSPORT_FUZZ_SCALE=20 multiplies them for a longer soak.
SCALE = int(os.environ.get("TRANSPORT_FUZZ_SCALE", "1"))
TCP_EXAMPLES = 60 * SCALE
UDP_EXAMPLES = 30 * SCALE
HALF_CLOSE_EXAMPLES = 30 * SCALE
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,  # CI reruns the same seeds only by chance; failures print their example
)

# Names CLIENT1 (on appnet) asks about: local ones of every kind (R2-R8), a name on a network it
# is not attached to, and names nobody has (forwarded: SERVFAIL, the harness has no upstream).
NAMES = (
    "web", "WWW", "db", "pool", "many", "dual", "six", "api", "tasks.api", "rr",
    "_http._tcp.api", "api.1.t0api1xxxxxx", "web.appnet", "2.0.10.10.in-addr.arpa", "vault",
)  # fmt: skip
QTYPES = (QTYPE.A, QTYPE.AAAA, QTYPE.SRV, QTYPE.PTR, QTYPE.TXT)


# -- R16's verdict, from the header alone ------------------------------------------------------


class Verdict(enum.Enum):
    DROP = "no reply"
    NOTIMP = "NOTIMP"
    FORMERR = "FORMERR"
    REPLY = "a reply with the query's id, any rcode"


def r16(message: bytes) -> Verdict:
    """R16's checks in order, as far as the header decides them."""
    if len(message) < HEADER.size:
        return Verdict.DROP
    _, flags, qdcount, *_ = HEADER.unpack_from(message)
    if flags & QR:
        return Verdict.DROP
    if flags & OPCODE_MASK:
        return Verdict.NOTIMP
    if qdcount != 1:
        return Verdict.FORMERR
    return Verdict.REPLY


def check_r16(message: bytes, reply: bytes | None, where: str) -> None:
    verdict = r16(message)
    if verdict is Verdict.DROP:
        assert reply is None, f"{where}: {message.hex()} is dropped by R16, got {reply!r}"
        return
    assert reply is not None, f"{where}: {message.hex()} wants {verdict.value}, got nothing"
    assert len(reply) >= HEADER.size, f"{where}: reply shorter than a header: {reply!r}"
    qid, flags, *_ = HEADER.unpack_from(reply)
    assert qid == HEADER.unpack_from(message)[0], f"{where}: reply id differs from the query's"
    assert flags & QR, f"{where}: reply without QR"
    if verdict is Verdict.NOTIMP:
        assert flags & 0xF == RCODE.NOTIMP, f"{where}: rcode {flags & 0xF}, wanted NOTIMP"
    elif verdict is Verdict.FORMERR:
        assert flags & 0xF == RCODE.FORMERR, f"{where}: rcode {flags & 0xF}, wanted FORMERR"


def reply_key(reply: bytes) -> tuple[int, int]:
    """What two transports must agree on for one message: the id and the rcode."""
    qid, flags, *_ = HEADER.unpack_from(reply)
    return qid, flags & 0xF


# -- inputs ------------------------------------------------------------------------------------


def query(name: str, qtype: int, qid: int) -> bytes:
    return DNSRecord(DNSHeader(id=qid, rd=1), q=DNSQuestion(name, qtype)).pack()


def frame(message: bytes) -> bytes:
    return len(message).to_bytes(2, "big") + message


class Kind(enum.Enum):
    QUERY = "a valid framed query"
    RANDOM = "a frame of random or mangled bytes"
    EMPTY = "a frame of length 0"
    GARBAGE = "raw bytes, no framing"
    CUT = "a frame declaring more bytes than follow"


@dataclass(frozen=True, slots=True)
class Item:
    kind: Kind
    wire: bytes  # what goes on the connection for this item

    def __repr__(self) -> str:
        return f"Item({self.kind.name}, {self.wire.hex()})"


names = st.one_of(
    st.sampled_from(NAMES),
    st.integers(0, 10**6).map(lambda n: f"nx{n}.nothing.invalid"),
)
queries = st.builds(query, names, st.sampled_from(QTYPES), st.integers(0, 0xFFFF))
# Message bodies R16 has something to say about: random bytes (mostly dropped or FORMERR/NOTIMP
# by the header), valid queries with bytes after them, valid queries cut anywhere.
mangled = st.one_of(
    st.binary(min_size=1, max_size=600),
    st.builds(lambda q, tail: q + tail, queries, st.binary(min_size=1, max_size=64)),
    st.builds(lambda q, cut: q[: max(1, int(len(q) * cut))], queries, st.floats(0, 0.99)),
)
framed_items = st.one_of(
    queries.map(lambda q: Item(Kind.QUERY, frame(q))),
    mangled.map(lambda m: Item(Kind.RANDOM, frame(m))),
)
# Items that break the framing: rarer, so most streams carry several whole frames first.
disruptors = st.one_of(
    st.just(Item(Kind.EMPTY, b"\x00\x00")),
    st.binary(min_size=1, max_size=12).map(lambda b: Item(Kind.GARBAGE, b)),
)
cut_frames = st.one_of(
    st.binary(min_size=1, max_size=1).map(lambda b: Item(Kind.CUT, b)),  # half a length prefix
    st.builds(
        lambda body, extra: Item(Kind.CUT, (len(body) + extra).to_bytes(2, "big") + body),
        st.one_of(st.binary(max_size=40), queries.map(lambda q: q[:-1])),
        st.integers(1, 200),
    ),
)


@st.composite
def streams(draw: st.DrawFn) -> list[Item]:
    """Whole frames, up to two disruptors anywhere among them, maybe a cut frame last."""
    stream = draw(st.lists(framed_items, min_size=1, max_size=10))
    for _ in range(draw(st.integers(0, 2))):
        stream.insert(draw(st.integers(0, len(stream))), draw(disruptors))
    if draw(st.booleans()) or not stream:
        stream.append(draw(cut_frames))
    return stream


class Ending(enum.Enum):
    HALF_CLOSE = "shutdown(SHUT_WR), then read to the server's close"
    CLOSE = "read the answers due, then close (mid-frame when the stream ends cut)"
    RESET = "read the answers due, then reset the connection (SO_LINGER 0)"
    RESET_AT_ONCE = "reset right after sending, answers maybe still in flight; nothing read"


@dataclass(frozen=True, slots=True)
class Sending:
    chunk_sizes: tuple[int, ...]  # the first chunks' sizes; the rest goes at once
    pauses: tuple[float, ...]  # after each of those chunks
    ending: Ending


sendings = st.builds(
    Sending,
    st.lists(st.integers(1, 64), max_size=12).map(tuple),
    st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.005]), max_size=12).map(tuple),
    st.sampled_from(Ending),
)


# -- the framing model -------------------------------------------------------------------------


class StreamEnd(enum.Enum):
    CLEAN = "every byte was in a whole frame"
    EMPTY = "a zero-length frame: the server closes there"
    CUT = "the last frame is unfinished"


@dataclass(frozen=True, slots=True)
class Framed:
    messages: tuple[bytes, ...]  # the whole frames' bodies the server is to answer, in order
    end: StreamEnd


def split_frames(stream: bytes) -> Framed:
    """The messages of a TCP stream by RFC 1035 4.2.2, up to an empty frame or a cut one."""
    messages: list[bytes] = []
    offset = 0
    while True:
        if offset == len(stream):
            return Framed(tuple(messages), StreamEnd.CLEAN)
        if len(stream) - offset < 2:
            return Framed(tuple(messages), StreamEnd.CUT)
        length = int.from_bytes(stream[offset : offset + 2], "big")
        if length == 0:
            return Framed(tuple(messages), StreamEnd.EMPTY)
        if offset + 2 + length > len(stream):
            return Framed(tuple(messages), StreamEnd.CUT)
        messages.append(stream[offset + 2 : offset + 2 + length])
        offset += 2 + length


def test_split_frames_model() -> None:
    good = query("web", QTYPE.A, 7)
    assert split_frames(frame(good) * 2) == Framed((good, good), StreamEnd.CLEAN)
    assert split_frames(frame(good) + b"\x00\x00" + frame(good)).messages == (good,)
    assert split_frames(frame(good) + b"\x00").end is StreamEnd.CUT
    assert split_frames(b"\x00\x05abc") == Framed((), StreamEnd.CUT)


# -- clients -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    config = ListenerConfig(max_tcp_pipeline=PIPELINE)
    with ServerThread(sample_table(), (CLIENT1,), config=config, prefer_port_53=False) as running:
        yield running


def address(server: ServerThread) -> tuple[str, int]:
    return server.address(CLIENT1), server.port(CLIENT1)


def udp_replies(server: ServerThread, messages: Sequence[bytes]) -> list[bytes | None]:
    """Each message in its own datagram from its own socket (ids may repeat); its reply or None.

    Waits up to REPLY_WAIT for every message R16 answers, then DROP_WAIT more for the rest."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in messages]
    try:
        for sock, message in zip(sockets, messages, strict=True):
            sock.sendto(message, address(server))
        replies: list[bytes | None] = [None] * len(messages)
        answered = {i for i, message in enumerate(messages) if r16(message) is not Verdict.DROP}
        deadline = time.monotonic() + REPLY_WAIT
        quiet_until: float | None = None
        while True:
            pending = [s for s, reply in zip(sockets, replies, strict=True) if reply is None]
            now = time.monotonic()
            if all(replies[i] is not None for i in answered):
                quiet_until = quiet_until or now + DROP_WAIT
            limit = quiet_until or deadline
            if not pending or now >= limit:
                return replies
            readable, _, _ = select.select(pending, [], [], limit - now)
            for sock in readable:
                replies[sockets.index(sock)] = sock.recv(65535)
    finally:
        for sock in sockets:
            sock.close()


def read_exactly(sock: socket.socket, size: int) -> bytes | None:
    """`size` bytes, or None at a clean end of stream before the first of them."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            assert not data, f"the server closed mid-frame, after {len(data)} of {size} bytes"
            return None
        data += chunk
    return data


def read_frames(sock: socket.socket, count: int | None) -> list[bytes]:
    """`count` reply frames, or (None) every frame up to the server's close, each whole."""
    replies: list[bytes] = []
    while count is None or len(replies) < count:
        try:
            prefix = read_exactly(sock, 2)
        except ConnectionResetError:
            break  # closed with our bytes unread: a reset, after everything it had written
        if prefix is None:
            break
        body = read_exactly(sock, int.from_bytes(prefix, "big"))
        assert body is not None, "the server closed between a frame's length and its body"
        replies.append(body)
    return replies


def send_stream(sock: socket.socket, stream: bytes, sending: Sending) -> None:
    """The stream in the chosen chunks and pauses; stops quietly once the server has closed."""
    offset = 0
    try:
        for index, size in enumerate(sending.chunk_sizes):
            if offset >= len(stream):
                return
            sock.sendall(stream[offset : offset + size])
            offset += size
            if index < len(sending.pauses) and sending.pauses[index]:
                time.sleep(sending.pauses[index])
        if offset < len(stream):
            sock.sendall(stream[offset:])
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed after an empty frame: the model says so, the replies will tell


def open_connections(server: ServerThread) -> int:
    return server.call(lambda: server.listeners[CLIENT1].stats.tcp_connections)


def wait_connections(server: ServerThread, count: int) -> None:
    deadline = time.monotonic() + SETTLE_WAIT
    while (now := open_connections(server)) != count:
        assert time.monotonic() < deadline, f"{now} tcp connections open, expected {count}"
        time.sleep(0.01)


def still_answers(server: ServerThread) -> None:
    """A fresh UDP and a fresh TCP query for `web` get its address."""
    good = query("web", QTYPE.A, 0x5EB)
    (reply,) = udp_replies(server, [good])
    assert reply is not None, "no UDP answer after the fuzzed input"
    assert [str(rr.rdata) for rr in DNSRecord.parse(reply).rr] == [WEB_V4]
    with socket.create_connection(address(server), timeout=REPLY_WAIT) as sock:
        sock.sendall(frame(good))
        (reply,) = read_frames(sock, 1)
    assert [str(rr.rdata) for rr in DNSRecord.parse(reply).rr] == [WEB_V4]


def live_tcp_connection_objects() -> int:
    gc.collect()
    return sum(1 for thing in gc.get_objects() if isinstance(thing, _TcpConnection))


# -- 1. TCP streams ----------------------------------------------------------------------------


@settings(FUZZ, max_examples=TCP_EXAMPLES)
@given(stream_items=streams(), sending=sendings)
def test_r15_r16_tcp_stream_of_arbitrary_frames_answers_each_whole_frame_as_udp_does(
    server: ServerThread, stream_items: list[Item], sending: Sending
) -> None:
    before = open_connections(server)
    stream = b"".join(item.wire for item in stream_items)
    framed = split_frames(stream)
    # The UDP path's verdict on each whole frame's bytes: the reference the connection must match.
    udp = udp_replies(server, framed.messages)
    for message, reply in zip(framed.messages, udp, strict=True):
        check_r16(message, reply, "udp")
    expected = Counter(reply_key(reply) for reply in udp if reply is not None)
    event(f"stream end {framed.end.name}, client {sending.ending.name}")
    event(f"{len(framed.messages)} whole frames, {expected.total()} answered")

    with socket.create_connection(address(server), timeout=REPLY_WAIT) as sock:
        sock.settimeout(REPLY_WAIT)
        send_stream(sock, stream, sending)
        if sending.ending is Ending.RESET_AT_ONCE:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            wait_connections(server, before)  # forgotten, its tasks cancelled or finished
            still_answers(server)
            return
        if sending.ending is Ending.HALF_CLOSE or framed.end is StreamEnd.EMPTY:
            if framed.end is not StreamEnd.EMPTY:
                sock.shutdown(socket.SHUT_WR)
            replies = read_frames(sock, None)  # all of them: the server closes when done
        else:
            replies = read_frames(sock, expected.total())
            if sending.ending is Ending.RESET:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # (Leaving the block closes the socket: after a cut stream, in the middle of a frame.)

    for reply in replies:
        assert len(reply) >= HEADER.size and HEADER.unpack_from(reply)[1] & QR, reply
        DNSRecord.parse(reply)  # whole and well-formed
    assert Counter(reply_key(reply) for reply in replies) == expected, (
        f"tcp answered {sorted(map(reply_key, replies))}, udp {sorted(expected.elements())} "
        f"for {len(framed.messages)} frames, stream end {framed.end.name}"
    )
    for item in stream_items:
        # Every valid query the framing reached has its answer, by id (any order, RFC 7766).
        if item.kind is Kind.QUERY and item.wire[2:] in framed.messages:
            assert HEADER.unpack_from(item.wire, 2)[0] in {reply_key(r)[0] for r in replies}
    wait_connections(server, before)
    still_answers(server)


def test_r15_answers_started_before_a_zero_length_frame_are_sent_before_the_close(
    server: ServerThread,
) -> None:
    """Found by the stream test: the empty frame closed the connection at once and the answers
    still being worked out (slow path: forwarded, FORMERR) were thrown away."""
    forwarded = query("nx-before-empty.nothing.invalid", QTYPE.A, 0xE1)
    malformed = query("web", QTYPE.A, 0xE2)[:-2]  # question cut: FORMERR, from the slow path
    with socket.create_connection(address(server), timeout=REPLY_WAIT) as sock:
        sock.settimeout(REPLY_WAIT)
        sock.sendall(frame(forwarded) + frame(malformed) + b"\x00\x00" + frame(query("web", 1, 3)))
        replies = read_frames(sock, None)
    assert sorted(map(reply_key, replies)) == [(0xE1, RCODE.SERVFAIL), (0xE2, RCODE.FORMERR)]


def test_r15_tcp_fuzzing_leaves_no_connection_objects(server: ServerThread) -> None:
    """After the streams above (and any here), no _TcpConnection is left alive."""
    with socket.create_connection(address(server), timeout=REPLY_WAIT) as sock:
        sock.sendall(frame(query("web", QTYPE.A, 1)) + b"\x00\x10abc")
        assert len(read_frames(sock, 1)) == 1
    wait_connections(server, 0)
    deadline = time.monotonic() + SETTLE_WAIT
    while (alive := live_tcp_connection_objects()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive == 0, f"{alive} connection objects outlived their connections"


# -- 2. UDP datagrams --------------------------------------------------------------------------

datagrams = st.one_of(
    st.binary(max_size=4096),
    st.builds(lambda q, tail: q + tail, queries, st.binary(min_size=1, max_size=4000)),
    st.builds(lambda q, cut: q[: int(len(q) * cut)], queries, st.floats(0, 0.99)),
    queries,
)


@settings(FUZZ, max_examples=UDP_EXAMPLES)
@given(packets=st.lists(datagrams, min_size=1, max_size=8))
def test_r16_udp_datagrams_of_arbitrary_bytes_get_r16s_answer_or_nothing(
    server: ServerThread, packets: list[bytes]
) -> None:
    for packet, reply in zip(packets, udp_replies(server, packets), strict=True):
        check_r16(packet, reply, "udp")
    still_answers(server)


# -- 3. half-closes ----------------------------------------------------------------------------


@settings(FUZZ, max_examples=HALF_CLOSE_EXAMPLES)
@given(messages=st.lists(queries, min_size=1, max_size=2 * PIPELINE + 2), split=st.booleans())
def test_r15_half_closed_client_gets_every_answer_then_the_server_closes(
    server: ServerThread, messages: list[bytes], split: bool
) -> None:
    """More queries than the pipeline holds, some on the slow path, then SHUT_WR at once."""
    before = open_connections(server)
    with socket.create_connection(address(server), timeout=REPLY_WAIT) as sock:
        sock.settimeout(REPLY_WAIT)
        stream = b"".join(frame(m) for m in messages)
        if split:  # the FIN right after the last byte of a frame sent on its own
            sock.sendall(stream[:-1])
            time.sleep(0.002)
            sock.sendall(stream[-1:])
        else:
            sock.sendall(stream)
        sock.shutdown(socket.SHUT_WR)
        replies = read_frames(sock, len(messages))
        assert sock.recv(1) == b"", "the server kept the connection open after the answers"
    assert sorted(reply_key(r)[0] for r in replies) == sorted(
        HEADER.unpack_from(m)[0] for m in messages
    )
    wait_connections(server, before)
