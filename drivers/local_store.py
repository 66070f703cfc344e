"""Where the DriverCore's state lives between daemon runs: one JSON file under --root.

The interface is `load() -> State` and `save(State)`, so an etcd store can stand behind it
later, plus `lock()` (one daemon per root) and the intent of the change in flight (`begin`,
`end`, `pending`: what a change is about to make or remove in the kernel, so a daemon killed
mid-change can tidy up at its next start; see DriverCore.start).

`save` is atomic: the new state goes to a temporary file that is flushed and
fsynced, renamed over the old one, and the directory fsynced, so a crash leaves the old state
or the new one, never a torn file. The file carries a schema version; model dataclasses are
converted field by field from their type hints (addresses and subnets as strings, enums as
their values), so a field added to the model later loads from old files with its default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import fcntl
import json
import logging
import os
import tempfile
import types
import typing
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any, Protocol, TypeVar

from drivers.errors import Conflict, Invalid, Unsupported
from drivers.model import Endpoint, Network, Sandbox, Service

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STATE_FILE = "state.json"
INTENT_FILE = "intent.json"
LOCK_FILE = "netdns.lock"
T = TypeVar("T")


@dataclass(slots=True)
class State:
    """Everything the DriverCore keeps, by id, in creation (for endpoints: connect) order."""

    networks: dict[str, Network] = field(default_factory=dict)
    sandboxes: dict[str, Sandbox] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    # sandbox id -> name of the named namespace netdns made for it (and removes with it);
    # sandboxes that adopted a namespace are not here.
    made_netns: dict[str, str] = field(default_factory=dict)

    def copy(self) -> State:
        """A copy whose dicts can change without touching this one (the values are frozen)."""
        return State(
            dict(self.networks),
            dict(self.sandboxes),
            dict(self.endpoints),
            dict(self.services),
            dict(self.made_netns),
        )


@dataclass(frozen=True, slots=True)
class Intent:
    """The kernel objects one change is about to make (`removing` False) or remove (True).

    Written before the change touches the kernel, dropped once its subscribers have heard
    of it (the listeners tidy up after a removed namespace). Changes run one at a time, so
    one intent is enough. A daemon killed mid-change finds it at its next start and
    compares it with the saved state (the state save is each change's commit point): what
    the state holds stays; what it does not hold is removed from the kernel. A removal the
    state still holds is finished, so an interrupted change ends up done wholly or not at all.
    """

    op: str  # what the change was, for the log
    removing: bool = False
    networks: tuple[Network, ...] = ()
    sandboxes: tuple[Sandbox, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    # (sandbox id, namespace name) of the named namespaces netdns makes or removes for them.
    netns: tuple[tuple[str, str], ...] = ()


class Store(Protocol):
    def lock(self) -> None: ...

    def load(self) -> State: ...

    def save(self, state: State) -> None: ...

    def begin(self, intent: Intent) -> None: ...

    def end(self) -> None: ...

    def pending(self) -> Intent | None: ...


# Roots this process holds the lock of: a second DriverCore in the same process (tests restart
# one in place) may use the root; another process may not.
_locked: dict[Path, int] = {}


class LocalStore:
    """State in ROOT/state.json, rewritten whole and atomically on every change."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / STATE_FILE
        self.intent_path = self.root / INTENT_FILE

    def lock(self) -> None:
        """Hold ROOT/netdns.lock for the life of this process; Conflict naming the pid that
        holds it when another process does (two daemons on one root would overwrite each
        other's state and remove each other's namespaces)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = self.root.resolve()
        if key in _locked:
            return
        path = self.root / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise Conflict(
                f"--root {self.root} is in use by another netdns daemon (pid {holder}, lock "
                f"{path}): stop that daemon, or give this one another --root"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _locked[key] = fd  # closed by the process's exit, which is what releases the lock
        # A save or intent cut short by a crash leaves its temporary file; the lock says no
        # other daemon is writing one now.
        for leftover in self.root.glob(f".{STATE_FILE}.*"):
            leftover.unlink(missing_ok=True)
        for leftover in self.root.glob(f".{INTENT_FILE}.*"):
            leftover.unlink(missing_ok=True)

    def load(self) -> State:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise Invalid(f"state file {self.path} cannot be read: {exc.strerror}") from exc
        try:
            return state_from_json(json.loads(data))
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            # Saves are atomic, so this is not a crash of ours: a disk fault or a hand edit.
            # Falling back to an older state would forget what exists in the kernel.
            raise Invalid(
                f"state file {self.path} cannot be read ({_short(exc)}): restore it from a "
                "backup, or move it aside to start with no networks or containers (their "
                "namespaces and links are then left to remove by hand)"
            ) from exc

    def save(self, state: State) -> None:
        _write_atomically(self.root, STATE_FILE, json.dumps(state_to_json(state), indent=1))

    def begin(self, intent: Intent) -> None:
        """Record the change about to touch the kernel (durably: it outlives a crash)."""
        _write_atomically(self.root, INTENT_FILE, json.dumps(to_json(intent)))

    def end(self) -> None:
        """The change has ended (done or undone). Not fsynced: a stale intent whose change
        was saved, or fully undone, asks the next start to do nothing that is not done."""
        with contextlib.suppress(FileNotFoundError):
            self.intent_path.unlink()

    def pending(self) -> Intent | None:
        """The intent of a change a crash cut short, if any. One that cannot be read is set
        aside (logged): the state file is the truth, the intent only helps to tidy up."""
        try:
            data = self.intent_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return from_json(Intent, json.loads(data))
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            aside = self.intent_path.with_name(f"{INTENT_FILE}.bad")
            os.replace(self.intent_path, aside)
            log.error(
                "intent file %s cannot be read (%s); moved to %s: what the interrupted change "
                "made in the kernel may be left over",
                self.intent_path, _short(exc), aside,
            )  # fmt: skip
            return None


def _write_atomically(root: Path, name: str, text: str) -> None:
    """ROOT/NAME holds TEXT, or what it held before, whatever crash comes: a temporary file
    in the same directory, fsynced, renamed over it, then the directory fsynced."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=root)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # makes the rename itself durable
    finally:
        os.close(dir_fd)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


# -- State <-> JSON ------------------------------------------------------------------------

_SECTIONS: tuple[tuple[str, type], ...] = (
    ("networks", Network),
    ("sandboxes", Sandbox),
    ("endpoints", Endpoint),
    ("services", Service),
)


def state_to_json(state: State) -> dict[str, Any]:
    data: dict[str, Any] = {"schema": SCHEMA_VERSION}
    for section, _ in _SECTIONS:
        data[section] = [to_json(v) for v in getattr(state, section).values()]
    # Other hosts' endpoints are the cluster store's to keep: read again at each start.
    data["endpoints"] = [to_json(e) for e in state.endpoints.values() if not e.remote]
    data["made_netns"] = dict(state.made_netns)
    return data


def state_from_json(data: Any) -> State:
    if not isinstance(data, dict):
        raise ValueError("the top level is not an object")
    schema = data.get("schema")
    if schema != SCHEMA_VERSION:
        if isinstance(schema, int) and schema > SCHEMA_VERSION:
            raise Unsupported(
                f"the state file has schema {schema}, newer than this netdns knows "
                f"({SCHEMA_VERSION}): run the newer netdns"
            )
        raise ValueError(f"unknown schema {schema!r}")
    state = State()
    for section, cls in _SECTIONS:
        target = getattr(state, section)
        for item in data.get(section, []):
            value = from_json(cls, item)
            target[value.id] = value
    made = data.get("made_netns", {})
    if not isinstance(made, dict):
        raise ValueError("made_netns is not an object")
    state.made_netns = {str(k): str(v) for k, v in made.items()}
    return state


def to_json(value: Any) -> Any:
    """A model value as JSON data: dataclasses as objects, tuples as lists, enums as values,
    addresses and subnets as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, IPv4Address | IPv6Address | IPv4Network | IPv6Network):
        return str(value)
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot store {type(value).__name__} value {value!r}")


_ADDRESS_TYPES = {IPv4Address, IPv6Address}
_NETWORK_TYPES = {IPv4Network, IPv6Network}


def from_json(tp: Any, data: Any) -> Any:
    """The value of type `tp` (a model type hint) that `to_json` turned into `data`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if data is None:
            if len(args) < len(typing.get_args(tp)):
                return None
            raise ValueError(f"null where a {tp} is needed")
        if set(args) <= _ADDRESS_TYPES:
            return _checked(ip_address(data), args)
        if set(args) <= _NETWORK_TYPES:
            return _checked(ip_network(data), args)
        if len(args) == 1:
            return from_json(args[0], data)
        raise TypeError(f"cannot load a value of type {tp}")
    if origin is tuple:
        args = typing.get_args(tp)
        _expect(data, list, tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_json(args[0], item) for item in data)
        if len(args) != len(data):
            raise ValueError(f"{data!r} does not have the {len(args)} items of {tp}")
        return tuple(from_json(a, item) for a, item in zip(args, data, strict=True))
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            _expect(data, dict, tp)
            hints = _hints(tp)
            known = {f.name for f in dataclasses.fields(tp) if f.init}
            return tp(**{k: from_json(hints[k], v) for k, v in data.items() if k in known})
        if issubclass(tp, enum.Enum):
            return tp(data)
        if tp in _ADDRESS_TYPES:
            return tp(data)
        if tp in _NETWORK_TYPES:
            return tp(data)
        if tp in (str, int, float, bool):
            _expect(data, tp, tp)
            return data
    raise TypeError(f"cannot load a value of type {tp}")


_hint_cache: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _hint_cache.get(cls)
    if hints is None:
        hints = _hint_cache[cls] = typing.get_type_hints(cls)
    return hints


def _expect(data: Any, kind: type, tp: Any) -> None:
    # bool is an int in Python; a stored true must not load as an int field, nor 1 as a bool.
    if not isinstance(data, kind) or (kind is int and isinstance(data, bool)):
        raise ValueError(f"{data!r} is not a {tp}")


def _checked(value: T, allowed: list[Any]) -> T:
    if type(value) not in allowed:
        raise ValueError(f"{value} is not a {' or '.join(a.__name__ for a in allowed)}")
    return value
