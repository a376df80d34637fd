"""The event log and the bus: gapless seqs, rollback, trim, cursors, windows."""

from __future__ import annotations

import time
from typing import Any

import pykka
import pytest

from actors.event_log import EventLog
from actors.events import Committed, EventBus, Subscribe
from actors.store import Store
from wire.codec import unpack
from wire.filter import parse_filter
from wire.reply import INITIAL_WINDOW, feed


def _append(store: Store, ns: str, topic: str, object_id: str, n: int = 1) -> list[int]:
    """Commit ``n`` events in one write transaction, as the metadata actor does."""
    with store.env.begin(write=True) as txn:
        seqs = [store.log.append(txn, ns, topic, object_id, {"i": i}) for i in range(n)]
    store.log.committed()
    return seqs


def _logged(store: Store) -> list[dict[str, Any]]:
    with store.read() as txn:
        return [unpack(packed) for _, packed in store.log.read(txn, 0, 10**18)]


def test_seqs_start_at_one_and_survive_a_reopen(tmp_path: Any) -> None:
    store = Store(tmp_path / "meta", map_size=1 << 26)
    assert _append(store, "default", "/containers/create", "a", 3) == [1, 2, 3]
    store.close()
    store = Store(tmp_path / "meta", map_size=1 << 26)
    assert _append(store, "default", "/containers/delete", "a") == [4]
    records = _logged(store)
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["type"] == "DELETE" and records[-1]["id"] == "a"
    store.close()


def test_a_refused_child_write_gives_its_seqs_back(store: Store) -> None:
    with store.env.begin(write=True) as txn:
        store.log.append(txn, "default", "/containers/create", "a", {})
        mark = store.log.mark()
        child = store.env.begin(write=True, parent=txn)
        store.log.append(child, "default", "/containers/create", "b", {})
        child.abort()
        store.log.rollback(mark)
        store.log.append(txn, "default", "/containers/create", "c", {})
    events = store.log.committed()
    assert [(e.seq, e.id) for e in events] == [(1, "a"), (2, "c")]
    assert [r["id"] for r in _logged(store)] == ["a", "c"]


def test_a_failed_commit_gives_back_the_whole_batch(store: Store) -> None:
    _append(store, "default", "/containers/create", "a")
    txn = store.env.begin(write=True)
    store.log.append(txn, "default", "/containers/create", "b", {})
    txn.abort()
    store.log.abort()
    assert _append(store, "default", "/containers/create", "c") == [2]


def test_trim_keeps_the_newest_and_numbering_goes_on(store: Store) -> None:
    _append(store, "default", "/containers/create", "a", 50)
    with store.env.begin(write=True) as txn:
        assert store.log.trim(txn, keep_count=10, keep_seconds=3600, limit=25) == (25, True)
    with store.env.begin(write=True) as txn:
        assert store.log.trim(txn, keep_count=10, keep_seconds=3600, limit=25) == (15, False)
    with store.read() as txn:
        assert store.log.info(txn)["oldest_seq"] == 41
        assert store.log.info(txn)["count"] == 10
    with store.env.begin(write=True) as txn:
        # Everything older than "now": the log empties, the latest seq stays.
        store.log.trim(txn, keep_count=10, keep_seconds=1e-9, limit=100)
    with store.read() as txn:
        info = store.log.info(txn)
    assert info["count"] == 0 and info["latest_seq"] == 50 and info["oldest_seq"] == 51
    assert EventLog(store).next_seq == 51


class _Bus:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.ref = EventBus.start(None, store)

    def commit(self, ns: str, topic: str, object_id: str, n: int = 1) -> None:
        with self.store.env.begin(write=True) as txn:
            for i in range(n):
                self.store.log.append(txn, ns, topic, object_id, {"i": i})
        self.ref.tell(Committed(self.store.log.committed()))

    def settle(self) -> None:
        self.ref.ask(Subscribe(_Dead(), parse_filter("")))  # behind everything told so far


class _Dead:
    """A reply already cancelled: subscribing it only waits for the bus."""

    cancelled = True
    done = True

    def ready(self) -> None:
        pass

    def wait_window(self, resume: Any) -> bool:
        return False


@pytest.fixture
def bus(store: Store) -> Any:
    b = _Bus(store)
    yield b
    pykka.ActorRegistry.stop_all()


def _seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for f in frames if f.get("more") for e in f["body"]["events"]]


def test_a_replay_meets_the_live_events_with_no_gap_or_duplicate(bus: _Bus, reply_factory) -> None:
    bus.commit("default", "/containers/create", "a", 100)
    reply = reply_factory()
    reply.window = 10**6
    bus.ref.tell(Subscribe(reply, parse_filter(""), after_seq=40))
    bus.commit("default", "/containers/update", "a", 30)
    bus.settle()
    assert reply.frames[0] == {"v": 1, "id": 1, "ready": True}
    assert _seqs(reply.frames) == list(range(41, 131))


def test_a_subscriber_with_a_shut_window_is_a_cursor_that_catches_up(
    bus: _Bus, reply_factory
) -> None:
    reply = reply_factory()
    bus.ref.tell(Subscribe(reply, parse_filter("")))
    bus.settle()
    for _ in range(40):
        bus.commit("default", "/containers/create", "a", 300)
    bus.settle()
    sent = len([f for f in reply.frames if f.get("more")])
    assert sent == INITIAL_WINDOW  # nothing queued beyond the window
    reply.grant(10**6, credit=True)
    bus.settle()
    time.sleep(0.2)
    bus.settle()
    assert _seqs(reply.frames) == list(range(1, 12001))


def test_a_filter_selects_and_positions_still_advance(bus: _Bus, reply_factory) -> None:
    reply = reply_factory()
    reply.window = 10**6
    bus.ref.tell(Subscribe(reply, parse_filter("namespace==web,type==DELETE")))
    bus.commit("default", "/containers/delete", "a")
    bus.commit("web", "/containers/create", "b")
    bus.commit("web", "/containers/delete", "c")
    bus.settle()
    frames = [f["body"] for f in reply.frames if f.get("more")]
    assert [(e["id"], e["seq"]) for f in frames for e in f["events"]] == [("c", 3)]
    assert frames[-1]["seq"] == 3


def test_out_of_range_positions_are_refused_naming_the_oldest(
    bus: _Bus, store: Store, reply_factory
) -> None:
    bus.commit("default", "/containers/create", "a", 20)
    with store.env.begin(write=True) as txn:
        store.log.trim(txn, keep_count=5, keep_seconds=3600, limit=100)
    late = reply_factory()
    bus.ref.tell(Subscribe(late, parse_filter(""), after_seq=3))
    future = reply_factory()
    bus.ref.tell(Subscribe(future, parse_filter(""), after_seq=21))
    edge = reply_factory()
    bus.ref.tell(Subscribe(edge, parse_filter(""), after_seq=15))
    bus.settle()
    assert late.result()["error"]["code"] == "OUT_OF_RANGE"
    assert "oldest is 16" in late.result()["error"]["message"]
    assert future.result()["error"]["code"] == "OUT_OF_RANGE"
    assert _seqs(edge.frames) == [16, 17, 18, 19, 20]


def test_tasks_events_get_one_legacy_event_per_frame_of_their_namespace(
    bus: _Bus, reply_factory
) -> None:
    reply = reply_factory()
    bus.ref.tell(Subscribe(reply, parse_filter(""), task_ns="default"))
    bus.commit("default", "/containers/create", "web")
    bus.commit("other", "/tasks/start", "web")
    with bus.store.env.begin(write=True) as txn:
        payload = {"container_id": "web", "pid": 7, "exit_status": 3, "exited_at": None}
        bus.store.log.append(txn, "default", "/tasks/exit", "web", payload)
    bus.ref.tell(Committed(bus.store.log.committed()))
    bus.settle()
    bodies = [f["body"] for f in reply.frames if f.get("more")]
    assert len(bodies) == 1
    assert bodies[0]["type"] == "EXIT" and bodies[0]["pid"] == 7 and bodies[0]["seq"] == 3
    assert set(bodies[0]) == {
        "id", "type", "pid", "exit_status", "exited_at", "namespace", "timestamp", "seq"
    }  # fmt: skip


def test_feed_stops_at_a_shut_window_and_resumes_on_credit(reply_factory) -> None:
    reply = reply_factory()
    resumed: list[Any] = []
    feed(reply, (b"\x80" for _ in range(40)), resumed.append)
    assert len(reply.frames) == INITIAL_WINDOW and not reply.done
    reply.grant(4, credit=True)  # 16 + 4 - 16 sent: 4 more
    assert len(resumed) == 1
    resumed.pop()()
    assert len(reply.frames) == INITIAL_WINDOW + 4
    reply.grant(100, credit=True)
    resumed.pop()()
    assert reply.done and reply.frames[-1]["end"] is True
    assert len(reply.frames) == 41
