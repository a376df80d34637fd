"""The event bus: subscribers as cursors into the event log.

The metadata actor hands the bus each commit's events (:class:`Committed`),
in seq order, after the commit. A subscriber is a position (the last seq it
has been sent or has skipped) and a filter, not a queue: the bus sends it
what lies past its position while its window (docs/protocol.md §6.6) is
open, from the recent events it keeps in memory, else from the log in
LMDB, and stops when the window shuts; when the client grants more the
front end wakes the bus (:class:`_Pump`) and it goes on from the position.
So a replay and the live events meet with no gap and no duplicate, and a
subscriber that stops reading costs the daemon nothing but its cursor.

Two stream shapes share this: ``berth.v1.Events/Subscribe`` (frames of up
to :data:`FRAME_EVENTS` Event records and the position reached, progress
frames when idle) and ``Tasks/Events`` (one legacy ``Event`` per frame, the
namespace's task events only).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pykka

from actors.event_log import TASK_TOPICS, LoggedEvent, decode_event
from actors.store import Store
from actors.supervision import SupervisedActor
from wire.codec import pack, unpack
from wire.errors import OutOfRange
from wire.filter import Filter
from wire.reply import Reply

__all__ = [
    "FRAME_EVENTS",
    "PROGRESS_SECONDS",
    "Committed",
    "EventBus",
    "Listeners",
    "Subscribe",
    "Trimmed",
]

log = logging.getLogger(__name__)

FRAME_EVENTS = 256  # Event records per Subscribe frame, at most
_FRAME_BYTES = 256 << 10
PROGRESS_SECONDS = 5.0  # idle this long, a subscriber gets a progress frame
_RECENT = 8192  # events kept in memory for live subscribers and short catch-ups
_SCAN_PER_TURN = 8192  # events one subscriber's catch-up examines before others get a turn
_SEQ = pack("seq")
_EVENTS = pack("events")


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Open a stream at ``after_seq`` (None: from now on).

    ``task_ns`` set: the legacy ``Tasks/Events`` shape, that namespace's
    task events, one per frame; else ``Events/Subscribe`` frames.
    """

    reply: Reply
    filter: Filter
    after_seq: int | None = None
    task_ns: str | None = None


@dataclass(frozen=True, slots=True)
class Committed:
    """Events just committed, in seq order (from the metadata actor)."""

    events: list[LoggedEvent]


@dataclass(frozen=True, slots=True)
class Trimmed:
    """Events up to ``upto`` were trimmed from the log (from the metadata actor)."""

    upto: int


@dataclass(frozen=True, slots=True)
class _Pump:
    sub: int


@dataclass(frozen=True, slots=True)
class _Tick:
    pass


@dataclass(slots=True)
class _Sub:
    reply: Reply
    filter: Filter
    task_ns: str | None
    position: int
    last_frame: float = field(default_factory=time.monotonic)
    waiting: bool = False  # its window is shut; the front end will wake the bus
    pumping: bool = False  # a _Pump for it is queued


def _task_event(event: LoggedEvent) -> bytes:
    """The legacy Tasks/Events ``Event`` of a task event."""
    record = unpack(event.packed)
    payload = record["payload"]
    return pack(
        {
            "id": event.id,
            "type": event.type,
            "pid": payload["pid"],
            "exit_status": payload["exit_status"],
            "exited_at": payload["exited_at"],
            "namespace": event.namespace,
            "timestamp": record["timestamp"],
            "seq": event.seq,
        }
    )


_LEGACY_TOPICS = frozenset(TASK_TOPICS.values())


class Listeners:
    """Whether the bus has subscribers: the metadata actor's commits tell it only then.

    Shared by the bus (which sets it) and the publisher (which reads it
    after each commit). With no subscriber the bus is not woken for every
    commit; the first subscriber makes it read the latest seq from the log
    (after setting the flag, so no commit falls between) and start its
    memory of recent events afresh.
    """

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = False


class EventBus(SupervisedActor):
    """Serves every event stream from the log; one actor, so positions need no lock."""

    name = "events"

    def __init__(
        self,
        supervisor: pykka.ActorRef[Any] | None,
        store: Store,
        listeners: Listeners | None = None,
    ) -> None:
        super().__init__(supervisor)
        self.store = store
        # None: told of every commit (tests, and daemons that always publish).
        self.listeners = listeners
        with store.read() as txn:
            self._latest = store.log.latest(txn)
        self._recent: collections.deque[LoggedEvent] = collections.deque(maxlen=_RECENT)
        self._subs: dict[int, _Sub] = {}
        self._ids = itertools.count(1)
        self._ticking = threading.Event()
        self.published = 0  # for tests and stats: events handed to the bus

    def on_start(self) -> None:
        me = self.actor_ref
        stop = self._ticking

        def tick() -> None:
            while not stop.wait(1.0):
                try:
                    me.tell(_Tick())
                except pykka.ActorDeadError:
                    return

        threading.Thread(target=tick, name="events-tick", daemon=True).start()

    def on_stop(self) -> None:
        self._ticking.set()

    def pending_replies(self) -> list[Reply]:
        return [sub.reply for sub in self._subs.values()]

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Committed):
            self._committed(message.events)
        elif isinstance(message, Trimmed):
            # Gone from memory too: a cursor behind them ends with OUT_OF_RANGE.
            recent = self._recent
            while recent and recent[0].seq <= message.upto:
                recent.popleft()
        elif isinstance(message, _Pump):
            sub = self._subs.get(message.sub)
            if sub is not None:
                sub.pumping = False
                self._pump(message.sub, sub)
        elif isinstance(message, Subscribe):
            self._subscribe(message)
        elif isinstance(message, _Tick):
            self._progress()
        else:
            log.warning("event bus: unexpected message %r", message)
        return None

    # subscribing

    def _wake(self) -> None:
        """The first subscriber since the bus went quiet: catch up with the log."""
        listeners = self.listeners
        if listeners is None or listeners.active:
            return
        listeners.active = True  # first: a commit after this tells the bus
        with self.store.read() as txn:
            latest = self.store.log.latest(txn)
        if latest > self._latest:
            self._latest = latest
            self._recent.clear()  # it missed events: what it holds would have a gap

    def _forget(self, sub_id: int) -> None:
        del self._subs[sub_id]
        if not self._subs and self.listeners is not None:
            self.listeners.active = False

    def _subscribe(self, message: Subscribe) -> None:
        self._wake()
        reply = message.reply
        after = message.after_seq
        if after is None:
            position = self._latest
        else:
            with self.store.read() as txn:
                oldest = self.store.log.oldest(txn)
            if after > self._latest:
                reply.fail(
                    OutOfRange(f"after_seq {after}: beyond the latest event (seq {self._latest})")
                )
                return
            if after + 1 < oldest:
                reply.fail(
                    OutOfRange(
                        f"after_seq {after}: events up to seq {oldest - 1} are no longer "
                        f"retained (oldest is {oldest})"
                    )
                )
                return
            position = after
        sub_id = next(self._ids)
        sub = self._subs[sub_id] = _Sub(reply, message.filter, message.task_ns, position)
        reply.ready()
        self._pump(sub_id, sub)

    # sending

    def _committed(self, events: list[LoggedEvent]) -> None:
        if events[0].seq <= self._latest:
            # Exits come twice: before their commit and after it (actors.event_log).
            events = [e for e in events if e.seq > self._latest]
            if not events:
                return
        self._recent.extend(events)
        self._latest = events[-1].seq
        self.published += len(events)
        for sub_id, sub in list(self._subs.items()):
            if not sub.waiting and not sub.pumping:
                self._pump(sub_id, sub)

    def _pump(self, sub_id: int, sub: _Sub) -> None:
        """Send ``sub`` what lies past its position, while its window is open."""
        reply = sub.reply
        if reply.cancelled or reply.done:
            self._forget(sub_id)
            return
        scanned = 0
        while sub.position < self._latest:
            if not self._window(sub_id, sub):
                return
            # Unfiltered, a frame takes FRAME_EVENTS: read no more than that.
            events = self._after(
                sub.position, FRAME_EVENTS if sub.filter.is_empty else FRAME_EVENTS * 4
            )
            if events is None:
                self._forget(sub_id)
                reply.fail(
                    OutOfRange(
                        f"subscription at seq {sub.position}: the log was trimmed past it "
                        "while it was not reading"
                    )
                )
                return
            if sub.task_ns is not None:
                scanned += self._send_tasks(sub_id, sub, events)
            else:
                scanned += self._send_batch(sub, events)
            if scanned >= _SCAN_PER_TURN and sub.position < self._latest:
                # Let other subscribers and new commits in; go on next turn.
                sub.pumping = True
                self.actor_ref.tell(_Pump(sub_id))
                return

    def _window(self, sub_id: int, sub: _Sub) -> bool:
        me = self.actor_ref

        def wake() -> None:
            sub.waiting = False
            with contextlib.suppress(pykka.ActorDeadError):
                me.tell(_Pump(sub_id))

        if sub.reply.wait_window(wake):
            return True
        sub.waiting = True
        return False

    def _after(self, position: int, run: int) -> list[LoggedEvent] | None:
        """Up to ``run`` events from ``position + 1`` on, or None if they were trimmed."""
        recent = self._recent
        if recent and recent[0].seq <= position + 1:
            start = position + 1 - recent[0].seq
            return list(itertools.islice(recent, start, start + run))
        with self.store.read() as txn:
            if position + 1 < self.store.log.oldest(txn):
                return None
            return [
                decode_event(seq, packed)
                for seq, packed in itertools.islice(
                    self.store.log.read(txn, position, self._latest), run
                )
            ]

    def _send_batch(self, sub: _Sub, events: list[LoggedEvent]) -> int:
        """One Subscribe frame from ``events``; how many were examined."""
        matched: list[bytes] = []
        size = 0
        examined = 0
        flt = sub.filter
        for event in events:
            examined += 1
            sub.position = event.seq
            if flt.is_empty or flt.match(event.field):
                matched.append(event.packed)
                size += len(event.packed)
                if len(matched) >= FRAME_EVENTS or size >= _FRAME_BYTES:
                    break
        if matched:
            self._frame(sub, matched)
        return examined

    def _frame(self, sub: _Sub, packed_events: list[bytes]) -> None:
        n = len(packed_events)
        header = bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
        sub.reply.more_packed(
            b"\x82" + _EVENTS + header + b"".join(packed_events) + _SEQ + pack(sub.position)
        )
        sub.last_frame = time.monotonic()

    def _send_tasks(self, sub_id: int, sub: _Sub, events: list[LoggedEvent]) -> int:
        """Legacy frames, one per matching task event, while the window lasts."""
        examined = 0
        for event in events:
            # containerd's task topics only: supervision's own (/tasks/restarted...)
            # have other payloads and are Events/Subscribe's.
            if event.namespace == sub.task_ns and event.topic in _LEGACY_TOPICS:
                if not self._window(sub_id, sub):
                    break
                sub.reply.more_packed(_task_event(event))
            sub.position = event.seq
            examined += 1
        return examined

    def _progress(self) -> None:
        now = time.monotonic()
        for sub_id, sub in list(self._subs.items()):
            if sub.reply.cancelled or sub.reply.done:
                self._forget(sub_id)
                continue
            if sub.task_ns is not None or sub.waiting or sub.pumping:
                continue
            if now - sub.last_frame >= PROGRESS_SECONDS and sub.reply.window > 0:
                self._frame(sub, [])
