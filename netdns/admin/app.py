"""The admin API's application: its routes and the one place errors become HTTP statuses."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from drivers.errors import NetdnsError
from netdns.admin import observe, resources
from netdns.admin.ops import OPS_KEY, AdminOps
from netdns.page import add_page_routes

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"message": message, "status": status}, status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where errors become HTTP statuses."""
    try:
        return await handler(request)
    except NetdnsError as exc:
        return error_response(exc.http_status, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            message = f"no such API route: {request.method} {request.path} (see /v1/...)"
        elif exc.status == 405:
            message = f"method {request.method} is not allowed on {request.path}"
        else:
            message = exc.reason
        return error_response(exc.status, message)
    except Exception:
        log.exception("admin API: %s %s failed", request.method, request.path)
        return error_response(500, "internal error in the netdns daemon: see its log")


def make_app(ops: AdminOps) -> web.Application:
    app = web.Application(middlewares=[errors_as_json])
    app[OPS_KEY] = ops
    resources.add_routes(app.router)
    observe.add_routes(app.router)
    add_page_routes(app)  # GET /, /ui/: the read-only web page (netdns/page.py)
    return app
