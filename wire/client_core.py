"""The sans-IO core of the client: the protocol without sockets.

:class:`ClientCore` builds request payloads with ids from a per-connection
counter, keeps one inbox per pending call, routes each received payload to
its call by ``id``, and turns reply frames into bodies, stream items or the
error class of :mod:`wire.errors`. :mod:`wire.transport` drives it over a
socket, blocking or asyncio.

Flow control (docs/protocol.md §6.6): the core counts the ``more`` frames
each stream has handed to its reader and, once :data:`CREDIT_BATCH` have
been, :meth:`ClientCore.credit_payload` gives the credit frame that grants
as many again. The daemon's window starts at 16, so with batches of 8 a
reader that keeps reading never waits on it, and one that stops holds at
most 16 frames of the stream in flight.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
import os
import time
from collections import deque
from typing import Any

from wire.codec import pack, unpack
from wire.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    from_wire,
)

__all__ = [
    "CANCEL_DRAIN",
    "CREDIT_BATCH",
    "DEFAULT_ADDRESS",
    "LOCAL_GRACE",
    "Body",
    "ClientCore",
    "StreamMarker",
    "deadline_after",
    "identity",
    "remaining",
    "resolve_address",
]

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "ipc:///run/berth/berth.sock"
PROTOCOL_VERSION = 1
# Seconds the client waits past a call's own timeout before giving up locally:
# long enough for the server's DEADLINE_EXCEEDED frame to arrive first.
LOCAL_GRACE = 0.5
# Upper bound, in seconds, on waiting for a cancelled stream's terminal frame.
CANCEL_DRAIN = 2.0
# Stream frames consumed per credit frame: half the daemon's initial window
# of 16, so the grant is back before the window runs dry.
CREDIT_BATCH = 8

Body = dict[str, Any]


def resolve_address(address: str | None) -> str:
    """The address to connect to: ``address``, else ``$BERTH_ADDRESS``, else the default."""
    return address or os.environ.get("BERTH_ADDRESS") or DEFAULT_ADDRESS


def deadline_after(timeout: float | None) -> float | None:
    """The monotonic time after which the client stops waiting for a call."""
    return None if timeout is None else time.monotonic() + timeout + LOCAL_GRACE


def remaining(deadline: float | None) -> float | None:
    """Seconds left before ``deadline``; raises once it has passed."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("deadline exceeded: no reply from the daemon in time")
    return left


class StreamMarker(enum.Enum):
    """What a stream frame meant when it carried no item."""

    READY = "ready"
    END = "end"


class _Call:
    """One pending call: its method, the frames received and not yet read."""

    __slots__ = ("inbox", "method", "open", "ungranted")

    def __init__(self, method: str) -> None:
        self.method = method
        self.inbox: deque[Body] = deque()
        # True until the call's terminal frame (reply, end or error) was read.
        self.open = True
        # ``more`` frames handed to the reader and not yet granted back.
        self.ungranted = 0


class ClientCore:
    """Sans-IO protocol state of one client connection.

    ``start`` a call to get its id and payload; ``feed`` every payload the
    socket receives; read a call's frames with ``next_frame`` and interpret
    them with ``unary_result`` or ``stream_step``; ``finish`` the call when
    done, after which late frames for its id are dropped.
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._calls: dict[int, _Call] = {}

    @property
    def pending(self) -> frozenset[int]:
        """Ids of the calls started and not yet finished."""
        return frozenset(self._calls)

    def start(
        self, method: str, body: Body | None, *, namespace: str, timeout: float | None
    ) -> tuple[int, bytes]:
        """Register a new call; its id and the request payload to send."""
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be positive or None, not {timeout!r}")
        call_id = next(self._ids)
        request: Body = {
            "v": PROTOCOL_VERSION,
            "id": call_id,
            "method": method,
            "ns": namespace,
            "body": {} if body is None else body,
        }
        if timeout is not None:
            # 0 would mean "no deadline" on the wire; never round a short one down to it.
            request["timeout_ms"] = max(1, math.ceil(timeout * 1000))
        payload = pack(request)
        self._calls[call_id] = _Call(method)
        return call_id, payload

    def cancel_payload(self, call_id: int) -> bytes:
        """The frame that ends the open stream ``call_id``."""
        return pack({"v": PROTOCOL_VERSION, "id": call_id, "cancel": True})

    def credit_payload(self, call_id: int) -> bytes | None:
        """The credit frame due for stream ``call_id``, or None when none is.

        Due once :data:`CREDIT_BATCH` ``more`` frames have been read since
        the last grant; never for a stream that is finished or whose
        terminal frame has already arrived (nothing is left to grant for).
        """
        call = self._calls.get(call_id)
        if call is None or not call.open or call.ungranted < CREDIT_BATCH:
            return None
        if any(_is_terminal(frame) for frame in call.inbox):
            return None
        call.ungranted -= CREDIT_BATCH
        return pack({"v": PROTOCOL_VERSION, "id": call_id, "credit": CREDIT_BATCH})

    def feed(self, payload: bytes) -> int | None:
        """File a received payload under its call; the call's id, or None if dropped."""
        try:
            frame = unpack(payload)
        except InvalidArgument as exc:
            log.warning("dropping a reply that is not msgpack: %s", exc)
            return None
        if not isinstance(frame, dict):
            log.warning("dropping a reply that is not a map: %r", frame)
            return None
        call_id = frame.get("id")
        call = self._calls.get(call_id) if isinstance(call_id, int) else None
        if call is None:
            # A late reply to a call given up on, or an error about an unreadable frame.
            log.debug("dropping a reply for no pending call: %r", frame)
            return None
        call.inbox.append(frame)
        return call_id

    def next_frame(self, call_id: int) -> Body | None:
        """The oldest unread frame of ``call_id``, or None when none has arrived."""
        call = self._calls.get(call_id)
        if call is None or not call.inbox:
            return None
        return call.inbox.popleft()

    def is_open(self, call_id: int) -> bool:
        """Whether ``call_id`` is pending and its terminal frame not yet read."""
        call = self._calls.get(call_id)
        return call is not None and call.open

    def finish(self, call_id: int) -> None:
        """Forget ``call_id``; frames still arriving for it will be dropped."""
        self._calls.pop(call_id, None)

    def unary_result(self, call_id: int, frame: Body) -> Body:
        """The body of a unary reply; raises the error class of an error frame."""
        call = self._calls[call_id]
        # After "ready" or "more" the stream is still open: the driver cancels it.
        call.open = bool(frame.get("ready") or frame.get("more")) and "error" not in frame
        if "error" in frame:
            raise from_wire(frame["error"])
        if frame.get("ready") or frame.get("more") or frame.get("end"):
            raise InvalidArgument(f"{call.method} is a streaming method: use stream()")
        return self._body(call, frame)

    def stream_step(self, call_id: int, frame: Body) -> Body | StreamMarker:
        """The item a stream frame carries, or READY/END; raises on an error frame."""
        call = self._calls[call_id]
        if "error" in frame:
            call.open = False
            raise from_wire(frame["error"])
        if frame.get("end"):
            call.open = False
            return StreamMarker.END
        if frame.get("ready"):
            return StreamMarker.READY
        if frame.get("more"):
            call.ungranted += 1
            return self._body(call, frame)
        call.open = False
        raise InvalidArgument(f"{call.method} is not a streaming method: use call()")

    @staticmethod
    def _body(call: _Call, frame: Body) -> Body:
        body = frame.get("body", {})
        if not isinstance(body, dict):
            raise Internal(f"{call.method}: malformed reply body {body!r}")
        return body


def _is_terminal(frame: Body) -> bool:
    return "error" in frame or bool(frame.get("end"))


def identity(body: Body) -> Any:
    return body
