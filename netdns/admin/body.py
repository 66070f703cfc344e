"""Reading a request: its JSON body field by field, and its query parameters; each wrong field
or parameter is an Invalid naming it and saying what it should be."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from drivers.errors import Invalid

S = TypeVar("S")


class Body:
    """A request's JSON object, read field by field; each wrong field is an Invalid naming it."""

    def __init__(self, data: dict[str, Any], allowed: tuple[str, ...]) -> None:
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise Invalid(
                f"unknown field(s) {', '.join(unknown)} in the request body; "
                f"known fields: {', '.join(allowed)}"
            )
        self._data = data

    def text(self, field: str, *, required: bool = False, default: str = "") -> str:
        value = self._data.get(field)
        if value is None:
            if required:
                raise Invalid(f"field {field!r} is required (a string)")
            return default
        if not isinstance(value, str):
            raise Invalid(f"field {field!r} must be a string, not {json_type(value)}")
        if required and not value:
            raise Invalid(f"field {field!r} must not be empty")
        return value

    def optional_text(self, field: str) -> str | None:
        return self.text(field) or None

    def flag(self, field: str) -> bool:
        value = self._data.get(field, False)
        if not isinstance(value, bool):
            raise Invalid(f"field {field!r} must be true or false, not {json_type(value)}")
        return value

    def integer(self, field: str, *, default: int | None = None) -> int:
        value = self._data.get(field)
        if value is None:
            if default is None:
                raise Invalid(f"field {field!r} is required (a number)")
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            shown = repr(value) if isinstance(value, float) else json_type(value)
            raise Invalid(f"field {field!r} must be a whole number, not {shown}")
        return value

    def number(self, field: str) -> float:
        value = self._data.get(field)
        if value is None:
            raise Invalid(f"field {field!r} is required (a number)")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise Invalid(f"field {field!r} must be a number, not {json_type(value)}")
        try:
            return float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise Invalid(f"field {field!r} is out of range") from None

    def texts(self, field: str) -> tuple[str, ...]:
        value = self._data.get(field)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Invalid(f"field {field!r} must be a list of strings")
        return tuple(value)

    def pairs(self, field: str) -> tuple[tuple[str, str], ...]:
        value = self._data.get(field)
        if value is None:
            return ()
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise Invalid(f"field {field!r} must be an object of string values")
        return tuple(value.items())


def json_type(value: object) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), "null")


async def read_body(request: web.Request, allowed: tuple[str, ...]) -> Body:
    raw = await request.read()
    if not raw.strip():
        data: object = {}
    else:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Invalid(f"the request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise Invalid("the request body is nested too deeply to be read") from None
    if not isinstance(data, dict):
        raise Invalid(f"the request body must be a JSON object, not {json_type(data)}")
    return Body(data, allowed)


async def read_spec(
    request: web.Request,
    spec_type: type[S],
    *,
    required: tuple[str, ...] = ("name",),
    given: Mapping[str, Any] | None = None,
) -> S:
    """A spec (drivers/core/specs.py) from the body: each field of the dataclass is a field of
    the body of the same name, read by the field's type, with its default; `given` fields
    come from elsewhere (the path) and are not accepted in the body."""
    given = dict(given or {})
    fields = [f for f in dataclasses.fields(spec_type) if f.name not in given]  # type: ignore[arg-type]
    body = await read_body(request, tuple(f.name for f in fields))
    values = dict(given)
    for f in fields:
        values[f.name] = _read(body, f, required=f.name in required)
    return spec_type(**values)


def _read(body: Body, f: dataclasses.Field, *, required: bool) -> Any:
    default = None if f.default is dataclasses.MISSING else f.default
    # By the annotation's text: the specs' module uses `from __future__ import annotations`.
    match str(f.type):
        case "str":
            return body.text(f.name, required=required, default=default or "")
        case "str | None":
            return body.optional_text(f.name)
        case "bool":
            return body.flag(f.name)
        case "int":
            return body.integer(f.name, default=default)
        case "tuple[str, ...]":
            return body.texts(f.name)
        case "tuple[tuple[str, str], ...]":
            return body.pairs(f.name)
    raise TypeError(f"no body reader for {f.name}: {f.type}")


def check_query(query: Mapping[str, str], known: Iterable[str]) -> None:
    """Refuse a query parameter the route does not know, naming the ones it does."""
    known = tuple(known)
    unknown = sorted(set(query) - set(known))
    if unknown:
        raise Invalid(f"unknown query parameter(s) {', '.join(unknown)}: use {', '.join(known)}")


TRUE_WORDS = frozenset({"1", "true", "yes"})
FALSE_WORDS = frozenset({"0", "false", "no"})


def query_flag(query: Mapping[str, str], field: str, default: bool) -> bool:
    value = query.get(field)
    if value is None:
        return default
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise Invalid(f"query parameter {field!r}: {value!r} is not true or false")
