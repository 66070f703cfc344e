"""`netdns-aardvark`: aardvark-dns's command line, for netavark.

    netdns-aardvark --config DIR [-p PORT] [--filter-search-domain DOMAIN] run
    netdns-aardvark version

`run` forks as aardvark-dns does: the parent returns (0) once the server has written its pid to
DIR/aardvark.pid and listens on every gateway address, or prints why it could not (1); the
server lives on in its own session, reloads on SIGHUP and exits when no network file is left
(removing its pid file), or on SIGTERM. Podman runs it in place of aardvark-dns when a
directory in containers.conf's `helper_binaries_dir` holds it under the name `aardvark-dns`.

Upstreams: the host's resolv.conf, as aardvark-dns's, unless NETDNS_AARDVARK_DNS (comma-
separated IP[:PORT]) or NETDNS_AARDVARK_RESOLV_CONF (another resolv.conf) says otherwise; the
networks' and containers' own DNS servers come first, from netavark's files. Logs go to
NETDNS_AARDVARK_LOG (a file) when set, else to syslog when there is one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.handlers
import os
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from drivers.errors import Invalid
from netdns.aardvark.config import PID_FILE
from netdns.aardvark.service import PODMAN_DOMAIN, AardvarkService
from resolver.forward.upstream import parse_server
from resolver.server import run as run_loop

log = logging.getLogger("netdns.aardvark")

DEFAULT_PORT = 5533  # aardvark-dns's; netavark always passes -p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netdns-aardvark",
        description="netdns as aardvark-dns for podman's netavark: reads netavark's DNS files, "
        "answers containers by name on each network's gateway.",
    )
    parser.add_argument("-c", "--config", type=Path, help="netavark's aardvark-dns directory")
    parser.add_argument(
        "-p", "--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s)"
    )
    parser.add_argument(
        "-f", "--filter-search-domain", default="." + PODMAN_DOMAIN,
        help="the runtime's domain: NAME.DOMAIN answers NAME (default %(default)s)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("run", help="serve (forks; the parent returns once it listens)")
    sub.add_parser("version", help="print the version")
    return parser


def upstreams_from(environ: dict[str, str]) -> tuple[str, ...]:
    servers = tuple(s for s in environ.get("NETDNS_AARDVARK_DNS", "").split(",") if s)
    for server in servers:
        parse_server(server)  # Invalid naming it
    return servers


def configure_logging(environ: dict[str, str]) -> None:
    handler: logging.Handler
    if environ.get("NETDNS_AARDVARK_LOG"):
        handler = logging.FileHandler(environ["NETDNS_AARDVARK_LOG"])
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler("/dev/log")
        handler.setFormatter(logging.Formatter("netdns-aardvark: %(message)s"))
    else:
        handler = logging.NullHandler()
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


async def serve(service: AardvarkService, ready: int) -> None:
    """Listen, tell the parent through the `ready` pipe, then follow SIGHUPs until SIGTERM or
    until no network is left."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    await service.reload()
    if not service.listeners:
        raise Invalid(f"no address to listen on in {service.config_dir}: is netavark's file there?")
    pid_file = service.config_dir / PID_FILE
    pid_file.write_text(str(os.getpid()))
    os.write(ready, b"ready")
    os.close(ready)

    def after_reload() -> None:
        if not service.configured:
            log.info("no network left in %s; stopping", service.config_dir)
            stopping.set()

    loop.add_signal_handler(signal.SIGHUP, service.reload_soon, after_reload)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        with contextlib.suppress(FileNotFoundError):
            if pid_file.read_text().strip() == str(os.getpid()):
                pid_file.unlink()
        await service.close()


def run(args: argparse.Namespace) -> int:
    config_dir: Path | None = args.config
    if config_dir is None or not config_dir.is_dir():
        print(f"netdns-aardvark: --config {config_dir}: not a directory", file=sys.stderr)
        return 1
    environ = dict(os.environ)
    try:
        upstreams = upstreams_from(environ)
    except Invalid as exc:
        print(f"netdns-aardvark: NETDNS_AARDVARK_DNS: {exc}", file=sys.stderr)
        return 1
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            said = pipe.read()
        if said == b"ready":
            return 0
        print(f"netdns-aardvark: {said.decode(errors='replace') or 'the server exited'}",
              file=sys.stderr)  # fmt: skip
        return 1
    os.close(read_end)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    configure_logging(environ)
    service = AardvarkService(
        config_dir.resolve(), args.port,
        domains=(args.filter_search_domain.strip("."),) if args.filter_search_domain else (),
        resolv_conf=Path(environ.get("NETDNS_AARDVARK_RESOLV_CONF", "/etc/resolv.conf")),
        upstreams=upstreams,
    )  # fmt: skip
    try:
        run_loop(serve(service, write_end))
    except BaseException as exc:
        log.exception("netdns-aardvark stopped")
        with contextlib.suppress(OSError):
            os.write(write_end, str(exc).encode() or type(exc).__name__.encode())
        os._exit(1)
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        try:
            print(f"netdns-aardvark {version('netdns')} (aardvark-dns 1.4 command line)")
        except PackageNotFoundError:
            print("netdns-aardvark (aardvark-dns 1.4 command line)")
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
