"""An asyncio etcd v3 client over etcd's JSON gateway (the `/v3/...` HTTP endpoints).

Why the gateway rather than gRPC: it needs no grpc dependency, aiohttp is already used by the
admin API, and the gateway is part of etcd's stable v3 API (served by every etcd >= 3.4).

It holds only the calls the cluster store needs: reads (one key, or a whole prefix at one
revision), puts, deletes, transactions, leases and a prefix watch. There are no retries here: a
failed call raises and the caller decides whether and when to try again.
- `EtcdUnavailable`: etcd cannot be reached, did not answer within `timeout`, answered 5xx, or
  a watch stream broke. The same call may work later.
- `EtcdError`: etcd refused the request (HTTP 4xx or an error in its answer).
- `Compacted`: a watch asked for history etcd has already compacted away.

Wire notes: keys and values are base64 in JSON, int64 fields are JSON strings, and fields at
their zero value are left out (proto3 JSON), so every field read here has a default.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import ipaddress
import json
import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from drivers.errors import Invalid, NetdnsError, Unavailable

log = logging.getLogger(__name__)

PAGE_SIZE = 1000  # keys per range request in get_prefix
_GRPC_NOT_FOUND = 5
_GRPC_DEADLINE_EXCEEDED = 4
_GRPC_UNAVAILABLE = 14
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


def _encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode(text: str) -> bytes:
    return base64.b64decode(text)


def _key_bytes(key: str) -> bytes:
    # surrogateescape: a key read back from etcd that is not UTF-8 still round-trips.
    return key.encode("utf-8", "surrogateescape")


def _key_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix` (etcd's getPrefix)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # an empty prefix (or all 0xff): every key


def _range(key: str, prefix: bool) -> Answer:
    data = _key_bytes(key)
    if not prefix:
        return {"key": _encode(data)}
    # etcd refuses an empty key; "\0" to "\0" is its spelling of "every key".
    return {"key": _encode(data or b"\0"), "range_end": _encode(_prefix_end(data))}


def _put(key: str, value: bytes, lease: int) -> Answer:
    body: Answer = {"key": _encode(_key_bytes(key)), "value": _encode(value)}
    if lease:
        body["lease"] = str(lease)
    return body


def _compare(compare: Compare) -> Answer:
    value = compare.value
    return {
        "key": _encode(_key_bytes(compare.key)),
        "target": compare.target,
        "result": compare.result,
        _COMPARE_FIELDS[compare.target]: _encode(value) if isinstance(value, bytes) else str(value),
    }


def _operation(operation: Put | Delete) -> Answer:
    if isinstance(operation, Put):
        return {"request_put": _put(operation.key, operation.value, operation.lease)}
    return {"request_delete_range": _range(operation.key, operation.prefix)}


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | str) and value != "" else 0


def _revision(answer: Answer) -> int:
    return _int(answer.get("header", {}).get("revision"))


def _key_value(kv: Answer) -> KeyValue:
    return KeyValue(
        key=_key_text(_decode(kv.get("key", ""))),
        value=_decode(kv.get("value", "")),
        create_revision=_int(kv.get("create_revision")),
        mod_revision=_int(kv.get("mod_revision")),
        lease=_int(kv.get("lease")),
    )


def _event(event: Answer) -> WatchEvent:
    kv = event.get("kv", {})
    return WatchEvent(
        kind=EventKind.DELETE if event.get("type") == "DELETE" else EventKind.PUT,
        key=_key_text(_decode(kv.get("key", ""))),
        value=_decode(kv.get("value", "")),
        mod_revision=_int(kv.get("mod_revision")),
        create_revision=_int(kv.get("create_revision")),
    )


def _error_of(answer: Answer) -> tuple[int, str]:
    """etcd's gRPC code and message from an error answer, in any of the gateway's shapes:
    unary {"error": MSG, "code": N, "message": MSG}, streamed {"error": {"grpc_code": N,
    "http_code": H, "message": MSG}}, or (etcd >= 3.5) {"code": N, "message": MSG}."""
    error = answer.get("error")
    fields = error if isinstance(error, dict) else answer
    code = _int(fields.get("code", fields.get("grpc_code")))
    message = fields.get("message") or (error if isinstance(error, str) else "") or "no message"
    return code, str(message)


def _reason(error: BaseException) -> str:
    """A short reason for a failed connection: "Connection refused" rather than aiohttp's
    "Cannot connect to host ... [Connect call failed ...]"."""
    if isinstance(error, aiohttp.ClientPayloadError):
        return "connection lost mid-stream"
    cause = getattr(error, "os_error", error)  # aiohttp.ClientConnectorError wraps an OSError
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno)
    return str(error) or type(error).__name__


def _detect_dead_peer(response: aiohttp.ClientResponse, seconds: float) -> None:
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


# -- the client ------------------------------------------------------------------------------------


class EtcdClient:
    """etcd at `url` (etcd://HOST:PORT as the user gave it). Each unary call is bounded by
    `timeout` seconds; a watch has no total timeout but ends with EtcdUnavailable when its
    connection does. The HTTP session is made on first use, on the running loop."""

    def __init__(self, url: str, *, timeout: float = 3.0) -> None:
        self.url = url
        self.timeout = timeout
        self._base = parse_store_url(url) + "/v3"
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=None),  # each call sets its own bound
            )
        return self._http

    # -- keys --------------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        answer = await self._call("/kv/range", _range(key, prefix=False))
        kvs = answer.get("kvs", [])
        return _key_value(kvs[0]) if kvs else None

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` and the revision they were read at.

        Read in pages of PAGE_SIZE keys, each page from the key after the last one, all at the
        first page's revision so the result is one consistent snapshot.
        """
        request = _range(prefix, prefix=True) | {"limit": str(PAGE_SIZE)}
        found: list[KeyValue] = []
        revision = 0
        while True:
            answer = await self._call("/kv/range", request)
            kvs = answer.get("kvs", [])
            found.extend(_key_value(kv) for kv in kvs)
            if not revision:
                revision = _revision(answer)
                request["revision"] = str(revision)
            if not answer.get("more") or not kvs:
                return found, revision
            request["key"] = _encode(_decode(kvs[-1]["key"]) + b"\0")

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write `key`; returns the revision of the write."""
        return _revision(await self._call("/kv/put", _put(key, value, lease)))

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete `key` (or every key under it); returns how many keys were deleted."""
        answer = await self._call("/kv/deleterange", _range(key, prefix))
        return _int(answer.get("deleted"))

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Put | Delete],
        failure: Sequence[Put | Delete] = (),
    ) -> TxnResult:
        """Run `success` if every compare holds, else `failure`, atomically."""
        answer = await self._call(
            "/kv/txn",
            {
                "compare": [_compare(compare) for compare in compares],
                "success": [_operation(operation) for operation in success],
                "failure": [_operation(operation) for operation in failure],
            },
        )
        return TxnResult(succeeded=bool(answer.get("succeeded")), revision=_revision(answer))

    async def create(self, key: str, value: bytes, *, lease: int = 0) -> bool:
        """Put `key` only if it does not exist; False when it already did."""
        result = await self.txn([Compare(key, "CREATE", "EQUAL", 0)], [Put(key, value, lease)])
        return result.succeeded

    # -- leases ------------------------------------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds (etcd may raise a tiny ttl to its minimum); its id."""
        answer = await self._call("/lease/grant", {"TTL": str(ttl)})
        return _int(answer.get("ID"))

    async def keepalive(self, lease: int) -> int:
        """Renew `lease` once; its TTL again, or 0 when the lease is gone (expired, revoked)."""
        answer = await self._call("/lease/keepalive", {"ID": str(lease)})
        return _int(answer.get("result", {}).get("TTL"))

    async def revoke(self, lease: int) -> None:
        """Revoke `lease`, deleting its keys; a lease that is already gone is fine."""
        try:
            await self._call("/lease/revoke", {"ID": str(lease)})
        except EtcdError as error:
            if error.code != _GRPC_NOT_FOUND:
                raise

    # -- watch -------------------------------------------------------------------------------------

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        """The changes under `prefix` from `start_revision` on, in batches as etcd sends them.

        Raises Compacted when etcd no longer has `start_revision`, EtcdUnavailable when etcd
        cannot be reached or the stream ends; it never ends by itself otherwise.
        """
        create = _range(prefix, prefix=True) | {"start_revision": str(start_revision)}
        request = {"create_request": create}
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._session().post(self._base + "/watch", json=request)
                if response.status >= 400:
                    async with response:
                        answer = await self._json(response)
                    self._check(response.status, answer)
        except TimeoutError:
            raise EtcdUnavailable(self.url, f"did not answer within {self.timeout:g} s") from None
        except aiohttp.ClientError as error:
            raise EtcdUnavailable(self.url, f"is unreachable ({_reason(error)})") from error
        log.debug("watching %r on %s from revision %d", prefix, self.url, start_revision)
        try:
            _detect_dead_peer(response, self.timeout)
            pending = bytearray()
            while True:
                try:
                    chunk = await response.content.readany()
                except aiohttp.ClientError as error:
                    raise EtcdUnavailable(
                        self.url, f"broke the watch on {prefix!r} ({_reason(error)})"
                    ) from error
                if not chunk:
                    raise EtcdUnavailable(self.url, f"closed the watch on {prefix!r}")
                pending += chunk
                # One JSON object per line; a large batch may span many chunks.
                *lines, rest = pending.split(b"\n")
                pending = bytearray(rest)
                for line in lines:
                    if events := self._watch_message(line, prefix, start_revision):
                        yield events
        finally:
            response.close()

    def _watch_message(self, line: bytes, prefix: str, start_revision: int) -> list[WatchEvent]:
        if not line.strip():
            return []
        try:
            message = json.loads(line)
        except ValueError:
            raise EtcdError(
                f"cluster store {self.url} sent a watch message that is not JSON"
            ) from None
        error = message.get("error")
        if error is not None:
            # A streamed error has no HTTP status of its own; one without http_code is a
            # transport failure behind the gateway.
            status = _int(error.get("http_code")) if isinstance(error, dict) else 0
            self._check(status or 503, message)
        result = message.get("result", {})
        if compact_revision := _int(result.get("compact_revision")):
            raise Compacted(self.url, start_revision, compact_revision)
        if result.get("canceled"):
            reason = result.get("cancel_reason") or "no reason given"
            raise EtcdError(f"cluster store {self.url} canceled the watch on {prefix!r}: {reason}")
        return [_event(event) for event in result.get("events", [])]

    # -- transport ---------------------------------------------------------------------------------

    async def _call(self, path: str, body: Answer) -> Answer:
        """POST `body` to a unary endpoint; its answer, or an error."""
        try:
            async with asyncio.timeout(self.timeout):
                async with self._session().post(self._base + path, json=body) as response:
                    answer = await self._json(response)
        except TimeoutError:
            raise EtcdUnavailable(self.url, f"did not answer within {self.timeout:g} s") from None
        except aiohttp.ClientError as error:
            raise EtcdUnavailable(self.url, f"is unreachable ({_reason(error)})") from error
        return self._check(response.status, answer)

    @staticmethod
    async def _json(response: aiohttp.ClientResponse) -> Answer:
        text = await response.text()
        try:
            # raw_decode: the lease keepalive endpoint is a stream; its one answer may be
            # followed by a newline or more.
            answer, _ = json.JSONDecoder().raw_decode(text.strip())
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            # Not etcd's JSON (a plain "Not Found" for an unknown path, a proxy's page, ...).
            return {"error": text.strip()[:200] or f"HTTP {response.status}"}
        return answer

    def _check(self, status: int, answer: Answer) -> Answer:
        if status < 400 and "error" not in answer and "code" not in answer:
            return answer
        code, message = _error_of(answer)
        if status >= 500 or code in (_GRPC_UNAVAILABLE, _GRPC_DEADLINE_EXCEEDED):
            raise EtcdUnavailable(self.url, f"failed ({message})")
        raise EtcdError(f"cluster store {self.url} refused the request: {message}", code)
