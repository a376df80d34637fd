"""The store, container records and the metadata actor's group commit."""

from __future__ import annotations

import threading
import time

import pykka
import pytest

from actors.metadata import CreateContainer, DeleteContainer, MetadataActor, UpdateContainer
from actors.store import SCHEMA_VERSION, Store, StoreError, ns_key
from actors.supervision import Directory, StartChild, Supervisor
from wire.codec import pack

SPEC = {"type_url": "types.containerd.io/opencontainers/runtime-spec/1/Spec", "value": b"{}"}


def container(cid, **fields):
    base = {"id": cid, "labels": {}, "image": "", "runtime": "", "spec": SPEC, "rootfs": ""}
    base.update(fields)
    return base


class GatedMetadata(MetadataActor):
    """Holds each commit until the gate opens, so writes queue up behind it."""

    instances: list[GatedMetadata] = []

    def __init__(self, supervisor, store, gate, fail=False):
        super().__init__(supervisor, store)
        self.gate = gate
        self.fail = fail
        GatedMetadata.instances.append(self)

    def _commit(self):
        self.gate.wait(5)
        if self.fail:
            raise ZeroDivisionError("a bug in the batching code")
        super()._commit()


@pytest.fixture
def metadata(store):
    ref = MetadataActor.start(None, store)
    yield ref
    ref.stop()


def test_a_new_store_records_its_schema_version(store):
    with store.read() as txn:
        assert txn.get(b"version", db=store.schema) == str(SCHEMA_VERSION).encode()


def test_a_store_written_by_a_newer_schema_is_refused(tmp_path):
    s = Store(tmp_path / "m", map_size=2**24)
    with s.env.begin(write=True, db=s.schema) as txn:
        txn.put(b"version", b"99")
    s.close()
    with pytest.raises(StoreError, match="newer berth"):
        Store(tmp_path / "m", map_size=2**24)


def test_a_create_is_acknowledged_with_the_stored_container(metadata, reply_factory, store):
    reply = reply_factory()
    metadata.tell(CreateContainer("default", container("web", labels={"a": "1"}), reply))
    body = reply.result()["body"]["container"]
    assert body["id"] == "web" and body["runtime"] == "linux" and body["labels"] == {"a": "1"}
    assert body["created_at"] == body["updated_at"]
    with store.read() as txn:
        assert txn.get(ns_key("default", "web"), db=store.containers) is not None
        assert txn.get(b"default", db=store.namespaces) is not None


def test_create_of_an_existing_id_is_already_exists(metadata, reply_factory):
    first, second = reply_factory(), reply_factory()
    metadata.tell(CreateContainer("default", container("web"), first))
    metadata.tell(CreateContainer("default", container("web"), second))
    assert "body" in first.result()
    assert second.result()["error"] == {
        "code": "ALREADY_EXISTS",
        "message": 'container "web": already exists',
    }


def test_writes_queued_together_commit_in_one_transaction(store, reply_factory):
    # Hold the actor busy so 50 writes queue behind, then count commits.
    gate = threading.Event()
    ref = GatedMetadata.start(None, store, gate)
    actor = GatedMetadata.instances[-1]
    replies = [reply_factory(i) for i in range(51)]
    for i, reply in enumerate(replies):
        ref.tell(CreateContainer("default", container(f"c{i}"), reply))
    gate.set()
    for reply in replies:
        assert "body" in reply.result()
    assert actor.commits <= 3, f"{actor.commits} commits for 51 queued writes"
    ref.stop()


def test_a_refused_write_in_a_batch_leaves_the_others_committed(store, reply_factory):
    gate = threading.Event()
    ref = GatedMetadata.start(None, store, gate)
    ok1, dup, ok2 = reply_factory(), reply_factory(), reply_factory()
    ref.tell(CreateContainer("default", container("a"), ok1))
    ref.tell(CreateContainer("default", container("a"), dup))
    ref.tell(CreateContainer("default", container("b"), ok2))
    gate.set()
    assert "body" in ok1.result() and "body" in ok2.result()
    assert dup.result()["error"]["code"] == "ALREADY_EXISTS"
    ref.stop()


def test_update_applies_the_mask_and_keeps_created_at(metadata, reply_factory):
    create, update = reply_factory(), reply_factory()
    metadata.tell(CreateContainer("default", container("web", labels={"a": "1"}), create))
    created = create.result()["body"]["container"]
    time.sleep(0.002)
    change = container("web", labels={"b": "2"}, image="ignored")
    metadata.tell(UpdateContainer("default", change, ["labels.b"], update))
    updated = update.result()["body"]["container"]
    assert updated["labels"] == {"a": "1", "b": "2"}
    assert updated["image"] == ""
    assert updated["created_at"] == created["created_at"]
    assert updated["updated_at"].to_unix_nano() > created["updated_at"].to_unix_nano()


def test_an_update_that_leaves_no_spec_is_refused_and_changes_nothing(
    metadata, reply_factory, store
):
    create, update = reply_factory(), reply_factory()
    metadata.tell(CreateContainer("default", container("web"), create))
    before = create.result()
    metadata.tell(UpdateContainer("default", container("web", spec=None, image="x"), [], update))
    assert update.result()["error"]["code"] == "INVALID_ARGUMENT"
    assert "spec" in update.result()["error"]["message"]
    with store.read() as txn:
        raw = txn.get(ns_key("default", "web"), db=store.containers)
    assert raw == pack(before["body"]["container"])


def test_update_and_delete_of_a_missing_container_are_not_found(metadata, reply_factory):
    update, delete = reply_factory(), reply_factory()
    metadata.tell(UpdateContainer("default", container("ghost"), [], update))
    metadata.tell(DeleteContainer("default", "ghost", delete))
    assert update.result()["error"]["code"] == "NOT_FOUND"
    assert delete.result()["error"] == {
        "code": "NOT_FOUND",
        "message": 'container "ghost": not found',
    }


def test_delete_of_a_container_with_a_task_is_failed_precondition(metadata, reply_factory, store):
    create, delete = reply_factory(), reply_factory()
    metadata.tell(CreateContainer("default", container("web"), create))
    create.result()
    with store.env.begin(write=True) as txn:
        txn.put(ns_key("default", "web"), b"task", db=store.tasks)
    metadata.tell(DeleteContainer("default", "web", delete))
    error = delete.result()["error"]
    assert error["code"] == "FAILED_PRECONDITION" and '"web"' in error["message"]


def test_namespaces_do_not_see_each_other(metadata, reply_factory, store):
    a, b, gone = reply_factory(), reply_factory(), reply_factory()
    metadata.tell(CreateContainer("a", container("web"), a))
    metadata.tell(CreateContainer("b", container("web"), b))
    assert "body" in a.result() and "body" in b.result()
    metadata.tell(DeleteContainer("a", "web", gone))
    gone.result()
    with store.read() as txn:
        assert txn.get(ns_key("a", "web"), db=store.containers) is None
        assert txn.get(ns_key("b", "web"), db=store.containers) is not None


def test_writes_sent_before_stop_are_committed_and_answered(store, reply_factory):
    ref = MetadataActor.start(None, store)
    replies = [reply_factory(i) for i in range(20)]
    for i, reply in enumerate(replies):
        ref.tell(CreateContainer("default", container(f"c{i}"), reply))
    ref.stop(block=True)
    assert all("body" in r.result(0.1) for r in replies)


def test_a_crashed_metadata_actor_answers_its_requests_and_is_restarted(store, reply_factory):
    directory = Directory()
    supervisor = Supervisor.start(directory)
    gate = threading.Event()
    gate.set()
    crashes = iter([True])  # the first instance crashes, its restart works

    def factory(sup):
        return GatedMetadata.start(sup, store, gate, fail=next(crashes, False))

    supervisor.ask(StartChild("metadata", factory))
    first = directory.get("metadata")
    doomed = reply_factory()
    directory.tell("metadata", CreateContainer("default", container("x"), doomed))
    error = doomed.result()["error"]
    assert error["code"] == "INTERNAL" and "metadata failed" in error["message"]
    assert "Traceback" not in error["message"]
    deadline = time.monotonic() + 5
    while directory.get("metadata") in (None, first) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert directory.get("metadata") is not first
    again = reply_factory()
    directory.tell("metadata", CreateContainer("default", container("x"), again))
    assert again.result()["body"]["container"]["id"] == "x"
    supervisor.stop()
    pykka.ActorRegistry.stop_all()
