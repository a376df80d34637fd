"""The ZeroMQ front end: one thread that owns the ROUTER sockets.

It decodes each frame into a :class:`Request`, validates the envelope,
routes it by method name to a handler, and forwards the handlers' answers
(which come back through the :class:`~wire.reply.Outbox`) to the client.
It never waits on anything but its poll: a handler either answers at once
(a read) or hands the request to an actor and returns.

Calls the loop must watch, a deadline or a stream, get a token and an
entry in ``_tracked``; when the deadline passes, the client cancels or the
client is gone, the loop writes the terminal frame itself, forgets the
token, and from then on drops whatever the handler still sends for it.

Flow control (docs/protocol.md §6.6): a credit frame opens its stream's
window; for a client that never sends one, each frame of a stream that
leaves for the client's ZeroMQ pipe opens it by one. The pipe is short
(:data:`wire.listen.SEND_HWM` frames): a frame that finds it full waits here, in
order with the client's other frames, and is retried every few
milliseconds, so a slow reader is never dropped, only held back. A client
with more than :data:`PARK_FRAMES` frames or :data:`PARK_BYTES` bytes
waiting is not reading at all: its frames are dropped and its streams ended.
"""

from __future__ import annotations

import collections
import errno
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from wire.codec import unpack
from wire.errors import (
    BerthError,
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
    to_wire,
)
from wire.identifiers import check_identifier
from wire.reply import (
    KIND_MORE,
    KIND_TERMINAL,
    Outbox,
    Reply,
    end_frame,
    error_frame,
    frame_prefix,
)

__all__ = ["FrontEnd", "Handler", "Request", "Route"]

log = logging.getLogger(__name__)

_ENVELOPE_KEYS = frozenset({"v", "id", "method", "ns", "body", "timeout_ms", "cancel", "credit"})
_BATCH = 256  # frames read per wake-up before replies are flushed
_MAX_POLL_MS = 60_000
_RETRY_MS = 5  # how soon frames waiting for a full pipe are tried again
_MAX_CREDIT = 1_000_000

PARK_FRAMES = 4096
PARK_BYTES = 64 << 20

# A frame waiting for its client's pipe: route, payload, and the stream's
# reply when sending it on opens that stream's window.
_Parked = tuple[list[bytes], bytes, Reply | None]


@dataclass(slots=True)
class Request:
    """One decoded request: envelope fields, the raw body, and its reply handle."""

    id: Any
    method: str
    ns: str
    body: dict[str, Any]
    reply: Reply
    deadline: float | None = None  # time.monotonic() seconds


Handler = Callable[[Request], None]


@dataclass(frozen=True, slots=True)
class Route:
    """A method's handler and whether it is server-streaming."""

    handler: Handler
    stream: bool = False


@dataclass(slots=True)
class _Tracked:
    reply: Reply
    key: tuple[bytes, Any] | None  # (identity, id) of a stream, for cancel
    deadline: float | None
    stream: bool


def _id_key(request_id: Any) -> tuple[type, Any]:
    # 1 and "1" are different ids.
    return (type(request_id), request_id)


def _peek_id(payload: bytes) -> Any:
    """The request's ``id`` without decoding the rest (for oversized frames)."""
    try:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(payload) + 1)
        unpacker.feed(payload)
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if key == "id":
                value = unpacker.unpack()
                return value if _valid_id(value) else None
            unpacker.skip()
    except Exception:
        return None
    return None


def _valid_id(value: Any) -> bool:
    return type(value) is str or type(value) is int


class FrontEnd:
    """Owns the ROUTER sockets; routes requests; forwards replies.

    ``sockets`` are bound ROUTER sockets (the caller binds and secures
    them); the front end takes them over and closes them when it stops.
    """

    def __init__(
        self,
        sockets: list[zmq.Socket[bytes]],
        routes: dict[str, Route],
        *,
        max_payload: int = 16 * 1024 * 1024,
        max_streams: int = 1024,
    ) -> None:
        self.sockets = sockets
        self.routes = routes
        self.max_payload = max_payload
        self.max_streams = max_streams
        self.outbox = Outbox()
        self._tokens = itertools.count(1)
        self._tracked: dict[int, _Tracked] = {}
        self._streams: dict[tuple[bytes, Any], int] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._refusing = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._parked: dict[tuple[int, bytes], collections.deque[_Parked]] = {}
        self._parked_bytes: dict[tuple[int, bytes], int] = {}
        for sock in sockets:
            # Raise EHOSTUNREACH for a client that is gone, so its streams
            # end, and EAGAIN for one whose pipe is full, so its frames wait.
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)

    # lifecycle

    def start(self) -> None:
        """Run the socket loop in its own thread."""
        self._thread = threading.Thread(target=self._run, name="frontend", daemon=True)
        self._thread.start()

    def refuse_new(self) -> None:
        """Answer new requests with UNAVAILABLE; keep forwarding replies."""
        self._refusing = True
        self.outbox.put(0, 0, -1, [], b"")  # wake the loop

    def stop(self, timeout: float = 5.0) -> None:
        """Flush queued replies, end open streams, close the sockets."""
        self._stopping = True
        self.outbox.put(0, 0, -1, [], b"")
        if self._thread is not None:
            self._thread.join(timeout)
        # Closed here, not by the loop: stop() itself still writes to it.
        self.outbox.close()

    @property
    def open_streams(self) -> int:
        """How many streams are open now."""
        return len(self._streams)

    # the loop

    def _run(self) -> None:
        self.outbox.loop_thread = threading.get_ident()
        poller = zmq.Poller()
        for sock in self.sockets:
            poller.register(sock, zmq.POLLIN)
        poller.register(self.outbox.fd, zmq.POLLIN)
        try:
            while not self._stopping:
                try:
                    self._turn(poller)
                except Exception:
                    # Never let one bad turn take the socket loop down.
                    log.exception("front end loop: unexpected error; continuing")
                    time.sleep(0.01)
            self._flush()
            self._end_all_streams()
        finally:
            for sock in self.sockets:
                sock.close(linger=1000)

    def _turn(self, poller: zmq.Poller) -> None:
        events = dict(poller.poll(self._poll_timeout()))
        for index, sock in enumerate(self.sockets):
            if sock in events:
                self._read(index, sock)
        if self._parked:
            self._retry_parked()
        self._flush()
        # Frames queued during the flush by producers it resumed (their
        # window opened) were put from this thread: no wake-up is coming.
        while self.outbox.pending:
            self._flush()
        self._expire()

    def _poll_timeout(self) -> int | None:
        limit = _RETRY_MS if self._parked else None
        if not self._deadlines:
            return limit
        wait = self._deadlines[0][0] - time.monotonic()
        # Capped: poll takes a C int, and a deadline may be weeks away.
        timeout = min(_MAX_POLL_MS, max(0, int(wait * 1000) + 1))
        return timeout if limit is None else min(limit, timeout)

    def _read(self, index: int, sock: zmq.Socket[bytes]) -> None:
        for _ in range(_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue  # no payload after the identity: nothing to answer
            try:
                self._handle(index, frames[:-1], frames[-1])
            except Exception:
                log.exception("front end failed on a frame; the daemon keeps serving")

    def _handle(self, sock: int, route: list[bytes], payload: bytes) -> None:
        if len(payload) > self.max_payload:
            self._bad_frame(
                sock,
                route,
                _peek_id(payload),
                ResourceExhausted(
                    f"payload of {len(payload)} bytes is over the limit of {self.max_payload} bytes"
                ),
            )
            return
        try:
            message = unpack(payload)
        except InvalidArgument as exc:
            self._bad_frame(sock, route, None, exc)
            return
        if type(message) is not dict:
            self._bad_frame(sock, route, None, InvalidArgument("frame is not a msgpack map"))
            return
        request_id = message.get("id")
        if not _valid_id(request_id):
            problem = "lacks id" if "id" not in message else "has an id that is not int or str"
            self._bad_frame(sock, route, None, InvalidArgument(f"frame {problem}"))
            return
        try:
            request = self._parse(sock, route, request_id, message)
        except BerthError as exc:
            self._bad_frame(sock, route, request_id, exc)
            return
        if request is None:
            return  # a cancel, handled
        self._dispatch(request)

    def _parse(
        self, sock: int, route: list[bytes], request_id: Any, message: dict[Any, Any]
    ) -> Request | None:
        unknown = [k for k in message if k not in _ENVELOPE_KEYS]
        if unknown:
            raise InvalidArgument(f"envelope: unknown key {unknown[0]!r}")
        if "v" not in message:
            raise InvalidArgument("envelope: missing v")
        if type(message["v"]) is not int or message["v"] != 1:
            raise InvalidArgument(f"unsupported protocol version {message['v']!r}")
        cancel = message.get("cancel", False)
        if type(cancel) is not bool:
            raise InvalidArgument("envelope: cancel must be a bool")
        if "credit" in message:
            self._credit(route[0], request_id, message, cancel)
            return None
        if cancel:
            self._cancel(route[0], request_id)
            return None
        method = message.get("method")
        if method is None:
            raise InvalidArgument("envelope: missing method")
        if type(method) is not str:
            raise InvalidArgument("envelope: method must be a str")
        ns = message.get("ns")
        if ns is None or ns == "":
            ns = "default"
        elif type(ns) is not str:
            raise InvalidArgument("envelope: ns must be a str")
        else:
            check_identifier("namespace", ns)
        body = message.get("body")
        if body is None:
            body = {}
        elif type(body) is not dict:
            raise InvalidArgument("envelope: body must be a map")
        timeout_ms = message.get("timeout_ms", 0)
        if timeout_ms is None:
            timeout_ms = 0
        if type(timeout_ms) is not int or timeout_ms < 0:
            raise InvalidArgument("envelope: timeout_ms must be a non-negative int")
        deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms else None
        target = self.routes.get(method)
        if target is None:
            raise Unimplemented(f"method {method!r}: unknown method")
        if self._refusing:
            raise Unavailable("daemon shutting down")
        token = 0
        if target.stream or deadline is not None:
            token = next(self._tokens)
        reply = Reply(self.outbox, sock, route, request_id, token, method=method, ns=ns)
        if token:
            key = None
            if target.stream:
                key = (route[0], _id_key(request_id))
                if key in self._streams:
                    raise InvalidArgument(f"id {request_id!r}: already names an open stream")
                if len(self._streams) >= self.max_streams:
                    raise ResourceExhausted(f"too many open streams (limit {self.max_streams})")
                self._streams[key] = token
            self._tracked[token] = _Tracked(reply, key, deadline, target.stream)
            if deadline is not None:
                heapq.heappush(self._deadlines, (deadline, token))
        return Request(request_id, method, ns, body, reply, deadline)

    def _dispatch(self, request: Request) -> None:
        log.debug("request %s id=%r ns=%s", request.method, request.id, request.ns)
        try:
            self.routes[request.method].handler(request)
        except BaseException as exc:
            if isinstance(exc, BerthError):
                log.info("%s id=%r ns=%s: %s", request.method, request.id, request.ns, exc.message)
            request.reply.fail(exc)

    def _bad_frame(self, sock: int, route: list[bytes], request_id: Any, exc: BerthError) -> None:
        log.info("bad frame (id %r): %s", request_id, exc.message)
        self._send(sock, route, error_frame(frame_prefix(request_id), to_wire(exc)))

    # replies

    def _flush(self) -> None:
        for token, kind, sock, route, payload in self.outbox.drain():
            if sock < 0:
                continue  # a wake-up
            stream: Reply | None = None
            if token:
                tracked = self._tracked.get(token)
                if tracked is None:
                    continue  # deadline passed or cancelled: the client has its answer
                if kind == KIND_TERMINAL:
                    self._forget(token)
                elif kind == KIND_MORE and tracked.stream:
                    stream = tracked.reply
            if not self._send(sock, route, payload, stream) and token:
                self._drop(token)

    def _send(
        self, sock: int, route: list[bytes], payload: bytes, stream: Reply | None = None
    ) -> bool:
        """Send now, or park behind the client's waiting frames; False if the client is gone."""
        peer = (sock, route[0])
        queue = self._parked.get(peer)
        if queue is None:
            try:
                self.sockets[sock].send_multipart([*route, payload], zmq.NOBLOCK)
            except zmq.Again:
                queue = self._parked[peer] = collections.deque()
                self._parked_bytes[peer] = 0
            except zmq.ZMQError as exc:
                if exc.errno != errno.EHOSTUNREACH:
                    raise
                log.debug("client %s is gone; dropped a frame", route[0].hex())
                return False
            else:
                if stream is not None:
                    stream.grant(1)
                return True
        queue.append((route, payload, stream))
        self._parked_bytes[peer] += len(payload)
        if len(queue) > PARK_FRAMES or self._parked_bytes[peer] > PARK_BYTES:
            log.warning(
                "client %s is not reading (%d frames waiting); dropping them and its streams",
                route[0].hex(),
                len(queue),
            )
            self._drop_peer(peer)
        return True

    def _retry_parked(self) -> None:
        for peer, queue in list(self._parked.items()):
            sock = self.sockets[peer[0]]
            while queue:
                route, payload, stream = queue[0]
                try:
                    sock.send_multipart([*route, payload], zmq.NOBLOCK)
                except zmq.Again:
                    break
                except zmq.ZMQError as exc:
                    if exc.errno != errno.EHOSTUNREACH:
                        raise
                    self._drop_peer(peer)
                    break
                queue.popleft()
                self._parked_bytes[peer] -= len(payload)
                if stream is not None:
                    stream.grant(1)
            if not queue:
                self._parked.pop(peer, None)
                self._parked_bytes.pop(peer, None)

    def _drop_peer(self, peer: tuple[int, bytes]) -> None:
        """Forget a client's waiting frames and end its streams without a word."""
        self._parked.pop(peer, None)
        self._parked_bytes.pop(peer, None)
        for token, tracked in list(self._tracked.items()):
            reply = tracked.reply
            if reply.sock == peer[0] and reply.route[0] == peer[1]:
                self._drop(token)

    def _credit(
        self, identity: bytes, request_id: Any, message: dict[Any, Any], cancel: bool
    ) -> None:
        frames = message["credit"]
        token = self._streams.get((identity, _id_key(request_id)))
        bad = None
        if "method" in message or cancel:
            bad = InvalidArgument("envelope: a credit frame has no method and no cancel")
        elif type(frames) is not int or not 1 <= frames <= _MAX_CREDIT:
            bad = InvalidArgument(f"envelope: credit must be an int from 1 to {_MAX_CREDIT}")
        if bad is not None:
            if token is None:
                raise bad
            # The stream it names ends with the error: one terminal frame, as for any stream.
            reply = self._tracked[token].reply
            reply.cancelled = True
            self._forget(token)
            self._send(reply.sock, reply.route, error_frame(reply.prefix, to_wire(bad)))
            return
        if token is None:
            return  # naming no open stream: ignored, as a cancel is
        self._tracked[token].reply.grant(frames, credit=True)

    def _cancel(self, identity: bytes, request_id: Any) -> None:
        token = self._streams.get((identity, _id_key(request_id)))
        if token is None:
            return  # naming no open stream: ignored
        reply = self._tracked[token].reply
        reply.cancelled = True
        self._forget(token)
        self._send(reply.sock, reply.route, end_frame(reply.prefix))

    def _expire(self) -> None:
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, token = heapq.heappop(self._deadlines)
            tracked = self._tracked.get(token)
            if tracked is None:
                continue
            reply = tracked.reply
            reply.cancelled = True
            self._forget(token)
            exc = DeadlineExceeded(f"{reply.method}: deadline exceeded")
            self._send(reply.sock, reply.route, error_frame(reply.prefix, to_wire(exc)))

    def _drop(self, token: int) -> None:
        """A stream whose client is gone or not reading: end it without a word."""
        tracked = self._tracked.get(token)
        if tracked is not None:
            tracked.reply.cancelled = True
            self._forget(token)

    def _forget(self, token: int) -> None:
        tracked = self._tracked.pop(token, None)
        if tracked is not None and tracked.key is not None:
            self._streams.pop(tracked.key, None)
        # Answered calls leave their deadline in the heap until it passes;
        # with a 30 s client default that is rate x 30 dead entries, so
        # drop them once they outnumber the live ones.
        if len(self._deadlines) > 1024 and len(self._deadlines) > 4 * len(self._tracked):
            self._deadlines = [e for e in self._deadlines if e[1] in self._tracked]
            heapq.heapify(self._deadlines)

    def _end_all_streams(self) -> None:
        for token in list(self._tracked):
            tracked = self._tracked[token]
            reply = tracked.reply
            reply.cancelled = True
            self._forget(token)
            exc = Unavailable("daemon shutting down")
            self._send(reply.sock, reply.route, error_frame(reply.prefix, to_wire(exc)))
