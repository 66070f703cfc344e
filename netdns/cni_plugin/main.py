"""The executable `netdns-cni` (and `python -m netdns.cni_plugin`): one invocation from the
environment and stdin to the result or the spec's error object on stdout; logs on stderr."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from netdns.client import Client, ClientError
from netdns.cni_plugin.registrar import Registrar, daemon_host
from netdns.cni_plugin.spec import (
    DEFAULT_VERSION,
    CniError,
    Command,
    Env,
    ErrorCode,
    config_version,
    error_result,
    parse_config,
    parse_env,
    version_result,
)

log = logging.getLogger("netdns-cni")

USAGE = """\
netdns-cni: a CNI chained plugin that registers containers with the netdns daemon.

A container runtime runs it, with CNI_COMMAND=ADD|DEL|CHECK|VERSION, CNI_CONTAINERID,
CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH in the environment and the network configuration on
stdin; put it after the plugins that make the interface (e.g. bridge + host-local) in a
conflist. Plugin keys: "daemon" (default unix:///run/netdns/netdns.sock; NETDNS_HOST overrides)
and "search" (search domains for the result's dns). See docs/CNI.md.
"""


def run(env: Env, raw: bytes, environ: Mapping[str, str]) -> dict[str, Any] | None:
    """One invocation: the JSON to print (None for DEL and CHECK), or CniError."""
    if env.command is Command.VERSION:
        return version_result(raw)
    config = parse_config(raw)
    try:
        client = Client(daemon_host(config, environ))
    except ClientError as exc:
        raise CniError(ErrorCode.INVALID_CONFIG, exc.message, 'see the "daemon" key') from None
    registrar = Registrar(client, env, config)
    if env.command is Command.ADD:
        return registrar.add()
    if env.command is Command.DEL:
        registrar.delete()
    else:
        registrar.check()
    return None


def _read_stdin() -> bytes:
    if sys.stdin is None or sys.stdin.isatty():
        return b""
    try:
        return sys.stdin.buffer.read()
    except OSError as exc:
        raise CniError(
            ErrorCode.IO_FAILURE, "cannot read the configuration on stdin", str(exc)
        ) from None


def _emit(document: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("NETDNS_CNI_LOG_LEVEL", "WARNING").upper(),
        format="netdns-cni: %(levelname)s %(message)s",
    )
    version = DEFAULT_VERSION
    try:
        raw = _read_stdin()
        version = config_version(raw)
        env = parse_env(os.environ)
        result = run(env, raw, os.environ)
    except CniError as exc:
        log.debug("%s: %s (%s)", exc.code.name, exc.msg, exc.details)
        _emit(error_result(version, exc))
        return 1
    except Exception as exc:
        log.exception("internal error")
        _emit(error_result(version, CniError(ErrorCode.INTERNAL, "internal error", repr(exc))))
        return 1
    if result is not None:
        _emit(result)
    return 0
