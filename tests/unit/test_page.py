"""The admin page's routes (netdns/page.py) without a browser: what each path serves, with
which content type, and that no spelling of a path reaches anything but the page's own files.

Requests are written by hand on a socket, so paths like /ui/../admin.py reach the server as
spelled (an HTTP client would tidy them first).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from netdns.page import CONTENT_TYPES, add_page_routes, is_page_request, load_static, page_url


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


async def _api_stand_in(request: web.Request) -> web.Response:
    return web.json_response({"state": "secret"})


def _app(seen: list[tuple[str, bool]]) -> web.Application:
    """The page's routes beside a stand-in API route; records which requests count as page
    requests (what the daemon's token check lets through)."""

    @web.middleware
    async def record(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
        seen.append((request.raw_path, is_page_request(request)))
        return await handler(request)

    app = web.Application(middlewares=[record])
    app.router.add_get("/v1/networks", _api_stand_in)
    add_page_routes(app)
    return app


async def _raw_get(port: int, path: str) -> Reply:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {}
    for line in lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return Reply(int(status_line.split()[1]), headers, body)


def _get_all(paths: list[str]) -> tuple[list[Reply], list[tuple[str, bool]]]:
    seen: list[tuple[str, bool]] = []

    async def run() -> list[Reply]:
        runner = web.AppRunner(_app(seen), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            return [await _raw_get(port, path) for path in paths]
        finally:
            await runner.cleanup()

    return asyncio.run(run()), seen


def test_root_redirects_to_the_page() -> None:
    [reply], _ = _get_all(["/"])
    assert reply.status == 302
    assert reply.headers["location"] == "/ui/"


def test_each_page_file_is_served_with_its_content_type_and_no_inline_script_policy() -> None:
    files = load_static()
    assert {"index.html", "app.js", "style.css"} <= set(files)
    replies, _ = _get_all(["/ui/", "/ui/app.js", "/ui/style.css"])
    for reply, name, kind in zip(
        replies, ["index.html", "app.js", "style.css"], [".html", ".js", ".css"], strict=True
    ):
        assert reply.status == 200, name
        assert reply.headers["content-type"] == CONTENT_TYPES[kind]
        assert reply.body == files[name].body
        assert "script-src 'self'" in reply.headers["content-security-policy"]
        assert reply.headers["x-content-type-options"] == "nosniff"


def test_the_page_refers_only_to_its_own_files() -> None:
    html = load_static()["index.html"].body.decode()
    assert 'src="app.js"' in html and 'href="style.css"' in html
    assert "http://" not in html and "https://" not in html  # no CDN: works offline


def test_paths_outside_the_page_files_are_404() -> None:
    paths = [
        "/ui/../admin.py",
        "/ui/..%2fadmin.py",
        "/ui/%2e%2e/admin.py",
        "/ui/page.py",
        "/ui/static",
        "/ui/nothing.js",
        "/ui/../v1/networks",
        "/ui/%2e%2e/v1/networks",
        "/ui/..%2fv1%2fnetworks",
    ]
    replies, _ = _get_all(paths)
    for path, reply in zip(paths, replies, strict=True):
        assert reply.status == 404, path
        assert b"secret" not in reply.body, path


def test_only_the_page_routes_are_page_requests() -> None:
    _, seen = _get_all(["/", "/ui/", "/ui/app.js", "/v1/networks", "/nothing"])
    assert seen == [
        ("/", True),
        ("/ui/", True),
        ("/ui/app.js", True),
        ("/v1/networks", False),
        ("/nothing", False),
    ]


def test_page_url_brackets_an_ipv6_host() -> None:
    assert page_url("127.0.0.1", 8053) == "http://127.0.0.1:8053/ui/"
    assert page_url("::1", 8053) == "http://[::1]:8053/ui/"
    assert page_url("[::1]", 8053) == "http://[::1]:8053/ui/"
