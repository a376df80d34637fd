"""The client side of the wire protocol: one sans-IO core, two socket drivers.

:class:`ClientCore` knows the protocol and nothing of sockets: it builds
request payloads with ids from a per-connection counter, keeps one inbox per
pending call, routes each received payload to its call by ``id``, and turns
reply frames into bodies, stream items or the error class of
:mod:`wire.errors`. The drivers only move bytes and wait:

- :class:`SyncTransport` -- a blocking DEALER socket. Not thread-safe: use
  one per thread. Frames for other calls that arrive while it waits for one
  are kept in their inboxes, so a unary call made while a stream is being
  read works.
- :class:`AsyncTransport` -- a ``zmq.asyncio`` DEALER with one reader task
  that files every reply into its call's inbox and wakes that call, so many
  coroutines may call at once on one connection (pipelining).

Deadlines: with a timeout, the request carries ``timeout_ms`` and the server
ends the call with ``DEADLINE_EXCEEDED``; the client also stops waiting
itself ``LOCAL_GRACE`` seconds later, in case the server never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import math
import os
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, TypeVar

import zmq
import zmq.asyncio

from wire.codec import pack, unpack
from wire.errors import (
    BerthError,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    Unavailable,
    from_wire,
)

__all__ = [
    "CANCEL_DRAIN",
    "DEFAULT_ADDRESS",
    "LOCAL_GRACE",
    "AsyncTransport",
    "ClientCore",
    "StreamMarker",
    "SyncTransport",
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

Body = dict[str, Any]
_T = TypeVar("_T")


def resolve_address(address: str | None) -> str:
    """The address to connect to: ``address``, else ``$BERTH_ADDRESS``, else the default."""
    return address or os.environ.get("BERTH_ADDRESS") or DEFAULT_ADDRESS


def _deadline(timeout: float | None) -> float | None:
    """The monotonic time after which the client stops waiting for a call."""
    return None if timeout is None else time.monotonic() + timeout + LOCAL_GRACE


def _remaining(deadline: float | None) -> float | None:
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

    __slots__ = ("inbox", "method", "open")

    def __init__(self, method: str) -> None:
        self.method = method
        self.inbox: deque[Body] = deque()
        # True until the call's terminal frame (reply, end or error) was read.
        self.open = True


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
            return self._body(call, frame)
        call.open = False
        raise InvalidArgument(f"{call.method} is not a streaming method: use call()")

    @staticmethod
    def _body(call: _Call, frame: Body) -> Body:
        body = frame.get("body", {})
        if not isinstance(body, dict):
            raise Internal(f"{call.method}: malformed reply body {body!r}")
        return body


def _identity(body: Body) -> Any:
    return body


class _Connection:
    """What both drivers share: the address, the core, a configured DEALER."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        address: str | None,
        server_public_key: bytes | None,
        client_keypair: tuple[bytes, bytes] | None,
    ) -> None:
        if client_keypair is not None and server_public_key is None:
            raise ValueError("client_keypair needs server_public_key")
        self.address = resolve_address(address)
        self._core = ClientCore()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if server_public_key is not None:
            # Without a key pair of its own the client uses a throwaway one;
            # the daemon's allow-list then decides.
            public, secret = client_keypair or zmq.curve_keypair()
            sock.curve_serverkey = server_public_key
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        sock.connect(self.address)
        self._socket: Any = sock

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return bool(self._socket.closed)

    def _begin(
        self, method: str, body: Body | None, namespace: str, timeout: float | None
    ) -> tuple[int, bytes, float | None]:
        """A new call's id, request payload and local deadline."""
        if self.closed:
            raise Unavailable("client is closed")
        call_id, payload = self._core.start(method, body, namespace=namespace, timeout=timeout)
        return call_id, payload, _deadline(timeout)

    def _must_cancel(self, call_id: int) -> bool:
        # Open after the caller stopped reading: a stream left early, a local
        # deadline, or a stream called as unary. A cancel naming no open
        # stream is ignored by the server, so sending one is always safe.
        return self._core.is_open(call_id) and not self.closed

    @staticmethod
    def _drain_deadline(deadline: float | None) -> float:
        drain = time.monotonic() + CANCEL_DRAIN
        return drain if deadline is None else min(drain, deadline)


class SyncTransport(_Connection):
    """Blocking client connection on a DEALER socket. Not thread-safe: one per thread.

    :meth:`call` returns a reply body; :meth:`stream` is a generator of items,
    whose request is sent on the first ``next()`` and which cancels the
    stream on the server when closed early (dropping it after ``break`` does).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        server_public_key: bytes | None = None,
        client_keypair: tuple[bytes, bytes] | None = None,
    ) -> None:
        super().__init__(zmq.Context.instance(), address, server_public_key, client_keypair)

    def close(self) -> None:
        """Close the socket; pending replies are discarded."""
        self._socket.close(linger=0)

    def call(
        self, method: str, body: Body | None, *, namespace: str, timeout: float | None
    ) -> Body:
        """Send one unary request and return the reply body."""
        call_id, payload, deadline = self._begin(method, body, namespace, timeout)
        try:
            self._send(payload, deadline)
            return self._core.unary_result(call_id, self._wait(call_id, deadline))
        finally:
            if self._must_cancel(call_id):
                self._send_cancel(call_id)
            self._core.finish(call_id)

    def stream(
        self,
        method: str,
        body: Body | None,
        *,
        namespace: str,
        timeout: float | None,
        extract: Callable[[Body], _T] = _identity,
    ) -> Generator[_T, None, None]:
        """Yield ``extract(body)`` of each item of a server stream (sent on the first read)."""
        yield from self.open_stream(
            method, body, namespace=namespace, timeout=timeout, extract=extract
        )

    def open_stream(
        self,
        method: str,
        body: Body | None,
        *,
        namespace: str,
        timeout: float | None,
        extract: Callable[[Body], _T] = _identity,
    ) -> Generator[_T, None, None]:
        """Send a stream's request now; return once it is in place (its ``ready`` came).

        What the server sends after that is not missed: for ``Events``, the
        subscription is live when this returns.
        """
        call_id, payload, deadline = self._begin(method, body, namespace, timeout)
        try:
            self._send(payload, deadline)
            step = self._core.stream_step(call_id, self._wait(call_id, deadline))
        except BaseException:
            self._end_stream(call_id, deadline)
            raise
        return self._stream_rest(call_id, deadline, extract, step)

    def _stream_rest(
        self,
        call_id: int,
        deadline: float | None,
        extract: Callable[[Body], _T],
        step: Body | StreamMarker,
    ) -> Generator[_T, None, None]:
        try:
            while step is not StreamMarker.END:
                if step is not StreamMarker.READY:
                    yield extract(step)
                step = self._core.stream_step(call_id, self._wait(call_id, deadline))
        finally:
            self._end_stream(call_id, deadline)

    def _send(self, payload: bytes, deadline: float | None) -> None:
        # A DEALER with no connected peer (daemon down, CURVE handshake
        # refused) blocks in send: wait for room only until the deadline.
        left = _remaining(deadline)
        if not self._socket.poll(None if left is None else math.ceil(left * 1000), zmq.POLLOUT):
            raise DeadlineExceeded(f"berthd at {self.address}: not reachable before the deadline")
        self._socket.send_multipart([b"", payload], zmq.NOBLOCK)

    def _send_cancel(self, call_id: int) -> None:
        with contextlib.suppress(DeadlineExceeded, zmq.Again):
            self._send(self._core.cancel_payload(call_id), time.monotonic() + CANCEL_DRAIN)

    def _wait(self, call_id: int, deadline: float | None) -> Body:
        """The next frame of ``call_id``, reading (and filing) others until it comes."""
        while (frame := self._core.next_frame(call_id)) is None:
            left = _remaining(deadline)
            if self._socket.poll(None if left is None else math.ceil(left * 1000)):
                self._core.feed(self._socket.recv_multipart()[-1])
        return frame

    def _end_stream(self, call_id: int, deadline: float | None) -> None:
        """Cancel a stream left early and read up to its terminal frame, boundedly."""
        try:
            if self._must_cancel(call_id):
                self._send_cancel(call_id)
                drain = self._drain_deadline(deadline)
                while self._core.is_open(call_id):
                    self._core.stream_step(call_id, self._wait(call_id, drain))
        except BerthError:
            pass  # the terminal frame may be an error; a slow server, a local deadline
        finally:
            self._core.finish(call_id)


class AsyncTransport(_Connection):
    """asyncio client connection on a DEALER socket, safe for concurrent callers.

    One reader task files every reply under its call and wakes that caller.
    It starts with the first call, so the transport can be built outside a
    running loop; from then on it belongs to that loop. :meth:`stream` is an
    async generator whose request is sent on the first ``anext()``; its
    ``aclose()`` before the end (``contextlib.aclosing`` does it on ``break``)
    cancels the stream on the server; one merely dropped is closed by asyncio
    later.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        server_public_key: bytes | None = None,
        client_keypair: tuple[bytes, bytes] | None = None,
    ) -> None:
        # A shadow shares the process's one zmq context rather than making another.
        ctx = zmq.asyncio.Context.shadow(zmq.Context.instance())
        super().__init__(ctx, address, server_public_key, client_keypair)
        self._wakers: dict[int, asyncio.Event] = {}
        self._reader: asyncio.Task[None] | None = None
        self._failure: BerthError | None = None

    def close(self) -> None:
        """Close the socket and stop the reader; pending callers get Unavailable."""
        if self._reader is not None:
            self._reader.cancel()
        self._socket.close(linger=0)
        self._fail(Unavailable("client is closed"))

    async def aclose(self) -> None:
        """Close, and wait for the reader task to stop."""
        self.close()
        if self._reader is not None:
            # wait() rather than await: the task's CancelledError is expected,
            # while a cancellation of this coroutine itself must still propagate.
            await asyncio.wait([self._reader])

    async def call(
        self, method: str, body: Body | None, *, namespace: str, timeout: float | None
    ) -> Body:
        """Send one unary request and return the reply body."""
        call_id, payload, deadline = self._begin(method, body, namespace, timeout)
        try:
            await self._send(call_id, payload, deadline)
            return self._core.unary_result(call_id, await self._wait(call_id, deadline))
        finally:
            if self._must_cancel(call_id):
                await self._send_cancel(call_id)
            self._finish(call_id)

    async def stream(
        self,
        method: str,
        body: Body | None,
        *,
        namespace: str,
        timeout: float | None,
        extract: Callable[[Body], _T] = _identity,
    ) -> AsyncGenerator[_T, None]:
        """Yield ``extract(body)`` of each item of a server stream."""
        call_id, payload, deadline = self._begin(method, body, namespace, timeout)
        try:
            await self._send(call_id, payload, deadline)
            while True:
                step = self._core.stream_step(call_id, await self._wait(call_id, deadline))
                if step is StreamMarker.END:
                    return
                if step is not StreamMarker.READY:
                    yield extract(step)
        finally:
            await self._end_stream(call_id, deadline)

    async def _send(self, call_id: int, payload: bytes, deadline: float | None = None) -> None:
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())
        self._wakers.setdefault(call_id, asyncio.Event())
        try:
            # No connected peer blocks the send: bound it by the deadline.
            await asyncio.wait_for(
                self._socket.send_multipart([b"", payload]), _remaining(deadline)
            )
        except TimeoutError:
            raise DeadlineExceeded(
                f"berthd at {self.address}: not reachable before the deadline"
            ) from None

    async def _send_cancel(self, call_id: int) -> None:
        with contextlib.suppress(DeadlineExceeded):
            payload = self._core.cancel_payload(call_id)
            await self._send(call_id, payload, time.monotonic() + CANCEL_DRAIN)

    def _finish(self, call_id: int) -> None:
        self._core.finish(call_id)
        self._wakers.pop(call_id, None)

    async def _read(self) -> None:
        """The reader task: file every reply and wake the caller it belongs to."""
        try:
            while True:
                frames = await self._socket.recv_multipart()
                call_id = self._core.feed(frames[-1])
                if call_id is not None and (waker := self._wakers.get(call_id)) is not None:
                    waker.set()
        except zmq.ZMQError as exc:
            self._fail(Unavailable(f"connection to {self.address} lost: {exc}"))
        except Exception:
            log.exception("client reader for %s failed", self.address)
            self._fail(Internal("client reader failed"))

    def _fail(self, exc: BerthError) -> None:
        """Make every pending and future wait raise ``exc``."""
        if self._failure is None:
            self._failure = exc
        for waker in self._wakers.values():
            waker.set()

    async def _wait(self, call_id: int, deadline: float | None) -> Body:
        """The next frame of ``call_id``, once the reader has filed one."""
        waker = self._wakers[call_id]
        while (frame := self._core.next_frame(call_id)) is None:
            if self._failure is not None:
                raise self._failure
            waker.clear()
            try:
                await asyncio.wait_for(waker.wait(), _remaining(deadline))
            except TimeoutError:
                _remaining(deadline)  # past the deadline now: raises DeadlineExceeded
        return frame

    async def _end_stream(self, call_id: int, deadline: float | None) -> None:
        """Cancel a stream left early and read up to its terminal frame, boundedly."""
        try:
            if self._must_cancel(call_id):
                await self._send_cancel(call_id)
                drain = self._drain_deadline(deadline)
                while self._core.is_open(call_id):
                    self._core.stream_step(call_id, await self._wait(call_id, drain))
        except BerthError:
            pass  # the terminal frame may be an error; a slow server, a local deadline
        finally:
            self._finish(call_id)
