"""The admin web page: a read-only view of the daemon, served beside the admin API.

GET / redirects to /ui/, which serves static/index.html; /ui/{file} serves the page's other
files (static/*.js, *.css), nothing else. The files ship inside the package (package data), are
read once when the routes are added, and hold no state: the page's script reads the state from
/v1/ with the admin token, which the browser keeps (from the URL fragment, never sent to us).
That is why the daemon's token check lets the page's own routes through (`is_page_request`) and
nothing else.
"""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass

from aiohttp import web

log = logging.getLogger(__name__)

PAGE_PATH = "/ui/"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
# The page loads its own files and talks to its own origin only; no inline script, no frames.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str


def load_static() -> dict[str, StaticFile]:
    """The page's files by name: those in netdns/static with a known type."""
    folder = importlib.resources.files("netdns") / "static"
    files = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in CONTENT_TYPES:
            files[entry.name] = StaticFile(entry.read_bytes(), CONTENT_TYPES[suffix])
    if "index.html" not in files:
        log.warning("admin page: netdns/static/index.html is missing; /ui/ will 404")
    return files


def page_url(host: str, port: int) -> str:
    """The page's address on --admin-tcp HOST:PORT (the token goes after #token=)."""
    host = host.strip("[]")
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{PAGE_PATH}"


FILES_KEY = web.AppKey("page_files", dict[str, StaticFile])


def _serve(request: web.Request, name: str) -> web.Response:
    found = request.app[FILES_KEY].get(name)
    if found is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=found.body, content_type=None, headers={**HEADERS, "Content-Type": found.content_type}
    )


async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(PAGE_PATH)  # a browser keeps the #token fragment across it


async def index(request: web.Request) -> web.StreamResponse:
    return _serve(request, "index.html")


async def static_file(request: web.Request) -> web.StreamResponse:
    # {file} is one path segment, and only the names loaded from netdns/static are served.
    return _serve(request, request.match_info["file"])


PAGE_HANDLERS = frozenset({root, index, static_file})


def is_page_request(request: web.Request) -> bool:
    """Whether the router sent `request` to one of the page's handlers: by the handler it
    matched, not by the path's text, so no spelling of a path reaches the API through this."""
    return request.match_info.handler in PAGE_HANDLERS


def add_page_routes(app: web.Application) -> None:
    """Adds GET /, /ui/ and /ui/{file} to `app`."""
    app[FILES_KEY] = load_static()
    app.router.add_get("/", root)
    app.router.add_get(PAGE_PATH, index)
    app.router.add_get(PAGE_PATH + "{file}", static_file)
