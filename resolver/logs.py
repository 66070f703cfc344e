"""The sampled per-query log, and a throttle for log lines that a flood could repeat.

The query log is the `netdns.query` logger at INFO: one record per sampled query, with the
container, qname, qtype, rcode, path, upstream and elapsed microseconds as extra fields. The
Resolver decides whether a query is sampled (`Resolver.query_sample`, changed at run time by
`PUT /v1/querylog`); this module only words the record. How records are written (text or JSON
lines) is the program's choice (netdns/logs.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from drivers.errors import Invalid

QUERY_LOGGER = "netdns.query"

query_log = logging.getLogger(QUERY_LOGGER)


def log_query(
    *,
    container: str,
    qname: str,
    qtype: str,
    rcode: str,
    path: str,
    upstream: str,
    elapsed_us: int,
) -> None:
    """One sampled query, as `netdns.query` INFO with its fields also as extras."""
    via = f" via {upstream}" if upstream else ""
    query_log.info(
        "query %s %s from %s: %s by %s%s in %d us",
        qname, qtype, container, rcode, path, via, elapsed_us,
        extra={
            "container": container, "qname": qname, "qtype": qtype, "rcode": rcode,
            "path": path, "upstream": upstream, "elapsed_us": elapsed_us,
        },
    )  # fmt: skip


def check_sample(value: object) -> float:
    """A sampling rate from an API body: a number from 0 (off) to 1 (every query)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise Invalid(f"sample {value!r}: give a number from 0 (off) to 1 (every query), e.g. 0.01")
    return float(value)


@dataclass(slots=True)
class LogThrottle:
    """One message per `interval` seconds for a kind of event that bad input or a flood can
    repeat at full rate, with the count of those held back so no event goes unsaid."""

    interval: float
    _last: float = -math.inf
    _held: int = 0

    def due(self, now: float) -> int | None:
        """Count one event at `now`: None while the last message is recent, else the number of
        events (this one included) its message speaks for."""
        self._held += 1
        if now - self._last < self.interval:
            return None
        held, self._held, self._last = self._held, 0, now
        return held
