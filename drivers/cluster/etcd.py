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

The data, the errors and the wire encoding are in drivers/cluster/etcd_wire.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from types import TracebackType

import aiohttp

from drivers.cluster import etcd_wire as wire
from drivers.cluster.etcd_wire import (
    Answer,
    Compacted,
    Compare,
    Delete,
    EtcdError,
    EtcdUnavailable,
    KeyValue,
    Put,
    TxnResult,
    WatchEvent,
    parse_store_url,
)

log = logging.getLogger(__name__)

PAGE_SIZE = 1000  # keys per range request in get_prefix
_GRPC_NOT_FOUND = 5
_GRPC_DEADLINE_EXCEEDED = 4
_GRPC_UNAVAILABLE = 14


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
        answer = await self._call("/kv/range", wire.range_request(key, prefix=False))
        kvs = answer.get("kvs", [])
        return wire.key_value(kvs[0]) if kvs else None

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` and the revision they were read at.

        Read in pages of PAGE_SIZE keys, each page from the key after the last one, all at the
        first page's revision so the result is one consistent snapshot.
        """
        request = wire.range_request(prefix, prefix=True) | {"limit": str(PAGE_SIZE)}
        found: list[KeyValue] = []
        revision = 0
        while True:
            answer = await self._call("/kv/range", request)
            kvs = answer.get("kvs", [])
            found.extend(wire.key_value(kv) for kv in kvs)
            if not revision:
                revision = wire.revision_of(answer)
                request["revision"] = str(revision)
            if not answer.get("more") or not kvs:
                return found, revision
            request["key"] = wire.encode(wire.decode(kvs[-1]["key"]) + b"\0")

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write `key`; returns the revision of the write."""
        return wire.revision_of(await self._call("/kv/put", wire.put_request(key, value, lease)))

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete `key` (or every key under it); returns how many keys were deleted."""
        answer = await self._call("/kv/deleterange", wire.range_request(key, prefix))
        return wire.int64(answer.get("deleted"))

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
                "compare": [wire.compare_request(compare) for compare in compares],
                "success": [wire.operation_request(operation) for operation in success],
                "failure": [wire.operation_request(operation) for operation in failure],
            },
        )
        return TxnResult(succeeded=bool(answer.get("succeeded")), revision=wire.revision_of(answer))

    async def create(self, key: str, value: bytes, *, lease: int = 0) -> bool:
        """Put `key` only if it does not exist; False when it already did."""
        result = await self.txn([Compare(key, "CREATE", "EQUAL", 0)], [Put(key, value, lease)])
        return result.succeeded

    # -- leases ------------------------------------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds (etcd may raise a tiny ttl to its minimum); its id."""
        answer = await self._call("/lease/grant", {"TTL": str(ttl)})
        return wire.int64(answer.get("ID"))

    async def keepalive(self, lease: int) -> int:
        """Renew `lease` once; its TTL again, or 0 when the lease is gone (expired, revoked)."""
        answer = await self._call("/lease/keepalive", {"ID": str(lease)})
        return wire.int64(answer.get("result", {}).get("TTL"))

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
        create = wire.range_request(prefix, prefix=True) | {"start_revision": str(start_revision)}
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
            raise EtcdUnavailable(self.url, f"is unreachable ({wire.reason(error)})") from error
        log.debug("watching %r on %s from revision %d", prefix, self.url, start_revision)
        try:
            wire.detect_dead_peer(response, self.timeout)
            pending = bytearray()
            while True:
                try:
                    chunk = await response.content.readany()
                except aiohttp.ClientError as error:
                    raise EtcdUnavailable(
                        self.url, f"broke the watch on {prefix!r} ({wire.reason(error)})"
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
            status = wire.int64(error.get("http_code")) if isinstance(error, dict) else 0
            self._check(status or 503, message)
        result = message.get("result", {})
        if compact_revision := wire.int64(result.get("compact_revision")):
            raise Compacted(self.url, start_revision, compact_revision)
        if result.get("canceled"):
            reason = result.get("cancel_reason") or "no reason given"
            raise EtcdError(f"cluster store {self.url} canceled the watch on {prefix!r}: {reason}")
        return [wire.watch_event(event) for event in result.get("events", [])]

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
            raise EtcdUnavailable(self.url, f"is unreachable ({wire.reason(error)})") from error
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
        code, message = wire.error_of(answer)
        if status >= 500 or code in (_GRPC_UNAVAILABLE, _GRPC_DEADLINE_EXCEEDED):
            raise EtcdUnavailable(self.url, f"failed ({message})")
        raise EtcdError(f"cluster store {self.url} refused the request: {message}", code)
