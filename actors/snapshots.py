"""The snapshot actor: Prepare, View, Commit, Remove and Usage, one at a time.

It owns the snapshotter's directory work (a native Prepare copies a whole
tree), so that work never runs in the front end's thread or stalls the
metadata actor's group commits. Each operation does its file work and its
record write in the order that keeps a crash harmless (see
:mod:`actors.leases` and :mod:`actors.gc`): a new directory is leased before
it is made and recorded before the lease ends; a removed snapshot loses its
record first and its directory after.

Stat, List and Mounts read records only and are answered by the service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lmdb
import pykka

from actors.metadata import transact
from actors.snapshot_records import (
    ACTIVE,
    add_snapshot,
    commit_snapshot,
    get_snapshot,
    parent_ids,
    remove_snapshot,
)
from actors.storage import Storage
from actors.store import Store, ns_key
from actors.supervision import SupervisedActor
from wire.codec import pack
from wire.errors import AlreadyExists, FailedPrecondition
from wire.reply import Reply

__all__ = [
    "CommitSnapshot",
    "PrepareSnapshot",
    "RemoveSnapshot",
    "SnapshotActor",
    "SnapshotUsage",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PrepareSnapshot:
    """Prepare (or, ``readonly``, View) ``key`` on ``parent``; reply ``{"mounts": [...]}``."""

    ns: str
    key: str
    parent: str
    labels: dict[str, str]
    readonly: bool
    reply: Reply


@dataclass(frozen=True, slots=True)
class CommitSnapshot:
    """Commit active ``key`` as ``name``; reply ``{}``."""

    ns: str
    name: str
    key: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class RemoveSnapshot:
    """Remove ``key``; reply ``{}``."""

    ns: str
    key: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class SnapshotUsage:
    """Reply ``{"size", "inodes"}`` of ``key``'s own tree."""

    ns: str
    key: str
    reply: Reply


class SnapshotActor(SupervisedActor):
    """Serializes the snapshotter's work and records it through the metadata actor."""

    name = "snapshots"

    def __init__(self, supervisor: pykka.ActorRef[Any] | None, storage: Storage) -> None:
        super().__init__(supervisor)
        self.store = storage.store
        self.directory = storage.directory
        self.snapshotter = storage.snapshotter
        self.ids = storage.ids
        self.leases = storage.leases
        self._current: Reply | None = None
        self._later: list[Callable[[], None]] = []

    def pending_replies(self) -> list[Reply]:
        return [self._current] if self._current is not None else []

    def on_receive(self, message: Any) -> Any:
        handlers: dict[type, Callable[[Any], dict[str, Any]]] = {
            PrepareSnapshot: self._prepare,
            CommitSnapshot: self._commit,
            RemoveSnapshot: self._remove,
            SnapshotUsage: self._usage,
        }
        handler = handlers.get(type(message))
        if handler is None:
            log.warning("snapshots: unexpected message %r", message)
            return None
        reply: Reply = message.reply
        self._current = reply
        try:
            reply.ok(handler(message))
        except Exception as exc:
            reply.fail(exc)
        finally:
            self._current = None
        # File work the answer need not wait for (see _remove).
        later, self._later = self._later, []
        for work in later:
            work()
        return None

    def _prepare(self, msg: PrepareSnapshot) -> dict[str, Any]:
        with self.store.read() as txn:
            if txn.get(ns_key(msg.ns, msg.key), db=self.store.snapshots) is not None:
                raise AlreadyExists(f'snapshot "{msg.key}": already exists')
            parents: list[str] = []
            if msg.parent:
                parent = get_snapshot(txn, self.store, msg.ns, msg.parent)
                parents = [parent["id"], *parent_ids(txn, self.store, msg.ns, parent)]
        id = self.ids.take()
        record = {
            "key": msg.key,
            "id": id,
            "kind": ACTIVE,
            "readonly": msg.readonly,
            "parent": msg.parent,
            "labels": msg.labels,
        }
        with self.leases.hold() as lease:
            lease.snapshot(id)
            self.snapshotter.prepare(id, parents, readonly=msg.readonly)
            try:
                transact(
                    self.directory,
                    lambda txn, store, stamp: add_snapshot(txn, store, msg.ns, record, stamp),
                )
            except BaseException:
                self.snapshotter.remove(id)
                raise
        log.debug("snapshot %s/%s prepared (id %s)", msg.ns, msg.key, id)
        return {"mounts": self.snapshotter.mounts(id, parents, msg.readonly)}

    def _commit(self, msg: CommitSnapshot) -> dict[str, Any]:
        with self.store.read() as txn:
            record = get_snapshot(txn, self.store, msg.ns, msg.key)
        if record["kind"] == ACTIVE and not record["readonly"]:
            self.snapshotter.commit(record["id"])  # data durable before the record says so

        def apply(txn: lmdb.Transaction, store: Store, stamp: Any) -> bytes:
            commit_snapshot(txn, store, msg.ns, msg.name, msg.key, stamp)
            return pack({})

        transact(self.directory, apply)
        return {}

    def _remove(self, msg: RemoveSnapshot) -> dict[str, Any]:
        with self.store.read() as txn:
            record = get_snapshot(txn, self.store, msg.ns, msg.key)
        user = self.snapshotter.in_use(record["id"])
        if user is not None:
            raise FailedPrecondition(f'snapshot "{msg.key}": in use ({user})')

        def apply(txn: lmdb.Transaction, store: Store, stamp: Any) -> bytes:
            remove_snapshot(txn, store, msg.ns, msg.key)
            return pack({})

        transact(self.directory, apply)

        def remove_directory() -> None:
            try:
                self.snapshotter.remove(record["id"])
            except Exception as exc:  # no record names it now: the next sweep retries
                log.warning("snapshot %s/%s: left for the sweep: %s", msg.ns, msg.key, exc)

        # Answered once the record is gone, as containerd does (its collector
        # removes the files); here the directory goes right after the answer.
        self._later.append(remove_directory)
        return {}

    def _usage(self, msg: SnapshotUsage) -> dict[str, Any]:
        with self.store.read() as txn:
            record = get_snapshot(txn, self.store, msg.ns, msg.key)
        size, inodes = self.snapshotter.usage(record["id"])
        return {"size": size, "inodes": inodes}
