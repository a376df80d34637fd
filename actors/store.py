"""The LMDB metadata store: key schema, opening, reads.

Layout of ``<root>/meta`` (one LMDB environment, named databases)::

    schema       b"version"            -> b"3"          schema of everything below
    namespaces   <ns>                  -> msgpack {"created_at": Timestamp}
    containers   <ns> 0x00 <id>        -> msgpack Container, exactly as on the wire
    tasks        <ns> 0x00 <id>        -> msgpack task record (the Tasks service)
    counters     b"events.trimmed"     -> b"<int>"      the highest event seq trimmed
                 b"snapshotter"        -> b"<name>"     the snapshotter the snapshots belong to
    snapshots    <ns> 0x00 <key>       -> msgpack snapshot record (actors.snapshot_records)
    snaprefs     <ns> 0x00 <key> 0x00 <container id> -> b""   containers' rootfs references
    snapchildren <ns> 0x00 <parent key> 0x00 <child key> -> b""   snapshots' parents, reversed
    images       <ns> 0x00 <name>      -> msgpack Image, as on the wire
    content      <ns> 0x00 <digest>    -> msgpack {"labels", "created_at"}: the namespace holds it
    events       <seq, 8 bytes BE>     -> msgpack Event record (actors.event_log)
    restarts     <ns> 0x00 <id>        -> msgpack supervision record (actors.restart_records)

Snapshot keys and image names may hold any character but 0x00 (refused
where they enter). ``snaprefs`` is the reverse index of each container's
``rootfs``, kept in the same transaction as the container, so "is this
snapshot used by a container" is one prefix scan. ``snapchildren`` is the
reverse index of each snapshot record's ``parent``, kept in the same
transaction as the record by every write of ``snapshots`` (add, commit,
remove, release, the collector's forgetting), so "has this snapshot
children" is one cursor step and Remove, Commit and a container's delete
cost the same with a hundred snapshots as with a hundred thousand. The
keys and prefixes of both indexes come from :func:`snapref_key` and
:func:`snapchild_key`. A content blob is stored once (``runtime.content``);
``content`` says which namespaces hold it.

Schema history: version 2 added ``snapshots``, ``snaprefs``, ``images`` and
``content``; its migration fills ``snaprefs`` from the stored containers.
Version 3 added ``snapchildren``; its migration fills it from the stored
snapshot records. Version 4 added the event log (``events``); its
migration marks every seq the old daemon reserved (``events.seq``) as
trimmed, so numbering goes on past every seq a client may have seen.
Version 5 added ``restarts``, the supervision state of containers with a
restart policy (nothing to migrate: a container without a record has
never been supervised).

Identifiers cannot hold 0x00, so ``<ns> 0x00`` is a prefix that selects one
namespace and nothing else, and keys sort by namespace, then id.

A container is stored as the packed map the wire sends (field order fixed,
Timestamps as the msgpack extension), so Get answers by splicing the
stored bytes into the reply without decoding them.

Only the metadata actor writes (:mod:`actors.metadata`); any thread may
read through :meth:`Store.read`, which opens a read-only transaction and
never waits for writers. The environment is opened with ``sync=True``:
a commit returns after the data is on disk.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb

from actors.event_log import TRIMMED_KEY, EventLog
from runtime.journal import Journal
from wire.codec import unpack
from wire.errors import Unavailable

__all__ = [
    "SCHEMA_VERSION",
    "Store",
    "StoreError",
    "ns_key",
    "ns_prefix",
    "snapchild_key",
    "snapref_key",
]

_OLD_SEQ_KEY = b"events.seq"  # schema 3: event seqs below it were reserved
SNAPSHOTTER_KEY = b"snapshotter"


log = logging.getLogger(__name__)

SCHEMA_VERSION = 5
_DEFAULT_MAP_SIZE = 64 * 1024**3  # virtual: the file grows only as data is written


class StoreError(Exception):
    """The store cannot be opened (newer schema, corrupt environment)."""


def ns_key(ns: str, object_id: str) -> bytes:
    """The key of an object in a namespace."""
    return f"{ns}\x00{object_id}".encode()


def ns_prefix(ns: str) -> bytes:
    """The key prefix that selects every object of a namespace."""
    return f"{ns}\x00".encode()


def snapref_key(ns: str, key: str, container_id: str) -> bytes:
    """The ``snaprefs`` key recording that ``container_id`` uses snapshot ``key``.

    With ``container_id`` "" it is the prefix that selects every user of ``key``.
    """
    return f"{ns}\x00{key}\x00{container_id}".encode()


def snapchild_key(ns: str, parent: str, child: str) -> bytes:
    """The ``snapchildren`` key recording that snapshot ``child``'s parent is ``parent``.

    With ``child`` "" it is the prefix that selects every child of ``parent``
    (a child's key is never empty).
    """
    return f"{ns}\x00{parent}\x00{child}".encode()


def _add_snaprefs(store: Store, txn: lmdb.Transaction) -> None:
    cursor = txn.cursor(db=store.containers)
    for raw_key, raw in cursor:
        ns = bytes(raw_key).split(b"\x00", 1)[0].decode()
        container = unpack(bytes(raw))
        if container.get("rootfs"):
            txn.put(snapref_key(ns, container["rootfs"], container["id"]), b"", db=store.snaprefs)


def _add_snapchildren(store: Store, txn: lmdb.Transaction) -> None:
    limit = store.env.max_key_size()
    for raw_key, raw in txn.cursor(db=store.snapshots):
        record = unpack(bytes(raw))
        if not record["parent"]:
            continue
        ns = bytes(raw_key).split(b"\x00", 1)[0].decode()
        key = snapchild_key(ns, record["parent"], record["key"])
        if len(key) > limit:
            # Refusing to start beats an index that misses a child: Remove
            # would then take a parent from under it. The old berth still
            # opens this store (the version is not bumped).
            raise StoreError(
                f'metadata store {store.path}: snapshot "{record["key"]}" of namespace '
                f'"{ns}": it and its parent "{record["parent"]}" are too long to index '
                f"({len(key)} bytes, at most {limit}); remove it with the previous berth"
            )
        txn.put(key, b"", db=store.snapchildren)


def _add_event_log(store: Store, txn: lmdb.Transaction) -> None:
    raw = txn.get(_OLD_SEQ_KEY, db=store.counters)
    if raw is not None:
        reserved = int(raw)
        if reserved > 1:
            txn.put(TRIMMED_KEY, str(reserved - 1).encode(), db=store.counters)
        txn.delete(_OLD_SEQ_KEY, db=store.counters)


# Each migration takes the environment from version N-1 to N inside one
# write transaction.
_MIGRATIONS: dict[int, Any] = {2: _add_snaprefs, 3: _add_snapchildren, 4: _add_event_log}


class Store:
    """The open LMDB environment and its named databases."""

    def __init__(self, path: Path, *, map_size: int = _DEFAULT_MAP_SIZE) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self.env = lmdb.open(
                str(path),
                map_size=map_size,
                max_dbs=16,
                max_readers=512,
                sync=True,
                metasync=True,
                readahead=False,
            )
        except lmdb.Error as exc:
            raise StoreError(f"metadata store {path}: cannot open: {exc}") from exc
        self.path = path
        self.schema = self.env.open_db(b"schema")
        self.namespaces = self.env.open_db(b"namespaces")
        self.containers = self.env.open_db(b"containers")
        self.tasks = self.env.open_db(b"tasks")
        self.counters = self.env.open_db(b"counters")
        self.snapshots = self.env.open_db(b"snapshots")
        self.snaprefs = self.env.open_db(b"snaprefs")
        self.snapchildren = self.env.open_db(b"snapchildren")
        self.images = self.env.open_db(b"images")
        self.content = self.env.open_db(b"content")
        self.events = self.env.open_db(b"events")
        self.restarts = self.env.open_db(b"restarts")
        try:
            self._check_schema()
        except BaseException:
            self.env.close()  # one environment per path per process: let a retry reopen it
            raise
        self.log = EventLog(self)
        # Exits delivered before their commit reached the disk (actors.event_log).
        self.journal = Journal(path / "delivered.journal")
        recovered = self.log.recover([unpack(r) for r in self.journal.records()])
        if recovered:
            log.warning("metadata store %s: %d delivered events recovered", path, recovered)
        self.journal.clear(truncate=True)

    def _check_schema(self) -> None:
        with self.env.begin(write=True, db=self.schema) as txn:
            raw = txn.get(b"version")
            version = int(raw) if raw is not None else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"metadata store {self.path}: schema version {version} was written by a "
                    f"newer berth (this one knows up to {SCHEMA_VERSION})"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                migrate = _MIGRATIONS.get(target)
                if migrate is not None:
                    log.info("migrating metadata store to schema version %d", target)
                    migrate(self, txn)
            if version != SCHEMA_VERSION:
                txn.put(b"version", str(SCHEMA_VERSION).encode())

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A read-only transaction: a consistent snapshot, no waiting on writers."""
        try:
            txn = self.env.begin(buffers=False)
        except lmdb.Error as exc:
            raise Unavailable(f"metadata store: cannot read: {exc}") from exc
        try:
            yield txn
        finally:
            txn.abort()

    def scan(self, txn: lmdb.Transaction, db: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) of ``db`` whose key starts with ``prefix``, in key order."""
        cursor = txn.cursor(db=db)
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            # Transactions here are opened with buffers=False: keys are bytes.
            if not bytes(key).startswith(prefix):
                return
            yield bytes(key), bytes(value)

    def bind_snapshotter(self, snapshotter: str) -> None:
        """Record which snapshotter holds this root's snapshots; StoreError if another did.

        Snapshot records name directories of one snapshotter: a daemon that
        picked another (a config change, overlayfs no longer mounting) would
        find none of them, so it refuses to start while any is recorded.
        """
        with self.env.begin(write=True) as txn:
            used = txn.get(SNAPSHOTTER_KEY, db=self.counters)
            name = snapshotter.encode()
            if used is not None and used != name and txn.stat(self.snapshots)["entries"]:
                raise StoreError(
                    f"metadata store {self.path}: its snapshots belong to the "
                    f"{used.decode()} snapshotter, but this daemon would use {snapshotter}; "
                    f'set snapshotter = "{used.decode()}" in the config'
                )
            txn.put(SNAPSHOTTER_KEY, name, db=self.counters)

    def close(self) -> None:
        """Close the environment (after the metadata actor has stopped)."""
        self.journal.close()
        self.env.close()
