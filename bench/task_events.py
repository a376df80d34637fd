"""A ``Tasks/Events`` subscriber for benchmarks: a raw DEALER socket read by its own thread.

:class:`EventSubscriber` opens the stream for one namespace and returns
from :meth:`~EventSubscriber.start` once the daemon's ``ready`` frame came
(from then on nothing the namespace publishes is missed). A dedicated
thread then reads every frame, stamping it with ``time.perf_counter_ns()``
the moment ``recv`` returns, so the arrival time of an ``EXIT`` does not
depend on when the thread that waits for it gets the GIL back.

A raw socket on a thread of its own (rather than ``berth.Client``'s
``tasks.events()``, which is not to be shared across threads) lets the
arrival of each frame be stamped the moment ``recv`` returns, while the
main thread makes its calls; the bench still waits for ``ready`` so that
the subscription is live before it acts.

The thread also checks the stream: every ``seq`` must be greater than the
one before (a breach otherwise); a jump of more than one is counted as a
gap. Seqs are the event log's, global across namespaces and topics
(containers', snapshots'...), so Tasks/Events, which carries the task
topics of one namespace, jumps over the others: gaps are expected; what
proves nothing was lost is every EXIT arriving (counted by type).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import zmq

from wire.codec import pack, unpack

__all__ = ["EVENTS_METHOD", "EventStats", "EventSubscriber", "ExitSeen", "SubscriberError"]

EVENTS_METHOD = "containerd.v1.services.execution.Tasks/Events"
_POLL_MS = 50  # how often the reader thread looks at its stop flag
_ids = itertools.count(1)


class SubscriberError(RuntimeError):
    """The stream could not be opened, or it ended while the bench still needed it."""


@dataclass(frozen=True)
class ExitSeen:
    """An ``EXIT`` event and when its frame was received: ``perf_counter_ns`` and wall clock."""

    received_ns: int
    received_wall_ns: int
    event: dict[str, Any]


@dataclass
class EventStats:
    """What the stream delivered: counts by type, and the checks on ``seq``."""

    received: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    first_seq: int | None = None
    last_seq: int | None = None
    gaps: int = 0  # jumps of more than one between consecutive seqs
    missing_seqs: int = 0  # seqs skipped over by those jumps
    out_of_order: list[tuple[int, int]] = field(default_factory=list)  # (previous, seq)
    duplicate_exits: int = 0  # a second EXIT for the same (container id, pid)

    def to_json(self) -> dict[str, Any]:
        """The figures as plain JSON values."""
        return {
            "received": self.received,
            "by_type": dict(sorted(self.by_type.items())),
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "gaps": self.gaps,
            "missing_seqs": self.missing_seqs,
            "out_of_order": [list(pair) for pair in self.out_of_order],
            "duplicate_exits": self.duplicate_exits,
        }


class EventSubscriber:
    """``Tasks/Events`` of ``namespace`` at ``address``; ``EXIT`` events filed by (id, pid)."""

    def __init__(self, address: str, namespace: str, *, ready_timeout: float = 10.0) -> None:
        self.address = address
        self.namespace = namespace
        self.ready_timeout = ready_timeout
        self.stats = EventStats()
        self.failure: str | None = None  # why the stream ended early, if it did
        self._stream_id = f"bench-events-{os.getpid()}-{next(_ids)}"
        self._exits: dict[tuple[str, int], ExitSeen] = {}
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-events", daemon=True)

    def start(self) -> EventSubscriber:
        """Open the stream; return once it is live. :class:`SubscriberError` otherwise."""
        self._thread.start()
        if not self._ready.wait(self.ready_timeout):
            self.close()
            raise SubscriberError(f"no ready frame for Events within {self.ready_timeout}s")
        if self.failure is not None:
            self.close()
            raise SubscriberError(self.failure)
        return self

    def wait_exit(self, container_id: str, pid: int, timeout: float) -> ExitSeen | None:
        """The ``EXIT`` of ``pid`` in ``container_id`` (already seen or to come); None on timeout.

        Raises :class:`SubscriberError` if the stream ended before it came.
        """
        key = (container_id, pid)
        with self._cond:
            self._cond.wait_for(lambda: key in self._exits or self.failure is not None, timeout)
            seen = self._exits.get(key)
        if seen is None and self.failure is not None:
            raise SubscriberError(self.failure)
        return seen

    def close(self) -> None:
        """Cancel the stream and stop the reader thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def __enter__(self) -> EventSubscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the reader thread ------------------------------------------------

    def _run(self) -> None:
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.address)
            request = {
                "v": 1,
                "id": self._stream_id,
                "method": EVENTS_METHOD,
                "ns": self.namespace,
                "body": {},
            }
            sock.send_multipart([b"", pack(request)])
            self._read(sock)
        except Exception as exc:  # anything: the waiters must not hang
            self._fail(f"events reader: {type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(zmq.ZMQError):
                cancel = {"v": 1, "id": self._stream_id, "cancel": True}
                sock.send_multipart([b"", pack(cancel)], zmq.NOBLOCK)
            sock.close(linger=0)
            self._ready.set()

    def _read(self, sock: zmq.Socket[bytes]) -> None:
        while not self._stop.is_set():
            if not sock.poll(_POLL_MS):
                continue
            payload = sock.recv_multipart()[-1]
            received = time.perf_counter_ns()
            received_wall = time.time_ns()
            frame = unpack(payload)
            if not isinstance(frame, dict) or frame.get("id") != self._stream_id:
                continue
            if "error" in frame:
                self._fail(f"Events stream failed: {frame['error']}")
                return
            if frame.get("end"):
                self._fail("Events stream ended")
                return
            if frame.get("ready"):
                self._ready.set()
            elif frame.get("more"):
                self._file(frame.get("body") or {}, received, received_wall)

    def _file(self, event: dict[str, Any], received_ns: int, received_wall_ns: int) -> None:
        stats = self.stats
        stats.received += 1
        stats.by_type[str(event.get("type"))] += 1
        seq = event.get("seq")
        if isinstance(seq, int):
            if stats.last_seq is not None:
                if seq <= stats.last_seq:
                    stats.out_of_order.append((stats.last_seq, seq))
                elif seq > stats.last_seq + 1:
                    stats.gaps += 1
                    stats.missing_seqs += seq - stats.last_seq - 1
            if stats.first_seq is None:
                stats.first_seq = seq
            stats.last_seq = seq if stats.last_seq is None else max(seq, stats.last_seq)
        if event.get("type") != "EXIT":
            return
        key = (str(event.get("id")), int(event.get("pid") or 0))
        with self._cond:
            if key in self._exits:
                stats.duplicate_exits += 1
            else:
                self._exits[key] = ExitSeen(received_ns, received_wall_ns, event)
            self._cond.notify_all()

    def _fail(self, reason: str) -> None:
        with self._cond:
            if self.failure is None:
                self.failure = reason
            self._cond.notify_all()
        self._ready.set()
