"""Exits are delivered before their commit, and a kill or a failed commit keeps their seqs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import lmdb
import pykka
import pytest

from actors.event_log import LoggedEvent
from actors.metadata import CreateContainer, MetadataActor, PutTask, TaskEvent
from actors.store import Store, ns_key
from runtime.journal import Journal
from wire.codec import unpack

SPEC = {"type_url": "types.containerd.io/opencontainers/runtime-spec/1/Spec", "value": b"{}"}
RECORD = {"pid": 42, "status": "STOPPED", "exit_status": 3, "exited_at_ns": 10**18}


def _exit(cid: str = "web") -> PutTask:
    return PutTask("default", cid, RECORD, False, event=TaskEvent("EXIT", 42, 3, 10**18))


class _Txn:
    """A write transaction whose commit fails, as on a full disk."""

    def __init__(self, txn: lmdb.Transaction) -> None:
        self.txn = txn

    def __getattr__(self, name: str) -> Any:
        return getattr(self.txn, name)

    def __enter__(self) -> _Txn:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.txn.abort()
        if exc[0] is None:
            raise lmdb.DiskError("mdb_txn_commit: No space left on device")


class _FailingEnv:
    """The store's environment, with commits that fail while ``failing`` is set."""

    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self.failing = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def begin(self, write: bool = False, parent: Any = None, **kw: Any) -> Any:
        if isinstance(parent, _Txn):
            return self.env.begin(write=write, parent=parent.txn, **kw)
        txn = self.env.begin(write=write, parent=parent, **kw)
        return _Txn(txn) if write and parent is None and self.failing else txn


class _Delivered:
    """``on_events``: what the metadata actor handed to the bus, with the commit state."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[tuple[list[LoggedEvent], int]] = []
        self.lock = threading.Lock()

    def __call__(self, events: list[LoggedEvent]) -> None:
        with self.store.env.begin() as txn:
            latest = self.store.log.latest(txn)
        with self.lock:
            self.calls.append((events, latest))


def _logged(store: Store) -> dict[int, bytes]:
    with store.read() as txn:
        return dict(store.log.read(txn, 0, 10**18))


def test_an_exit_is_handed_to_the_bus_before_its_commit_and_then_committed(store: Store) -> None:
    delivered = _Delivered(store)
    ref = MetadataActor.start(None, store, on_events=delivered)
    ref.tell(_exit())
    ref.stop()
    (early, latest_then), (after, _) = delivered.calls
    assert [e.seq for e in early] == [1] and latest_then == 0  # not yet in the log
    assert [e.seq for e in after] == [1]
    assert _logged(store) == {1: early[0].packed}


def test_a_killed_daemon_commits_the_delivered_exits_under_their_seqs(tmp_path: Path) -> None:
    store = Store(tmp_path / "meta", map_size=1 << 26)
    env = _FailingEnv(store.env)
    store.env = env  # type: ignore[assignment]
    delivered = _Delivered(store)
    ref = MetadataActor.start(None, store, on_events=delivered)
    ref.ask(_exit("a"))  # one failed commit each: the second entry repeats the first
    ref.ask(_exit("b"))
    ref.stop()
    shown = {e.seq: e.packed for events, _ in delivered.calls for e in events}
    assert sorted(shown) == [1, 2]
    store.env = env.env
    store.close()  # nothing committed: as if killed after the delivery
    reopened = Store(tmp_path / "meta", map_size=1 << 26)
    try:
        assert _logged(reopened) == shown
        with reopened.read() as txn:
            assert unpack(txn.get(ns_key("default", "a"), db=reopened.tasks)) == RECORD
        assert reopened.log.next_seq == 3
        assert reopened.journal.records() == []  # recovered once, not again
    finally:
        reopened.close()


def test_a_failed_commit_keeps_the_delivered_seqs_for_the_next_write(
    store: Store, reply_factory: Any
) -> None:
    env = _FailingEnv(store.env)
    store.env = env  # type: ignore[assignment]
    delivered = _Delivered(store)
    ref = MetadataActor.start(None, store, on_events=delivered)
    try:
        ref.tell(_exit())
        ref.ask(PutTask("default", "x", RECORD, False))  # fails too: behind the exit
        env.failing = False
        reply = reply_factory()
        container = {"id": "c", "labels": {}, "image": "", "runtime": "", "spec": SPEC}
        ref.tell(CreateContainer("default", {**container, "rootfs": ""}, reply))
        assert "body" in reply.result()
    finally:
        ref.stop()
        store.env = env.env
    first = delivered.calls[0][0][0]
    logged = _logged(store)
    assert sorted(logged) == [1, 2, 3]  # the exit, the namespace, the container
    assert logged[1] == first.packed
    assert unpack(logged[3])["topic"] == "/containers/create"


def test_a_torn_journal_tail_is_ignored(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.append(b"one")
    journal.append(b"two")
    journal.close()
    with open(tmp_path / "j", "r+b") as f:
        f.truncate((tmp_path / "j").stat().st_size - 1)
    journal = Journal(tmp_path / "j")
    assert journal.records() == [b"one"]
    journal.clear(truncate=True)
    assert journal.records() == [] and (tmp_path / "j").stat().st_size == 0
    journal.close()


@pytest.fixture(autouse=True)
def _stop_actors() -> Any:
    yield
    pykka.ActorRegistry.stop_all()
