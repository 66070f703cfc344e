"""The routes that look at the daemon: health, `resolve` (what a container would get, and
why), the event stream, the query log's sample and the Prometheus metrics."""

from __future__ import annotations

import contextlib

from aiohttp import web

from drivers.errors import Invalid
from netdns.admin.body import check_query, query_flag, read_body
from netdns.admin.ops import ops
from netdns.events import Bound, parse_bound
from resolver.logs import check_sample


async def healthz(request: web.Request) -> web.Response:
    core = ops(request).core
    return web.json_response(
        {"status": "ok", "networks": len(core.networks()), "containers": len(core.sandboxes())}
    )


async def resolve(request: web.Request) -> web.Response:
    query = request.query
    check_query(query, ("from", "name", "type"))
    name = query.get("name", "")
    if not name:
        raise Invalid("query parameter 'name' is required: /v1/resolve?name=NAME[&from=C][&type=A]")
    result = await ops(request).explain(query.get("from", ""), name, query.get("type") or "A")
    return web.json_response(result)


async def events(request: web.Request) -> web.StreamResponse:
    """The event log as JSON lines, written as they happen (flushed per line)."""
    query = request.query
    check_query(query, ("since", "until", "follow"))
    since = parse_bound(query["since"], "since") if query.get("since") else Bound()
    until = parse_bound(query["until"], "until") if query.get("until") else Bound()
    follow = query_flag(query, "follow", True)
    event_log = ops(request).events
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    try:
        async with contextlib.aclosing(event_log.stream(since, until, follow=follow)) as lines:
            async for line in lines:
                await response.write(line)
        await response.write_eof()
    except ConnectionError:
        pass  # the reader went away: nothing to tell anyone
    return response


async def get_querylog(request: web.Request) -> web.Response:
    return web.json_response({"sample": ops(request).query_sample})


async def put_querylog(request: web.Request) -> web.Response:
    body = await read_body(request, ("sample",))
    daemon = ops(request)
    daemon.set_query_sample(check_sample(body.number("sample")))
    return web.json_response({"sample": daemon.query_sample})


async def metrics(request: web.Request) -> web.Response:
    daemon = ops(request)
    return web.Response(
        body=daemon.metrics.render(), headers={"Content-Type": daemon.metrics.CONTENT_TYPE}
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/healthz", healthz)
    router.add_get("/v1/resolve", resolve)
    router.add_get("/v1/events", events)
    router.add_get("/v1/querylog", get_querylog)
    router.add_put("/v1/querylog", put_querylog)
    router.add_get("/metrics", metrics)
