"""Each restart of a crash-looping container, timed from the daemons' own event streams.

A watcher subscribes to one namespace's events before any container
starts, on a thread of its own that stamps every frame the moment it is
received (wall clock, same host), and pairs each task exit with the
start of its replacement:

- berth (:class:`BerthRestartWatch`): ``berth.v1.Events/Subscribe``
  filtered on ``namespace==NS``: ``/tasks/exit`` (the payload's
  ``exited_at``, stamped by the shim when it reaped the init), then
  ``/tasks/restart-scheduled`` (with the backoff ``delay_ms``),
  ``/tasks/delete`` of the old task, ``/tasks/create`` and
  ``/tasks/start`` of the new one and ``/tasks/restarted``; each
  record's ``timestamp`` is when the daemon logged it, so the restart
  path splits into steps;
- containerd (:class:`CtrdRestartWatch`): its ``Events/Subscribe``
  filtered the same way: ``TaskExit.exited_at`` (its shim's reaping), the
  envelopes' time stamps (when containerd published) of ``/tasks/exit``,
  ``/tasks/delete``, ``/tasks/create`` and ``/tasks/start``.

:class:`RestartTiming` is one exit and what followed it; it is complete
once the replacement's start was received. Docker's side
(:mod:`bench.restart_docker`) fills the same record from ``docker
events``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bench import ctrd as ctrd_mod
from bench.histogram import summarize
from bench.log_stream import LogStream
from bench.task_events import SubscriberError
from wire.codec import timestamp_ns

__all__ = [
    "STEPS",
    "BerthRestartWatch",
    "CtrdRestartWatch",
    "RestartTiming",
    "Restarts",
    "latency_json",
    "steps_json",
]


@dataclass
class RestartTiming:
    """One exit of a container's task and the start of its replacement (wall clock, ns).

    ``exited_at_ns`` is the exit itself (berth, containerd: stamped by the
    shim at reaping; Docker: its ``die`` event). The ``*_ns`` stamps are
    the daemon's (when it logged or published each event); the
    ``*_received_ns`` ones the watcher's.
    """

    container_id: str
    exited_at_ns: int
    exit_logged_ns: int | None = None
    scheduled_ns: int | None = None  # berth: /tasks/restart-scheduled logged
    delay_ms: int | None = None  # berth: the backoff it chose
    attempt: int | None = None  # berth: its backoff step (1 = the first); Docker: from 0
    deleted_ns: int | None = None  # the old task's /tasks/delete
    created_ns: int | None = None  # the replacement's /tasks/create
    started_ns: int | None = None  # the replacement's /tasks/start (Docker: start)
    start_received_ns: int | None = None
    restarted_ns: int | None = None  # berth: /tasks/restarted logged
    restarted_received_ns: int | None = None

    @property
    def complete(self) -> bool:
        """The replacement's start was received."""
        return self.start_received_ns is not None

    def to_running_ns(self) -> int | None:
        """The headline: the exit to the replacement's start, as received by the watcher."""
        if self.start_received_ns is None:
            return None
        return self.start_received_ns - self.exited_at_ns

    def stamp_to_stamp_ns(self) -> int | None:
        """The daemon's own stamps: its exit event to its start event (Docker: die -> start)."""
        if self.started_ns is None or self.exit_logged_ns is None:
            return None
        return self.started_ns - self.exit_logged_ns


# The steps of a restart, each between two stamps of RestartTiming (None when absent).
STEPS: tuple[tuple[str, str, str], ...] = (
    ("exit -> exit logged", "exited_at_ns", "exit_logged_ns"),
    ("exit logged -> restart scheduled", "exit_logged_ns", "scheduled_ns"),
    ("scheduled -> old task deleted (backoff in here)", "scheduled_ns", "deleted_ns"),
    ("exit logged -> old task deleted", "exit_logged_ns", "deleted_ns"),
    ("deleted -> new task created", "deleted_ns", "created_ns"),
    ("created -> started", "created_ns", "started_ns"),
    ("started logged -> start received", "started_ns", "start_received_ns"),
    ("started -> restarted logged", "started_ns", "restarted_ns"),
    ("exit -> restarted received", "exited_at_ns", "restarted_received_ns"),
)


class Restarts:
    """The exits of one namespace's containers, each paired with its replacement's start.

    Fed by one watcher thread; read by the bench once the loop stopped.
    """

    def __init__(self) -> None:
        self.done: list[RestartTiming] = []
        self.exits = 0
        self.gave_up: list[str] = []
        self._open: dict[str, RestartTiming] = {}
        self._lock = threading.Lock()

    def exited(self, cid: str, exited_at_ns: int, logged_ns: int | None) -> None:
        """An init exited: the next start of ``cid`` is its replacement's."""
        with self._lock:
            self.exits += 1
            if (old := self._open.pop(cid, None)) is not None:
                self.done.append(old)  # never started again (stopped, or a lost start)
            self._open[cid] = RestartTiming(cid, exited_at_ns, exit_logged_ns=logged_ns)

    def step(self, cid: str, **stamps: int | None) -> None:
        """Set stamps of ``cid``'s open restart (ignored when none is open)."""
        with self._lock:
            if (timing := self._open.get(cid)) is not None:
                for name, value in stamps.items():
                    if getattr(timing, name) is None:
                        setattr(timing, name, value)

    def started(self, cid: str, logged_ns: int | None, received_ns: int, *, last: bool) -> bool:
        """The replacement started (True), or it is a first start; ``last`` closes the record."""
        with self._lock:
            timing = self._open.get(cid)
            if timing is None or timing.start_received_ns is not None:
                return False  # a first start through the API, not a restart
            timing.started_ns, timing.start_received_ns = logged_ns, received_ns
            if last:
                self.done.append(self._open.pop(cid))
            return True

    def restarted(self, cid: str, logged_ns: int | None, received_ns: int) -> None:
        """berth's ``/tasks/restarted``: the record is closed."""
        with self._lock:
            timing = self._open.get(cid)
            if timing is None or timing.start_received_ns is None:
                return
            timing.restarted_ns, timing.restarted_received_ns = logged_ns, received_ns
            self.done.append(self._open.pop(cid))

    def within(self, begin_ns: int, end_ns: int) -> list[RestartTiming]:
        """The complete restarts whose exit fell in ``[begin_ns, end_ns)``."""
        with self._lock:
            timings = [*self.done, *self._open.values()]
        return [t for t in timings if t.complete and begin_ns <= t.exited_at_ns < end_ns]

    def restarted_between(self, begin_ns: int, end_ns: int) -> int:
        """How many replacements started in ``[begin_ns, end_ns)`` (by the start's receipt)."""
        with self._lock:
            timings = [*self.done, *self._open.values()]
        return sum(
            1
            for t in timings
            if t.start_received_ns is not None and begin_ns <= t.start_received_ns < end_ns
        )


def latency_json(values_ns: Iterable[int | None]) -> dict[str, Any]:
    """n, p50, p90, p99, p99.9, max and mean (ms) of the values that are there."""
    return summarize(v for v in values_ns if v is not None and v >= 0).to_json()


def steps_json(timings: list[RestartTiming]) -> dict[str, Any]:
    """Each step of :data:`STEPS` over ``timings``, where both of its stamps are there."""
    out: dict[str, Any] = {}
    for name, first, second in STEPS:
        values = []
        for t in timings:
            a, b = getattr(t, first), getattr(t, second)
            if a is not None and b is not None:
                values.append(b - a)
        if values:
            out[name] = latency_json(values)
    return out


class BerthRestartWatch:
    """berth's ``Events/Subscribe`` of one namespace, read by a thread of its own."""

    def __init__(self, address: str, namespace: str) -> None:
        self.restarts = Restarts()
        self.failure: str | None = None
        self._stream = LogStream(address, filter=f"namespace=={namespace}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-restart-watch", daemon=True)

    def start(self) -> BerthRestartWatch:
        """Open the stream (live at its ``ready`` frame) and start reading it."""
        self._stream.open()
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for frame in self._stream.frames(self._stop):
                for event in frame.events:
                    self._file(event, frame.received_wall_ns)
        except SubscriberError as exc:
            if not self._stop.is_set():
                self.failure = str(exc)

    def _file(self, event: dict[str, Any], received_ns: int) -> None:
        payload = event.get("payload") or {}
        cid = str(payload.get("container_id") or event.get("id") or "")
        logged = timestamp_ns(event["timestamp"]) if event.get("timestamp") else None
        topic = event.get("topic")
        books = self.restarts
        if topic == "/tasks/exit" and payload.get("exited_at") is not None:
            books.exited(cid, timestamp_ns(payload["exited_at"]), logged)
        elif topic == "/tasks/restart-scheduled":
            books.step(
                cid,
                scheduled_ns=logged,
                delay_ms=int(payload.get("delay_ms", 0)),
                attempt=int(payload.get("attempt", 0)),
            )
        elif topic == "/tasks/delete":
            books.step(cid, deleted_ns=logged)
        elif topic == "/tasks/create":
            books.step(cid, created_ns=logged)
        elif topic == "/tasks/start":
            books.started(cid, logged, received_ns, last=False)
        elif topic == "/tasks/restarted":
            books.restarted(cid, logged, received_ns)
        elif topic == "/tasks/gave-up":
            books.gave_up.append(cid)

    def close(self) -> None:
        """Stop reading and cancel the stream."""
        self._stop.set()
        self._thread.join(5)
        self._stream.close()


def _ns(stamp: Any) -> int:
    return int(stamp.seconds) * 1_000_000_000 + int(stamp.nanos)


class CtrdRestartWatch:
    """containerd's ``Events/Subscribe`` of one namespace, read by a thread of its own."""

    def __init__(self, address: str, namespace: str) -> None:
        self.restarts = Restarts()
        self.failure: str | None = None
        self._client = ctrd_mod.Containerd(address, namespace, timeout=None)
        self._api = self._client.api
        self._stream = self._client.events([f"namespace=={namespace}"])
        self._thread = threading.Thread(target=self._run, name="bench-ctrd-restarts", daemon=True)

    def start(self) -> CtrdRestartWatch:
        """Start reading; gRPC has no ready frame, so give the subscription a moment."""
        self._thread.start()
        time.sleep(0.5)
        return self

    def _decode(self, envelope: Any, kind: str) -> Any:
        event = getattr(self._api.task_events, kind)()
        event.ParseFromString(envelope.event.value)
        return event

    def _run(self) -> None:
        books = self.restarts
        try:
            for envelope in self._stream:
                received = time.time_ns()
                stamp = _ns(envelope.timestamp)
                topic = envelope.topic
                if topic == "/tasks/exit":
                    exit_event = self._decode(envelope, "TaskExit")
                    if exit_event.id and exit_event.id != exit_event.container_id:
                        continue  # an exec's exit
                    books.exited(exit_event.container_id, _ns(exit_event.exited_at), stamp)
                elif topic == "/tasks/delete":
                    books.step(self._decode(envelope, "TaskDelete").container_id, deleted_ns=stamp)
                elif topic == "/tasks/create":
                    books.step(self._decode(envelope, "TaskCreate").container_id, created_ns=stamp)
                elif topic == "/tasks/start":
                    cid = self._decode(envelope, "TaskStart").container_id
                    books.started(cid, stamp, received, last=True)
        except Exception as exc:  # a cancelled stream ends here too
            if "CANCELLED" not in str(exc):
                self.failure = f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        """Cancel the stream and close the channel."""
        self._stream.cancel()
        self._thread.join(5)
        self._client.close()
