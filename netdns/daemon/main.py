"""Running the daemon: logging, the root check, signals, and the loop until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal

from drivers.errors import NetdnsError
from netdns import logs
from netdns.daemon.composition import Daemon
from netdns.daemon.flags import DaemonConfig, config_from_args
from resolver.server import run

log = logging.getLogger(__name__)


def _quiet_children() -> None:
    """In a forked child (pyroute2 forks to work in other namespaces): forget the loop's
    signal handling. The child inherits the wakeup fd, and the SIGTERM its parent later sends
    it would otherwise reach the daemon's loop as if the daemon itself were told to stop."""
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)


async def serve(config: DaemonConfig) -> None:
    os.register_at_fork(after_in_child=_quiet_children)
    daemon = Daemon(config)
    await daemon.start()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("stopping")
    await daemon.stop()


def main(args: argparse.Namespace) -> int:
    logs.configure(args.log_level, args.log_format)
    # Its debug output is every netlink message in full: pages per container, nothing of ours.
    logging.getLogger("pyroute2").setLevel(max(logging.INFO, logging.getLogger().level))
    if os.geteuid() != 0:
        raise NetdnsError("netdns daemon must run as root: it creates namespaces and links")
    run(serve(config_from_args(args)))
    return 0
