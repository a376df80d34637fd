"""MessagePack encoding of berth frames.

Every payload is one msgpack map packed with ``use_bin_type=True``: text is
msgpack *str*, bytes are *bin*, and ``google.protobuf.Timestamp`` is the
msgpack Timestamp extension (type -1), which decodes to
:class:`msgpack.Timestamp`.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack

from wire.errors import InvalidArgument

__all__ = ["Timestamp", "now", "pack", "timestamp_ns", "timestamp_or_nil", "unpack"]

Timestamp = msgpack.Timestamp

_packer_options: dict[str, Any] = {"use_bin_type": True, "datetime": False}


def pack(obj: Any) -> bytes:
    """Encode ``obj`` as one msgpack object."""
    return msgpack.packb(obj, **_packer_options)  # type: ignore[no-any-return]


def unpack(payload: bytes) -> Any:
    """Decode one msgpack object; anything malformed is :class:`InvalidArgument`."""
    try:
        return msgpack.unpackb(payload, raw=False, timestamp=0, strict_map_key=False, use_list=True)
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"malformed frame: string is not valid UTF-8 ({exc.reason})") from exc
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise InvalidArgument(
            f"malformed frame: not one msgpack object ({type(exc).__name__}: {exc})"
        ) from exc


def now() -> msgpack.Timestamp:
    """The current wall-clock time as a wire Timestamp."""
    return msgpack.Timestamp.from_unix_nano(time.time_ns())


def timestamp_or_nil(ns: int) -> msgpack.Timestamp | None:
    """A wire Timestamp for ``ns`` nanoseconds since the epoch; nil (None) for 0, "never"."""
    return msgpack.Timestamp.from_unix_nano(ns) if ns else None


def timestamp_ns(ts: msgpack.Timestamp) -> int:
    """Nanoseconds since the epoch of a wire Timestamp."""
    return ts.to_unix_nano()  # type: ignore[no-any-return]
