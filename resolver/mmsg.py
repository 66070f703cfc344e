"""Many datagrams per system call: recvmmsg(2) and sendmmsg(2) through ctypes.

The listeners' UDP sockets are read with one recvmmsg for up to SLOTS queued datagrams and the
replies ready at once are written with one sendmmsg (those that come later, from upstreams, with
one sendmmsg per turn of the loop): on this machine that lifted a canned
responder from 153k to 194k queries per second (docs/bench/2026-12-07-mmsg.md), where one
recvfrom and one sendto per query spend most of their time entering and leaving the kernel.

A `Batch` holds the buffers and the message vectors, made once and reused: a batch is read,
answered and written within one callback, so one batch per thread serves every listener of
that thread's loop (`thread_batch`). Addresses stay raw sockaddr bytes from the kernel to the
reply; nothing is decoded into a Python tuple.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import sys
import threading

SLOTS = 32  # datagrams per call; dnsperf-like loads fill every one of them
DATAGRAM = 65535  # a slot holds the largest UDP payload, so no datagram is ever cut
SOCKADDR = 28  # sockaddr_in6, the largest address a listener's socket (IPv4 or IPv6) has
MSG_DONTWAIT = 0x40

_libc = ctypes.CDLL(None, use_errno=True)
_recvmmsg = _libc.recvmmsg
_sendmmsg = _libc.sendmmsg
_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("length", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("header", _Msghdr), ("length", ctypes.c_uint))


_STEP = ctypes.sizeof(_Mmsghdr)
_NAMELEN = _Msghdr.namelen.offset
_LENGTH = _Mmsghdr.length.offset
_IOV_STEP = ctypes.sizeof(_Iovec)
_IOV_LENGTH = _Iovec.length.offset
_UINT = struct.Struct("I")
_SIZE_T = struct.Struct("N")


class _Vector:
    """SLOTS message headers, each with one iovec over its own DATAGRAM buffer and an address."""

    def __init__(self) -> None:
        self.data = (ctypes.c_char * (SLOTS * DATAGRAM))()
        self.names = (ctypes.c_char * (SLOTS * SOCKADDR))()
        self.iovecs = (_Iovec * SLOTS)()
        self.headers = (_Mmsghdr * SLOTS)()
        for slot in range(SLOTS):
            self.iovecs[slot].base = ctypes.addressof(self.data) + slot * DATAGRAM
            self.iovecs[slot].length = DATAGRAM
            header = self.headers[slot].header
            header.name = ctypes.addressof(self.names) + slot * SOCKADDR
            header.namelen = SOCKADDR
            header.iov = ctypes.addressof(self.iovecs[slot])
            header.iovlen = 1
        self.data_view = memoryview(self.data).cast("B")
        self.names_view = memoryview(self.names).cast("B")
        self.iovecs_view = memoryview(self.iovecs).cast("B")
        self.headers_view = memoryview(self.headers).cast("B")


class Batch:
    """One thread's buffers for `receive` and `send`; see the module docstring."""

    def __init__(self) -> None:
        self._in = _Vector()
        self._out = _Vector()
        self._filled = 0  # slots whose address length the last receive overwrote

    def receive(self, fd: int) -> list[tuple[bytes, bytes]]:
        """Up to SLOTS queued datagrams of `fd` as (payload, raw address); [] when none is.

        Raises OSError for a failure other than an empty queue or an interrupted call."""
        vector = self._in
        headers = vector.headers_view
        for slot in range(self._filled):
            _UINT.pack_into(headers, slot * _STEP + _NAMELEN, SOCKADDR)
        count = _recvmmsg(fd, vector.headers, SLOTS, MSG_DONTWAIT, None)
        if count < 0:
            self._filled = 0
            code = ctypes.get_errno()
            if code in _RETRY:
                return []
            raise OSError(code, os.strerror(code))
        self._filled = count
        data, names = vector.data_view, vector.names_view
        received = []
        for slot in range(count):
            at = slot * _STEP
            length = _UINT.unpack_from(headers, at + _LENGTH)[0]
            namelen = _UINT.unpack_from(headers, at + _NAMELEN)[0]
            start, name = slot * DATAGRAM, slot * SOCKADDR
            received.append(
                (bytes(data[start : start + length]), bytes(names[name : name + namelen]))
            )
        return received

    def send(self, fd: int, replies: list[tuple[bytes, bytes]]) -> int:
        """Write (raw address, payload) pairs, SLOTS per call; how many the socket took.

        A reply the socket has no room for is not queued: a UDP client asks again."""
        vector = self._out
        headers, iovecs = vector.headers_view, vector.iovecs_view
        data, names = vector.data_view, vector.names_view
        sent = 0
        for first in range(0, len(replies), SLOTS):
            chunk = replies[first : first + SLOTS]
            for slot, (address, payload) in enumerate(chunk):
                start, name = slot * DATAGRAM, slot * SOCKADDR
                data[start : start + len(payload)] = payload
                _SIZE_T.pack_into(iovecs, slot * _IOV_STEP + _IOV_LENGTH, len(payload))
                names[name : name + len(address)] = address
                _UINT.pack_into(headers, slot * _STEP + _NAMELEN, len(address))
            count = _sendmmsg(fd, vector.headers, len(chunk), 0)
            if count < 0:
                code = ctypes.get_errno()
                if code in _RETRY:
                    return sent
                raise OSError(code, os.strerror(code))
            sent += count
            if count < len(chunk):
                return sent
        return sent


_threads = threading.local()


def thread_batch() -> Batch:
    """The calling thread's Batch, made on first use."""
    batch: Batch | None = getattr(_threads, "batch", None)
    if batch is None:
        batch = _threads.batch = Batch()
    return batch


def host_of(sockaddr: bytes) -> str:
    """The address of a raw sockaddr_in or sockaddr_in6, as text ("" for another family)."""
    family = int.from_bytes(sockaddr[:2], sys.byteorder)
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, sockaddr[4:8])
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, sockaddr[8:24])
    return ""
