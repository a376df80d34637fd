"""The client's ``events`` group: the daemon's event log (docs/protocol.md §6.5).

``client.events.subscribe()`` is an iterator of Event records (``seq``,
``timestamp``, ``namespace``, ``topic``, ``id``, ``type``, ``payload``), one
at a time, unpacked from the stream's ``{events, seq}`` frames. It keeps the
position reached, :attr:`~EventSubscription.seq`, and survives the daemon
going away: on ``Unavailable`` (the daemon stopped and ended the stream)
or ``DeadlineExceeded`` (nothing came for ``idle_timeout``: progress frames
come at least every 10 s, so a silent stream means a dead daemon or a lost
connection) it subscribes again with ``after_seq`` = that position, with a
backoff, for at most ``reconnect_timeout`` seconds. So the events come in
``seq`` order with no gap and no duplicate across restarts. ``OutOfRange``
(the position is no longer retained) and ``InvalidArgument`` (a bad
filter) are raised at once: retrying cannot help.

Retrying on the client's own connection is safe: ZeroMQ reconnects the
socket by itself, and a Subscribe given up on is cancelled by the
transport, the cancel queued behind the request, so a restarted daemon that
receives both drops the stream at once.

::

    with berth.Client() as client:
        events = client.events.subscribe(filter="topic~=^/containers/")
        for event in events:
            print(event["seq"], event["topic"], event["id"])
        # events.seq: where to resume, in this process or the next

:class:`_Position` holds what the sync and the async iterator share; they
only differ in how they wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Generator, Iterator
from types import TracebackType
from typing import Any, cast

from berth.client_base import Body, Done, Group, Invoker, Map, MapIter, MapList, Rpc
from wire.errors import BerthError, DeadlineExceeded, Unavailable

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "IDLE_TIMEOUT",
    "RECONNECT_TIMEOUT",
    "AsyncEventSubscription",
    "AsyncEvents",
    "EventSubscription",
    "Events",
]

log = logging.getLogger(__name__)

_SUBSCRIBE = "berth.v1.Events/Subscribe"
_INFO = "berth.v1.Events/Info"

# A subscription silent this long is taken as lost: the daemon sends a
# progress frame after 5 s without one, so at least every 10 s.
IDLE_TIMEOUT = 15.0
RECONNECT_TIMEOUT = 30.0  # seconds of failed attempts before the error is raised
BACKOFF_FIRST = 0.1  # seconds before the first new attempt, doubling...
BACKOFF_MAX = 2.0  # ...up to this


class _Position:
    """Where a subscription is, the events of its last frame not yet read, its retry budget.

    Sans-IO: the iterators feed it frames (:meth:`take`), read events off
    it (:meth:`next_event`), and ask it what to do about a failure
    (:meth:`retry_delay`).
    """

    def __init__(self, after_seq: int, filter: str, reconnect_timeout: float | None) -> None:
        if after_seq < 0:
            raise ValueError(f"after_seq must be 0 or more, not {after_seq!r}")
        self.seq = after_seq
        self.filter = filter
        self._reconnect_timeout = reconnect_timeout
        self._pending: deque[Body] = deque()
        self._frame_seq = 0
        self._give_up_at: float | None = None
        self._backoff = BACKOFF_FIRST

    def rpc(self, idle_timeout: float | None) -> Rpc:
        """The Subscribe call that goes on from :attr:`seq` (no deadline: it is long)."""
        body = {"after_seq": self.seq, "filter": self.filter}
        return Rpc(_SUBSCRIBE, body, timeout=None, idle_timeout=idle_timeout)

    def take(self, frame: Body) -> None:
        """File a frame: its events past :attr:`seq` are to be read, its ``seq`` reached after.

        A frame means the daemon is there: the retry budget starts afresh.
        """
        self._give_up_at = None
        self._backoff = BACKOFF_FIRST
        last = self.seq
        for event in frame.get("events", []):
            # After a resume the daemon starts past seq; this guards the promise anyway.
            if event["seq"] > last:
                self._pending.append(event)
                last = event["seq"]
        self._frame_seq = int(frame.get("seq", 0))
        if not self._pending:
            self.seq = max(self.seq, self._frame_seq)

    def next_event(self) -> Body | None:
        """The next event to hand out, :attr:`seq` moved to it; None once the frame is read."""
        if not self._pending:
            return None
        event = self._pending.popleft()
        self.seq = event["seq"]
        if not self._pending:
            # Every event of the frame is out: the frame's own position holds.
            self.seq = max(self.seq, self._frame_seq)
        return event

    def retry_delay(self, exc: BerthError) -> float:
        """Seconds to wait before subscribing again after ``exc``; raises it when not to retry."""
        if not isinstance(exc, Unavailable | DeadlineExceeded):
            raise exc  # OutOfRange, InvalidArgument, ...: the same request fails the same way
        now = time.monotonic()
        if self._give_up_at is None and self._reconnect_timeout is not None:
            self._give_up_at = now + self._reconnect_timeout
        if self._give_up_at is not None and now >= self._give_up_at:
            raise exc
        delay = self._backoff
        if self._give_up_at is not None:
            delay = min(delay, self._give_up_at - now)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        log.info("events subscription at seq %d lost (%s); again in %.1fs", self.seq, exc, delay)
        return delay


class EventSubscription(Iterator[Body]):
    """A live subscription to the event log, for :class:`~berth.Client`: iterate it.

    In place when :meth:`Events.subscribe` returns. :attr:`seq` is the
    position reached; :meth:`close` (or ``with``) cancels it on the daemon.
    It ends only when closed, or if the daemon ends the stream itself.
    """

    def __init__(
        self,
        invoker: Invoker,
        position: _Position,
        idle_timeout: float | None,
    ) -> None:
        self._invoker = invoker
        self._position = position
        self._idle_timeout = idle_timeout
        self._stream: Generator[Body, None, None] | None = None
        self._closed = False
        if position.seq == 0:
            # "From now on", made a definite position, so that a resume
            # before the first frame goes on from here rather than from a later now.
            position.seq = int(invoker.unary(Rpc(_INFO, {}))["latest_seq"])
        self._stream = invoker.stream(position.rpc(idle_timeout))

    @property
    def seq(self) -> int:
        """The position reached: every event up to it was yielded or did not match."""
        return self._position.seq

    def __iter__(self) -> EventSubscription:
        return self

    def __next__(self) -> Body:
        while (event := self._position.next_event()) is None:
            if self._closed:
                raise StopIteration
            self._position.take(self._next_frame())
        return event

    def _next_frame(self) -> Body:
        while True:
            try:
                if self._stream is None:
                    self._stream = self._invoker.stream(self._position.rpc(self._idle_timeout))
                return next(self._stream)
            except StopIteration:
                # The daemon ended the stream without an error: so does the iteration.
                self._closed = True
                self._stream = None
                raise
            except BerthError as exc:
                self._stream = None  # the transport has ended it already
                try:
                    delay = self._position.retry_delay(exc)
                except BerthError:
                    self._closed = True
                    raise
            time.sleep(delay)

    def close(self) -> None:
        """Cancel the subscription on the daemon; the iteration ends."""
        self._closed = True
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __enter__(self) -> EventSubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncEventSubscription(AsyncIterator[Body]):
    """A subscription to the event log, for :class:`~berth.AsyncClient`: ``async for`` it.

    The request goes out on the first read (a ``from now on`` position is
    fixed then too); :attr:`seq` is the position reached. :meth:`aclose`
    (or ``async with``) cancels it on the daemon.
    """

    def __init__(
        self,
        invoker: Invoker,
        position: _Position,
        idle_timeout: float | None,
    ) -> None:
        self._invoker = invoker
        self._position = position
        self._idle_timeout = idle_timeout
        self._stream: AsyncGenerator[Body, None] | None = None
        self._started = False
        self._closed = False

    @property
    def seq(self) -> int:
        """The position reached: every event up to it was yielded or did not match."""
        return self._position.seq

    def __aiter__(self) -> AsyncEventSubscription:
        return self

    async def __anext__(self) -> Body:
        if not self._started:
            self._started = True
            if self._position.seq == 0:
                info = await self._invoker.unary(Rpc(_INFO, {}))
                self._position.seq = int(info["latest_seq"])
        while (event := self._position.next_event()) is None:
            if self._closed:
                raise StopAsyncIteration
            self._position.take(await self._next_frame())
        return event

    async def _next_frame(self) -> Body:
        while True:
            try:
                if self._stream is None:
                    self._stream = self._invoker.stream(self._position.rpc(self._idle_timeout))
                return await anext(self._stream)
            except StopAsyncIteration:
                self._closed = True
                self._stream = None
                raise
            except BerthError as exc:
                self._stream = None
                try:
                    delay = self._position.retry_delay(exc)
                except BerthError:
                    self._closed = True
                    raise
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        """Cancel the subscription on the daemon; the iteration ends."""
        self._closed = True
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.aclose()

    async def __aenter__(self) -> AsyncEventSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _EventLog(Group[Map, MapList, Done, MapIter]):
    """``berth.v1.Events``: what both clients' ``events`` groups share."""

    def info(self) -> Map:
        """``Info``: ``{oldest_seq, latest_seq, count, bytes}`` of the retained log."""
        return cast(Map, self._unary(Rpc(_INFO, {})))


class Events(_EventLog[Body, list[Body], None, Generator[Body, None, None]]):
    """``client.events`` of :class:`~berth.Client`."""

    def subscribe(
        self,
        after_seq: int = 0,
        filter: str = "",
        *,
        reconnect_timeout: float | None = RECONNECT_TIMEOUT,
        idle_timeout: float | None = IDLE_TIMEOUT,
    ) -> EventSubscription:
        """``Subscribe``: every event with ``seq > after_seq`` (0: from now on), then live.

        ``filter`` is the filter language over ``topic``, ``namespace``,
        ``id`` and ``type`` (every namespace unless it says which). A lost
        daemon is subscribed to again from the position reached, for up to
        ``reconnect_timeout`` seconds (None: for ever); a stream silent for
        ``idle_timeout`` seconds counts as lost. OutOfRange when
        ``after_seq`` is no longer retained (or not yet given).
        """
        position = _Position(after_seq, filter, reconnect_timeout)
        return EventSubscription(self._invoker, position, idle_timeout)


class AsyncEvents(
    _EventLog[
        Coroutine[Any, Any, Body],
        Coroutine[Any, Any, list[Body]],
        Coroutine[Any, Any, None],
        AsyncGenerator[Body, None],
    ]
):
    """``client.events`` of :class:`~berth.AsyncClient`."""

    def subscribe(
        self,
        after_seq: int = 0,
        filter: str = "",
        *,
        reconnect_timeout: float | None = RECONNECT_TIMEOUT,
        idle_timeout: float | None = IDLE_TIMEOUT,
    ) -> AsyncEventSubscription:
        """``Subscribe``, as :meth:`Events.subscribe`; the request goes out on the first read."""
        position = _Position(after_seq, filter, reconnect_timeout)
        return AsyncEventSubscription(self._invoker, position, idle_timeout)
