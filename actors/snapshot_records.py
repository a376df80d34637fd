"""Snapshot records: the rules of Prepare, View, Commit and Remove, inside a transaction.

A record, at ``snapshots: <ns> 0x00 <key>``::

    {"key": str, "id": str, "kind": "ACTIVE" | "COMMITTED", "readonly": bool,
     "parent": str, "labels": {str: str}, "created_at": Timestamp, "updated_at": Timestamp}

``id`` names the snapshot's directory in the snapshotter (assigned by the
snapshot actor, never the user's key); ``parent`` is the key of a
COMMITTED snapshot of the same namespace, or "". A View is an ACTIVE
snapshot with ``readonly``. Commit moves an ACTIVE snapshot's record to a
new key as COMMITTED, keeping its id (its directory does not move).

Every function here that writes a record keeps ``snapchildren`` (the
parent -> children index, :mod:`actors.store`) in step with it, in the
same transaction: a record with a parent has exactly one entry under it.
The "has children" checks of Commit, Remove and release read that index,
so they look at one entry whatever the number of snapshots.

The functions take validated values and run in the metadata actor's write
transaction, or in any read transaction for the read-only ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lmdb

from actors.namespace_records import note_namespace
from actors.store import Store, ns_key, ns_prefix, snapchild_key, snapref_key
from runtime.snapshot_base import Snapshotter
from wire.codec import pack, unpack
from wire.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

__all__ = [
    "ACTIVE",
    "COMMITTED",
    "MAX_KEY_BYTES",
    "add_snapshot",
    "check_key",
    "children_of",
    "commit_snapshot",
    "first_child",
    "forget_snapshot",
    "get_snapshot",
    "info_of",
    "list_snapshots",
    "namespaces",
    "parent_ids",
    "recorded_ids",
    "release_snapshot",
    "remove_snapshot",
    "snapshot_mounts",
    "users_of",
]

ACTIVE = "ACTIVE"
COMMITTED = "COMMITTED"
MAX_KEY_BYTES = 1024


def check_key(field: str, key: str, *, required: bool = True) -> str:
    """A snapshot key as the wire allows it: any text but NUL, 1..1024 bytes."""
    if not key:
        if required:
            raise InvalidArgument(f"{field}: must be set")
        return key
    if "\x00" in key:
        raise InvalidArgument(f"{field} {key!r}: must not contain NUL")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidArgument(f"{field}: longer than {MAX_KEY_BYTES} bytes")
    return key


def get_snapshot(txn: lmdb.Transaction, store: Store, ns: str, key: str) -> dict[str, Any]:
    """The record of ``key``, or NotFound."""
    raw = txn.get(ns_key(ns, key), db=store.snapshots)
    if raw is None:
        raise NotFound(f'snapshot "{key}": not found')
    record: dict[str, Any] = unpack(bytes(raw))
    return record


def info_of(record: dict[str, Any]) -> dict[str, Any]:
    """The wire ``Info`` of a record."""
    return {
        "name": record["key"],
        "parent": record["parent"],
        "kind": record["kind"],
        "readonly": record["readonly"],
        "labels": record["labels"],
    }


def parent_ids(txn: lmdb.Transaction, store: Store, ns: str, record: dict[str, Any]) -> list[str]:
    """The directory ids of ``record``'s parents, nearest first."""
    ids = []
    parent = record["parent"]
    while parent:
        above = get_snapshot(txn, store, ns, parent)
        ids.append(above["id"])
        parent = above["parent"]
    return ids


def snapshot_mounts(
    txn: lmdb.Transaction, store: Store, snapshotter: Snapshotter, ns: str, key: str
) -> list[dict[str, Any]]:
    """How to mount ``key``: read-only for a view or a committed snapshot."""
    record = get_snapshot(txn, store, ns, key)
    parents = parent_ids(txn, store, ns, record)
    readonly = record["readonly"] or record["kind"] != ACTIVE
    return snapshotter.mounts(record["id"], parents, readonly)


def namespaces(txn: lmdb.Transaction, store: Store) -> list[str]:
    """Every namespace ever written to."""
    return [bytes(key).decode() for key, _ in txn.cursor(db=store.namespaces)]


def recorded_ids(txn: lmdb.Transaction, store: Store) -> set[str]:
    """The directory ids of every snapshot on record, in all namespaces."""
    return {r["id"] for ns in namespaces(txn, store) for r in list_snapshots(txn, store, ns)}


def list_snapshots(txn: lmdb.Transaction, store: Store, ns: str) -> Iterator[dict[str, Any]]:
    """Every snapshot record of the namespace, in key order."""
    for _, raw in store.scan(txn, store.snapshots, ns_prefix(ns)):
        yield unpack(raw)


def children_of(txn: lmdb.Transaction, store: Store, ns: str, key: str) -> list[str]:
    """Keys of the snapshots whose parent is ``key``, in key order."""
    prefix = snapchild_key(ns, key, "")
    return [k[len(prefix) :].decode() for k, _ in store.scan(txn, store.snapchildren, prefix)]


def first_child(txn: lmdb.Transaction, store: Store, ns: str, key: str) -> str | None:
    """The first (in key order) snapshot whose parent is ``key``, or None: one index entry read."""
    prefix = snapchild_key(ns, key, "")
    for k, _ in store.scan(txn, store.snapchildren, prefix):
        return k[len(prefix) :].decode()
    return None


def users_of(txn: lmdb.Transaction, store: Store, ns: str, key: str) -> list[str]:
    """Ids of the containers whose ``rootfs`` is ``key``."""
    prefix = snapref_key(ns, key, "")
    return [k[len(prefix) :].decode() for k, _ in store.scan(txn, store.snaprefs, prefix)]


def _index(txn: lmdb.Transaction, store: Store, ns: str, record: dict[str, Any]) -> None:
    """Enter ``record`` under its parent in ``snapchildren`` (a base snapshot has no entry)."""
    if not record["parent"]:
        return
    key = snapchild_key(ns, record["parent"], record["key"])
    limit = store.env.max_key_size()
    if len(key) > limit:
        # LMDB's own limit; refused here by name rather than as an internal error.
        raise InvalidArgument(
            f'snapshot "{record["key"]}": it and its parent "{record["parent"]}" are too long '
            f"to index ({len(key)} bytes with the namespace, at most {limit})"
        )
    txn.put(key, b"", db=store.snapchildren)


def _unindex(txn: lmdb.Transaction, store: Store, ns: str, record: dict[str, Any]) -> None:
    """Take ``record``'s entry under its parent out of ``snapchildren``."""
    if record["parent"]:
        txn.delete(snapchild_key(ns, record["parent"], record["key"]), db=store.snapchildren)


def forget_snapshot(txn: lmdb.Transaction, store: Store, ns: str, record: dict[str, Any]) -> None:
    """Delete ``record`` and its index entry, checking nothing (for callers that did); logged."""
    txn.delete(ns_key(ns, record["key"]), db=store.snapshots)
    _unindex(txn, store, ns, record)
    store.log.append(txn, ns, "/snapshot/remove", record["key"], {"key": record["key"]})


def add_snapshot(
    txn: lmdb.Transaction,
    store: Store,
    ns: str,
    record: dict[str, Any],
    stamp: Any,
) -> bytes:
    """Store a new ACTIVE (or, for imports, COMMITTED) snapshot; returns its packed record."""
    key = record["key"]
    if txn.get(ns_key(ns, key), db=store.snapshots) is not None:
        raise AlreadyExists(f'snapshot "{key}": already exists')
    if record["parent"]:
        parent = get_snapshot(txn, store, ns, record["parent"])
        if parent["kind"] != COMMITTED:
            raise FailedPrecondition(
                f'snapshot "{key}": parent "{record["parent"]}" is not committed'
            )
    full = {**record, "created_at": stamp, "updated_at": stamp}
    packed = pack(full)
    note_namespace(txn, store, ns, stamp)
    txn.put(ns_key(ns, key), packed, db=store.snapshots)
    _index(txn, store, ns, full)
    if record["kind"] == COMMITTED:
        # An import's layer is recorded committed at once: a commit of itself.
        store.log.append(txn, ns, "/snapshot/commit", key, {"key": key, "name": key})
    else:
        payload = {"key": key, "parent": record["parent"], "readonly": record["readonly"]}
        store.log.append(txn, ns, "/snapshot/prepare", key, payload)
    return packed


def commit_snapshot(
    txn: lmdb.Transaction, store: Store, ns: str, name: str, key: str, stamp: Any
) -> dict[str, Any]:
    """Record ACTIVE ``key`` as COMMITTED ``name`` (same directory); returns the new record."""
    record = get_snapshot(txn, store, ns, key)
    if record["kind"] != ACTIVE or record["readonly"]:
        raise FailedPrecondition(f'snapshot "{key}": only an active, writable snapshot commits')
    if txn.get(ns_key(ns, name), db=store.snapshots) is not None:
        raise AlreadyExists(f'snapshot "{name}": already exists')
    if users := users_of(txn, store, ns, key):
        raise FailedPrecondition(f'snapshot "{key}": used by container "{users[0]}"')
    if (child := first_child(txn, store, ns, key)) is not None:
        raise FailedPrecondition(f'snapshot "{key}": has children ("{child}")')
    committed = {**record, "key": name, "kind": COMMITTED, "updated_at": stamp}
    # ACTIVE -> COMMITTED under a new key: it has no children (refused above),
    # so only its own entry under its parent is renamed.
    txn.delete(ns_key(ns, key), db=store.snapshots)
    _unindex(txn, store, ns, record)
    txn.put(ns_key(ns, name), pack(committed), db=store.snapshots)
    _index(txn, store, ns, committed)
    store.log.append(txn, ns, "/snapshot/commit", name, {"key": key, "name": name})
    return committed


def remove_snapshot(txn: lmdb.Transaction, store: Store, ns: str, key: str) -> dict[str, Any]:
    """Forget ``key`` (its directory is removed after the commit); returns its record."""
    record = get_snapshot(txn, store, ns, key)
    if users := users_of(txn, store, ns, key):
        raise FailedPrecondition(f'snapshot "{key}": used by container "{users[0]}"')
    if (child := first_child(txn, store, ns, key)) is not None:
        raise FailedPrecondition(f'snapshot "{key}": has children ("{child}")')
    forget_snapshot(txn, store, ns, record)
    return record


def release_snapshot(txn: lmdb.Transaction, store: Store, ns: str, key: str) -> bool:
    """A container stopped using ``key``: remove it if it is active and nothing else uses it.

    Returns whether a record was removed (its directory then goes too).
    Committed snapshots stay: they are an image's layers, or a user's.
    """
    raw = txn.get(ns_key(ns, key), db=store.snapshots)
    if raw is None:
        return False
    record = unpack(bytes(raw))
    if record["kind"] != ACTIVE or users_of(txn, store, ns, key):
        return False
    if first_child(txn, store, ns, key) is not None:
        return False
    forget_snapshot(txn, store, ns, record)
    return True
