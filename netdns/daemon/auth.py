"""The admin API's token: made once per root, required of every request that comes over TCP
(the page's own files excepted: they hold no state, and its script sends the token)."""

from __future__ import annotations

import os
import secrets
import socket
import stat
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from netdns.page import is_page_request

TOKEN_FILE = "admin.token"


def token_middleware(root: Path) -> Callable:
    """Requests over TCP need `Authorization: Bearer <ROOT/admin.token>`; over the unix socket
    (root only, by its mode) they need nothing."""
    token = admin_token(root)

    @web.middleware
    async def require_token(request: web.Request, handler: Callable) -> web.StreamResponse:
        sock = request.transport.get_extra_info("socket") if request.transport else None
        # The page's script sends the token for /v1/ (netdns/page.py).
        if sock is not None and sock.family != socket.AF_UNIX and not is_page_request(request):
            given = request.headers.get("Authorization", "")
            if not secrets.compare_digest(given, f"Bearer {token}"):
                return web.json_response(
                    {"message": "missing or wrong token: send 'Authorization: Bearer "
                     f"<token>' (the token is in {root / TOKEN_FILE})",
                     "status": 401},
                    status=401,
                )  # fmt: skip
        return await handler(request)

    return require_token


def admin_token(root: Path) -> str:
    """The token in ROOT/admin.token, made (0600, random) on first use."""
    path = root / TOKEN_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()
