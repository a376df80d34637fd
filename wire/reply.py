"""Reply frames, and the handle a handler answers through.

A :class:`Reply` is created by the front end for each request. Whoever ends
up answering (the front end itself for a quick read, an actor thread after
a commit, a stream producer) calls :meth:`Reply.ok`, :meth:`Reply.fail`, or
the stream methods. Replies made outside the front end's thread go through
an :class:`Outbox` (a deque and an eventfd the socket loop polls), so no
thread but the front end's ever touches the ROUTER socket.

A stream's Reply carries its flow-control window (docs/protocol.md §6.6):
the ``more`` frames its producer may still send. Producers ask
:meth:`Reply.wait_window` before each frame; when it is shut they are called
back once it opens again (a credit frame, or, for a client that never sends
credit, a frame of the stream leaving for its ZeroMQ pipe), so a slow reader
holds a cursor or an iterator, never a queue.

Frames are packed here, in the answering thread, so the socket loop only
moves bytes. The envelope around a body is written by hand: a body the
store already holds packed (a container record) is spliced in as is.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from wire.codec import pack
from wire.errors import BerthError, to_wire

__all__ = [
    "INITIAL_WINDOW",
    "KIND_MORE",
    "KIND_READY",
    "KIND_TERMINAL",
    "Outbox",
    "Reply",
    "Resume",
    "feed",
]

log = logging.getLogger(__name__)

KIND_READY = 1
KIND_MORE = 2
KIND_TERMINAL = 3

INITIAL_WINDOW = 16  # more frames a stream may send before any credit

_MAP3 = b"\x83"
_MAP4 = b"\x84"
_V1 = pack("v") + pack(1)
_ID = pack("id")
_BODY = pack("body")
_ERROR = pack("error")
_MORE = pack("more") + pack(True)
_READY = pack("ready") + pack(True)
_END = pack("end") + pack(True)


Entry = tuple[int, int, int, list[bytes], bytes]


class Outbox:
    """Frames waiting for the socket loop, filled from any thread.

    Each entry is ``(token, kind, socket, route, payload)``: ``socket`` is
    the index of the ROUTER socket the request came in on. The eventfd wakes the
    loop's poll; ``deque.append`` and ``popleft`` are atomic, so no lock.
    """

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # The socket loop's own thread: it drains after every batch anyway,
        # so its own replies (inline reads) need no wake-up.
        self.loop_thread = 0
        self._queue: collections.deque[Entry] = collections.deque()

    def put(self, token: int, kind: int, sock: int, route: list[bytes], payload: bytes) -> None:
        """Queue one frame and wake the socket loop."""
        if self.fd < 0:
            return  # closed: the daemon is gone, and so is the client's socket
        self._queue.append((token, kind, sock, route, payload))
        if threading.get_ident() != self.loop_thread:
            os.eventfd_write(self.fd, 1)

    @property
    def pending(self) -> bool:
        """Whether frames are queued."""
        return bool(self._queue)

    def drain(self) -> list[Entry]:
        """Everything queued so far; called by the socket loop only."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.fd)
        out = []
        queue = self._queue
        while queue:
            out.append(queue.popleft())
        return out

    def close(self) -> None:
        """Release the eventfd; later frames are discarded."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class Reply:
    """The way back to one request's client.

    ``token`` is 0 for a plain unary call; calls the front end must track
    (a deadline, a stream) get a non-zero token, and the front end drops
    any frame whose token it no longer tracks, so a late answer after
    ``DEADLINE_EXCEEDED`` or a cancel never reaches the client.
    """

    __slots__ = (
        "_granted",
        "_lock",
        "_on_window",
        "_prefix",
        "_sent",
        "cancelled",
        "credit_mode",
        "done",
        "method",
        "ns",
        "outbox",
        "route",
        "sock",
        "token",
        "window",
    )

    def __init__(
        self,
        outbox: Outbox,
        sock: int,
        route: list[bytes],
        request_id: Any,
        token: int = 0,
        *,
        method: str = "",
        ns: str = "",
    ) -> None:
        self.outbox = outbox
        self.sock = sock
        self.route = route
        self.token = token
        self.method = method
        self.ns = ns
        self._prefix = _V1 + _ID + pack(request_id)
        # Set by the front end when the client cancelled or the deadline
        # passed; a stream producer polls it to stop early.
        self.cancelled = False
        self.done = False
        # Flow control (streams): see wait_window and grant.
        self.window = INITIAL_WINDOW
        self.credit_mode = False  # the client sent a credit frame: it grants from now on
        self._granted = 0
        self._sent = 0
        self._on_window: Callable[[], None] | None = None
        self._lock = threading.Lock()

    # unary

    def ok(self, body: dict[str, Any]) -> None:
        """Answer with a reply body."""
        self.ok_packed(pack(body))

    def ok_packed(self, body: bytes) -> None:
        """Answer with a body that is already one packed msgpack map."""
        self._send(KIND_TERMINAL, _MAP3 + self._prefix + _BODY + body)

    def fail(self, exc: BaseException) -> None:
        """Answer with the error frame for ``exc``; non-berth errors are logged."""
        if not isinstance(exc, BerthError):
            log.error(
                "internal error in %s (ns %s)", self.method or "request", self.ns, exc_info=exc
            )
        self._send(KIND_TERMINAL, error_frame(self._prefix, to_wire(exc)))

    # streams

    def ready(self) -> None:
        """Tell the client the stream is in place."""
        self._send(KIND_READY, _MAP3 + self._prefix + _READY)

    def more(self, body: dict[str, Any]) -> None:
        """Send one stream frame."""
        self.more_packed(pack(body))

    def more_packed(self, body: bytes) -> None:
        """Send one stream frame whose body is already packed (it takes one from the window)."""
        with self._lock:
            self.window -= 1
            self._sent += 1
        self._send(KIND_MORE, _MAP4 + self._prefix + _BODY + body + _MORE)

    def wait_window(self, resume: Callable[[], None]) -> bool:
        """True if a frame may be sent now; else False, and ``resume`` is called when it may.

        ``resume`` runs in the thread that opens the window (the front end's):
        it should only hand the work back to the producer's own thread.
        """
        with self._lock:
            if self.window > 0:
                return True
            self._on_window = resume
            return False

    def grant(self, frames: int, *, credit: bool = False) -> None:
        """Open the window by ``frames``: a client's credit, or (``credit`` False) a frame sent on.

        The first credit frame puts the stream in the client's hands: from
        then on the window is 16 + credits granted - frames sent, and frames
        leaving for the pipe no longer open it.
        """
        with self._lock:
            if credit:
                if not self.credit_mode:
                    self.credit_mode = True
                self._granted += frames
                self.window = INITIAL_WINDOW + self._granted - self._sent
            elif not self.credit_mode:
                self.window += frames
            else:
                return
            resume = self._on_window if self.window > 0 else None
            if resume is not None:
                self._on_window = None
        if resume is not None and not self.cancelled:
            try:
                resume()
            except Exception:
                log.exception("stream %s: resuming its producer failed", self.method)

    def end(self) -> None:
        """Close the stream normally."""
        self._send(KIND_TERMINAL, end_frame(self._prefix))

    def _send(self, kind: int, payload: bytes) -> None:
        if self.done:
            return
        if kind == KIND_TERMINAL:
            self.done = True
        self.outbox.put(self.token, kind, self.sock, self.route, payload)

    @property
    def prefix(self) -> bytes:
        """The packed ``v`` and ``id`` entries, for frames the front end writes itself."""
        return self._prefix


def error_frame(prefix: bytes, error: dict[str, Any]) -> bytes:
    """A packed error frame."""
    return _MAP3 + prefix + _ERROR + pack(error)


def end_frame(prefix: bytes) -> bytes:
    """A packed ``end`` frame."""
    return _MAP3 + prefix + _END


def frame_prefix(request_id: Any) -> bytes:
    """The packed ``v`` and ``id`` entries of a frame answering ``request_id``."""
    return _V1 + _ID + pack(request_id)


class Resume:
    """The message an actor is told to run the next step of a :func:`feed` in its own thread."""

    __slots__ = ("step",)

    def __init__(self, step: Callable[[], None]) -> None:
        self.step = step


def feed(
    reply: Reply, frames: Iterator[bytes], resume: Callable[[Callable[[], None]], None]
) -> None:
    """Send packed bodies from ``frames`` as the window allows, then ``end``.

    When the window shuts, ``resume(step)`` is called (from the front end's
    thread) to run the next step where the producer runs; ``resume`` may be
    ``lambda step: step()`` for frames already in memory.
    """

    def step() -> None:
        while True:
            if reply.cancelled or reply.done:
                close = getattr(frames, "close", None)
                if close is not None:
                    close()
                return
            if not reply.wait_window(lambda: resume(step)):
                return
            body = next(frames, None)
            if body is None:
                reply.end()
                return
            reply.more_packed(body)

    step()
