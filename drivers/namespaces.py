"""Network namespaces for sandboxes: the named ones netns makes and the ones it adopts.

A named namespace lives where `ip netns add` puts it (/run/netns/NAME, a bind mount of the
namespace file), so `ip netns exec NAME ...` enters it too. Adopted namespaces, made by another
runtime, are addressed by path: /proc/PID/ns/net or a bind mount of one. Either way the rest of
netdns only ever sees the path.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
from pathlib import Path

from pyroute2 import IPRoute, netns

from drivers.errors import Conflict, Invalid, NotFound

log = logging.getLogger(__name__)

NETNS_RUN_DIR = Path("/run/netns")

# ioctl(2) on a namespace file: which kind of namespace it is (linux/nsfs.h).
_NS_GET_NSTYPE = 0xB703
_CLONE_NEWNET = 0x40000000

# Container names as docker takes them; they also make safe file names under /run/netns.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


def is_network_namespace(path: str) -> bool:
    """True when PATH is a network namespace file (not merely a file that exists there)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        # A leftover /run/netns/NAME whose mount is gone is an ordinary empty file: ENOTTY.
        return fcntl.ioctl(fd, _NS_GET_NSTYPE) == _CLONE_NEWNET
    except OSError:
        return False
    finally:
        os.close(fd)


class Namespaces:
    """Create, adopt and remove the network namespaces sandboxes live in."""

    def __init__(self, run_dir: Path = NETNS_RUN_DIR) -> None:
        self.run_dir = run_dir

    def path_of(self, name: str) -> str:
        _check_name(name)
        return str(self.run_dir / name)

    def create(self, name: str) -> str:
        """Make the named namespace NAME with its loopback up; returns its path."""
        path = self.path_of(name)
        if os.path.lexists(path):
            raise Conflict(
                f"network namespace {name!r} already exists at {path}; "
                "remove it (ip netns del) or pick another name"
            )
        # pyroute2 does what `ip netns add` does (shared /run/netns, unshare, bind mount) in a
        # forked child, so this process keeps its own namespace.
        netns.create(path)
        try:
            bring_up_loopback(path)
        except Exception:
            self.remove(name)
            raise
        log.info("created network namespace %s", path)
        return path

    def adopt(self, path: str) -> str:
        """Check that PATH (/proc/PID/ns/net or a bind mount) is a network namespace."""
        if not path or not os.path.isabs(path):
            raise Invalid(
                f"namespace path {path!r} is not absolute; pass /proc/PID/ns/net "
                "or the path of a bind-mounted namespace"
            )
        if not is_network_namespace(path):
            raise NotFound(
                f"{path} is not a network namespace (missing, or the process has exited); "
                "pass /proc/PID/ns/net of a running process or a bind-mounted namespace"
            )
        return path

    def remove(self, name: str) -> None:
        """Remove the named namespace NAME (or the /run/netns path of one); missing is fine."""
        path = self._named_path(name)
        try:
            netns.remove(path)
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.ENOENT:
                raise
            return
        log.info("removed network namespace %s", path)

    def exists(self, path: str) -> bool:
        return is_network_namespace(path)

    def _named_path(self, name_or_path: str) -> str:
        if "/" not in name_or_path:
            return self.path_of(name_or_path)
        path = Path(name_or_path)
        if path.parent != self.run_dir:
            raise Invalid(
                f"{name_or_path} is not a namespace netdns made (under {self.run_dir}); "
                "adopted namespaces belong to the runtime that made them"
            )
        return self.path_of(path.name)


def bring_up_loopback(path: str) -> None:
    """Set `lo` up inside the namespace at PATH (127.0.0.11 lives there)."""
    with IPRoute(netns=path, flags=0) as ipr:
        (index,) = ipr.link_lookup(ifname="lo")
        ipr.link("set", index=index, state="up")


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise Invalid(
            f"namespace name {name!r} is not valid; use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )
