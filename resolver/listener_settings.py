"""A listener's settings and counters (resolver/server.py), shared with its TCP connections
(resolver/tcp.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    tcp_idle_timeout: float = 30.0  # a connection with nothing in flight is closed after this
    tcp_read_timeout: float = 10.0  # a started message must finish within it
    max_tcp_connections: int = 256  # beyond it, new connections are closed at once
    max_tcp_pipeline: int = 64  # queries in flight per connection; beyond it reading pauses


@dataclass(slots=True)
class ListenerStats:
    udp_queries: int = 0
    tcp_queries: int = 0
    tcp_connections: int = 0  # open now
    tcp_rejected: int = 0  # connections closed at once: over max_tcp_connections
    dropped: int = 0  # queries that got no reply: the handler said so, failed, or no room
    handler_errors: int = 0
    fast_answers: int = 0  # of udp_queries + tcp_queries, those the fast handler answered


DEFAULT_CONFIG = ListenerConfig()  # frozen, so one shared default is safe
