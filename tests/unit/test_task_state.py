"""Task state transitions, and the event bus's seqs and fan-out."""

from __future__ import annotations

import pytest

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


def test_an_exit_seen_before_its_execs_reply_is_held_until_the_exec_is_recorded():
    s = TaskState("default", "web", pid=10, status=TaskStatus.RUNNING)
    s.exec_starting()
    s.exec_starting()
    assert s.hold_exit(20, 3, 5) is True
    assert s.hold_exit(10, 0, 6) is False  # the init's exit is never held
    assert s.exec_started(20) == [(20, 3, 5)]
    assert 20 in s.execs and not s.execs[20].exited
    assert s.exec_started(21) == []


def test_exits_no_exec_named_are_released_when_the_last_starting_exec_answers():
    s = TaskState("default", "web", pid=10, status=TaskStatus.RUNNING)
    s.exec_starting()
    s.exec_starting()
    assert s.hold_exit(30, 1, 5)
    assert s.exec_started(None) == []  # failed; another is still starting
    assert s.exec_started(31) == [(30, 1, 5)]
    assert s.held_exits == {}
    assert s.hold_exit(32, 0, 6) is False  # nothing starting: not held


def test_a_live_execs_exit_is_not_held_but_a_reused_pids_is():
    s = TaskState("default", "web", pid=10, status=TaskStatus.RUNNING)
    s.exec_starting()
    assert s.exec_started(40) == []
    s.exec_starting()
    assert s.hold_exit(40, 0, 5) is False  # exec 40 is live: its exit applies now
    assert s.exited(40, 0, 5)
    assert s.hold_exit(40, 2, 9) is True  # 40 exited: a new exec may have its pid
    assert s.exec_started(40) == [(40, 2, 9)]
    assert s.exited(40, 2, 9) is True  # the new exec's exit is not taken for a repeat


def test_an_exec_answer_that_was_not_starting_is_refused():
    s = TaskState("default", "web", pid=10, status=TaskStatus.RUNNING)
    with pytest.raises(FailedPrecondition):
        s.exec_started(5)
