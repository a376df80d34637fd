"""Each record change logs its containerd topic in the same transaction, or nothing."""

from __future__ import annotations

from typing import Any

import pytest

from actors.container_records import create_container, delete_container, update_container
from actors.gc import mark_and_forget
from actors.image_records import add_content, delete_content, delete_image, put_image
from actors.snapshot_records import (
    COMMITTED,
    add_snapshot,
    commit_snapshot,
    remove_snapshot,
)
from actors.store import Store
from runtime.content import ContentStore
from wire.codec import now, unpack
from wire.errors import AlreadyExists, NotFound

SPEC = {"type_url": "types.containerd.io/opencontainers/runtime-spec/1/Spec", "value": b"{}"}
DIGEST = "sha256:" + "ab" * 32
TARGET = {"media_type": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST, "size": 9}


def container(cid: str, rootfs: str = "", **fields: Any) -> dict[str, Any]:
    base = {"id": cid, "labels": {}, "image": "", "runtime": "", "spec": SPEC, "rootfs": rootfs}
    return {**base, **fields}


def snap(key: str, id: str, kind: str = "ACTIVE", parent: str = "") -> dict[str, Any]:
    return {"key": key, "id": id, "kind": kind, "readonly": False, "parent": parent, "labels": {}}


def write(store: Store, fn: Any) -> Any:
    """One write transaction, its events handed over as the metadata actor does."""
    mark = store.log.mark()
    txn = store.env.begin(write=True)
    try:
        result = fn(txn)
    except BaseException:
        txn.abort()
        store.log.rollback(mark)
        raise
    txn.commit()
    store.log.committed()
    return result


def logged(store: Store) -> list[tuple[str, str, str, dict[str, Any]]]:
    """``(namespace, topic, id, payload)`` of every logged event, in seq order."""
    with store.read() as txn:
        records = [unpack(p) for _, p in store.log.read(txn, 0, 10**18)]
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(1, len(seqs) + 1)), "the log has a gap"
    return [(r["namespace"], r["topic"], r["id"], r["payload"]) for r in records]


def topics(store: Store) -> list[tuple[str, str]]:
    return [(topic, oid) for _, topic, oid, _ in logged(store)]


def test_a_container_create_update_delete_logs_three_topics_after_its_namespace(
    store: Store,
) -> None:
    write(
        store, lambda t: create_container(t, store, "web", container("a", image="busybox"), now())
    )
    write(
        store,
        lambda t: update_container(
            t, store, "web", container("a", labels={"x": "1"}), ["labels"], now()
        ),
    )
    write(store, lambda t: delete_container(t, store, "web", "a"))
    events = logged(store)
    assert [(ns, topic, oid) for ns, topic, oid, _ in events] == [
        ("web", "/namespaces/create", "web"),
        ("web", "/containers/create", "a"),
        ("web", "/containers/update", "a"),
        ("web", "/containers/delete", "a"),
    ]
    assert events[1][3] == {
        "id": "a",
        "image": "busybox",
        "runtime": "linux",
        "rootfs": "",
        "labels": {},
    }
    assert events[2][3]["labels"] == {"x": "1"} and events[2][3]["image"] == "busybox"
    assert events[3][3] == {"id": "a"}


def test_a_refused_write_logs_nothing_and_leaves_no_gap(store: Store) -> None:
    write(store, lambda t: create_container(t, store, "n", container("a"), now()))
    with pytest.raises(AlreadyExists):
        write(store, lambda t: create_container(t, store, "n", container("a"), now()))
    with pytest.raises(NotFound):
        write(store, lambda t: delete_container(t, store, "n", "nope"))
    with pytest.raises(NotFound):
        write(store, lambda t: delete_image(t, store, "n", "nope"))
    write(store, lambda t: delete_container(t, store, "n", "a"))
    assert topics(store) == [
        ("/namespaces/create", "n"),
        ("/containers/create", "a"),
        ("/containers/delete", "a"),
    ]


def test_a_namespace_is_created_once_whatever_writes_first(store: Store) -> None:
    write(store, lambda t: add_content(t, store, "a", [DIGEST], now()))
    write(
        store,
        lambda t: put_image(t, store, "a", {"name": "i", "labels": {}, "target": TARGET}, now()),
    )
    write(store, lambda t: add_snapshot(t, store, "b", snap("s", "1"), now()))
    created = [oid for topic, oid in topics(store) if topic == "/namespaces/create"]
    assert created == ["a", "b"]


def test_an_image_put_is_a_create_then_an_update_and_a_delete_names_it(store: Store) -> None:
    image = {"name": "docker.io/library/busybox:latest", "labels": {}, "target": TARGET}
    write(store, lambda t: put_image(t, store, "n", image, now()))
    write(store, lambda t: put_image(t, store, "n", {**image, "labels": {"k": "v"}}, now()))
    write(store, lambda t: delete_image(t, store, "n", image["name"]))
    events = logged(store)[1:]
    assert [topic for _, topic, _, _ in events] == [
        "/images/create",
        "/images/update",
        "/images/delete",
    ]
    assert events[0][3] == {"name": image["name"], "labels": {}, "target": TARGET}
    assert events[1][3]["labels"] == {"k": "v"}
    assert events[2][3] == {"name": image["name"]}


def test_snapshots_log_prepare_commit_and_remove(store: Store) -> None:
    write(store, lambda t: add_snapshot(t, store, "n", snap("layer", "1", COMMITTED), now()))
    write(store, lambda t: add_snapshot(t, store, "n", snap("work", "2", parent="layer"), now()))
    write(store, lambda t: commit_snapshot(t, store, "n", "done", "work", now()))
    write(store, lambda t: remove_snapshot(t, store, "n", "done"))
    events = logged(store)[1:]
    assert [(topic, oid, payload) for _, topic, oid, payload in events] == [
        ("/snapshot/commit", "layer", {"key": "layer", "name": "layer"}),
        ("/snapshot/prepare", "work", {"key": "work", "parent": "layer", "readonly": False}),
        ("/snapshot/commit", "done", {"key": "work", "name": "done"}),
        ("/snapshot/remove", "done", {"key": "done"}),
    ]


def test_a_container_delete_that_releases_its_snapshot_logs_its_remove(store: Store) -> None:
    write(store, lambda t: add_snapshot(t, store, "n", snap("root", "1"), now()))
    write(store, lambda t: create_container(t, store, "n", container("a", "root"), now()))
    write(store, lambda t: delete_container(t, store, "n", "a"))
    assert topics(store)[-2:] == [("/containers/delete", "a"), ("/snapshot/remove", "root")]


def test_content_delete_and_the_collector_log_what_they_forget(store: Store, tmp_path: Any) -> None:
    other = "sha256:" + "cd" * 32
    write(store, lambda t: add_content(t, store, "n", [DIGEST, other], now()))
    write(store, lambda t: delete_content(t, store, "n", DIGEST))
    write(store, lambda t: add_snapshot(t, store, "n", snap("old", "1", COMMITTED), now()))
    content = ContentStore(tmp_path / "content")
    forgotten = write(
        store,
        lambda t: mark_and_forget(t, store, content, grace_ns=0, held_snapshots=set()),
    )
    assert forgotten == ["old"]
    assert topics(store)[1:] == [
        ("/content/delete", DIGEST),
        ("/snapshot/commit", "old"),
        ("/snapshot/remove", "old"),
        ("/content/delete", other),
    ]
