"""Message schemas and request validation.

Each proto message is a :class:`Message`: its fields, their types, and its
oneof groups. :meth:`Message.decode` checks a request body against it the
way a proto3 decoder would, but strictly: an unknown field, a value of the
wrong type or out of its proto type's range is :class:`InvalidArgument`,
naming the field by its path (``container.labels``). Absent fields are
filled with their proto3 defaults so handlers can index without ``get``.

Types are small validator objects; they are built once at import time, so
validating a body is a loop over its keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from wire.errors import InvalidArgument

__all__ = [
    "ANY",
    "BOOL",
    "BYTES",
    "FIELD_MASK",
    "INT64",
    "STRING",
    "STRING_MAP",
    "TIMESTAMP",
    "UINT32",
    "UINT64",
    "Enum",
    "Message",
    "Repeated",
    "Type",
]

Validator = Callable[[Any, str], Any]


class Type:
    """A field type: how to check a value and what its proto3 default is."""

    def __init__(self, name: str, check: Validator, default: Callable[[], Any]) -> None:
        self.name = name
        self.check = check
        self.default = default


def _wrong(path: str, expected: str, value: Any) -> InvalidArgument:
    return InvalidArgument(f'field "{path}": expected {expected}, got {_type_name(value)}')


def _type_name(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, bytes):
        return "bin"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "array"
    if isinstance(value, msgpack.Timestamp):
        return "timestamp"
    return type(value).__name__


def _check_str(value: Any, path: str) -> str:
    if type(value) is not str:
        raise _wrong(path, "str", value)
    return value


def _check_bytes(value: Any, path: str) -> bytes:
    if type(value) is not bytes:
        raise _wrong(path, "bin", value)
    return value


def _check_bool(value: Any, path: str) -> bool:
    if type(value) is not bool:
        raise _wrong(path, "bool", value)
    return value


def _int_range(name: str, low: int, high: int) -> Validator:
    def check(value: Any, path: str) -> int:
        # bool is an int subclass in Python but a distinct msgpack type.
        if type(value) is not int:
            raise _wrong(path, f"int ({name})", value)
        if not low <= value <= high:
            raise InvalidArgument(f'field "{path}": {value} is out of range for {name}')
        return value

    return check


def _check_string_map(value: Any, path: str) -> dict[str, str]:
    if type(value) is not dict:
        raise _wrong(path, "map of str to str", value)
    for key, item in value.items():
        if type(key) is not str:
            raise _wrong(f"{path}", "map of str to str (key)", key)
        if type(item) is not str:
            raise _wrong(f"{path}.{key}", "str", item)
    return value


def _check_timestamp(value: Any, path: str) -> msgpack.Timestamp:
    if not isinstance(value, msgpack.Timestamp):
        raise _wrong(path, "timestamp (msgpack ext -1)", value)
    return value


STRING = Type("string", _check_str, str)
BYTES = Type("bytes", _check_bytes, bytes)
BOOL = Type("bool", _check_bool, bool)
UINT32 = Type("uint32", _int_range("uint32", 0, 2**32 - 1), int)
INT64 = Type("int64", _int_range("int64", -(2**63), 2**63 - 1), int)
UINT64 = Type("uint64", _int_range("uint64", 0, 2**64 - 1), int)
STRING_MAP = Type("map<string,string>", _check_string_map, dict)
TIMESTAMP = Type("google.protobuf.Timestamp", _check_timestamp, lambda: None)


class Repeated(Type):
    """``repeated T``: an array whose every item is a ``T``."""

    def __init__(self, item: Type) -> None:
        def check(value: Any, path: str) -> list[Any]:
            if type(value) is not list:
                raise _wrong(path, f"array of {item.name}", value)
            return [item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]

        super().__init__(f"repeated {item.name}", check, list)


class Enum(Type):
    """A proto enum, carried as the value's name."""

    def __init__(self, name: str, values: Iterable[str]) -> None:
        allowed = tuple(values)

        def check(value: Any, path: str) -> str:
            if type(value) is not str:
                raise _wrong(path, f"{name} name", value)
            if value not in allowed:
                raise InvalidArgument(
                    f'field "{path}": {value!r} is not one of {", ".join(allowed)}'
                )
            return value

        super().__init__(name, check, lambda: allowed[0])


class Message(Type):
    """A proto message: named fields and oneof groups.

    As a field type, a message is a map (or nil, meaning absent); its
    default is ``None``.
    """

    def __init__(
        self,
        name: str,
        fields: dict[str, Type],
        *,
        oneofs: dict[str, tuple[str, ...]] | None = None,
        ignored: Iterable[str] = (),
    ) -> None:
        self.fields = fields
        self.oneofs = oneofs or {}
        # Fields the daemon sets and ignores on input (created_at, ...).
        self.ignored = frozenset(ignored)

        def check(value: Any, path: str) -> dict[str, Any] | None:
            if value is None:
                return None
            return self._decode(value, path)

        super().__init__(name, check, lambda: None)

    def decode(self, body: Any) -> dict[str, Any]:
        """Validate a request body; returns it with every absent field defaulted."""
        if body is None:
            body = {}
        return self._decode(body, "")

    def _decode(self, value: Any, path: str) -> dict[str, Any]:
        if type(value) is not dict:
            raise _wrong(path or "body", f"map ({self.name})", value)
        out: dict[str, Any] = {}
        fields = self.fields
        for key, item in value.items():
            ftype = fields.get(key) if type(key) is str else None
            where = f"{path}.{key}" if path else str(key)
            if ftype is None:
                raise InvalidArgument(f'field "{where}": unknown field of {self.name}')
            checked = ftype.check(item, where)
            if key not in self.ignored:
                out[key] = checked
        for group, members in self.oneofs.items():
            present = [m for m in members if m in value]
            if len(present) > 1:
                raise InvalidArgument(
                    f'oneof "{path + "." if path else ""}{group}": at most one of '
                    f"{', '.join(members)} may be set, got {', '.join(present)}"
                )
        for key, ftype in fields.items():
            if key not in out:
                out[key] = ftype.default()
        return out


ANY = Message("google.protobuf.Any", {"type_url": STRING, "value": BYTES})
FIELD_MASK = Message("google.protobuf.FieldMask", {"paths": Repeated(STRING)})
EMPTY = Message("google.protobuf.Empty", {})
