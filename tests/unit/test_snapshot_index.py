"""The parent -> children index of snapshot records (``snapchildren``), without threads."""

from __future__ import annotations

import json

import lmdb
import pytest

from actors.container_records import create_container, delete_container
from actors.gc import mark_and_forget
from actors.importer import ImportActor, _Unpacked
from actors.leases import Leases
from actors.metadata import Transact
from actors.snapshot_records import (
    ACTIVE,
    COMMITTED,
    add_snapshot,
    children_of,
    commit_snapshot,
    first_child,
    list_snapshots,
    release_snapshot,
    remove_snapshot,
)
from actors.storage import SnapshotIds, Storage
from actors.store import SCHEMA_VERSION, Store, StoreError, ns_key
from runtime.content import ContentStore
from wire.codec import now, pack, unpack
from wire.errors import FailedPrecondition, InvalidArgument

SPEC = {"type_url": "types.containerd.io/opencontainers/runtime-spec/1/Spec", "value": b"{}"}
HOUR_NS = 3600 * 10**9


def snap(key, id, kind=ACTIVE, parent=""):
    return {"key": key, "id": id, "kind": kind, "readonly": False, "parent": parent, "labels": {}}


def container(cid, rootfs=""):
    return {"id": cid, "labels": {}, "image": "", "runtime": "", "spec": SPEC, "rootfs": rootfs}


def write(store, fn):
    with store.env.begin(write=True) as txn:
        return fn(txn)


def children(store, key, ns="n"):
    with store.read() as txn:
        return children_of(txn, store, ns, key)


def index_entries(store):
    """Every (namespace, parent, child) the index holds."""
    with store.read() as txn:
        return {
            tuple(bytes(k).decode().split("\x00")) for k, _ in txn.cursor(db=store.snapchildren)
        }


def entries_from_records(store):
    """What the index should hold, computed from the records themselves."""
    entries = set()
    with store.read() as txn:
        for k, raw in txn.cursor(db=store.snapshots):
            record = unpack(bytes(raw))
            if record["parent"]:
                entries.add(
                    (bytes(k).decode().split("\x00", 1)[0], record["parent"], record["key"])
                )
    return entries


def records(store, ns="n"):
    with store.read() as txn:
        return list(list_snapshots(txn, store, ns))


def assert_index_matches_records(store):
    assert index_entries(store) == entries_from_records(store)


def test_children_are_found_after_they_are_added(store):
    write(store, lambda t: add_snapshot(t, store, "n", snap("base", "1", COMMITTED), now()))
    write(store, lambda t: add_snapshot(t, store, "n", snap("b", "2", parent="base"), now()))
    write(store, lambda t: add_snapshot(t, store, "n", snap("a", "3", parent="base"), now()))
    write(store, lambda t: add_snapshot(t, store, "other", snap("base", "4", COMMITTED), now()))
    assert children(store, "base") == ["a", "b"]
    assert children(store, "base", ns="other") == []
    with store.read() as txn:
        assert first_child(txn, store, "n", "base") == "a"
        assert first_child(txn, store, "n", "a") is None
    # A base snapshot has no entry; each child has one, under its parent.
    assert index_entries(store) == {("n", "base", "a"), ("n", "base", "b")}


def test_a_key_that_is_a_prefix_of_another_does_not_see_its_children(store):
    write(store, lambda t: add_snapshot(t, store, "n", snap("base", "1", COMMITTED), now()))
    write(store, lambda t: add_snapshot(t, store, "n", snap("base2", "2", COMMITTED), now()))
    write(store, lambda t: add_snapshot(t, store, "n", snap("x", "3", parent="base2"), now()))
    assert children(store, "base") == []
    write(store, lambda t: remove_snapshot(t, store, "n", "base"))


def test_the_index_follows_a_commit_to_the_new_key(store):
    write(store, lambda t: add_snapshot(t, store, "n", snap("base", "1", COMMITTED), now()))
    write(store, lambda t: add_snapshot(t, store, "n", snap("work", "2", parent="base"), now()))
    write(store, lambda t: commit_snapshot(t, store, "n", "layer", "work", now()))
    assert children(store, "base") == ["layer"]
    write(store, lambda t: add_snapshot(t, store, "n", snap("next", "3", parent="layer"), now()))
    assert children(store, "layer") == ["next"]
    assert_index_matches_records(store)


def test_the_index_follows_a_remove(store):
    write(store, lambda t: add_snapshot(t, store, "n", snap("base", "1", COMMITTED), now()))
    write(store, lambda t: add_snapshot(t, store, "n", snap("work", "2", parent="base"), now()))
    write(store, lambda t: remove_snapshot(t, store, "n", "work"))
    assert children(store, "base") == []
    write(store, lambda t: remove_snapshot(t, store, "n", "base"))
    assert index_entries(store) == set()


def test_has_children_refusals_name_the_child(store):
    write(store, lambda t: add_snapshot(t, store, "n", snap("base", "1", COMMITTED), now()))
    write(store, lambda t: add_snapshot(t, store, "n", snap("work", "2", parent="base"), now()))
    with pytest.raises(FailedPrecondition, match=r'snapshot "base": has children \("work"\)'):
        write(store, lambda t: remove_snapshot(t, store, "n", "base"))
    # A refused write leaves the record and its entry as they were.
    assert children(store, "base") == ["work"]
    assert_index_matches_records(store)


def test_a_committed_snapshot_with_children_is_not_released(store):
    write(store, lambda t: add_snapshot(t, store, "n", snap("base", "1", COMMITTED), now()))
    write(store, lambda t: add_snapshot(t, store, "n", snap("work", "2", parent="base"), now()))
    assert write(store, lambda t: release_snapshot(t, store, "n", "base")) is False
    assert children(store, "base") == ["work"]


def test_the_index_follows_a_container_releasing_its_snapshot(store):
    write(store, lambda t: add_snapshot(t, store, "n", snap("base", "1", COMMITTED), now()))
    write(store, lambda t: add_snapshot(t, store, "n", snap("root", "2", parent="base"), now()))
    write(store, lambda t: create_container(t, store, "n", container("web", "root"), now()))
    assert write(store, lambda t: delete_container(t, store, "n", "web")) is True
    assert children(store, "base") == []
    assert index_entries(store) == set()


def test_the_index_follows_the_collector_forgetting_records(store, tmp_path):
    old = now()
    write(store, lambda t: add_snapshot(t, store, "n", snap("base", "1", COMMITTED), old))
    write(store, lambda t: add_snapshot(t, store, "n", snap("mid", "2", COMMITTED, "base"), old))
    write(store, lambda t: add_snapshot(t, store, "n", snap("top", "3", parent="mid"), old))
    write(store, lambda t: add_snapshot(t, store, "n", snap("kept", "4", parent="base"), old))
    later = old.to_unix_nano() + 2 * HOUR_NS
    forgotten = write(
        store,
        lambda t: mark_and_forget(
            t,
            store,
            ContentStore(tmp_path / "root"),
            grace_ns=HOUR_NS,
            held_snapshots={"4"},
            now_ns=later,
        ),
    )
    assert forgotten == ["mid", "top"]
    assert index_entries(store) == {("n", "base", "kept")}


class _ApplyingDirectory:
    """A directory whose metadata actor is this thread: a Transact runs in its own transaction."""

    def __init__(self, store):
        self.store = store

    def tell(self, name, message):
        assert name == "metadata" and isinstance(message, Transact)
        try:
            with self.store.env.begin(write=True) as txn:
                result = message.apply(txn, self.store, now())
        except Exception as exc:
            message.done(exc)
        else:
            message.done(result)


class _NoArchive:
    blobs = ()


def test_the_layers_an_import_records_are_indexed_under_their_parents(store, tmp_path):
    storage = Storage(store, _ApplyingDirectory(store), None, None, Leases(), SnapshotIds([]))
    importer = ImportActor(None, storage, tmp_path / "scratch")
    write(store, lambda t: add_snapshot(t, store, "n", snap("sha256:a", "1", COMMITTED), now()))
    # The import found layer a already unpacked and unpacked b and c on it.
    unpacked = [_Unpacked("sha256:b", "2", "sha256:a"), _Unpacked("sha256:c", "3", "sha256:b")]
    importer._record("n", _NoArchive(), [], unpacked)
    assert children(store, "sha256:a") == ["sha256:b"]
    assert children(store, "sha256:b") == ["sha256:c"]
    with pytest.raises(FailedPrecondition, match=r'has children \("sha256:c"\)'):
        write(store, lambda t: remove_snapshot(t, store, "n", "sha256:b"))
    assert_index_matches_records(store)


def test_a_key_and_parent_too_long_to_index_are_refused_by_name(store):
    parent, key = "p" * 300, "k" * 300
    write(store, lambda t: add_snapshot(t, store, "n", snap(parent, "1", COMMITTED), now()))
    with pytest.raises(InvalidArgument, match=f'snapshot "{key}": .* too long to index'):
        write(store, lambda t: add_snapshot(t, store, "n", snap(key, "2", parent=parent), now()))
    assert [r["key"] for r in records(store)] == [parent]


# A schema-2 store, written the way berth wrote it before the index existed:
# the records alone, in the databases of the time.


def _write_schema_2(path, records):
    env = lmdb.open(str(path), map_size=2**24, max_dbs=16)
    schema = env.open_db(b"schema")
    namespaces = env.open_db(b"namespaces")
    snapshots = env.open_db(b"snapshots")
    for name in (b"containers", b"tasks", b"counters", b"snaprefs", b"images", b"content"):
        env.open_db(name)
    stamp = now()
    with env.begin(write=True) as txn:
        txn.put(b"version", b"2", db=schema)
        for ns, record in records:
            full = {**record, "created_at": stamp, "updated_at": stamp}
            txn.put(ns_key(ns, record["key"]), pack(full), db=snapshots)
            txn.put(ns.encode(), pack({"created_at": stamp}), db=namespaces, overwrite=False)
    env.close()


def test_opening_a_schema_2_store_fills_the_index_from_its_records(tmp_path):
    path = tmp_path / "meta"
    _write_schema_2(
        path,
        [
            ("n", snap("base", "1", COMMITTED)),
            ("n", snap("layer", "2", COMMITTED, "base")),
            ("n", snap("work", "3", parent="layer")),
            ("n", snap("view", "4", parent="layer")),
            ("m", snap("base", "5", COMMITTED)),
            ("m", snap("work", "6", parent="base")),
        ],
    )
    store = Store(path, map_size=2**24)
    try:
        with store.read() as txn:
            assert txn.get(b"version", db=store.schema) == str(SCHEMA_VERSION).encode()
        assert index_entries(store) == {
            ("n", "base", "layer"),
            ("n", "layer", "view"),
            ("n", "layer", "work"),
            ("m", "base", "work"),
        }
        assert_index_matches_records(store)
        with pytest.raises(FailedPrecondition, match=r'has children \("view"\)'):
            write(store, lambda t: remove_snapshot(t, store, "n", "layer"))
    finally:
        store.close()


def test_a_schema_2_store_whose_snapshot_cannot_be_indexed_is_refused_untouched(tmp_path):
    path = tmp_path / "meta"
    parent, key = "p" * 300, "k" * 300
    _write_schema_2(
        path, [("n", snap(parent, "1", COMMITTED)), ("n", snap(key, "2", ACTIVE, parent))]
    )
    with pytest.raises(StoreError, match=f'snapshot "{key}" of namespace "n": .* too long'):
        Store(path, map_size=2**24)
    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(db=env.open_db(b"schema")) as txn:
        assert txn.get(b"version") == b"2"
    env.close()


# Remove, Commit and a container's delete must not scan the namespace: the
# regression was children_of reading every record of it. Work is counted,
# not timed (bench/snapshot_index.py times it).


class CountingTxn:
    """A write transaction that counts the entries it reads (gets, cursor positions, steps)."""

    def __init__(self, txn):
        self._txn = txn
        self.reads = 0

    def get(self, key, default=None, db=None):
        self.reads += 1
        return self._txn.get(key, default, db=db)

    def pop(self, key, db=None):
        self.reads += 1
        return self._txn.pop(key, db=db)

    def cursor(self, db=None):
        return _CountingCursor(self, self._txn.cursor(db=db))

    def __getattr__(self, name):  # put, delete: writes, not counted
        return getattr(self._txn, name)


class _CountingCursor:
    def __init__(self, txn, cursor):
        self._txn = txn
        self._cursor = cursor

    def set_range(self, key):
        self._txn.reads += 1
        return self._cursor.set_range(key)

    def __iter__(self):
        for item in self._cursor:
            self._txn.reads += 1
            yield item

    def __getattr__(self, name):
        raise AttributeError(f"cursor.{name} is not counted; count it here")


def _fill(store, count):
    """``count`` records in one transaction: a committed base and its active children."""
    stamp = now()
    with store.env.begin(write=True) as txn:
        add_snapshot(txn, store, "n", snap("base", "0", COMMITTED), stamp)
        for i in range(1, count):
            add_snapshot(txn, store, "n", snap(f"work-{i:06d}", str(i), parent="base"), stamp)
        create_container(txn, store, "n", container("web", f"work-{count // 2 + 2:06d}"), stamp)


def _reads_of_each_operation(store, count):
    """How many entries Remove, Commit, a container's delete and a refused Remove read."""
    middle = count // 2
    reads = {}

    def counted(name, fn):
        with store.env.begin(write=True) as txn:
            counting = CountingTxn(txn)
            try:
                fn(counting)
            finally:
                reads[name] = counting.reads

    counted("remove", lambda t: remove_snapshot(t, store, "n", f"work-{middle:06d}"))
    counted(
        "commit", lambda t: commit_snapshot(t, store, "n", "layer", f"work-{middle + 1:06d}", now())
    )
    counted("delete container", lambda t: delete_container(t, store, "n", "web"))
    with pytest.raises(FailedPrecondition, match="has children"):
        counted("refused remove", lambda t: remove_snapshot(t, store, "n", "base"))
    return reads


def test_remove_commit_and_container_delete_read_as_much_with_100000_snapshots_as_with_100(
    tmp_path,
):
    reads = {}
    for count in (100, 100_000):
        store = Store(tmp_path / f"meta-{count}", map_size=2**30)
        try:
            _fill(store, count)
            reads[count] = _reads_of_each_operation(store, count)
            with store.read() as txn:
                assert txn.stat(store.snapshots)["entries"] == count - 2  # removed, released
                assert len(children_of(txn, store, "n", "base")) == count - 3
        finally:
            store.close()
    assert reads[100_000] == reads[100], reads
    assert max(reads[100_000].values()) <= 8, reads


def test_the_snapshot_index_bench_runs_and_reports_every_figure(tmp_path):
    from bench.snapshot_index import OPERATIONS, main

    out = tmp_path / "r.json"
    report = main(["--records", "5,40", "--samples", "3", "--workdir", str(tmp_path)])
    main(["--records", "5,40", "--samples", "3", "--workdir", str(tmp_path), "--json", str(out)])
    assert set(report["records"]) == {"5", "40"}
    for figures in report["records"].values():
        assert set(figures) == set(OPERATIONS)
        for one in figures.values():
            assert set(one) == {"p50_us", "p90_us", "p99_us", "p50_ratio_to_base"}
    assert set(json.loads(out.read_text())["records"]) == {"5", "40"}
