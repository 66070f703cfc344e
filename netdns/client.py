"""A small synchronous client of the admin API, for the CLI and the demo.

Speaks HTTP/1.1 with the standard library over the daemon's unix socket (`unix:///path`, the
default) or over TCP (`tcp://HOST:PORT`, with the token from NETDNS_TOKEN as a bearer token).
Error replies ({"message", "status"}) become ClientError; a daemon that is not there becomes a
ClientError that says so, with status 0.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

DEFAULT_HOST = "unix:///run/netdns/netdns.sock"
HOST_ENV = "NETDNS_HOST"
TOKEN_ENV = "NETDNS_TOKEN"
# Creating a container makes a namespace and links; give slow machines room.
DEFAULT_TIMEOUT = 120.0


class ClientError(Exception):
    """An error reply from the daemon (status is its HTTP status) or none at all (status 0)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX stream socket."""

    def __init__(self, path: str, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _error_reply(
    method: str, path: str, response: http.client.HTTPResponse, raw: bytes
) -> ClientError:
    """An error reply as a ClientError: its message when it is ours, else its first line."""
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return ClientError(data["message"], response.status)
    text = raw.decode(errors="replace").strip().splitlines()
    return ClientError(
        f"{method} {path}: HTTP {response.status} {text[0] if text else response.reason}",
        response.status,
    )


def ref(value: str) -> str:
    """A name or id as one URL path segment."""
    return quote(value, safe="")


class Client:
    def __init__(
        self, host: str | None = None, token: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.host = host or os.environ.get(HOST_ENV) or DEFAULT_HOST
        self.token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        self.timeout = timeout
        if self.host.startswith("unix://"):
            self.where = self.host[len("unix://") :]
            if not self.where:
                raise ClientError(f"--host {self.host!r}: expected unix:///path/to/socket")
        elif self.host.startswith("tcp://"):
            address, _, port = self.host[len("tcp://") :].rpartition(":")
            if not address or not port.isdigit():
                raise ClientError(f"--host {self.host!r}: expected tcp://HOST:PORT")
            self.where = f"{address}:{port}"
            self._tcp = (address.strip("[]"), int(port))
        else:
            raise ClientError(
                f"--host {self.host!r}: expected unix:///path/to/socket or tcp://HOST:PORT"
            )

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self.host.startswith("unix://"):
            return UnixHTTPConnection(self.where, timeout)
        return http.client.HTTPConnection(*self._tcp, timeout=timeout)

    def _headers(self, payload: bytes | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        if self.token and not self.host.startswith("unix://"):
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        """The reply's JSON; ClientError for an error reply or an unreachable daemon."""
        status, raw = self.raw(method, path, body, query)
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        if data is None and raw:
            raise ClientError(f"{method} {path}: the daemon's reply is not JSON", status)
        return data

    def raw(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """The reply's status and bytes; ClientError for an error reply or no daemon."""
        if query:
            path = f"{path}?{urlencode(query)}"
        payload = None if body is None else json.dumps(body).encode()
        connection = self._connection(self.timeout)
        try:
            with self._talking(method, path):
                connection.request(method, path, body=payload, headers=self._headers(payload))
                response = connection.getresponse()
                raw = response.read()
        finally:
            connection.close()
        if response.status >= 400:
            raise _error_reply(method, path, response, raw)
        return response.status, raw

    def lines(self, path: str, query: dict[str, str] | None = None) -> Iterator[bytes]:
        """A streamed reply's lines as they come, with no time limit between them (for
        `GET /v1/events`); ends when the daemon ends the reply."""
        if query:
            path = f"{path}?{urlencode(query)}"
        connection = self._connection(None)
        try:
            with self._talking("GET", path):
                connection.request("GET", path, headers=self._headers(None))
                response = connection.getresponse()
                if response.status >= 400:
                    raise _error_reply("GET", path, response, response.read())
            while True:
                try:
                    line = response.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise ClientError(
                        f"the stream from the netdns daemon at {self.where} broke off: {exc}"
                    ) from None
                if not line:
                    return
                yield line
        finally:
            connection.close()

    @contextlib.contextmanager
    def _talking(self, method: str, path: str) -> Iterator[None]:
        """Socket and HTTP failures as ClientErrors that say what to do."""
        try:
            yield
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ClientError(
                f"cannot reach the netdns daemon at {self.where}: is `netdns daemon` "
                f"running? ({exc.strerror or exc})"
            ) from None
        except PermissionError:
            raise ClientError(
                f"cannot reach the netdns daemon at {self.where}: permission denied "
                "(the admin socket is root only: run as root)"
            ) from None
        except TimeoutError:
            raise ClientError(
                f"the netdns daemon at {self.where} did not answer {method} {path} "
                f"within {self.timeout:g} s"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise ClientError(f"talking to the netdns daemon at {self.where}: {exc}") from None

    def get(self, path: str, query: dict[str, str] | None = None) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    # -- the operations, named as the CLI's commands ----------------------------------------

    def networks(self) -> list[dict[str, Any]]:
        return self.get("/v1/networks")

    def network(self, name: str) -> dict[str, Any]:
        return self.get(f"/v1/networks/{ref(name)}")

    def create_network(self, **fields: Any) -> dict[str, Any]:
        return self.post("/v1/networks", fields)

    def remove_network(self, name: str) -> dict[str, Any]:
        return self.delete(f"/v1/networks/{ref(name)}")

    def connect(self, network: str, container: str, **fields: Any) -> dict[str, Any]:
        return self.post(f"/v1/networks/{ref(network)}/connect", {"container": container, **fields})

    def disconnect(self, network: str, container: str) -> dict[str, Any]:
        return self.post(f"/v1/networks/{ref(network)}/disconnect", {"container": container})

    def containers(self) -> list[dict[str, Any]]:
        return self.get("/v1/containers")

    def container(self, name: str) -> dict[str, Any]:
        return self.get(f"/v1/containers/{ref(name)}")

    def create_container(self, **fields: Any) -> dict[str, Any]:
        return self.post("/v1/containers", fields)

    def remove_container(self, name: str) -> dict[str, Any]:
        return self.delete(f"/v1/containers/{ref(name)}")

    def resolve(self, name: str, *, source: str = "", qtype: str = "A") -> dict[str, Any]:
        query = {"name": name, "type": qtype}
        if source:
            query["from"] = source
        return self.get("/v1/resolve", query)

    def services(self) -> list[dict[str, Any]]:
        return self.get("/v1/services")

    def service(self, name: str) -> dict[str, Any]:
        return self.get(f"/v1/services/{ref(name)}")

    def create_service(self, **fields: Any) -> dict[str, Any]:
        return self.post("/v1/services", fields)

    def scale_service(self, name: str, replicas: int) -> dict[str, Any]:
        return self.post(f"/v1/services/{ref(name)}/scale", {"replicas": replicas})

    def remove_service(self, name: str) -> dict[str, Any]:
        return self.delete(f"/v1/services/{ref(name)}")

    def events(
        self, *, since: str = "", until: str = "", follow: bool = True
    ) -> Iterator[dict[str, Any]]:
        """The event log's lines as objects, as they come (see GET /v1/events)."""
        query = {"follow": "true" if follow else "false"}
        if since:
            query["since"] = since
        if until:
            query["until"] = until
        for line in self.lines("/v1/events", query):
            if line.strip():
                yield json.loads(line)

    def querylog(self) -> dict[str, Any]:
        return self.get("/v1/querylog")

    def set_querylog(self, sample: float) -> dict[str, Any]:
        return self.request("PUT", "/v1/querylog", body={"sample": sample})

    def metrics(self) -> str:
        """The Prometheus text of GET /metrics."""
        return self.raw("GET", "/metrics")[1].decode()
