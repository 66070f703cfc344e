"""HostResolvConf: the host's resolv.conf nameservers, followed without a restart (R11).

The file is stat'ed at most once per `check_interval` and read again only when its inode,
size or mtime changed, so asking for the nameservers on every forwarded query stays cheap.
Entries netdns cannot use as an upstream (a scoped IPv6 address, garbage) are skipped with a
warning instead of breaking forwarding.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from drivers.errors import Invalid
from resolver.forward.upstream import parse_server
from resolver.netns import parse_resolv_conf

log = logging.getLogger(__name__)

HOST_RESOLV_CONF = "/etc/resolv.conf"

_Signature = tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns)


def usable_nameservers(text: str, source: str = "resolv.conf") -> tuple[str, ...]:
    """The `nameserver` entries of a resolv.conf text that parse as upstreams, in order."""
    servers: list[str] = []
    for entry in parse_resolv_conf(text)[0]:
        try:
            servers.append(str(parse_server(entry)))
        except Invalid as exc:
            log.warning("%s: skipping nameserver %r: %s", source, entry, exc)
    return tuple(servers)


class HostResolvConf:
    def __init__(
        self,
        path: str = HOST_RESOLV_CONF,
        *,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.check_interval = check_interval
        self.clock = clock
        self._checked_at: float | None = None
        self._signature: _Signature | None = None
        self._nameservers: tuple[str, ...] = ()

    def nameservers(self) -> tuple[str, ...]:
        """The nameservers as "IP:PORT" strings; () when the file is missing or names none."""
        now = self.clock()
        if self._checked_at is None or now - self._checked_at >= self.check_interval:
            self._checked_at = now
            self._refresh()
        return self._nameservers

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._signature, self._nameservers = None, ()
            return
        signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if signature == self._signature:
            return
        try:
            with open(self.path, encoding="utf-8", errors="replace") as file:
                text = file.read()
        except OSError as exc:
            log.warning("%s: cannot read (%s); keeping the previous nameservers", self.path, exc)
            return
        self._signature = signature
        old, self._nameservers = self._nameservers, usable_nameservers(text, self.path)
        if old != self._nameservers:
            log.info("%s: nameservers now %s", self.path, ", ".join(self._nameservers) or "none")
