"""Task actors: started from their handles on demand, reaped when idle, execs beside them."""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka
import pytest

from actors.containers import ContainerActors
from actors.supervision import Directory
from actors.task_actors import TaskActors
from actors.task_handle import TaskHandle
from actors.task_state import TaskState, TaskStatus
from actors.tasks import OomKilled, ProcessExited, TaskOp
from wire.errors import Unavailable

NS = "default"
INIT = 100


class Recorder:
    """Stands for an actor in the directory: keeps what it is told, commits at once."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.lock = threading.Lock()

    def tell(self, message: Any) -> None:
        with self.lock:
            self.messages.append(message)
        done = getattr(message, "done", None)
        if done is not None:
            done(b"")

    def events(self) -> list[tuple[str, int]]:
        with self.lock:
            # Task events travel in the metadata writes that log them.
            logged = [getattr(m, "event", None) for m in self.messages]
            return [(e.type, e.pid) for e in logged if e is not None]

    def wait_events(self, count: int, timeout: float = 5.0) -> list[tuple[str, int]]:
        deadline = time.monotonic() + timeout
        while len(events := self.events()) < count:
            assert time.monotonic() < deadline, f"{len(events)} events, wanted {count}: {events}"
            time.sleep(0.005)
        return events


class FakeShim:
    """A shim's side of the calls: answers each op with ``answers[op](**fields)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answers: dict[str, Any] = {}
        self.closed = 0
        self.lock = threading.Lock()

    def client(self, _task_dir: Any = None) -> FakeClient:
        return FakeClient(self)


class FakeClient:
    """A ShimClient over a FakeShim."""

    def __init__(self, shim: FakeShim) -> None:
        self.shim = shim

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        with self.shim.lock:
            self.shim.calls.append((op, fields))
        answer = self.shim.answers.get(op)
        result: dict[str, Any] = answer(**fields) if answer is not None else {}
        return result

    def close(self) -> None:
        with self.shim.lock:
            self.shim.closed += 1

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def shim() -> FakeShim:
    return FakeShim()


@pytest.fixture
def directory() -> tuple[Directory, Recorder, Recorder]:
    d = Directory()
    # One recorder: events are logged by the metadata writes.
    metadata = Recorder()
    d.set("metadata", metadata)  # type: ignore[arg-type]
    return d, metadata, metadata


@pytest.fixture
def tasks(directory, shim):
    registry = TaskActors(directory[0], idle_seconds=0.1, connect=shim.client)
    yield registry
    registry.stop_all()
    pykka.ActorRegistry.stop_all()


def running_task(tmp_path, shim: FakeShim, cid: str = "web") -> TaskHandle:
    state = TaskState(NS, cid, pid=INIT, status=TaskStatus.RUNNING)
    task_dir = tmp_path / cid
    task_dir.mkdir()
    return TaskHandle(state, task_dir, "runc", shim.client())  # type: ignore[arg-type]


def op(name: str, reply: Any, **args: Any) -> TaskOp:
    return TaskOp(name, args, reply)


# --- on demand, idle ---------------------------------------------------------------


def test_a_dormant_tasks_message_starts_its_actor_from_its_handle(tasks, directory, tmp_path, shim):
    _, events, _ = directory
    tasks.add(running_task(tmp_path, shim))
    assert not tasks.alive(NS, "web")
    assert tasks.tell(NS, "web", OomKilled(INIT))
    assert events.wait_events(1) == [("OOM", INIT)]
    assert tasks.alive(NS, "web")
    assert "task:default/web" in {t.name for t in threading.enumerate()}


def test_a_message_for_a_container_without_a_task_is_not_sent(tasks):
    assert tasks.tell(NS, "nothing", OomKilled(1)) is False


def test_an_idle_task_actor_is_reaped_and_its_handle_carries_the_task_to_the_next_actor(
    tasks, directory, tmp_path, shim, reply_factory
):
    _, events, _ = directory
    handle = running_task(tmp_path, shim)
    tasks.add(handle)
    pause = reply_factory()
    tasks.tell(NS, "web", op("pause", pause))
    assert pause.result()["body"] == {}
    time.sleep(0.05)
    assert tasks.reap(time.monotonic() + 1) == 1
    assert not tasks.alive(NS, "web")
    assert tasks.get(NS, "web") is handle
    resume = reply_factory()
    tasks.tell(NS, "web", op("resume", resume))  # needs PAUSED: the state was kept
    assert resume.result()["body"] == {}
    assert events.wait_events(2) == [("PAUSED", INIT), ("RESUMED", INIT)]
    assert [c[0] for c in shim.calls] == ["pause", "resume"]


def test_a_task_actor_with_a_message_in_flight_is_not_reaped(tasks, tmp_path, shim, reply_factory):
    gate = threading.Event()
    shim.answers["ps"] = lambda: (gate.wait(5), {"pids": [INIT]})[1]
    tasks.add(running_task(tmp_path, shim))
    reply = reply_factory()
    tasks.tell(NS, "web", op("processes", reply))
    time.sleep(0.05)
    assert tasks.reap(time.monotonic() + 10) == 0, "reaped while Processes was in flight"
    gate.set()
    assert reply.result()["body"]["processes"][0]["pid"] == INIT
    time.sleep(0.05)
    assert tasks.reap(time.monotonic() + 10) == 1


def test_no_message_is_lost_when_reaps_race_the_tells(tasks, directory, tmp_path, shim):
    _, events, _ = directory
    tasks.add(running_task(tmp_path, shim))
    stop = threading.Event()
    reaped = [0]

    def reap_all_the_time() -> None:
        while not stop.is_set():
            reaped[0] += tasks.reap(float("inf"))

    reaper = threading.Thread(target=reap_all_the_time)
    reaper.start()
    try:
        for n in range(400):
            assert tasks.tell(NS, "web", OomKilled(n))
            if n % 20 == 0:
                time.sleep(0.002)  # let the actor drain, so the reaper gets its chances
        got = events.wait_events(400, timeout=20)
    finally:
        stop.set()
        reaper.join()
    assert got == [("OOM", n) for n in range(400)], "a message was lost or reordered"
    assert reaped[0] > 0, "the reaper never stopped an actor: the race was not run"


def test_a_container_with_a_task_has_its_actor_reaped_after_the_task_idle_time(
    directory, tmp_path, shim, reply_factory
):
    actors = ContainerActors(
        directory[0], None, idle_seconds=100, task_idle_seconds=0.1, connect=shim.client
    )
    try:
        actors.tasks.add(running_task(tmp_path, shim))
        kill, missing = reply_factory(), reply_factory()
        actors.tell(NS, "web", op("kill", kill, signal=9, all=False, pid=0))
        actors.tell(NS, "db", op("kill", missing, signal=9, all=False, pid=0))
        assert kill.result()["body"] == {}
        assert missing.result()["error"]["code"] == "NOT_FOUND"
        assert ("kill", {"signal": 9, "all": False, "pid": INIT}) in shim.calls
        time.sleep(0.05)
        assert actors.reap(time.monotonic() + 1) == 2  # web's container and task actors
        assert not actors.alive(NS, "web") and not actors.tasks.alive(NS, "web")
        assert actors.alive(NS, "db"), "a container without a task keeps the long idle time"
        # The events of a dormant task go to it with no container actor.
        assert actors.tell(NS, "web", ProcessExited(INIT, 137, 5), start=False)
        assert directory[1].wait_events(1) == [("EXIT", INIT)]
        assert not actors.alive(NS, "web")
    finally:
        actors.stop_all()
        pykka.ActorRegistry.stop_all()


# --- execs ------------------------------------------------------------------------


def test_execs_into_one_task_run_side_by_side_and_each_exec_added_precedes_its_exit(
    tasks, directory, tmp_path, shim, reply_factory
):
    _, events, _ = directory
    count = 6
    together = threading.Barrier(count, timeout=5)
    pids = iter(range(200, 200 + count))
    pid_lock = threading.Lock()

    def exec_(**_fields: Any) -> dict[str, Any]:
        together.wait()  # only passes if all the execs are at the shim at once
        with pid_lock:
            pid = next(pids)
        # Its exit overtakes the reply, as a quick process's can.
        tasks.tell(NS, "web", ProcessExited(pid, 0, 1))
        time.sleep(0.02)
        return {"pid": pid}

    shim.answers["exec"] = exec_
    tasks.add(running_task(tmp_path, shim))
    replies = [reply_factory() for _ in range(count)]
    for reply in replies:
        tasks.tell(NS, "web", op("exec", reply, process=b"{}"))
    got = sorted(r.result()["body"]["pid"] for r in replies)
    assert got == list(range(200, 200 + count))
    seen = events.wait_events(2 * count)
    for pid in got:
        assert seen.index(("EXEC_ADDED", pid)) < seen.index(("EXIT", pid)), seen
    assert len(seen) == 2 * count


def test_delete_waits_for_an_exec_in_flight_and_no_exec_added_follows_it(
    tasks, directory, tmp_path, shim, reply_factory
):
    _, events, _ = directory
    gate = threading.Event()
    shim.answers["exec"] = lambda **_f: (gate.wait(5), {"pid": 300})[1]
    handle = running_task(tmp_path, shim)
    tasks.add(handle)
    exec_reply, delete_reply = reply_factory(), reply_factory()
    tasks.tell(NS, "web", op("exec", exec_reply, process=b"{}"))
    tasks.tell(NS, "web", ProcessExited(INIT, 137, 5))  # the init dies meanwhile
    tasks.tell(NS, "web", op("delete", delete_reply))
    assert events.wait_events(1) == [("EXIT", INIT)]
    time.sleep(0.1)
    assert not delete_reply.answered.is_set(), "Delete did not wait for the exec"
    gate.set()
    assert exec_reply.result()["body"] == {"pid": 300}
    assert delete_reply.result()["body"]["exit_status"] == 137
    assert events.wait_events(3) == [("EXIT", INIT), ("EXEC_ADDED", 300), ("DELETE", INIT)]
    assert tasks.get(NS, "web") is None
    assert shim.closed >= 1
    assert not (tmp_path / "web").exists()


def test_a_failed_exec_gets_its_error_and_the_exits_held_meanwhile_are_published(
    tasks, directory, tmp_path, shim, reply_factory
):
    _, events, _ = directory
    gate = threading.Event()

    def failing(**_fields: Any) -> dict[str, Any]:
        gate.wait(5)
        raise Unavailable("shim default/web: exited during exec")

    shim.answers["exec"] = failing
    tasks.add(running_task(tmp_path, shim))
    reply = reply_factory()
    tasks.tell(NS, "web", op("exec", reply, process=b"{}"))
    tasks.tell(NS, "web", ProcessExited(999, 3, 7))  # no exec will name it
    time.sleep(0.05)
    assert events.events() == [], "the exit of an unknown pid was not held"
    gate.set()
    assert reply.result()["error"]["code"] == "UNAVAILABLE"
    assert events.wait_events(1) == [("EXIT", 999)]


def test_an_exec_in_flight_at_shutdown_is_answered(tasks, tmp_path, shim, reply_factory):
    gate = threading.Event()
    shim.answers["exec"] = lambda **_f: (gate.wait(5), {"pid": 400})[1]
    tasks.add(running_task(tmp_path, shim))
    reply = reply_factory()
    tasks.tell(NS, "web", op("exec", reply, process=b"{}"))
    time.sleep(0.05)
    stopping = threading.Thread(target=tasks.stop_all)
    stopping.start()
    time.sleep(0.05)
    gate.set()
    stopping.join(10)
    assert reply.result()["body"] == {"pid": 400}
    later = reply_factory()
    assert tasks.tell(NS, "web", op("kill", later, signal=9, all=False, pid=0)) is False
