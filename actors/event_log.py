"""The event log: every event, numbered without gaps, in the metadata store.

Layout (sub-database ``events`` of the store)::

    events   <seq: 8 bytes big-endian>  -> msgpack Event record (below)
    counters b"events.trimmed"          -> b"<int>"   the highest seq ever trimmed

An Event record is the map ``Events/Subscribe`` sends, packed once here::

    {"seq", "timestamp", "namespace", "topic", "id", "type", "payload"}

Seqs are given by :meth:`EventLog.append`, which runs only in the metadata
actor's write transaction (the records' rules call it next to the change
they log), so an event and its change commit together or not at all. The
next seq lives in memory: a write refused in its child transaction gives
its seqs back (:meth:`EventLog.rollback`), a batch whose commit fails gives
back all of its own (:meth:`EventLog.abort`), so the committed log never
has a gap. After a restart numbering continues from the last logged seq,
or from the trimmed mark when retention emptied the log.

Exits (and OOMs) reported by shims are delivered before their commit is
on disk, so logging adds no fsync to the exit path: the metadata actor
first appends the batch (its events and task records, exactly as they
will be committed) to the store's journal (:mod:`runtime.journal`, one
unsynced write), hands the events to the bus, then commits. A daemon
killed in between finds the batch in the journal when it opens the store
and commits it under the same seqs (:meth:`EventLog.recover`), so an
event a subscriber saw is in the log as it saw it. The shim's own exit
file is the durable record of the exit: after a power loss that took the
journal too, the exit is found again at start-up and logged afresh.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import lmdb
import msgpack

from wire.codec import pack, timestamp_or_nil, unpack

if TYPE_CHECKING:
    from actors.store import Store

__all__ = [
    "TASK_TOPICS",
    "TRIMMED_KEY",
    "EventLog",
    "LoggedEvent",
    "event_type",
    "seq_key",
    "task_payload",
]

TRIMMED_KEY = b"events.trimmed"
_SEQ = struct.Struct(">Q")

# containerd's task topics, by berth's Event type (the wire's Tasks/Events names).
TASK_TOPICS = {
    "CREATE": "/tasks/create",
    "START": "/tasks/start",
    "EXIT": "/tasks/exit",
    "OOM": "/tasks/oom",
    "EXEC_ADDED": "/tasks/exec-added",
    "PAUSED": "/tasks/paused",
    "RESUMED": "/tasks/resumed",
    "DELETE": "/tasks/delete",
}
_TYPES = {topic: kind for kind, topic in TASK_TOPICS.items()}


def event_type(topic: str) -> str:
    """The short ``type`` of a topic: ``/tasks/exec-added`` -> ``EXEC_ADDED``."""
    kind = _TYPES.get(topic)
    if kind is not None:
        return kind
    return topic.rsplit("/", 1)[-1].replace("-", "_").upper()


def seq_key(seq: int) -> bytes:
    """The ``events`` key of ``seq`` (big-endian, so keys sort by seq)."""
    return _SEQ.pack(seq)


def task_payload(
    container_id: str, pid: int, exit_status: int, exited_at_ns: int, kind: str
) -> dict[str, Any]:
    """The payload every task topic carries."""
    return {
        "container_id": container_id,
        "pid": pid,
        "exit_status": exit_status,
        "exited_at": timestamp_or_nil(exited_at_ns)
        if kind in ("EXIT", "DELETE") and exited_at_ns
        else None,
    }


class LoggedEvent:
    """One event as committed: its seq, its packed record, and what filters look at.

    An event read back from the store decodes its record only when a
    filter (or the legacy stream) first asks for a field: an unfiltered
    replay sends the stored bytes as they are.
    """

    __slots__ = ("_fields", "packed", "seq")

    def __init__(
        self, seq: int, packed: bytes, fields: tuple[str, str, str, str] | None = None
    ) -> None:
        self.seq = seq
        self.packed = packed
        self._fields = fields  # (namespace, topic, id, type)

    def _decoded(self) -> tuple[str, str, str, str]:
        if self._fields is None:
            record = unpack(self.packed)
            self._fields = (record["namespace"], record["topic"], record["id"], record["type"])
        return self._fields

    @property
    def namespace(self) -> str:
        """The object's namespace."""
        return self._decoded()[0]

    @property
    def topic(self) -> str:
        """containerd's topic string."""
        return self._decoded()[1]

    @property
    def id(self) -> str:
        """The object's id (container id, image name, snapshot key...)."""
        return self._decoded()[2]

    @property
    def type(self) -> str:
        """The short type (``CREATE``, ``EXIT``...)."""
        return self._decoded()[3]

    def field(self, path: tuple[str, ...]) -> str | None:
        """The filter lookup: ``topic``, ``namespace``, ``id``, ``type``; else absent."""
        if len(path) != 1:
            return None
        index = _FIELD_INDEX.get(path[0])
        if index is None:
            return None
        return self._decoded()[index] or None


_FIELD_INDEX = {"namespace": 0, "topic": 1, "id": 2, "type": 3}


def decode_event(seq: int, packed: bytes) -> LoggedEvent:
    """A :class:`LoggedEvent` from a stored record (decoded on demand)."""
    return LoggedEvent(seq, packed)


class EventLog:
    """Appends to, reads and trims the log; :meth:`append` from the metadata actor only."""

    def __init__(self, store: Store) -> None:
        self.store = store
        with store.env.begin() as txn:
            last = self._last_logged(txn)
            trimmed = self.trimmed(txn)
        self.next_seq = max(last, trimmed) + 1
        self._batch_start = self.next_seq
        self._pending: list[LoggedEvent] = []

    # writing (metadata actor)

    def append(
        self,
        txn: lmdb.Transaction,
        ns: str,
        topic: str,
        object_id: str,
        payload: dict[str, Any],
        stamp: msgpack.Timestamp | None = None,
    ) -> int:
        """Log one event in ``txn``; its seq."""
        seq = self.next_seq
        kind = event_type(topic)
        packed = pack(
            {
                "seq": seq,
                "timestamp": timestamp_or_nil(time.time_ns()) if stamp is None else stamp,
                "namespace": ns,
                "topic": topic,
                "id": object_id,
                "type": kind,
                "payload": payload,
            }
        )
        txn.put(seq_key(seq), packed, db=self.store.events, append=True)
        self.next_seq = seq + 1
        self._pending.append(LoggedEvent(seq, packed, (ns, topic, object_id, kind)))
        return seq

    def pending(self) -> list[LoggedEvent]:
        """The events of the batch so far, not yet committed."""
        return list(self._pending)

    def recover(self, entries: list[dict[str, Any]]) -> int:
        """Commit journal ``entries`` a killed daemon delivered but did not commit; how many.

        Each entry is ``{"tasks": [[task key, packed record]], "events":
        [[seq, packed event]]}``; one whose first seq is below the next seq was
        committed after all, and one past it cannot follow the log (the log
        lost a commit the journal kept: only a power loss does that) and is
        left to the start-up reconcile, which finds those exits again.
        """
        recovered = 0
        with self.store.env.begin(write=True) as txn:
            for entry in entries:
                # A retried batch's entry repeats the failed one's events first.
                events = [(seq, packed) for seq, packed in entry["events"] if seq >= self.next_seq]
                if not events or events[0][0] != self.next_seq:
                    continue
                for key, record in entry["tasks"]:
                    txn.put(key, record, db=self.store.tasks)
                for seq, packed in events:
                    txn.put(seq_key(seq), packed, db=self.store.events, append=True)
                self.next_seq = events[-1][0] + 1
                recovered += len(events)
        self._batch_start = self.next_seq
        return recovered

    def mark(self) -> int:
        """Where a child transaction starts, for :meth:`rollback`."""
        return len(self._pending)

    def rollback(self, mark: int) -> None:
        """The child transaction since ``mark`` aborted: its seqs are free again."""
        if len(self._pending) > mark:
            self.next_seq = self._pending[mark].seq
            del self._pending[mark:]

    def abort(self) -> None:
        """The batch's commit failed: none of its events exist."""
        self.next_seq = self._batch_start
        self._pending.clear()

    def committed(self) -> list[LoggedEvent]:
        """The batch committed: its events, in seq order; a new batch starts."""
        events, self._pending = self._pending, []
        self._batch_start = self.next_seq
        return events

    def trim(
        self, txn: lmdb.Transaction, keep_count: int, keep_seconds: float, limit: int
    ) -> tuple[int, bool]:
        """Delete up to ``limit`` events past retention, oldest first: (deleted, more left)."""
        db = self.store.events
        entries = txn.stat(db)["entries"]
        over = max(0, entries - keep_count)
        cutoff_ns = time.time_ns() - int(keep_seconds * 1e9)
        deleted = 0
        highest = 0
        cursor = txn.cursor(db=db)
        more = False
        cursor.first()
        while True:
            key = cursor.key()
            if not key:
                break  # the end of the log
            if deleted >= limit:
                more = True
                break
            if deleted >= over:
                stamp = unpack(bytes(cursor.value()))["timestamp"]
                if stamp is None or stamp.to_unix_nano() >= cutoff_ns:
                    break
            highest = int(_SEQ.unpack(bytes(key))[0])
            deleted += 1
            cursor.delete()
        if highest:
            txn.put(TRIMMED_KEY, str(highest).encode(), db=self.store.counters)
        return deleted, more

    # reading (any thread)

    def trimmed(self, txn: lmdb.Transaction) -> int:
        """The highest seq trimmed so far (0: none)."""
        raw = txn.get(TRIMMED_KEY, db=self.store.counters)
        return int(raw) if raw is not None else 0

    def _last_logged(self, txn: lmdb.Transaction) -> int:
        cursor = txn.cursor(db=self.store.events)
        if not cursor.last():
            return 0
        return int(_SEQ.unpack(bytes(cursor.key()))[0])

    def latest(self, txn: lmdb.Transaction) -> int:
        """The last seq given as of ``txn`` (0 for a new log)."""
        return max(self._last_logged(txn), self.trimmed(txn))

    def oldest(self, txn: lmdb.Transaction) -> int:
        """The oldest retained seq as of ``txn`` (``latest + 1`` when the log is empty)."""
        cursor = txn.cursor(db=self.store.events)
        if cursor.first():
            return int(_SEQ.unpack(bytes(cursor.key()))[0])
        return self.latest(txn) + 1

    def info(self, txn: lmdb.Transaction) -> dict[str, int]:
        """``{oldest_seq, latest_seq, count, bytes}`` as of ``txn``."""
        stat = txn.stat(self.store.events)
        pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        return {
            "oldest_seq": self.oldest(txn),
            "latest_seq": self.latest(txn),
            "count": stat["entries"],
            "bytes": pages * stat["psize"],
        }

    def read(self, txn: lmdb.Transaction, after: int, upto: int) -> Iterator[tuple[int, bytes]]:
        """``(seq, packed)`` of every retained event with ``after < seq <= upto``, in order."""
        cursor = txn.cursor(db=self.store.events)
        if not cursor.set_range(seq_key(after + 1)):
            return
        for key, value in cursor:
            seq = int(_SEQ.unpack(bytes(key))[0])
            if seq > upto:
                return
            yield seq, bytes(value)
