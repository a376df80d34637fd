"""Task states and the transitions between them (stdlib only).

::

    CREATED --start--> RUNNING --pause--> PAUSED --resume--> RUNNING
       |                  |                  |
       +------exit--------+-------exit-------+--> STOPPED --delete--> (gone)

A task that exits while ``Start`` is in flight ends STOPPED, never
RUNNING: the exit is recorded as it is observed, and a start that
finishes afterwards does not overwrite it.

Execs start concurrently (their shim calls run beside the task's actor),
so the exit of an exec'd process can be observed before the reply that
names its pid. While execs are starting, an exit of a pid the state does
not know as a live exec is held (:meth:`TaskState.hold_exit`) and given
back when that pid's exec has been recorded, or, for a pid no exec names,
when the last starting exec has answered (:meth:`TaskState.exec_started`):
EXEC_ADDED always precedes its EXIT, and no exit is lost.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from wire.errors import FailedPrecondition, NotFound

__all__ = ["ExecProcess", "TaskState", "TaskStatus"]


class TaskStatus(enum.Enum):
    """The wire's task status names."""

    UNKNOWN = "UNKNOWN"
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    PAUSED = "PAUSED"


@dataclass
class ExecProcess:
    """An exec'd process of a task."""

    pid: int
    exited: bool = False
    exit_status: int = 0
    exited_at_ns: int = 0


@dataclass
class TaskState:
    """What the daemon knows of one task; every change goes through a guarded method."""

    ns: str
    container_id: str
    pid: int = 0
    status: TaskStatus = TaskStatus.CREATED
    exit_status: int = 0
    exited_at_ns: int = 0
    execs: dict[int, ExecProcess] = field(default_factory=dict)
    # Execs sent to the shim whose reply has not been recorded yet.
    execs_starting: int = 0
    # pid -> (exit_status, exited_at_ns) of exits seen while execs were starting
    held_exits: dict[int, tuple[int, int]] = field(default_factory=dict)
    # The kernel's OOM killer struck this task's cgroup (a restart policy counts it a failure).
    oom_killed: bool = False

    @property
    def owner(self) -> str:
        """How messages name this task."""
        return f'task "{self.container_id}"'

    def started(self) -> None:
        """CREATED -> RUNNING, unless it already exited during the start."""
        if self.status is TaskStatus.STOPPED:
            return  # exited while Start was in flight: stays STOPPED
        if self.status is not TaskStatus.CREATED:
            raise FailedPrecondition(f"{self.owner}: is {self.status.value}, not CREATED")
        # CREATED -> RUNNING
        self.status = TaskStatus.RUNNING

    def check_startable(self) -> None:
        """Start needs a CREATED task."""
        if self.status is not TaskStatus.CREATED:
            raise FailedPrecondition(f"{self.owner}: is {self.status.value}, not CREATED")

    def check_pausable(self) -> None:
        """Pause needs a RUNNING task."""
        if self.status is not TaskStatus.RUNNING:
            raise FailedPrecondition(f"{self.owner}: is {self.status.value}, not RUNNING")

    def paused(self) -> None:
        """RUNNING -> PAUSED."""
        self.check_pausable()
        # RUNNING -> PAUSED
        self.status = TaskStatus.PAUSED

    def check_resumable(self) -> None:
        """Resume needs a PAUSED task."""
        if self.status is not TaskStatus.PAUSED:
            raise FailedPrecondition(f"{self.owner}: is {self.status.value}, not PAUSED")

    def resumed(self) -> None:
        """PAUSED -> RUNNING."""
        self.check_resumable()
        # PAUSED -> RUNNING
        self.status = TaskStatus.RUNNING

    def check_live(self) -> None:
        """Kill needs a task that has not stopped."""
        if self.status is TaskStatus.STOPPED:
            raise NotFound(f"{self.owner}: is STOPPED")

    def check_running(self, what: str) -> None:
        """Exec and similar need a RUNNING task."""
        if self.status is not TaskStatus.RUNNING:
            raise FailedPrecondition(
                f"{self.owner}: {what} needs RUNNING, task is {self.status.value}"
            )

    def check_deletable(self) -> None:
        """Delete refuses a RUNNING or PAUSED task."""
        if self.status in (TaskStatus.RUNNING, TaskStatus.PAUSED):
            raise FailedPrecondition(
                f"{self.owner}: is {self.status.value}; kill it before deleting"
            )

    def exited(self, pid: int, exit_status: int, exited_at_ns: int) -> bool:
        """Record an exit; False when it was known already (a repeat after a restart)."""
        if pid == self.pid:
            if self.status is TaskStatus.STOPPED:
                return False
            # CREATED/RUNNING/PAUSED -> STOPPED
            self.status = TaskStatus.STOPPED
            self.exit_status = exit_status
            self.exited_at_ns = exited_at_ns
            return True
        proc = self.execs.get(pid)
        if proc is None:
            # An exec started before a restart that the shim did not list.
            proc = self.execs[pid] = ExecProcess(pid)
        if proc.exited:
            return False
        proc.exited, proc.exit_status, proc.exited_at_ns = True, exit_status, exited_at_ns
        return True

    def exec_starting(self) -> None:
        """An exec was sent to the shim; its pid is not known until it answers."""
        self.execs_starting += 1

    def hold_exit(self, pid: int, exit_status: int, exited_at_ns: int) -> bool:
        """Hold an exit that may belong to an exec still starting; True when held.

        Only while execs are starting, and only for a pid that is neither the
        init nor a live exec: a pid known as exited may have been reused by
        the exec that is starting.
        """
        if not self.execs_starting or pid == self.pid:
            return False
        proc = self.execs.get(pid)
        if proc is not None and not proc.exited:
            return False
        self.held_exits[pid] = (exit_status, exited_at_ns)
        return True

    def exec_started(self, pid: int | None) -> list[tuple[int, int, int]]:
        """An exec answered (``pid``, or None: it failed); the held exits to record now.

        Returns ``(pid, exit_status, exited_at_ns)`` for the held exit of
        ``pid``, and, once no exec is starting, every exit still held (of
        processes no exec named, treated as :meth:`exited` treats them).
        """
        if self.execs_starting <= 0:
            raise FailedPrecondition(f"{self.owner}: an exec answered that was not starting")
        self.execs_starting -= 1
        released: list[tuple[int, int, int]] = []
        if pid is not None:
            self.execs[pid] = ExecProcess(pid)
            held = self.held_exits.pop(pid, None)
            if held is not None:
                released.append((pid, *held))
        if not self.execs_starting:
            released.extend((p, status, at) for p, (status, at) in self.held_exits.items())
            self.held_exits.clear()
        return released

    def live_pid(self, pid: int) -> int:
        """``pid`` (0 meaning init) if it is a live process of the task, else NotFound."""
        if pid in (0, self.pid):
            self.check_live()
            return self.pid
        proc = self.execs.get(pid)
        if proc is None or proc.exited:
            raise NotFound(f"{self.owner}: pid {pid} is not a live process of the task")
        return pid
