"""Parsing a whole DNS message from an upstream at a cost that grows with its size, not faster.

dnslib decodes every compressed name by following its pointers recursively, from scratch each
time: a reply whose owner names point at each other in a chain costs time quadratic in its
length (a 900-record reply took 10 s) and a longer chain raises RecursionError. An upstream is
outside our control, and its reply is parsed on the event loop that serves every sandbox, so
names here are decoded iteratively, each offset at most once, with no more pointer hops than a
name of 255 octets can need.
"""

from __future__ import annotations

from dnslib import RR, DNSError, DNSHeader, DNSLabel, DNSQuestion, DNSRecord
from dnslib.bimap import BimapError
from dnslib.buffer import BufferError
from dnslib.label import DNSBuffer

from resolver.wire import MAX_NAME

MAX_HOPS = 127  # a pointer that adds no label is pointless; 127 labels already fill a name


class _NameCachingBuffer(DNSBuffer):
    """A DNSBuffer whose names are decoded once per offset (a suffix is a suffix wherever it
    is pointed at from)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self._suffixes: dict[int, tuple[bytes, ...]] = {}

    def decode_name(self, last: int = -1) -> DNSLabel:
        labels: list[bytes] = []
        starts: list[tuple[int, int]] = []  # (offset of a label, labels before it)
        resume: int | None = None  # where the caller's reading goes on: after the first pointer
        hops = 0
        data = self.data
        while True:
            offset = self.offset
            known = self._suffixes.get(offset)
            if known is not None:
                labels.extend(known)
                break
            starts.append((offset, len(labels)))
            if offset >= len(data):
                raise BufferError(f"name runs past the end of the message at offset {offset}")
            length = data[offset]
            if length >= 0xC0:
                if offset + 2 > len(data):
                    raise BufferError(f"pointer cut short at offset {offset}")
                pointer = (length & 0x3F) << 8 | data[offset + 1]
                if pointer >= offset:
                    raise BufferError(f"pointer at offset {offset} does not point backwards")
                hops += 1
                if hops > MAX_HOPS:
                    raise BufferError(f"more than {MAX_HOPS} pointers in the name at {offset}")
                if resume is None:
                    resume = offset + 2
                self.offset = pointer
                continue
            if length >= 0x40:
                raise BufferError(f"reserved label type {length:#x} at offset {offset}")
            self.offset = offset + 1
            if length == 0:
                break
            label = self.get(length)
            try:
                label.decode()
            except UnicodeDecodeError as exc:  # dnslib's own rule for labels
                raise BufferError(f"invalid label at offset {offset}") from exc
            labels.append(label)
        if sum(map(len, labels)) + len(labels) + 1 > MAX_NAME:
            raise BufferError(f"name longer than {MAX_NAME} octets at offset {starts[0][0]}")
        for offset, before in starts:
            self._suffixes[offset] = tuple(labels[before:])
        if resume is not None:
            self.offset = resume
        return DNSLabel(labels)


def parse_message(data: bytes) -> DNSRecord:
    """The message DATA as dnslib's DNSRecord.parse gives it; DNSError when it is malformed
    (including names over 255 octets or with more than MAX_HOPS pointers)."""
    buffer = _NameCachingBuffer(data)
    try:
        header = DNSHeader.parse(buffer)
        questions = [DNSQuestion.parse(buffer) for _ in range(header.q)]
        answers = [RR.parse(buffer) for _ in range(header.a)]
        authority = [RR.parse(buffer) for _ in range(header.auth)]
        additional = [RR.parse(buffer) for _ in range(header.ar)]
    except (BufferError, BimapError) as exc:
        raise DNSError(f"malformed message at offset {buffer.offset}: {exc}") from exc
    return DNSRecord(header, questions, answers, auth=authority, ar=additional)
