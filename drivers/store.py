"""Where the DriverCore's state lives between daemon runs: one JSON file under --root.

The interface is two calls, `load() -> State` and `save(State)`, so an etcd store can stand
behind it later. `save` is atomic: the new state goes to a temporary file that is flushed and
fsynced, renamed over the old one, and the directory fsynced, so a crash leaves the old state
or the new one, never a torn file. The file carries a schema version; model dataclasses are
converted field by field from their type hints (addresses and subnets as strings, enums as
their values), so a field added to the model later loads from old files with its default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import os
import tempfile
import types
import typing
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any, Protocol, TypeVar

from drivers.errors import Invalid, Unsupported
from drivers.model import Endpoint, Network, Sandbox, Service

SCHEMA_VERSION = 1
STATE_FILE = "state.json"
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


class Store(Protocol):
    def load(self) -> State: ...

    def save(self, state: State) -> None: ...


class LocalStore:
    """State in ROOT/state.json, rewritten whole and atomically on every change."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / STATE_FILE

    def load(self) -> State:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return State()
        try:
            return state_from_json(json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            raise Invalid(
                f"state file {self.path} cannot be read ({exc}): move it aside to start with "
                "no networks or containers"
            ) from exc

    def save(self, state: State) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = json.dumps(state_to_json(state), indent=1).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{STATE_FILE}.", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # makes the rename itself durable
        finally:
            os.close(dir_fd)


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
