"""The admin HTTP API: the CLI's operations as JSON under /v1/, served by the daemon. Modules:
app (the application, the error middleware), ops (what the routes drive: the daemon), body
(reading request bodies and query parameters), resources (networks, containers, services),
observe (health, resolve, events, querylog, metrics).

Routes (JSON in and out):
    GET    /healthz
    GET    /v1/networks                        every network, as `docker network inspect`
    POST   /v1/networks                        {"name", "driver", "subnets", "gateway",
                                                "ip_range", "ipv6", "internal", "attachable",
                                                "options": {k: v}, "dns_servers"}
    GET    /v1/networks/{ref}                  by name, id or unique id prefix
    DELETE /v1/networks/{ref}
    POST   /v1/networks/{ref}/connect          {"container", "aliases", "ip", "ip6"}
    POST   /v1/networks/{ref}/disconnect       {"container"}
    GET    /v1/containers                      every container, as `docker container inspect`
    POST   /v1/containers                      {"name", "hostname", "network", "aliases", "ip",
                                                "ip6", "dns", "dns_search", "dns_options",
                                                "netns"}
    GET    /v1/containers/{ref}
    DELETE /v1/containers/{ref}
    GET    /v1/services                        every service, as `docker service inspect`
    POST   /v1/services                        {"name", "networks", "replicas",
                                                "endpoint_mode", "publish", "port_name"}
    GET    /v1/services/{ref}
    DELETE /v1/services/{ref}
    POST   /v1/services/{ref}/scale            {"replicas": N}
    GET    /v1/resolve?from=C&name=N&type=T    what C would get for N, and which rule says so
    GET    /v1/events?since=S&until=U&follow=B JSON lines, one per state change (netdns/
                                                events.py); S, U: a seq, an RFC 3339 time or
                                                a duration ago (10m); follow (default true)
                                                keeps the stream open for new events
    GET    /v1/querylog                        {"sample": R}: the share of queries logged
    PUT    /v1/querylog                        {"sample": R}, 0 (off) to 1 (every query)
    GET    /metrics                            Prometheus text format (netdns/metrics.py)
    GET    /, /ui/, /ui/{file}                 the read-only web page (netdns/page.py); over
                                                --admin-tcp its files need no token, its API
                                                calls do

Every error is {"message": ..., "status": N}. The status of a NetdnsError comes from its class
(drivers/errors.py), mapped here in one place (the error middleware); a malformed request is an
Invalid naming the field; a bug is a 500 whose message points at the daemon's log, never a
traceback.
"""

from netdns.admin.app import make_app
from netdns.admin.ops import AdminOps

__all__ = ["AdminOps", "make_app"]
