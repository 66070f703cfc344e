"""The daemon's log output (`--log-format text|json`) and the sampled per-query log.

Text is one line per record as before. JSON is one object per line: `time` (RFC 3339 UTC),
`level`, `logger`, `message`, then every field the caller passed in `extra` (and `exc_info` as
`traceback`), so a collector can index them without parsing messages.

The query log is the `netdns.query` logger at INFO: one record per sampled query, with the
container, qname, qtype, rcode, path, upstream and elapsed microseconds as extra fields. The
Resolver decides whether a query is sampled (`Resolver.query_sample`, changed at run time by
`PUT /v1/querylog`); this module only words the record.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from drivers.errors import Invalid

QUERY_LOGGER = "netdns.query"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

query_log = logging.getLogger(QUERY_LOGGER)

# Attributes every LogRecord has: anything else on a record came from `extra`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        data: dict[str, Any] = {
            "time": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in data:
                data[key] = value
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["traceback"] = record.exc_text
        return json.dumps(data, default=str)


def formatter(log_format: LogFormat | str) -> logging.Formatter:
    if LogFormat(log_format) is LogFormat.JSON:
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)


def configure(level: str, log_format: LogFormat | str, stream: TextIO | None = None) -> None:
    """The root logger writes to `stream` (stderr) at `level`, as text or JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The query log is asked for at run time, whatever --log-level says.
    query_log.setLevel(logging.INFO)


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
