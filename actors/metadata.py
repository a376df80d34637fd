"""The metadata actor: the only writer of the LMDB store, with group commit.

Writes arrive as messages carrying their :class:`~wire.reply.Reply`. The
actor takes a write, and while more are already waiting in its mailbox it
keeps taking them (up to :data:`MAX_BATCH`); then it applies the batch in
one durable transaction, each write in a child transaction of its own so
a refused write (``ALREADY_EXISTS``, ``NOT_FOUND``, ...) leaves nothing,
commits once, and only then answers each writer. One fsync serves the
whole batch, so throughput grows with the number of concurrent writers
while every acknowledgement still means "on disk".

Reads do not come here: they use read transactions of the store directly.

Every write may log events (:mod:`actors.event_log`) in its child
transaction; a refused write gives its seqs back. After the commit the
batch's events go to ``on_events`` (the event bus) before any writer is
answered, so a client that sees its reply and then subscribes "from now"
never finds its own event missing from the log.

Services other than Containers and Tasks write through :class:`Transact`,
which carries a function of the transaction (their record rules live in
their own modules, e.g. :mod:`actors.snapshot_records`). A write that
released files (a snapshot's directory, a blob) asks for a sweep, which
``on_release`` starts after the commit: records go first, files after, so
a crash in between leaves only files that no record names, which the next
sweep removes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lmdb
import pykka

from actors.container_records import (
    create_container,
    delete_container,
    put_task,
    update_container,
)
from actors.event_log import TASK_TOPICS, LoggedEvent, task_payload
from actors.store import Store, ns_key
from actors.supervision import Directory, SupervisedActor
from wire.codec import now, pack
from wire.errors import BerthError, Internal, ResourceExhausted, Unavailable
from wire.reply import Reply

__all__ = [
    "MAX_BATCH",
    "CreateContainer",
    "DeleteContainer",
    "DeleteTask",
    "LogTaskEvent",
    "MetadataActor",
    "PutTask",
    "TaskEvent",
    "Transact",
    "TrimEvents",
    "UpdateContainer",
    "transact",
]

log = logging.getLogger(__name__)

MAX_BATCH = 512
CONTAINER_BODY = b"\x81" + pack("container")  # {"container": <record>} around a packed record
EMPTY_BODY = pack({})
_MORE_TO_TRIM = pack({"more": True})  # a TrimEvents that left events past retention


# Called in the metadata actor's thread after the commit, with the write's
# result: the packed reply body, or the exception that refused it.
Done = Callable[[bytes | BaseException], None]


@dataclass(frozen=True, slots=True)
class CreateContainer:
    """Store a new container (validated); reply ``{"container": ...}``."""

    ns: str
    container: dict[str, Any]
    reply: Reply
    done: Done | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class UpdateContainer:
    """Update a container under a checked field mask; reply ``{"container": ...}``."""

    ns: str
    container: dict[str, Any]
    paths: list[str]
    reply: Reply
    done: Done | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class DeleteContainer:
    """Delete a container that has no task; reply ``{}``."""

    ns: str
    id: str
    reply: Reply
    done: Done | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """A task event to log: ``type`` is a key of :data:`~actors.event_log.TASK_TOPICS`."""

    type: str
    pid: int = 0
    exit_status: int = 0
    exited_at_ns: int = 0


@dataclass(frozen=True, slots=True)
class PutTask:
    """Record a task (``create``: the container must exist and have no task), logging ``event``."""

    ns: str
    container_id: str
    record: dict[str, Any]
    create: bool
    done: Done | None = field(default=None, compare=False)
    reply: Reply | None = field(default=None, compare=False)
    event: TaskEvent | None = None


@dataclass(frozen=True, slots=True)
class DeleteTask:
    """Forget a task's record, logging ``event``."""

    ns: str
    container_id: str
    done: Done | None = field(default=None, compare=False)
    reply: Reply | None = field(default=None, compare=False)
    event: TaskEvent | None = None


@dataclass(frozen=True, slots=True)
class LogTaskEvent:
    """Log a task event that changes no record (an exec's start or exit, an OOM)."""

    ns: str
    container_id: str
    event: TaskEvent
    done: Done | None = field(default=None, compare=False)
    reply: Reply | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class TrimEvents:
    """Delete events past retention, a bounded number per commit."""

    keep_count: int
    keep_seconds: float
    limit: int = 10_000
    done: Done | None = field(default=None, compare=False)
    reply: Reply | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Transact:
    """Any other write: ``apply(txn, store, stamp)`` returns the packed reply body.

    ``releases``: the write may leave files without records; sweep after the commit.
    """

    apply: Callable[[lmdb.Transaction, Store, Any], bytes]
    reply: Reply | None = field(default=None, compare=False)
    done: Done | None = field(default=None, compare=False)
    releases: bool = False


Write = (
    CreateContainer
    | UpdateContainer
    | DeleteContainer
    | PutTask
    | DeleteTask
    | LogTaskEvent
    | TrimEvents
    | Transact
)
_WRITES = (
    CreateContainer,
    UpdateContainer,
    DeleteContainer,
    PutTask,
    DeleteTask,
    LogTaskEvent,
    TrimEvents,
    Transact,
)


_FACTS = ("EXIT", "OOM")


def _is_fact(write: Any) -> bool:
    """An exit or OOM a shim reported: nothing waits for it, and it is durable in the shim."""
    return (
        isinstance(write, PutTask | LogTaskEvent)
        and write.event is not None
        and write.event.type in _FACTS
        and write.reply is None
        and write.done is None
        and not (isinstance(write, PutTask) and write.create)
    )


def transact(
    directory: Directory,
    apply: Callable[[lmdb.Transaction, Store, Any], bytes],
    *,
    releases: bool = False,
    timeout: float = 300.0,
) -> bytes:
    """Run ``apply`` in the metadata actor's next commit and wait for it: the body, or raise.

    For other actors' threads. Safe because the metadata actor never asks
    anyone back; never call it from the metadata actor itself.
    """
    finished = threading.Event()
    outcome: list[bytes | BaseException] = []

    def done(result: bytes | BaseException) -> None:
        outcome.append(result)
        finished.set()

    directory.tell("metadata", Transact(apply, done=done, releases=releases))
    if not finished.wait(timeout):
        raise Unavailable("metadata store: no answer in time; the write may still happen")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


class MetadataActor(SupervisedActor):
    """Owns every write to the store; commits in batches, answers after the commit."""

    name = "metadata"

    def __init__(
        self,
        supervisor: pykka.ActorRef[Any] | None,
        store: Store,
        on_release: Callable[[], None] | None = None,
        on_events: Callable[[list[LoggedEvent]], None] | None = None,
        on_trim: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(supervisor)
        self.store = store
        self.on_release = on_release
        self.on_events = on_events
        self.on_trim = on_trim  # told the highest seq trimmed, after a trim's commit
        self._released = False
        self._batch: list[Write] = []
        self._facts = False  # the batch holds only exits and OOMs from shims
        # Writes whose events were delivered but whose commit failed: applied
        # again, with their first stamps, ahead of the next batch (same seqs).
        self._unlogged: list[tuple[Write, Any]] = []
        self.commits = 0  # for tests and stats: how many durable transactions so far

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, _WRITES):
            log.warning("metadata actor: unexpected message %r", message)
            return None
        fact = _is_fact(message)
        if self._batch and fact != self._facts:
            self._commit()  # exits are delivered before their commit: keep them apart
        self._facts = fact
        self._batch.append(message)
        # Group commit: while writers are queued behind this one, take them
        # too; commit when the mailbox is empty or the batch is full.
        if len(self._batch) >= MAX_BATCH or self.actor_inbox.empty():
            self._commit()
        return None

    def on_stop(self) -> None:
        # A stop request queues behind the writes already sent: commit them.
        if self._batch:
            self._commit()

    def pending_replies(self) -> list[Reply]:
        return [w.reply for w in self._batch if w.reply is not None]

    def _commit(self) -> None:
        batch = self._batch
        results: list[bytes | BaseException] = []
        stamp = now()
        unlogged = self._unlogged
        delivered = False
        try:
            with self.store.env.begin(write=True) as txn:
                for write, first_stamp in unlogged:
                    self._apply(txn, write, first_stamp)
                for write in batch:
                    results.append(self._apply(txn, write, stamp))
                if self._facts:
                    delivered = self._deliver_early(unlogged, batch)
        except lmdb.MapFullError as exc:
            log.error("metadata store full; %d writes refused", len(batch))
            results = [ResourceExhausted(f"metadata store is full: {exc}")] * len(batch)
            self._failed(batch, stamp, delivered)
        except lmdb.Error as exc:
            log.error("metadata commit failed; %d writes refused: %s", len(batch), exc)
            results = [Unavailable(f"metadata store: commit failed: {exc}")] * len(batch)
            self._failed(batch, stamp, delivered)
        else:
            if unlogged or delivered:
                self._unlogged = []
                self._clear_journal()
        self._batch = []
        self.commits += 1
        events = self.store.log.committed()
        if events and self.on_events is not None:
            try:
                self.on_events(events)
            except Exception:
                log.exception("metadata: handing %d events to the bus failed", len(events))
        trims = [w for w in batch if isinstance(w, TrimEvents)]
        if trims and any(isinstance(r, bytes) and r == _MORE_TO_TRIM for r in results):
            self.actor_ref.tell(trims[0])  # the rest of the trim, behind the writers waiting
        if trims and self.on_trim is not None:
            try:
                with self.store.read() as txn:
                    self.on_trim(self.store.log.trimmed(txn))
            except Exception:
                log.exception("metadata: telling the bus of a trim failed")
        if self._released:
            self._released = False
            if self.on_release is not None:
                try:
                    self.on_release()
                except Exception:
                    log.exception("metadata: starting a sweep failed")
        for write, result in zip(batch, results, strict=True):
            if write.reply is not None:
                if isinstance(result, BaseException):
                    write.reply.fail(result)
                else:
                    write.reply.ok_packed(result)
            if write.done is not None:
                try:
                    write.done(result)
                except Exception:
                    log.exception("metadata: completion of %s failed", type(write).__name__)

    def _deliver_early(self, unlogged: list[tuple[Write, Any]], batch: list[Write]) -> bool:
        """Journal the batch's events and task records, then hand the events to the bus.

        Before the commit, so no fsync lies between an exit and its event;
        a daemon killed before the commit lands recovers the journal with
        the same seqs (:meth:`actors.event_log.EventLog.recover`).
        """
        events = self.store.log.pending()
        if not events or self.on_events is None:
            return False
        writes = [w for w, _ in unlogged] + batch
        entry = {
            "tasks": [
                [ns_key(w.ns, w.container_id), pack(w.record)]
                for w in writes
                if isinstance(w, PutTask)
            ],
            "events": [[e.seq, e.packed] for e in events],
        }
        try:
            self.store.journal.append(pack(entry))
        except OSError as exc:
            log.warning("metadata: journal write failed (%s); exits wait for the commit", exc)
            return False
        try:
            self.on_events(events)
        except Exception:
            log.exception("metadata: handing %d events to the bus failed", len(events))
        return True

    def _failed(self, batch: list[Write], stamp: Any, delivered: bool) -> None:
        """The commit failed: its seqs are free again, except those already delivered."""
        self.store.log.abort()
        if delivered:
            self._unlogged = self._unlogged + [(w, stamp) for w in batch]
            log.error(
                "metadata: %d delivered events not yet committed; retried with the next write",
                len(self._unlogged),
            )

    def _clear_journal(self) -> None:
        try:
            self.store.journal.clear()
        except OSError as exc:
            log.warning("metadata: journal not cleared: %s", exc)

    def _log_task(
        self, txn: lmdb.Transaction, ns: str, cid: str, event: TaskEvent | None, stamp: Any
    ) -> None:
        if event is not None:
            payload = task_payload(
                cid, event.pid, event.exit_status, event.exited_at_ns, event.type
            )
            # The batch's stamp, so an event applied again after a failed
            # commit is the same bytes its subscribers saw.
            self.store.log.append(txn, ns, TASK_TOPICS[event.type], cid, payload, stamp)

    def _apply(self, txn: lmdb.Transaction, write: Write, stamp: Any) -> bytes | BaseException:
        child = self.store.env.begin(write=True, parent=txn)
        mark = self.store.log.mark()
        released = False
        try:
            if isinstance(write, CreateContainer):
                body = CONTAINER_BODY + create_container(
                    child, self.store, write.ns, write.container, stamp
                )
            elif isinstance(write, UpdateContainer):
                record, released = update_container(
                    child, self.store, write.ns, write.container, write.paths, stamp
                )
                body = CONTAINER_BODY + record
            elif isinstance(write, DeleteContainer):
                released = delete_container(child, self.store, write.ns, write.id)
                body = EMPTY_BODY
            elif isinstance(write, Transact):
                body = write.apply(child, self.store, stamp)
                released = write.releases
            elif isinstance(write, PutTask):
                put_task(
                    child, self.store, write.ns, write.container_id, write.record, write.create
                )
                self._log_task(child, write.ns, write.container_id, write.event, stamp)
                body = EMPTY_BODY
            elif isinstance(write, DeleteTask):
                child.delete(ns_key(write.ns, write.container_id), db=self.store.tasks)
                self._log_task(child, write.ns, write.container_id, write.event, stamp)
                body = EMPTY_BODY
            elif isinstance(write, LogTaskEvent):
                self._log_task(child, write.ns, write.container_id, write.event, stamp)
                body = EMPTY_BODY
            else:
                _, more = self.store.log.trim(
                    child, write.keep_count, write.keep_seconds, write.limit
                )
                body = _MORE_TO_TRIM if more else EMPTY_BODY
        except BerthError as exc:
            child.abort()
            self.store.log.rollback(mark)
            return exc
        except lmdb.MapFullError:
            child.abort()
            self.store.log.rollback(mark)
            raise
        except Exception as exc:
            child.abort()
            self.store.log.rollback(mark)
            log.exception("metadata write %s failed", type(write).__name__)
            return Internal(f"{type(write).__name__}: internal error ({type(exc).__name__})")
        child.commit()
        self._released = self._released or released
        return body
