"""R16: bad input over UDP and TCP gets its answer (drop, FORMERR, NOTIMP, with the client's id)
and stops nothing: after each case the same listener answers a good query, and another
sandbox's listener answers throughout.

The corpus is a list of named cases; each runs over both transports.
"""

from __future__ import annotations

import enum
import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.proto.harness import CLIENT1, CLIENT2, WEB_V4, ServerThread, sample_table

HEADER = struct.Struct("!HHHHHH")
QR = 0x8000
RD = 0x0100
OPCODE_SHIFT = 11
NOTIFY, UPDATE, STATUS, IQUERY = 4, 5, 2, 1
QUESTION = b"\x03web\x00" + struct.pack("!HH", 1, 1)  # web. A IN
NO_REPLY_WAIT = 0.5


class Expect(enum.Enum):
    DROP = "drop"
    FORMERR = "formerr"
    NOTIMP = "notimp"
    REPLY = "some reply with the client's id"  # random bytes that happen to parse


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    packet: bytes
    expect: Expect
    udp: bool = True
    tcp: bool = True

    @property
    def id(self) -> int:
        return struct.unpack_from("!H", self.packet)[0]


def header(qid: int, flags: int = RD, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return HEADER.pack(qid, flags, qd, an, ns, ar)


def opcode(code: int) -> int:
    return RD | code << OPCODE_SHIFT


def expected_from_header(packet: bytes) -> Expect:
    """R16's order of checks, for packets whose content is random."""
    if len(packet) < HEADER.size:
        return Expect.DROP
    _, flags, qdcount, *_ = HEADER.unpack_from(packet)
    if flags & QR:
        return Expect.DROP
    if flags & (0xF << OPCODE_SHIFT):
        return Expect.NOTIMP
    if qdcount != 1:
        return Expect.FORMERR
    return Expect.REPLY


def random_case(seed: int) -> Case:
    rng = random.Random(seed)
    packet = rng.randbytes(rng.choice([3, 12, 40, 300, 1400]))
    return Case(f"random_bytes_{seed}", packet, expected_from_header(packet))


def corpus() -> list[Case]:
    long_name = (b"\x3f" + b"a" * 63) * 4 + b"\x00"  # 260 octets: over RFC 1035's 255
    cases = [
        Case("empty_datagram", b"", Expect.DROP, tcp=False),  # TCP: zero length closes instead
        Case("short_1_byte", b"\x12", Expect.DROP),
        Case("short_11_bytes", header(0x1101)[:11], Expect.DROP),
        Case("response_qr_set", header(0x1102, QR | RD) + QUESTION, Expect.DROP),
        Case(
            "response_with_answer",
            header(0x1103, QR | RD | 0x80, an=1)
            + QUESTION
            + b"\xc0\x0c"
            + struct.pack("!HHIH", 1, 1, 5, 4)
            + bytes([10, 0, 0, 1]),
            Expect.DROP,
        ),
        Case("opcode_notify", header(0x1201, opcode(NOTIFY)) + QUESTION, Expect.NOTIMP),
        Case("opcode_update", header(0x1202, opcode(UPDATE)) + QUESTION, Expect.NOTIMP),
        Case("opcode_status", header(0x1203, opcode(STATUS)) + QUESTION, Expect.NOTIMP),
        Case("opcode_iquery", header(0x1204, opcode(IQUERY)) + QUESTION, Expect.NOTIMP),
        Case("opcode_update_header_only", header(0x1205, opcode(UPDATE), qd=0), Expect.NOTIMP),
        Case("qdcount_0_header_only", header(0x1301, qd=0), Expect.FORMERR),
        Case("qdcount_0_with_question", header(0x1302, qd=0) + QUESTION, Expect.FORMERR),
        Case("qdcount_2", header(0x1303, qd=2) + QUESTION + QUESTION, Expect.FORMERR),
        Case("qdcount_65535", header(0x1304, qd=0xFFFF) + QUESTION, Expect.FORMERR),
        Case("label_past_the_end", header(0x1401) + b"\x3fabc", Expect.FORMERR),
        Case(
            "label_type_01_reserved",
            header(0x1402) + b"\x41abc\x00" + QUESTION[-4:],
            Expect.FORMERR,
        ),
        Case(
            "label_type_10_reserved",
            header(0x1403) + b"\x81a\x00" + QUESTION[-4:],
            Expect.FORMERR,
        ),
        Case(
            "compression_loop_to_itself",
            header(0x1501) + b"\xc0\x0c" + QUESTION[-4:],
            Expect.FORMERR,
        ),
        Case(
            "compression_loop_via_a_label",
            header(0x1502) + b"\x01a\xc0\x0c" + QUESTION[-4:],
            Expect.FORMERR,
        ),
        Case(
            "compression_pointer_past_the_end",
            header(0x1503) + b"\xc0\xff" + QUESTION[-4:],
            Expect.FORMERR,
        ),
        Case("compression_pointer_cut_in_half", header(0x1504) + b"\x03web\xc0", Expect.FORMERR),
        Case("question_without_type", header(0x1601) + b"\x03web\x00", Expect.FORMERR),
        Case("question_half_a_type", header(0x1602) + b"\x03web\x00\x00", Expect.FORMERR),
        Case(
            "name_over_255_octets",
            header(0x1603) + long_name + QUESTION[-4:],
            Expect.FORMERR,
        ),
        Case(
            "answer_count_over_junk",
            header(0x1701, an=1) + QUESTION + b"\xff" * 40,
            Expect.FORMERR,
        ),
        Case(
            "huge_65kb_message",
            header(0x1702, an=0xFFFF) + QUESTION + b"\xff" * (65000 - 12 - len(QUESTION)),
            Expect.FORMERR,
        ),
        Case("udp_junk_4kb", header(0x1703) + b"\xff" * 4000, Expect.FORMERR),
    ]
    return cases + [random_case(seed) for seed in range(1, 13)]


CORPUS = corpus()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(sample_table(), (CLIENT1, CLIENT2)) as running:
        yield running


def check_reply(case: Case, reply: bytes | None) -> None:
    if case.expect is Expect.DROP:
        assert reply is None, f"{case.name}: expected no reply, got {reply!r}"
        return
    assert reply is not None, f"{case.name}: expected {case.expect.value}, got no reply"
    qid, flags, *_ = HEADER.unpack_from(reply)
    assert qid == case.id
    assert flags & QR
    rcode = flags & 0xF
    if case.expect is Expect.FORMERR:
        assert rcode == dns.rcode.FORMERR, f"{case.name}: rcode {dns.rcode.to_text(rcode)}"
    elif case.expect is Expect.NOTIMP:
        assert rcode == dns.rcode.NOTIMP, f"{case.name}: rcode {dns.rcode.to_text(rcode)}"


def good_query_answered(server: ServerThread, sandbox: str, *, tcp: bool) -> None:
    query = dns.message.make_query("web", "A")
    where, port = server.address(sandbox), server.port(sandbox)
    send = dns.query.tcp if tcp else dns.query.udp
    reply = send(query, where, port=port, timeout=2)
    assert [rd.to_text() for rrset in reply.answer for rd in rrset] == [WEB_V4]


def udp_exchange(server: ServerThread, sandbox: str, packet: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(NO_REPLY_WAIT)
        sock.sendto(packet, (server.address(sandbox), server.port(sandbox)))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def recv_frame(sock: socket.socket) -> bytes:
    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(data)} of {count} bytes")
            data += chunk
        return data

    return exactly(int.from_bytes(exactly(2), "big"))


@pytest.mark.parametrize("case", [c for c in CORPUS if c.udp], ids=lambda c: c.name)
def test_r16_bad_udp_packet_gets_its_answer_and_the_server_keeps_answering(
    server: ServerThread, case: Case
) -> None:
    check_reply(case, udp_exchange(server, CLIENT1, case.packet))
    good_query_answered(server, CLIENT1, tcp=False)


@pytest.mark.parametrize("case", [c for c in CORPUS if c.tcp], ids=lambda c: c.name)
def test_r16_bad_tcp_message_gets_its_answer_and_the_connection_keeps_answering(
    server: ServerThread, case: Case
) -> None:
    good = dns.message.make_query("web", "A")
    framed = [len(m).to_bytes(2, "big") + m for m in (case.packet, good.to_wire())]
    address = (server.address(CLIENT1), server.port(CLIENT1))
    with socket.create_connection(address, timeout=2) as sock:
        sock.sendall(b"".join(framed))
        replies = [recv_frame(sock)]
        if case.expect is not Expect.DROP:
            replies.append(recv_frame(sock))  # two answers, in whichever order they finished
        good_replies = [r for r in replies if r[:2] == good.to_wire()[:2]]
        bad_replies = [r for r in replies if r[:2] != good.to_wire()[:2]]
        assert len(good_replies) == 1, f"{case.name}: good query not answered on the connection"
        assert dns.message.from_wire(good_replies[0]).answer[0][0].to_text() == WEB_V4
        check_reply(case, bad_replies[0] if bad_replies else None)
    good_query_answered(server, CLIENT1, tcp=True)


def test_r16_whole_corpus_at_once_leaves_other_sandboxes_answering(server: ServerThread) -> None:
    address = (server.address(CLIENT1), server.port(CLIENT1))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(3):
            for case in CORPUS:
                sock.sendto(case.packet, address)
            good_query_answered(server, CLIENT2, tcp=False)
    good_query_answered(server, CLIENT2, tcp=True)
    good_query_answered(server, CLIENT1, tcp=False)
    assert server.listeners[CLIENT1].stats.handler_errors == 0
