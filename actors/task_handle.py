"""What the daemon keeps of a task while its actor may be stopped.

A running task costs the daemon a :class:`TaskHandle` (its state, its
paths and the connection to its shim), not a thread: the task's
actor (:class:`actors.tasks.TaskActor`) is started from the handle when a
message for the task arrives and stopped again once it is idle
(:class:`actors.task_actors.TaskActors`). Everything that must outlive one
actor lives here, so a new actor carries on where the last one stopped.

:class:`TaskHost` is what a task actor needs from the daemon around it
(events, metadata, the exec pool, its registry); the registry provides it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from actors.task_state import TaskState

if TYPE_CHECKING:
    import pykka

    from actors.leases import Leases
    from actors.restart_monitor import SupervisionHooks
    from actors.supervision import Directory
    from actors.tasks import TaskOp
    from runtime.content import ContentStore
    from runtime.shim_client import ShimClient

__all__ = ["TaskHandle", "TaskHost"]


@dataclass(eq=False, slots=True)
class TaskHandle:
    """One task as its registry keeps it; only its actor (one at a time) changes it."""

    state: TaskState
    task_dir: Path
    # Not its spec: nothing reads it after the create (the bundle on disk and
    # the container's record have it), and it was most of a handle's size.
    runtime_binary: str
    #: the task's connection to its shim; used by its actor, one call at a time
    client: ShimClient
    # The registry's bookkeeping (under its lock): the actor now running the
    # task, if any, how many messages were sent to it and not yet handled,
    # and when it last finished one (monotonic).
    ref: pykka.ActorRef[Any] | None = None
    in_flight: int = 0
    last: float = 0.0
    #: deleted: no actor is started for it again
    ended: bool = False
    #: operations waiting for the execs now starting (see TaskActor)
    deferred: list[TaskOp] = field(default_factory=list)
    #: how it was created (rootfs mounts, stdio, terminal), kept in its record:
    #: a restart repeats them, and attach finds the task's FIFOs there
    options: dict[str, Any] = field(default_factory=dict)
    #: its shim's pid once known (0: not known), to tell its death from an earlier shim's
    shim_pid: int = 0
    #: health-check execs running now: pid -> what to call with (exit status, exited_at_ns);
    #: they publish no events and are forgotten once they exit
    quiet: dict[int, Callable[[int, int], None]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """How logs name the task."""
        return f"task:{self.state.ns}/{self.state.container_id}"


class TaskHost(Protocol):
    """What a task actor uses of the daemon; provided by its registry."""

    @property
    def directory(self) -> Directory:
        """The daemon's named actors (metadata, events)."""

    @property
    def content(self) -> ContentStore | None:
        """Where checkpoints are stored (None: tasks cannot checkpoint)."""

    @property
    def leases(self) -> Leases:
        """Leases that keep new blobs from the collector until recorded."""

    @property
    def supervision(self) -> SupervisionHooks | None:
        """The restart monitor's hooks (None: nothing is supervised)."""

    def send(self, handle: TaskHandle, message: Any) -> bool:
        """Tell the task's actor ``message`` (starting one); False when it cannot take it."""

    def finished(self, handle: TaskHandle) -> None:
        """The task's actor has handled one message."""

    def end(self, handle: TaskHandle) -> None:
        """The task is deleted: forget its handle, close its shim connection."""

    def show(self, ns: str, container_id: str, info: dict[str, Any] | None) -> None:
        """Make ``info`` what Info and List answer for the task (None: it is gone)."""

    def cleanup(self, handle: TaskHandle) -> None:
        """Tear down a task whose shim is gone: its processes, mounts, runc state."""

    def run_exec(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the exec pool; Unavailable when the daemon is stopping."""

    def exec_client(self, handle: TaskHandle) -> ShimClient:
        """A new connection to the task's shim, for one exec beside the task's own."""
