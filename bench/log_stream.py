"""``berth.v1.Events/Subscribe`` for benchmarks: a raw DEALER socket, credit in batches.

:class:`LogStream` opens one subscription (``after_seq``, ``filter``) and
waits for its ``ready`` frame (or the error that comes instead); then
:meth:`LogStream.frames` yields every ``more`` body (``{events, seq}``,
docs/protocol.md §6.5.1) with the moment ``recv`` returned, by
``perf_counter_ns`` and by wall clock. With ``credit`` (the default) it
grants :data:`CREDIT_BATCH` frames each time it has read that many, as
berth's own clients do (§6.6); without, the daemon's auto-credit paces
the stream.

:class:`ExitFanout` is a live subscriber on a thread of its own for the
``events`` scenario: it files each ``/tasks/exit`` event's exit -> receipt
(payload ``exited_at``, the shim's reaping, to the frame's arrival) and
logged -> receipt (the record's ``timestamp``) delays, and checks that
the seqs only go up. :func:`events_info` is one ``Events/Info`` call.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import zmq

import berth
from bench.task_events import SubscriberError
from wire.codec import pack, timestamp_ns, unpack

__all__ = [
    "CREDIT_BATCH",
    "INFO_METHOD",
    "SUBSCRIBE_METHOD",
    "ExitFanout",
    "LogFrame",
    "LogStream",
    "events_info",
    "read_log",
]

SUBSCRIBE_METHOD = "berth.v1.Events/Subscribe"
INFO_METHOD = "berth.v1.Events/Info"
CREDIT_BATCH = 8  # frames granted at a time, once that many were read
_POLL_MS = 50  # how often a reader looks at its stop flag
_ids = itertools.count(1)


def events_info(address: str) -> dict[str, int]:
    """``Events/Info``: ``{oldest_seq, latest_seq, count, bytes}``."""
    with berth.Client(address, timeout=30.0) as client:
        return {k: int(v) for k, v in client.call(INFO_METHOD, {}).items()}


def read_log(
    address: str, after_seq: int, upto: int, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Every event with ``after_seq < seq <= upto``, unfiltered, by one Subscribe replay."""
    if upto <= after_seq:
        return []
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    stream = LogStream(address, after_seq=after_seq)
    events: list[dict[str, Any]] = []
    try:
        stream.open()
        for frame in stream.frames(stop):
            events += [e for e in frame.events if e["seq"] <= upto]
            if frame.seq >= upto:
                return events
        raise SubscriberError(f"replay to seq {upto} not done in {timeout:g} s")
    finally:
        timer.cancel()
        stream.close()


@dataclass(frozen=True, slots=True)
class LogFrame:
    """One ``more`` body and when it arrived (``perf_counter_ns``, wall clock ns)."""

    received_ns: int
    received_wall_ns: int
    events: list[dict[str, Any]]
    seq: int


class LogStream:
    """One ``Events/Subscribe`` stream of the daemon at ``address``; use from one thread."""

    def __init__(
        self, address: str, *, after_seq: int = 0, filter: str = "", credit: bool = True
    ) -> None:
        self.address = address
        self.after_seq = after_seq
        self.filter = filter
        self.credit = credit
        self.frames_read = 0
        self._id = f"bench-log-{os.getpid()}-{next(_ids)}"
        self._sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._unacked = 0  # frames read since the last credit frame

    def open(self, timeout: float = 10.0) -> LogStream:
        """Send the request; return at ``ready``, :class:`SubscriberError` on anything else."""
        self._sock.connect(self.address)
        body = {"after_seq": self.after_seq, "filter": self.filter}
        self._send({"v": 1, "id": self._id, "method": SUBSCRIBE_METHOD, "body": body})
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self._sock.poll(int(left * 1000) + 1):
                break
            frame = unpack(self._sock.recv_multipart()[-1])
            if not isinstance(frame, dict) or frame.get("id") != self._id:
                continue
            if frame.get("ready"):
                return self
            raise SubscriberError(f"Events/Subscribe refused: {frame.get('error') or frame}")
        raise SubscriberError(f"no ready frame for Events/Subscribe within {timeout}s")

    def frames(self, stop: threading.Event | None = None) -> Iterator[LogFrame]:
        """Every ``more`` body as it comes, until ``stop`` is set (or the stream ends)."""
        sock = self._sock
        while stop is None or not stop.is_set():
            if not sock.poll(_POLL_MS):
                continue
            payload = sock.recv_multipart()[-1]
            received, received_wall = time.perf_counter_ns(), time.time_ns()
            frame = unpack(payload)
            if not isinstance(frame, dict) or frame.get("id") != self._id:
                continue
            if "error" in frame:
                raise SubscriberError(f"Events/Subscribe failed: {frame['error']}")
            if not frame.get("more"):
                raise SubscriberError("Events/Subscribe ended")
            self.frames_read += 1
            if self.credit:
                self._unacked += 1
                if self._unacked >= CREDIT_BATCH:
                    self._send({"v": 1, "id": self._id, "credit": self._unacked})
                    self._unacked = 0
            body = frame["body"]
            yield LogFrame(received, received_wall, body["events"], int(body["seq"]))

    def close(self) -> None:
        """Cancel the stream and close the socket."""
        with contextlib.suppress(zmq.ZMQError):
            self._sock.send_multipart(
                [b"", pack({"v": 1, "id": self._id, "cancel": True})], zmq.NOBLOCK
            )
        self._sock.close(linger=0)

    def _send(self, frame: dict[str, Any]) -> None:
        self._sock.send_multipart([b"", pack(frame)])


class ExitFanout:
    """A live ``Events/Subscribe`` of ``/tasks/exit`` in one namespace, read by its own thread.

    Per ``EXIT`` it files exit -> receipt (``lags_ns``: the payload's
    ``exited_at`` to the frame's arrival) and logged -> receipt
    (``logged_lags_ns``: the record's ``timestamp``), both by wall clock,
    same host, and keeps the seqs of the EXITs (``exit_seqs``), to be
    checked against the log. ``out_of_order`` counts events whose seq did
    not exceed the one before, or frames whose position went back.
    """

    def __init__(self, address: str, namespace: str) -> None:
        self.filter = f'topic=="/tasks/exit",namespace=={namespace}'
        self.lags_ns: list[int] = []
        self.logged_lags_ns: list[int] = []
        self.exits = 0
        self.exit_seqs: list[int] = []
        self.gaps: int | None = None  # set by a check against the log: runs of EXITs skipped
        self.missing_seqs: int | None = None  # and how many
        self.frames = 0
        self.out_of_order = 0
        self.failure: str | None = None
        self._address = address
        self._last_seq = 0
        self._position = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-log-exits", daemon=True)

    def start(self, timeout: float = 10.0) -> ExitFanout:
        """Open the stream; return once it is live."""
        self._thread.start()
        if not self._ready.wait(timeout) or self.failure is not None:
            self.close()
            raise SubscriberError(self.failure or f"no ready frame within {timeout}s")
        return self

    def _run(self) -> None:
        stream = LogStream(self._address, filter=self.filter)
        try:
            stream.open()
            self._ready.set()
            for frame in stream.frames(self._stop):
                self._file(frame)
        except Exception as exc:  # the waiters must not hang
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            stream.close()
            self._ready.set()

    def _file(self, frame: LogFrame) -> None:
        self.frames += 1
        if frame.seq < self._position:
            self.out_of_order += 1
        self._position = max(self._position, frame.seq)
        for event in frame.events:
            seq = int(event["seq"])
            if seq <= self._last_seq:
                self.out_of_order += 1
            self._last_seq = max(seq, self._last_seq)
            if event.get("type") != "EXIT":
                continue
            self.exits += 1
            self.exit_seqs.append(seq)
            if (exited_at := event["payload"].get("exited_at")) is not None:
                self.lags_ns.append(frame.received_wall_ns - timestamp_ns(exited_at))
            if (logged := event.get("timestamp")) is not None:
                self.logged_lags_ns.append(frame.received_wall_ns - timestamp_ns(logged))

    def close(self) -> None:
        """Stop the reader (which cancels the stream)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
