"""Task state transitions, and the event bus's seqs and fan-out."""

from __future__ import annotations

import pykka
import pytest

from actors.events import SEQ_BLOCK, EventBus, Publish, Subscribe
from actors.task_state import TaskState, TaskStatus
from wire.errors import FailedPrecondition, NotFound


def test_a_task_goes_created_running_paused_running_stopped():
    s = TaskState("default", "web", pid=10)
    s.started()
    assert s.status is TaskStatus.RUNNING
    s.paused()
    assert s.status is TaskStatus.PAUSED
    s.resumed()
    assert s.status is TaskStatus.RUNNING
    assert s.exited(10, 0, 5)
    assert (s.status, s.exit_status, s.exited_at_ns) == (TaskStatus.STOPPED, 0, 5)


def test_an_exit_during_start_leaves_the_task_stopped():
    s = TaskState("default", "web", pid=10)
    s.exited(10, 1, 5)
    s.started()
    assert s.status is TaskStatus.STOPPED


def test_a_repeated_exit_is_reported_as_known():
    s = TaskState("default", "web", pid=10)
    assert s.exited(10, 1, 5) is True
    assert s.exited(10, 1, 5) is False
    assert s.exited(11, 3, 6) is True  # an exec the daemon learnt of late
    assert s.exited(11, 3, 6) is False


@pytest.mark.parametrize(
    ("status", "check"),
    [
        (TaskStatus.RUNNING, "check_startable"),
        (TaskStatus.CREATED, "check_pausable"),
        (TaskStatus.RUNNING, "check_resumable"),
        (TaskStatus.RUNNING, "check_deletable"),
        (TaskStatus.PAUSED, "check_deletable"),
    ],
)
def test_wrong_state_transitions_are_failed_precondition(status, check):
    s = TaskState("default", "web", pid=10, status=status)
    with pytest.raises(FailedPrecondition, match='task "web"'):
        getattr(s, check)()


def test_a_stopped_task_or_a_dead_pid_cannot_be_signalled():
    s = TaskState("default", "web", pid=10, status=TaskStatus.STOPPED)
    with pytest.raises(NotFound):
        s.live_pid(0)
    s = TaskState("default", "web", pid=10, status=TaskStatus.RUNNING)
    assert s.live_pid(0) == 10
    with pytest.raises(NotFound, match="pid 99"):
        s.live_pid(99)


def test_event_seqs_increase_and_are_reserved_in_blocks(reply_factory):
    reservations = []

    def reserve(upto, done):
        reservations.append(upto)
        done()

    bus = EventBus.start(None, 41, reserve)
    try:
        sub = reply_factory()
        bus.tell(Subscribe("default", sub))
        for i in range(3):
            bus.tell(Publish("default", "web", "EXIT", pid=i, exit_status=i, exited_at_ns=7))
        bus.tell(Publish("other", "web", "START"))
    finally:
        bus.stop()  # handles everything queued before it
    frames = sub.frames
    assert frames[0]["ready"] is True
    events = [f["body"] for f in frames[1:]]
    assert [e["seq"] for e in events] == [41, 42, 43]
    assert all(e["namespace"] == "default" and e["type"] == "EXIT" for e in events)
    assert events[0]["exited_at"].to_unix_nano() == 7
    assert reservations == [41 + SEQ_BLOCK]
    pykka.ActorRegistry.stop_all()
