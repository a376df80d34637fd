"""The wire between the daemon and its shims: plain unix sockets, msgpack frames.

No zmq on either side of it: a zmq context costs every shim two threads,
their malloc arenas and stacks (about 0.8 MB of PSS each), and the shim's
one-thread poll loop needs none of it.

Requests (daemon -> shim): a ``SOCK_STREAM`` socket the shim listens on at
``<task_dir>/shim.sock`` (mode 0600: whoever can send there can run
processes as root). Each message either way is one frame: a 4-byte
big-endian length, then that many bytes of one msgpack map (at most
``MAX_FRAME``). A request is ``{"op": str, "seq": int, ...fields}``; its
reply, on the same connection and in order, ``{"seq": seq, "ok": {...}}`` or
``{"seq": seq, "error": {"code", "message"}}``. The shim serves any number
of connections, one request at a time; it closes them all when it exits,
after the last reply is written, so a client reads that reply and then end
of file.

Events (shim -> daemon): ``SOCK_DGRAM`` datagrams, one msgpack map each,
to the unix socket the daemon binds at ``<state>/shim-events.sock``::

    {"namespace", "id", "type": "EXIT", "pid", "exit_status", "exited_at_ns"}

sent only after the exit is fsync'ed to ``<task_dir>/exits``. A shim that
cannot deliver one (no daemon, or the daemon's queue is full) keeps it and
retries on later turns of its loop (see :class:`runtime.shim.events.EventSender`),
so a restarted daemon still gets it; the exits file, which the daemon reads
at start-up, is the ground truth either way, and duplicates are harmless.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

__all__ = ["HEADER", "MAX_FRAME", "SHIM_SOCKET", "FrameBuffer", "frame"]

SHIM_SOCKET = "shim.sock"
HEADER = struct.Struct(">I")
# A bundle's config.json is the largest thing sent; far below this.
MAX_FRAME = 64 << 20


def frame(message: dict[str, Any]) -> bytes:
    """One message as a frame: length, then msgpack."""
    data: bytes = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(data)) + data


class FrameBuffer:
    """Bytes read from a stream, cut into frames' payloads as they complete."""

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> None:
        """Append bytes read from the stream."""
        self._data += data

    def next(self) -> bytes | None:
        """The next complete frame's payload, or None; ``ValueError`` if over ``MAX_FRAME``."""
        if len(self._data) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self._data)
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes is too large")
        end = HEADER.size + size
        if len(self._data) < end:
            return None
        payload = bytes(self._data[HEADER.size : end])
        del self._data[:end]
        return payload
