"""recvmmsg/sendmmsg through ctypes (resolver/mmsg.py), on real UDP sockets on loopback."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from resolver import mmsg


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    client.bind(("127.0.0.1", 0))
    server.setblocking(False)
    client.settimeout(2)
    try:
        yield server, client
    finally:
        server.close()
        client.close()


def sockaddr_port(address: bytes) -> int:
    # sockaddr_in: family (2 bytes, host order), port (2 bytes, network order), address.
    return int.from_bytes(address[2:4], "big")


def test_an_empty_socket_gives_nothing(pair: tuple[socket.socket, socket.socket]) -> None:
    server, _ = pair
    assert mmsg.Batch().receive(server.fileno()) == []


def test_datagrams_come_a_batch_at_a_time_with_their_senders_address(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    batch = mmsg.Batch()
    sent = [f"query {i}".encode() * (i + 1) for i in range(mmsg.SLOTS + 8)]
    for payload in sent:
        client.sendto(payload, server.getsockname())
    first = batch.receive(server.fileno())
    second = batch.receive(server.fileno())
    assert [len(first), len(second)] == [mmsg.SLOTS, 8]
    assert [data for data, _ in first + second] == sent
    assert {sockaddr_port(address) for _, address in first + second} == {client.getsockname()[1]}
    assert batch.receive(server.fileno()) == []


def test_replies_go_back_in_one_call_to_each_address(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.settimeout(2)
    try:
        batch = mmsg.Batch()
        client.sendto(b"from client", server.getsockname())
        other.sendto(b"from other", server.getsockname())
        received = batch.receive(server.fileno())
        # More replies than slots, a bytearray among them: all of them leave, in order.
        replies = [(address, b"re: " + data) for data, address in received] * mmsg.SLOTS
        replies.append((received[0][1], bytearray(b"last")))
        assert batch.send(server.fileno(), replies) == len(replies)
        got = [client.recv(100) for _ in range(mmsg.SLOTS + 1)]
        assert got == [b"re: from client"] * mmsg.SLOTS + [b"last"]
        assert [other.recv(100) for _ in range(mmsg.SLOTS)] == [b"re: from other"] * mmsg.SLOTS
    finally:
        other.close()


def test_the_largest_datagram_is_not_cut(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    payload = bytes(range(256)) * 250  # 64,000 bytes
    client.sendto(payload, server.getsockname())
    batch = mmsg.Batch()
    [(data, address)] = batch.receive(server.fileno())
    assert data == payload
    assert batch.send(server.fileno(), [(address, bytearray(payload))]) == 1
    assert client.recv(65535) == payload


def test_a_failure_other_than_an_empty_queue_is_an_oserror() -> None:
    read, write = os.pipe()  # not a socket: ENOTSOCK
    try:
        with pytest.raises(OSError, match="socket"):
            mmsg.Batch().receive(read)
        with pytest.raises(OSError, match="socket"):
            mmsg.Batch().send(write, [(b"\x02\x00" + bytes(14), b"x")])
    finally:
        os.close(read)
        os.close(write)


def test_each_thread_has_its_own_batch() -> None:
    here = mmsg.thread_batch()
    assert mmsg.thread_batch() is here
    there: list[mmsg.Batch] = []
    thread = threading.Thread(target=lambda: there.append(mmsg.thread_batch()))
    thread.start()
    thread.join()
    assert there and there[0] is not here


def test_host_of_reads_the_address_of_a_raw_sockaddr() -> None:
    v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with v4, v6:
        v4.bind(("127.0.0.1", 0))
        v6.bind(("::1", 0))
        got = []
        for sock, host in ((v4, "127.0.0.1"), (v6, "::1")):
            port = sock.getsockname()[1]
            family = sock.family
            with socket.socket(family, socket.SOCK_DGRAM) as client:
                client.bind((host, 0))
                client.sendto(b"x", (host, port))
                batch = mmsg.Batch()
                sock.setblocking(False)
                for _ in range(100):
                    try:
                        received = batch.receive(sock.fileno())
                    except BlockingIOError:
                        received = []
                    if received:
                        break
                    time.sleep(0.01)
                got.append(mmsg.host_of(received[0][1]))
    assert got == ["127.0.0.1", "::1"]
    assert mmsg.host_of(b"\x01\x00" + b"\x00" * 26) == ""  # AF_UNIX: no host
