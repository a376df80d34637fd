"""Snapshot records, container references and the garbage collector's mark, without threads."""

from __future__ import annotations

import json

import pytest

from actors.container_records import create_container, delete_container, update_container
from actors.gc import mark_and_forget
from actors.image_records import GC_ROOT_LABEL, add_content, list_content, put_image
from actors.snapshot_records import (
    ACTIVE,
    COMMITTED,
    add_snapshot,
    check_key,
    commit_snapshot,
    list_snapshots,
    remove_snapshot,
)
from runtime.content import ContentStore
from runtime.image_archive import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, chain_ids
from wire.codec import now
from wire.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

SPEC = {"type_url": "types.containerd.io/opencontainers/runtime-spec/1/Spec", "value": b"{}"}
HOUR_NS = 3600 * 10**9


def snap(key, id, kind=ACTIVE, parent="", labels=None, readonly=False):
    return {
        "key": key,
        "id": id,
        "kind": kind,
        "readonly": readonly,
        "parent": parent,
        "labels": labels or {},
    }


def write(store, fn):
    with store.env.begin(write=True) as txn:
        return fn(txn)


def keys(store, ns="n"):
    with store.read() as txn:
        return sorted(r["key"] for r in list_snapshots(txn, store, ns))


def container(cid, rootfs=""):
    return {"id": cid, "labels": {}, "image": "", "runtime": "", "spec": SPEC, "rootfs": rootfs}


def test_a_snapshot_key_may_hold_any_text_but_nul():
    assert check_key("key", "sha256:ab/c d") == "sha256:ab/c d"
    with pytest.raises(InvalidArgument, match="NUL"):
        check_key("key", "a\x00b")
    with pytest.raises(InvalidArgument, match="must be set"):
        check_key("key", "")


def test_a_snapshot_needs_a_committed_parent_and_a_free_key(store):
    write(store, lambda t: add_snapshot(t, store, "n", snap("base", "1", COMMITTED), now()))
    write(store, lambda t: add_snapshot(t, store, "n", snap("work", "2", parent="base"), now()))
    with pytest.raises(AlreadyExists):
        write(store, lambda t: add_snapshot(t, store, "n", snap("work", "3"), now()))
    with pytest.raises(FailedPrecondition, match="not committed"):
        write(store, lambda t: add_snapshot(t, store, "n", snap("x", "4", parent="work"), now()))
    with pytest.raises(NotFound):
        write(store, lambda t: add_snapshot(t, store, "n", snap("y", "5", parent="nope"), now()))


def test_commit_moves_the_record_to_its_name_keeping_the_directory(store):
    write(store, lambda t: add_snapshot(t, store, "n", snap("work", "7"), now()))
    committed = write(store, lambda t: commit_snapshot(t, store, "n", "layer", "work", now()))
    assert (committed["key"], committed["id"], committed["kind"]) == ("layer", "7", COMMITTED)
    assert keys(store) == ["layer"]


def test_a_snapshot_with_children_or_users_cannot_be_removed(store):
    write(store, lambda t: add_snapshot(t, store, "n", snap("base", "1", COMMITTED), now()))
    write(store, lambda t: add_snapshot(t, store, "n", snap("root", "2", parent="base"), now()))
    write(store, lambda t: create_container(t, store, "n", container("web", "root"), now()))
    with pytest.raises(FailedPrecondition, match="children"):
        write(store, lambda t: remove_snapshot(t, store, "n", "base"))
    with pytest.raises(FailedPrecondition, match='container "web"'):
        write(store, lambda t: remove_snapshot(t, store, "n", "root"))


def test_deleting_a_container_releases_its_active_snapshot_unless_another_uses_it(store):
    write(store, lambda t: add_snapshot(t, store, "n", snap("root", "2"), now()))
    write(store, lambda t: create_container(t, store, "n", container("a", "root"), now()))
    write(store, lambda t: create_container(t, store, "n", container("b", "root"), now()))
    assert write(store, lambda t: delete_container(t, store, "n", "a")) is False
    assert keys(store) == ["root"]
    assert write(store, lambda t: delete_container(t, store, "n", "b")) is True
    assert keys(store) == []


def test_an_update_away_from_a_snapshot_releases_it(store):
    write(store, lambda t: add_snapshot(t, store, "n", snap("old", "1"), now()))
    write(store, lambda t: create_container(t, store, "n", container("a", "old"), now()))
    _, released = write(
        store, lambda t: update_container(t, store, "n", container("a", "new"), ["rootfs"], now())
    )
    assert released is True
    assert keys(store) == []


def _image(content, tmp_path, diff_ids):
    """Store a manifest and config naming ``diff_ids``; returns the manifest digest."""

    def blob(data: bytes) -> str:
        path = tmp_path / "blob"
        path.write_bytes(data)
        with path.open("rb") as f:
            return content.write(f)[0]

    config = blob(json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode())
    layer = blob(b"layer")
    manifest = {
        "schemaVersion": 2,
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": 1},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer, "size": 5}],
    }
    return blob(json.dumps(manifest).encode()), [config, layer]


def test_the_mark_keeps_what_images_containers_and_young_snapshots_hold(store, tmp_path):
    content = ContentStore(tmp_path / "root")
    diff = ["sha256:" + "1" * 64, "sha256:" + "2" * 64]
    bottom, top = chain_ids(diff)
    manifest, blobs = _image(content, tmp_path, diff)
    old = now()
    write(store, lambda t: add_snapshot(t, store, "n", snap(bottom, "1", COMMITTED), old))
    write(store, lambda t: add_snapshot(t, store, "n", snap(top, "2", COMMITTED, bottom), old))
    write(store, lambda t: add_snapshot(t, store, "n", snap("orphan-layer", "3", COMMITTED), old))
    write(store, lambda t: add_snapshot(t, store, "n", snap("fresh", "4", parent=top), old))
    write(store, lambda t: add_snapshot(t, store, "n", snap("held", "5"), old))
    write(
        store,
        lambda t: add_snapshot(
            t, store, "n", snap("pinned", "6", labels={GC_ROOT_LABEL: "x"}), old
        ),
    )
    image = {
        "name": "img",
        "labels": {},
        "target": {"media_type": OCI_MANIFEST, "digest": manifest, "size": 1},
    }
    write(store, lambda t: put_image(t, store, "n", image, old))
    write(
        store, lambda t: add_content(t, store, "n", [manifest, *blobs, "sha256:" + "f" * 64], old)
    )
    kept = {"sha256:" + "e" * 64}
    write(store, lambda t: add_content(t, store, "n", kept, old, labels={GC_ROOT_LABEL: "x"}))

    # Far in the future the young active snapshot is old; "held" is leased.
    later = old.to_unix_nano() + 2 * HOUR_NS
    forgotten = write(
        store,
        lambda t: mark_and_forget(
            t, store, content, grace_ns=HOUR_NS, held_snapshots={"5"}, now_ns=later
        ),
    )
    assert forgotten == ["fresh", "orphan-layer"]
    assert keys(store) == sorted([bottom, top, "held", "pinned"])
    with store.read() as txn:
        digests = {d for d, _ in list_content(txn, store, "n")}
    assert digests == {manifest, *blobs, *kept}


def test_a_young_active_snapshot_survives_the_mark(store, tmp_path):
    content = ContentStore(tmp_path / "root")
    write(store, lambda t: add_snapshot(t, store, "n", snap("new", "1"), now()))
    forgotten = write(
        store, lambda t: mark_and_forget(t, store, content, grace_ns=HOUR_NS, held_snapshots=set())
    )
    assert forgotten == []
    assert keys(store) == ["new"]


class _CountingSnapshotter:
    """Just enough of a snapshotter for a sweep: counts how often it is listed."""

    name = "fake"

    def __init__(self):
        self.listed = 0

    def ids(self):
        self.listed += 1
        return set()


class _NoContent:
    def digests(self):
        return set()

    def clean_ingests(self, older_than):
        return []


def test_a_burst_of_sweep_requests_costs_one_sweep(store):
    from actors.gc import Collector, Sweep
    from actors.leases import Leases
    from actors.storage import SnapshotIds, Storage
    from actors.supervision import Directory

    snapshotter = _CountingSnapshotter()
    storage = Storage(store, Directory(), snapshotter, _NoContent(), Leases(), SnapshotIds([]))
    collector = Collector(None, storage, grace_seconds=600)
    burst = [Sweep() for _ in range(5)]  # all sent before the first sweep begins
    for message in burst:
        collector.on_receive(message)
    assert snapshotter.listed == 1
    collector.on_receive(Sweep())  # sent after it: a commit the sweep may not have seen
    assert snapshotter.listed == 2
