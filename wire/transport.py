"""The client side of the wire protocol: one sans-IO core, two socket drivers.

:class:`~wire.client_core.ClientCore` knows the protocol and nothing of
sockets; the drivers here only move bytes and wait:

- :class:`SyncTransport` -- a blocking DEALER socket. Not thread-safe: use
  one per thread. Frames for other calls that arrive while it waits for one
  are kept in their inboxes, so a unary call made while a stream is being
  read works.
- :class:`AsyncTransport` -- a ``zmq.asyncio`` DEALER with one reader task
  that files every reply into its call's inbox and wakes that call, so many
  coroutines may call at once on one connection (pipelining).

Deadlines: with a timeout, the request carries ``timeout_ms`` and the server
ends the call with ``DEADLINE_EXCEEDED``; the client also stops waiting
itself ``LOCAL_GRACE`` seconds later, in case the server never answers. A
stream may also bound the wait for each of its frames (``idle_timeout``),
which is how a long stream with a heartbeat (``Events/Subscribe``'s
progress frames) notices a daemon that died without a word: nothing on the
socket says so, since ZeroMQ reconnects quietly.

Flow control: both drivers send the credit frame the core says is due
(every 8 frames) once the reader has taken the frames and asked for the
next, so a stream left or finished sends none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, TypeVar

import zmq
import zmq.asyncio

from wire.client_core import (
    CANCEL_DRAIN,
    DEFAULT_ADDRESS,
    LOCAL_GRACE,
    Body,
    ClientCore,
    StreamMarker,
    deadline_after,
    identity,
    remaining,
    resolve_address,
)
from wire.errors import BerthError, DeadlineExceeded, Internal, Unavailable

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

_T = TypeVar("_T")


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
        return call_id, payload, deadline_after(timeout)

    def _must_cancel(self, call_id: int) -> bool:
        # Open after the caller stopped reading: a stream left early, a local
        # deadline, or a stream called as unary. A cancel naming no open
        # stream is ignored by the server, so sending one is always safe.
        return self._core.is_open(call_id) and not self.closed

    @staticmethod
    def _draindeadline_after(deadline: float | None) -> float:
        drain = time.monotonic() + CANCEL_DRAIN
        return drain if deadline is None else min(drain, deadline)


def _frame_deadline(deadline: float | None, idle_timeout: float | None) -> float | None:
    """When to stop waiting for a stream's next frame: the call's deadline or the idle bound."""
    if idle_timeout is None:
        return deadline
    idle = time.monotonic() + idle_timeout
    return idle if deadline is None else min(idle, deadline)


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
        extract: Callable[[Body], _T] = identity,
        idle_timeout: float | None = None,
    ) -> Generator[_T, None, None]:
        """Yield ``extract(body)`` of each item of a server stream (sent on the first read)."""
        yield from self.open_stream(
            method,
            body,
            namespace=namespace,
            timeout=timeout,
            extract=extract,
            idle_timeout=idle_timeout,
        )

    def open_stream(
        self,
        method: str,
        body: Body | None,
        *,
        namespace: str,
        timeout: float | None,
        extract: Callable[[Body], _T] = identity,
        idle_timeout: float | None = None,
    ) -> Generator[_T, None, None]:
        """Send a stream's request now; return once it is in place (its ``ready`` came).

        What the server sends after that is not missed: for ``Events``, the
        subscription is live when this returns. ``idle_timeout`` bounds the
        wait for each frame, ``ready`` included (DeadlineExceeded past it).
        """
        call_id, payload, deadline = self._begin(method, body, namespace, timeout)
        try:
            self._send(payload, deadline)
            frame = self._wait(call_id, _frame_deadline(deadline, idle_timeout))
            step = self._core.stream_step(call_id, frame)
        except BaseException:
            self._end_stream(call_id, deadline)
            raise
        return self._stream_rest(call_id, deadline, idle_timeout, extract, step)

    def _stream_rest(
        self,
        call_id: int,
        deadline: float | None,
        idle_timeout: float | None,
        extract: Callable[[Body], _T],
        step: Body | StreamMarker,
    ) -> Generator[_T, None, None]:
        try:
            while step is not StreamMarker.END:
                if step is not StreamMarker.READY:
                    yield extract(step)
                    # Back from the yield: the reader took the frame and wants more.
                    self._send_credit(call_id)
                frame = self._wait(call_id, _frame_deadline(deadline, idle_timeout))
                step = self._core.stream_step(call_id, frame)
        finally:
            self._end_stream(call_id, deadline)

    def _send(self, payload: bytes, deadline: float | None) -> None:
        # A DEALER with no connected peer (daemon down, CURVE handshake
        # refused) blocks in send: wait for room only until the deadline.
        left = remaining(deadline)
        if not self._socket.poll(None if left is None else math.ceil(left * 1000), zmq.POLLOUT):
            raise DeadlineExceeded(f"berthd at {self.address}: not reachable before the deadline")
        self._socket.send_multipart([b"", payload], zmq.NOBLOCK)

    def _send_cancel(self, call_id: int) -> None:
        with contextlib.suppress(DeadlineExceeded, zmq.Again):
            self._send(self._core.cancel_payload(call_id), time.monotonic() + CANCEL_DRAIN)

    def _send_credit(self, call_id: int) -> None:
        # File what has already arrived first: a stream whose terminal frame
        # is in is owed nothing.
        while self._socket.poll(0):
            self._core.feed(self._socket.recv_multipart()[-1])
        payload = self._core.credit_payload(call_id)
        if payload is not None:
            # A credit that cannot go out is not an error: a lost daemon shows
            # on the stream itself, and a client that never grants still works.
            with contextlib.suppress(DeadlineExceeded, zmq.Again):
                self._send(payload, time.monotonic() + CANCEL_DRAIN)

    def _wait(self, call_id: int, deadline: float | None) -> Body:
        """The next frame of ``call_id``, reading (and filing) others until it comes."""
        while (frame := self._core.next_frame(call_id)) is None:
            left = remaining(deadline)
            if self._socket.poll(None if left is None else math.ceil(left * 1000)):
                self._core.feed(self._socket.recv_multipart()[-1])
        return frame

    def _end_stream(self, call_id: int, deadline: float | None) -> None:
        """Cancel a stream left early and read up to its terminal frame, boundedly."""
        try:
            if self._must_cancel(call_id):
                self._send_cancel(call_id)
                drain = self._draindeadline_after(deadline)
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
        extract: Callable[[Body], _T] = identity,
        idle_timeout: float | None = None,
    ) -> AsyncGenerator[_T, None]:
        """Yield ``extract(body)`` of each item of a server stream.

        ``idle_timeout`` bounds the wait for each frame, ``ready`` included
        (DeadlineExceeded past it).
        """
        call_id, payload, deadline = self._begin(method, body, namespace, timeout)
        try:
            await self._send(call_id, payload, deadline)
            while True:
                frame = await self._wait(call_id, _frame_deadline(deadline, idle_timeout))
                step = self._core.stream_step(call_id, frame)
                if step is StreamMarker.END:
                    return
                if step is not StreamMarker.READY:
                    yield extract(step)
                    # Back from the yield: the reader took the frame and wants more.
                    await self._send_credit(call_id)
        finally:
            await self._end_stream(call_id, deadline)

    async def _send(self, call_id: int, payload: bytes, deadline: float | None = None) -> None:
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())
        self._wakers.setdefault(call_id, asyncio.Event())
        try:
            # No connected peer blocks the send: bound it by the deadline.
            await asyncio.wait_for(self._socket.send_multipart([b"", payload]), remaining(deadline))
        except TimeoutError:
            raise DeadlineExceeded(
                f"berthd at {self.address}: not reachable before the deadline"
            ) from None

    async def _send_cancel(self, call_id: int) -> None:
        with contextlib.suppress(DeadlineExceeded):
            payload = self._core.cancel_payload(call_id)
            await self._send(call_id, payload, time.monotonic() + CANCEL_DRAIN)

    async def _send_credit(self, call_id: int) -> None:
        payload = self._core.credit_payload(call_id)
        if payload is not None:
            # As for the sync driver: a credit that cannot go out is no error.
            with contextlib.suppress(DeadlineExceeded):
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
                await asyncio.wait_for(waker.wait(), remaining(deadline))
            except TimeoutError:
                remaining(deadline)  # past the deadline now: raises DeadlineExceeded
        return frame

    async def _end_stream(self, call_id: int, deadline: float | None) -> None:
        """Cancel a stream left early and read up to its terminal frame, boundedly."""
        try:
            if self._must_cancel(call_id):
                await self._send_cancel(call_id)
                drain = self._draindeadline_after(deadline)
                while self._core.is_open(call_id):
                    self._core.stream_step(call_id, await self._wait(call_id, drain))
        except BerthError:
            pass  # the terminal frame may be an error; a slow server, a local deadline
        finally:
            self._finish(call_id)
