"""Garbage collection: mark and forget records, then sweep files no record names.

Two steps, in this order, so that a crash anywhere leaves nothing the next
collection would not remove:

1. **Mark** (in the metadata actor's write transaction, so no write
   interleaves): per namespace, the roots are the containers' rootfs
   snapshots, the images (through :mod:`runtime.image_refs`: their blobs and
   the snapshots of their layers), resources labelled
   ``containerd.io/gc.root``, active snapshots younger than the grace
   period, and snapshot directories leased by operations in flight; a
   marked snapshot marks its parent. Unmarked snapshot and content records
   are deleted, in the same transaction.
2. **Sweep**: snapshot directories and blobs that no record names (and no
   lease holds) are removed, as are ingests a crash left behind.

The collector actor runs a full collection on ``Collect`` (``GC/Run``,
image and content deletes, start-up) and a sweep alone on ``Sweep`` (after
a commit that released a container's snapshot).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lmdb
import pykka

from actors.image_records import GC_ROOT_LABEL, list_content, list_images, log_content_delete
from actors.metadata import transact
from actors.snapshot_records import (
    ACTIVE,
    forget_snapshot,
    list_snapshots,
    namespaces,
    recorded_ids,
)
from actors.storage import Storage
from actors.store import Store, ns_key
from actors.supervision import SupervisedActor
from runtime.content import ContentStore
from runtime.image_refs import image_refs
from wire.reply import Reply

__all__ = ["Collect", "Collector", "GarbageReport", "Sweep", "image_using", "mark_and_forget"]

log = logging.getLogger(__name__)

_STALE_INGEST_S = 3600.0  # an ingest not written to for this long was left by a crash


@dataclass(frozen=True, slots=True)
class Collect:
    """Run a full collection; answer ``{snapshots, content}`` when ``reply`` is given."""

    reply: Reply | None = None


@dataclass(frozen=True, slots=True)
class Sweep:
    """Remove the files no record names (sent after a commit that released some).

    ``sent`` lets a burst of them (a container churn) cost one sweep: a
    sweep that started after a Sweep was sent already saw its commit.
    """

    sent: float = field(default_factory=time.monotonic)


@dataclass
class GarbageReport:
    """What one collection removed: snapshot keys (``ns/key``... per wire: keys) and digests."""

    snapshots: list[str]
    content: list[str]


def _timestamp_ns(value: Any) -> int:
    to_ns = getattr(value, "to_unix_nano", None)
    return int(to_ns()) if to_ns is not None else 0


def mark_and_forget(
    txn: lmdb.Transaction,
    store: Store,
    content: ContentStore,
    *,
    grace_ns: int,
    held_snapshots: set[str],
    now_ns: int | None = None,
) -> list[str]:
    """Delete every unreachable snapshot and content record; returns the snapshot keys."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    forgotten: list[str] = []
    for ns in namespaces(txn, store):
        snapshots = {r["key"]: r for r in list_snapshots(txn, store, ns)}
        marked: set[str] = set()
        blobs: set[str] = set()
        roots: list[str] = []
        prefix = f"{ns}\x00".encode()
        for ref, _ in store.scan(txn, store.snaprefs, prefix):
            roots.append(ref[len(prefix) :].split(b"\x00", 1)[0].decode())
        for image in list_images(txn, store, ns):
            target = image["target"]
            refs = image_refs(content, target["digest"], target["media_type"])
            blobs |= refs.blobs
            roots.extend(refs.chain_ids)
        for record in snapshots.values():
            young = now_ns - _timestamp_ns(record["created_at"]) < grace_ns
            if (
                (record["kind"] == ACTIVE and young)
                or GC_ROOT_LABEL in record["labels"]
                or record["id"] in held_snapshots
            ):
                roots.append(record["key"])
        while roots:
            root = roots.pop()
            reached = snapshots.get(root)
            if reached is None or root in marked:
                continue
            marked.add(root)
            if reached["parent"]:
                roots.append(reached["parent"])
        # An unmarked snapshot's children are unmarked too (a marked one
        # marks its parent), so forgetting each with its own index entry
        # leaves no entry under a forgotten parent.
        for key in snapshots.keys() - marked:
            forget_snapshot(txn, store, ns, snapshots[key])
            forgotten.append(key)
        for digest, held in list(list_content(txn, store, ns)):
            if digest not in blobs and GC_ROOT_LABEL not in held["labels"]:
                txn.delete(ns_key(ns, digest), db=store.content)
                log_content_delete(txn, store, ns, digest)
    return sorted(forgotten)


def image_using(
    txn: lmdb.Transaction, store: Store, content: ContentStore, ns: str, digest: str
) -> str | None:
    """The name of an image of ``ns`` that references blob ``digest``, if one does."""
    for image in list_images(txn, store, ns):
        target = image["target"]
        if digest in image_refs(content, target["digest"], target["media_type"]).blobs:
            return str(image["name"])
    return None


class Collector(SupervisedActor):
    """The garbage collector of snapshots and content."""

    name = "gc"

    def __init__(
        self, supervisor: pykka.ActorRef[Any] | None, storage: Storage, grace_seconds: float
    ) -> None:
        super().__init__(supervisor)
        self.store = storage.store
        self.directory = storage.directory
        self.snapshotter = storage.snapshotter
        self.content = storage.content
        self.leases = storage.leases
        self.grace_ns = int(grace_seconds * 1e9)
        self._pending: list[Reply] = []
        self._last_sweep = float("-inf")  # when the last sweep began (monotonic)

    def pending_replies(self) -> list[Reply]:
        return list(self._pending)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Collect):
            if message.reply is not None:
                self._pending.append(message.reply)
            try:
                report = self.collect()
            finally:
                pending, self._pending = self._pending, []
            for reply in pending:
                reply.ok({"snapshots": report.snapshots, "content": report.content})
        elif isinstance(message, Sweep):
            if message.sent >= self._last_sweep:
                self.sweep()
        else:
            log.warning("gc: unexpected message %r", message)
        return None

    def collect(self) -> GarbageReport:
        """Mark and forget records, then sweep; what was removed."""
        forgotten: list[str] = []

        def apply(txn: lmdb.Transaction, store: Store, stamp: Any) -> bytes:
            with self.leases.lock:
                held, _ = self.leases.held()
            forgotten[:] = mark_and_forget(
                txn, store, self.content, grace_ns=self.grace_ns, held_snapshots=held
            )
            return b""

        transact(self.directory, apply)
        keys = list(forgotten)
        blobs = self.sweep()
        if keys or blobs:
            log.info("gc: removed %d snapshot(s) and %d blob(s)", len(keys), len(blobs))
        return GarbageReport(keys, blobs)

    def sweep(self) -> list[str]:
        """Remove snapshot directories and blobs no record names; returns the digests."""
        self._last_sweep = time.monotonic()
        with self.leases.lock:
            held_snapshots, held_blobs = self.leases.held()
            with self.store.read() as txn:
                recorded = recorded_ids(txn, self.store)
                recorded_blobs = {
                    bytes(key).split(b"\x00", 1)[1].decode()
                    for key, _ in txn.cursor(db=self.store.content)
                }
            orphans = self.snapshotter.ids() - recorded - held_snapshots
            dead_blobs = sorted(self.content.digests() - recorded_blobs - held_blobs)
            # Under the lock: an import may be about to find this blob stored.
            removed_blobs = [d for d in dead_blobs if _quietly(self.content.delete, d)]
        for id in sorted(orphans):
            _quietly(self.snapshotter.remove, id)
        self.content.clean_ingests(_STALE_INGEST_S)
        return removed_blobs


def _quietly(remove: Callable[[str], None], what: str) -> bool:
    try:
        remove(what)
    except Exception as exc:  # the next sweep tries again
        log.warning("gc: removing %s failed: %s", what, exc)
        return False
    return True
