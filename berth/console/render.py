"""How command results are printed: aligned tables for people, JSON for scripts.

Replies come off the wire with msgpack Timestamps and bytes in them; for JSON
a Timestamp becomes an RFC 3339 string (UTC, nanoseconds kept) and an Any
whose value is JSON (an OCI spec or process) carries that JSON decoded, so
``berth containers info web --json | jq .spec.value.process.args`` works.
Other bytes are base64.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

import msgpack

from wire.errors import BerthError

__all__ = [
    "details",
    "error_line",
    "human_size",
    "human_time",
    "plain",
    "print_json",
    "rfc3339",
    "table",
]


def error_line(exc: BerthError) -> str:
    """The one line an error is reported with: ``berth: NOT_FOUND: container "web": not found``."""
    return f"berth: {exc.code}: {exc.message}\n"


def rfc3339(ts: msgpack.Timestamp) -> str:
    """``2025-11-29T10:12:10.613457529Z``."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts.seconds))
    return f"{seconds}.{ts.nanoseconds:09d}Z"


def human_time(ts: msgpack.Timestamp | None) -> str:
    """Local time to the second, or ``-`` for an unset Timestamp."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts.seconds))


def human_size(size: int) -> str:
    """``512 B``, ``4.0 KiB``, ``1.2 MiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def plain(value: Any) -> Any:
    """``value`` with Timestamps, bytes and Anys made JSON-able."""
    if isinstance(value, msgpack.Timestamp):
        return rfc3339(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Mapping):
        if set(value) == {"type_url", "value"} and isinstance(value["value"], bytes):
            return {"type_url": value["type_url"], "value": _json_or_base64(value["value"])}
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _json_or_base64(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return base64.b64encode(data).decode()


def print_json(out: TextIO, value: Any, *, lines: bool = False) -> None:
    """``value`` as JSON: indented, or one compact line (``lines``, for streams)."""
    if lines:
        out.write(json.dumps(plain(value), sort_keys=True, separators=(",", ":")) + "\n")
    else:
        out.write(json.dumps(plain(value), sort_keys=True, indent=2) + "\n")
    out.flush()


def table(out: TextIO, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Left-aligned columns separated by two spaces, as ``ctr`` and ``docker`` print."""
    text = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in text) for i in range(len(headers))]
    for row in text:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        out.write("  ".join(cells).rstrip() + "\n")
    out.flush()


def details(out: TextIO, record: Mapping[str, Any]) -> None:
    """One ``key: value`` line per field; maps become ``key.sub: value`` lines."""
    lines: list[tuple[str, str]] = []
    _flatten("", record, lines)
    width = max((len(k) for k, _ in lines), default=0)
    for key, value in lines:
        out.write(f"{key + ':':<{width + 1}} {value}\n")
    out.flush()


def _flatten(prefix: str, value: Any, lines: list[tuple[str, str]]) -> None:
    if isinstance(value, msgpack.Timestamp):
        lines.append((prefix, human_time(value)))
    elif isinstance(value, Mapping) and set(value) == {"type_url", "value"}:
        lines.append((prefix, _describe_any(value)))
    elif isinstance(value, Mapping) and value:
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, lines)
    elif isinstance(value, Mapping):
        lines.append((prefix, "-"))
    elif isinstance(value, list):
        lines.append((prefix, " ".join(str(v) for v in value) if value else "-"))
    elif value is None or value == "":
        lines.append((prefix, "-"))
    else:
        lines.append((prefix, str(value)))


def _describe_any(value: Mapping[str, Any]) -> str:
    """An OCI spec or process as its command line; ``--json`` shows all of it."""
    decoded = _json_or_base64(value["value"]) if isinstance(value["value"], bytes) else None
    if isinstance(decoded, dict):
        process = decoded.get("process", decoded)
        args = process.get("args") if isinstance(process, dict) else None
        if isinstance(args, list):
            return f"{value['type_url'].rsplit('/', 1)[-1]} (args: {' '.join(map(str, args))})"
    return str(value["type_url"])
