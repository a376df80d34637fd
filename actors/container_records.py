"""Container records: the rules of Create, Update and Delete, inside a transaction.

These functions run in the metadata actor's write transaction (each call
in a child transaction of the batch, so a refused call leaves nothing
behind). They take already-validated request values: the handler checked
types, identifiers, labels and mask paths before anything was looked up.
"""

from __future__ import annotations

from typing import Any

import lmdb
import msgpack

from actors.namespace_records import note_namespace
from actors.restart_policy import check_labels
from actors.restart_records import delete_restart
from actors.snapshot_records import release_snapshot
from actors.store import Store, ns_key, snapref_key
from wire.codec import pack, unpack
from wire.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from wire.fieldmask import apply_container_mask

__all__ = [
    "DEFAULT_RUNTIME",
    "create_container",
    "delete_container",
    "get_container_raw",
    "put_task",
    "update_container",
]

DEFAULT_RUNTIME = "linux"


def _log(
    txn: lmdb.Transaction, store: Store, ns: str, topic: str, container: dict[str, Any]
) -> None:
    # The stored fields without the spec: an event is a notice, not a copy.
    payload = {
        "id": container["id"],
        "image": container["image"],
        "runtime": container["runtime"] or DEFAULT_RUNTIME,
        "rootfs": container["rootfs"],
        "labels": container["labels"],
    }
    store.log.append(txn, ns, topic, container["id"], payload)


def _record(container: dict[str, Any], created_at: Any, updated_at: Any) -> bytes:
    if container["spec"] is None:
        raise InvalidArgument(f'container "{container["id"]}": spec must be set')
    try:
        # Restart and health labels are the supervision's config: refused here, not at an exit.
        check_labels(container["labels"] or {})
    except InvalidArgument as exc:
        raise InvalidArgument(f'container "{container["id"]}": {exc}') from None
    spec = container["spec"]
    # Field order is part of the stored format: the wire Container, as is.
    return pack(
        {
            "id": container["id"],
            "labels": container["labels"],
            "image": container["image"],
            "runtime": container["runtime"] or DEFAULT_RUNTIME,
            "spec": {"type_url": spec["type_url"], "value": spec["value"]},
            "rootfs": container["rootfs"],
            "created_at": created_at,
            "updated_at": updated_at,
        }
    )


def create_container(
    txn: lmdb.Transaction, store: Store, ns: str, container: dict[str, Any], now: msgpack.Timestamp
) -> bytes:
    """Store a new container; returns its packed record."""
    record = _record(container, now, now)
    note_namespace(txn, store, ns, now)  # the first write into a namespace creates it
    if not txn.put(ns_key(ns, container["id"]), record, db=store.containers, overwrite=False):
        raise AlreadyExists(f'container "{container["id"]}": already exists')
    if container["rootfs"]:
        txn.put(snapref_key(ns, container["rootfs"], container["id"]), b"", db=store.snaprefs)
    _log(txn, store, ns, "/containers/create", container)
    return record


def update_container(
    txn: lmdb.Transaction,
    store: Store,
    ns: str,
    container: dict[str, Any],
    paths: list[str],
    now: msgpack.Timestamp,
) -> tuple[bytes, bool]:
    """Apply an update under a field mask: the new packed record, and whether a snapshot went."""
    key = ns_key(ns, container["id"])
    raw = txn.get(key, db=store.containers)
    if raw is None:
        raise NotFound(f'container "{container["id"]}": not found')
    current = unpack(bytes(raw))
    merged = apply_container_mask(current, container, paths)
    record = _record(merged, current["created_at"], now)
    txn.put(key, record, db=store.containers)
    _log(txn, store, ns, "/containers/update", merged)
    released = False
    if merged["rootfs"] != current["rootfs"]:
        released = _unref(txn, store, ns, current)
        if merged["rootfs"]:
            txn.put(snapref_key(ns, merged["rootfs"], merged["id"]), b"", db=store.snaprefs)
    return record, released


def _unref(txn: lmdb.Transaction, store: Store, ns: str, container: dict[str, Any]) -> bool:
    """Drop ``container``'s reference to its rootfs and release the snapshot if unused."""
    if not container["rootfs"]:
        return False
    txn.delete(snapref_key(ns, container["rootfs"], container["id"]), db=store.snaprefs)
    return release_snapshot(txn, store, ns, container["rootfs"])


def delete_container(txn: lmdb.Transaction, store: Store, ns: str, container_id: str) -> bool:
    """Delete a container that has no task; True if it released its rootfs snapshot.

    A released snapshot's record goes in this transaction, its directory
    after the commit (see :mod:`actors.gc`).
    """
    key = ns_key(ns, container_id)
    if txn.get(key, db=store.tasks) is not None:
        raise FailedPrecondition(f'container "{container_id}": has a task; delete the task first')
    raw = txn.pop(key, db=store.containers)
    if raw is None:
        raise NotFound(f'container "{container_id}": not found')
    store.log.append(txn, ns, "/containers/delete", container_id, {"id": container_id})
    delete_restart(txn, store, ns, container_id)  # a pending restart dies with its container
    return _unref(txn, store, ns, unpack(bytes(raw)))


def put_task(
    txn: lmdb.Transaction,
    store: Store,
    ns: str,
    container_id: str,
    record: dict[str, Any],
    create: bool,
) -> None:
    """Record a task; a new one needs its container and no other task."""
    key = ns_key(ns, container_id)
    if create:
        if txn.get(key, db=store.containers) is None:
            raise NotFound(f'container "{container_id}": not found')
        if txn.get(key, db=store.tasks) is not None:
            raise AlreadyExists(f'container "{container_id}": already has a task')
    txn.put(key, pack(record), db=store.tasks)


def get_container_raw(txn: lmdb.Transaction, store: Store, ns: str, container_id: str) -> bytes:
    """The packed record of a container, or NotFound."""
    raw = txn.get(ns_key(ns, container_id), db=store.containers)
    if raw is None:
        raise NotFound(f'container "{container_id}": not found')
    return bytes(raw)
