"""etcd's v3 JSON gateway as data: what the client (drivers/cluster/etcd.py) sends and
returns, its errors, and the encoding of keys, values and int64 fields (base64 in JSON, int64
as strings, fields at their zero value left out)."""

from __future__ import annotations

import base64
import enum
import ipaddress
import logging
import os
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from drivers.errors import Invalid, NetdnsError, Unavailable

log = logging.getLogger(__name__)

_HOSTNAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)

Answer = dict[str, Any]


# -- data ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0


class EventKind(enum.StrEnum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: EventKind
    key: str
    value: bytes  # b"" for a delete
    mod_revision: int  # for a delete: the revision of the delete
    create_revision: int = 0  # 0 for a delete


_COMPARE_FIELDS = {
    "CREATE": "create_revision",
    "MOD": "mod_revision",
    "VERSION": "version",
    "VALUE": "value",
    "LEASE": "lease",
}
_COMPARE_RESULTS = ("EQUAL", "GREATER", "LESS", "NOT_EQUAL")


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction: `Compare(key, "CREATE", "EQUAL", 0)` is "key absent".

    `target` is CREATE, MOD, VERSION, LEASE (compared with an int) or VALUE (with bytes).
    """

    key: str
    target: str
    result: str = "EQUAL"
    value: int | bytes = 0

    def __post_init__(self) -> None:
        if self.target not in _COMPARE_FIELDS:
            raise Invalid(
                f"etcd compare target {self.target!r}: use one of {list(_COMPARE_FIELDS)}"
            )
        if self.result not in _COMPARE_RESULTS:
            raise Invalid(f"etcd compare result {self.result!r}: use one of {_COMPARE_RESULTS}")
        if (self.target == "VALUE") != isinstance(self.value, bytes):
            kind = "bytes" if self.target == "VALUE" else "an int"
            raise Invalid(f"etcd compare on {self.target} of {self.key!r} needs {kind}")


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int


# -- errors ----------------------------------------------------------------------------------------


class EtcdUnavailable(Unavailable):
    """etcd cannot be reached, timed out, failed (5xx) or dropped a watch stream."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(
            f"cluster store {url} {problem}: is etcd running and reachable? "
            "cluster writes fail until it is back"
        )
        self.url = url


class EtcdError(NetdnsError):
    """etcd refused a request; `code` is etcd's gRPC status code (0 when it gave none)."""

    http_status = 502

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class Compacted(NetdnsError):
    """A watch started at a revision etcd has compacted: read the prefix again, then watch
    from the revision of that read."""

    def __init__(self, url: str, start_revision: int, compact_revision: int) -> None:
        super().__init__(
            f"cluster store {url} has compacted its history up to revision {compact_revision}, "
            f"so a watch from revision {start_revision} cannot start: read the keys again and "
            "watch from the revision of that read"
        )
        self.start_revision = start_revision
        self.compact_revision = compact_revision


# -- wire helpers ----------------------------------------------------------------------------------


def parse_store_url(text: str) -> str:
    """`etcd://HOST:PORT` (HOST a name, an IPv4 or a bracketed IPv6 address) -> `http://HOST:PORT`."""
    example = "give etcd://HOST:PORT, for example etcd://10.0.0.5:2379"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise Invalid(
            f"cluster store {text!r} is not a valid address ({error}): {example}"
        ) from None
    if parts.scheme != "etcd":
        raise Invalid(f"cluster store {text!r} has no etcd:// scheme: {example}")
    host = parts.hostname
    if not host or port is None:
        raise Invalid(f"cluster store {text!r} needs both a host and a port: {example}")
    if parts.username or parts.password or parts.path not in ("", "/") or parts.query:
        raise Invalid(f"cluster store {text!r} has more than a host and a port: {example}")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Invalid(f"cluster store {text!r}: {host!r} is no IPv6 address") from None
        host = f"[{host}]"
    elif not _HOSTNAME.fullmatch(host):
        raise Invalid(f"cluster store {text!r}: {host!r} is no host name or address: {example}")
    if port == 0:
        raise Invalid(f"cluster store {text!r}: port 0 cannot be reached: {example}")
    return f"http://{host}:{port}"


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode(text: str) -> bytes:
    return base64.b64decode(text)


def key_bytes(key: str) -> bytes:
    # surrogateescape: a key read back from etcd that is not UTF-8 still round-trips.
    return key.encode("utf-8", "surrogateescape")


def key_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix` (etcd's getPrefix)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # an empty prefix (or all 0xff): every key


def range_request(key: str, prefix: bool) -> Answer:
    data = key_bytes(key)
    if not prefix:
        return {"key": encode(data)}
    # etcd refuses an empty key; "\0" to "\0" is its spelling of "every key".
    return {"key": encode(data or b"\0"), "range_end": encode(prefix_end(data))}


def put_request(key: str, value: bytes, lease: int) -> Answer:
    body: Answer = {"key": encode(key_bytes(key)), "value": encode(value)}
    if lease:
        body["lease"] = str(lease)
    return body


def compare_request(compare: Compare) -> Answer:
    value = compare.value
    return {
        "key": encode(key_bytes(compare.key)),
        "target": compare.target,
        "result": compare.result,
        _COMPARE_FIELDS[compare.target]: encode(value) if isinstance(value, bytes) else str(value),
    }


def operation_request(operation: Put | Delete) -> Answer:
    if isinstance(operation, Put):
        return {"request_put": put_request(operation.key, operation.value, operation.lease)}
    return {"request_delete_range": range_request(operation.key, operation.prefix)}


def int64(value: object) -> int:
    return int(value) if isinstance(value, int | str) and value != "" else 0


def revision_of(answer: Answer) -> int:
    return int64(answer.get("header", {}).get("revision"))


def key_value(kv: Answer) -> KeyValue:
    return KeyValue(
        key=key_text(decode(kv.get("key", ""))),
        value=decode(kv.get("value", "")),
        create_revision=int64(kv.get("create_revision")),
        mod_revision=int64(kv.get("mod_revision")),
        lease=int64(kv.get("lease")),
    )


def watch_event(event: Answer) -> WatchEvent:
    kv = event.get("kv", {})
    return WatchEvent(
        kind=EventKind.DELETE if event.get("type") == "DELETE" else EventKind.PUT,
        key=key_text(decode(kv.get("key", ""))),
        value=decode(kv.get("value", "")),
        mod_revision=int64(kv.get("mod_revision")),
        create_revision=int64(kv.get("create_revision")),
    )


def error_of(answer: Answer) -> tuple[int, str]:
    """etcd's gRPC code and message from an error answer, in any of the gateway's shapes:
    unary {"error": MSG, "code": N, "message": MSG}, streamed {"error": {"grpc_code": N,
    "http_code": H, "message": MSG}}, or (etcd >= 3.5) {"code": N, "message": MSG}."""
    error = answer.get("error")
    fields = error if isinstance(error, dict) else answer
    code = int64(fields.get("code", fields.get("grpc_code")))
    message = fields.get("message") or (error if isinstance(error, str) else "") or "no message"
    return code, str(message)


def reason(error: BaseException) -> str:
    """A short reason for a failed connection: "Connection refused" rather than aiohttp's
    "Cannot connect to host ... [Connect call failed ...]"."""
    if isinstance(error, aiohttp.ClientPayloadError):
        return "connection lost mid-stream"
    cause = getattr(error, "os_error", error)  # aiohttp.ClientConnectorError wraps an OSError
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno)
    return str(error) or type(error).__name__


def detect_dead_peer(response: aiohttp.ClientResponse, seconds: float) -> None:
    """A watch may be quiet for hours: TCP keepalive probes notice an etcd host that vanished
    without closing the connection (the kernel's default waits two hours before probing)."""
    transport = response.connection.transport if response.connection else None
    sock = transport.get_extra_info("socket") if transport else None
    if sock is None:
        return
    interval = max(1, round(seconds))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", interval),
        ("TCP_KEEPINTVL", interval),
        ("TCP_KEEPCNT", 3),
    ):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
