"""The running netdns-aardvark: the name table, the resolver and one listener per gateway
address, brought in line with netavark's files on every reload.

A reload reads the directory, applies the differences as events (the hot cache drops what they
change), opens listeners for new addresses and closes those of addresses no network has any
more; a listener that stays keeps its sockets, so no query in flight is dropped. Reloads are
serialised, and SIGHUPs that come during one make one more."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from netdns.aardvark.config import NetworkFile, read_config
from netdns.aardvark.state import Model, changes, model_of
from resolver.forward import AnswerCache, Forwarder, HostResolvConf
from resolver.names import NameTable
from resolver.resolve import Resolver
from resolver.server import Listener

log = logging.getLogger(__name__)

# podman puts this in every container's search list (aardvark-dns's --filter-search-domain).
PODMAN_DOMAIN = "dns.podman"
# A client that is no container netavark knows (the host itself, say): forwarded only.
NOBODY = ""


class AardvarkService:
    def __init__(
        self,
        config_dir: Path,
        port: int,
        *,
        domains: tuple[str, ...] = (PODMAN_DOMAIN,),
        resolv_conf: Path = Path("/etc/resolv.conf"),
        upstreams: tuple[str, ...] = (),
        local_ttl: int = 5,
    ) -> None:
        self.config_dir = config_dir
        self.port = port
        host_resolv = HostResolvConf(str(resolv_conf))
        # aardvark-dns never forwards a single-label name: neither does netdns in its place.
        self.table = NameTable(domains=domains, keep_single_labels=True)
        self.forwarder = Forwarder(
            default_servers=lambda: list(upstreams) or list(host_resolv.nameservers()),
            cache=AnswerCache(),
        )
        self.resolver = Resolver(self.table, self.forwarder, local_ttl=local_ttl)
        self.listeners: dict[str, Listener] = {}
        self._files: dict[str, NetworkFile] = {}
        self._model = Model()
        self._who: dict[str, str] = {}
        self._reloading: asyncio.Task[None] | None = None
        self._again = False

    def who(self, host: str) -> str:
        return self._who.get(host, NOBODY)

    @property
    def configured(self) -> bool:
        """Whether any network is left to serve (aardvark-dns exits when none is)."""
        return bool(self._files)

    async def reload(self) -> None:
        """Read the files again and follow them. Binding a new address may fail (logged); the
        other networks are served all the same."""
        self._files = read_config(self.config_dir, self._files)
        model = model_of(self._files)
        events = changes(self._model, model)
        self.table.apply_all(events)
        self._model, self._who = model, model.sandbox_by_address()
        wanted = {str(a) for f in self._files.values() for a in f.bind}
        for host in sorted(set(self.listeners) - wanted):
            await self.listeners.pop(host).close()
        for host in sorted(wanted - set(self.listeners)):
            try:
                self.listeners[host] = await self._listen(host)
            except OSError as exc:
                log.error("cannot listen on %s port %d: %s", host, self.port, exc)
        log.info(
            "%d networks, %d containers, listening on %s (%d changes)",
            len(self._files), len(model.sandboxes), ", ".join(sorted(self.listeners)) or "nothing",
            len(events),
        )  # fmt: skip

    async def _listen(self, host: str) -> Listener:
        return await Listener.start(
            self.resolver.handle, NOBODY, host, self.port,
            fast=self.resolver.fast, soon=self.resolver.start, who=self.who,
        )  # fmt: skip

    def reload_soon(self, then: Callable[[], None]) -> None:
        """SIGHUP: reload now, or once more after the reload in progress; `then` after each."""
        if self._reloading is not None and not self._reloading.done():
            self._again = True
            return

        async def run() -> None:
            while True:
                self._again = False
                try:
                    await self.reload()
                except Exception:
                    log.exception("reload failed; serving what was read before")
                then()
                if not self._again:
                    return

        self._reloading = asyncio.get_running_loop().create_task(run())

    async def close(self) -> None:
        for listener in self.listeners.values():
            await listener.close()
        self.listeners.clear()
        self.forwarder.close()
