"""Container actors: one per container while something about it is in flight.

A :class:`ContainerActor` serializes the operations that involve one
container's runtime (task create, start, kill, delete, ...), so two of them
can never interleave. Metadata-only calls do not need one (the metadata
actor's transactions serialize them), and a million stored containers must
not mean a million threads, so :class:`ContainerActors` starts an actor on
the first message for a container and stops it once it has been idle (no
message in flight, no task to watch) for ``idle_seconds``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pykka

from actors.metadata import DeleteContainer, DeleteTask, PutTask
from actors.supervision import Directory, SupervisedActor
from actors.task_state import TaskState
from actors.tasks import (
    Adopted,
    OomKilled,
    ProcessExited,
    ShimActor,
    ShimCall,
    ShimDied,
    TaskActor,
    TaskOp,
    _Created,
)
from runtime.checkpoint import unpack_checkpoint
from wire.errors import AlreadyExists, NotFound, Unavailable
from wire.reply import Reply

if TYPE_CHECKING:
    from actors.task_runtime import TaskRuntime

__all__ = ["AdoptTask", "ContainerActor", "ContainerActors", "CreateTask"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CreateTask:
    """Tasks/Create, validated: the container's spec for the bundle, stdio, rootfs."""

    ns: str
    container_id: str
    bundle_spec: bytes
    spec: dict[str, Any]
    rootfs: list[dict[str, Any]]
    stdin: str
    stdout: str
    stderr: str
    terminal: bool
    checkpoint: str
    runtime_binary: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class TaskEnded:
    """Internal: the task was deleted; the actor may become idle."""


@dataclass(frozen=True, slots=True)
class AdoptTask:
    """Restart: take over a task whose shim is alive (or gone) from a previous daemon."""

    state: TaskState
    binary: str
    shim_alive: bool
    exits: list[dict[str, Any]]
    shim_pid: int = 0


class ContainerActor(SupervisedActor):
    """Serializes one container's operations, and owns its task's actors."""

    def __init__(
        self,
        supervisor: pykka.ActorRef[Any] | None,
        ns: str,
        container_id: str,
        directory: Directory,
        finished: Callable[[tuple[str, str]], None],
        registry: ContainerActors,
    ) -> None:
        super().__init__(supervisor)
        self.ns = ns
        self.container_id = container_id
        self.name = f"container:{ns}/{container_id}"
        self.directory = directory
        self._finished = finished
        self.registry = registry
        self.task: pykka.ActorRef[Any] | None = None
        self.shim: pykka.ActorRef[Any] | None = None

    def on_receive(self, message: Any) -> Any:
        try:
            if isinstance(message, DeleteContainer):
                self._delete(message)
            elif isinstance(message, CreateTask):
                self._create_task(message)
            elif isinstance(message, TaskOp):
                self._forward(message, message.reply)
            elif isinstance(message, ProcessExited | OomKilled | ShimDied):
                self._forward(message, None)
            elif isinstance(message, TaskEnded):
                self._task_ended()
            elif isinstance(message, AdoptTask):
                self._adopt(message)
            else:
                log.warning("%s: unexpected message %r", self.name, message)
        finally:
            self._finished((self.ns, self.container_id))
        return None

    def on_stop(self) -> None:
        # Daemon stop never stops tasks: only the daemon's side goes away.
        for ref in (self.task, self.shim):
            if ref is not None:
                ref.stop(block=False)

    def _forward(self, message: Any, reply: Reply | None) -> None:
        if self.task is None:
            if reply is not None:
                reply.fail(NotFound(f'task "{self.container_id}": not found'))
            return
        try:
            self.task.tell(message)
        except pykka.ActorDeadError:
            if reply is not None:
                reply.fail(NotFound(f'task "{self.container_id}": not found'))

    def _delete(self, message: DeleteContainer) -> None:
        # Wait for the commit so the next operation on this container sees
        # its result; the metadata actor never asks back, so this cannot
        # deadlock.
        committed = threading.Event()
        try:
            self.directory.tell(
                "metadata",
                DeleteContainer(
                    message.ns, message.id, message.reply, lambda _result: committed.set()
                ),
            )
        except Unavailable as exc:
            message.reply.fail(exc)
            return
        if not committed.wait(60):
            log.error("%s: delete not committed within 60 s", self.name)

    def _metadata(self, message: Any) -> bytes | BaseException:
        return self._metadata_later(message)()

    def _metadata_later(self, message: Any) -> Callable[[], bytes | BaseException]:
        """Send a write now; the returned call waits for its outcome."""
        result: list[bytes | BaseException] = []
        done = threading.Event()

        def finished(outcome: bytes | BaseException) -> None:
            result.append(outcome)
            done.set()

        self.directory.tell("metadata", message(finished))

        def wait() -> bytes | BaseException:
            if not done.wait(60):
                return Unavailable(f"{self.name}: metadata write timed out")
            return result[0]

        return wait

    def _create_task(self, msg: CreateTask) -> None:
        rt = self.registry.runtime
        if self.task is not None or rt is None:
            msg.reply.fail(
                AlreadyExists(f'container "{self.container_id}": already has a task')
                if self.task is not None
                else Unavailable("tasks are not available in this daemon")
            )
            return
        task_dir = rt.task_dir(self.ns, self.container_id)
        record = {
            "pid": 0,
            "status": "CREATED",
            "exit_status": 0,
            "exited_at_ns": 0,
            "task_dir": str(task_dir),
            "runtime_binary": msg.runtime_binary,
        }
        # The record commits while the shim is forked; its outcome (the
        # container may have been deleted meanwhile) is checked before the
        # shim is told to create anything.
        recorded = self._metadata_later(
            lambda done: PutTask(self.ns, self.container_id, record, True, done)
        )
        shim = None
        try:
            shutil.rmtree(task_dir, ignore_errors=True)
            task_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            checkpoint = ""
            if msg.checkpoint:
                image = task_dir.parent / f".{self.container_id}.restore"
                unpack_checkpoint(msg.checkpoint, rt.content, image)
                checkpoint = str(image)
            rt.runc_root(self.ns).mkdir(mode=0o700, parents=True, exist_ok=True)
            shim_pid = rt.zygote.spawn(
                rt.shim_config(self.ns, self.container_id, msg.runtime_binary)
            )
            shim = ShimActor.start(None, self.ns, self.container_id, task_dir)
            outcome = recorded()
            if isinstance(outcome, BaseException):
                # Not our record to undo: leave it, stop the idle shim.
                with contextlib.suppress(Exception):
                    shim.ask(ShimCall("shutdown"), timeout=10)
                shim.stop(block=False)
                shutil.rmtree(task_dir, ignore_errors=True)
                msg.reply.fail(outcome)
                return
            created: dict[str, Any] = shim.ask(  # type: ignore[assignment]
                ShimCall(
                    "create",
                    {
                        "bundle_spec": msg.bundle_spec,
                        "rootfs": msg.rootfs,
                        "stdin": msg.stdin,
                        "stdout": msg.stdout,
                        "stderr": msg.stderr,
                        "terminal": msg.terminal,
                        "checkpoint": checkpoint,
                    },
                ),
                timeout=120,
            )
        except Exception as exc:
            if shim is not None:
                shim.stop(block=False)
            shutil.rmtree(task_dir, ignore_errors=True)
            if not isinstance(recorded(), BaseException):  # ours: undo it
                self._metadata(lambda done: DeleteTask(self.ns, self.container_id, done))
            msg.reply.fail(exc)
            return
        finally:
            # runc restore has read the images by the time create answers.
            shutil.rmtree(task_dir.parent / f".{self.container_id}.restore", ignore_errors=True)
        state = TaskState(self.ns, self.container_id, pid=int(created["pid"]))
        self._start_task(state, task_dir, msg.spec, shim, msg.runtime_binary, shim_pid)
        assert self.task is not None
        self.task.tell(_Created(msg.reply))

    def _start_task(
        self,
        state: TaskState,
        task_dir: Path,
        spec: dict[str, Any],
        shim: pykka.ActorRef[Any],
        binary: str,
        shim_pid: int,
    ) -> None:
        rt = self.registry.runtime
        assert rt is not None
        registry, ns, cid = self.registry, self.ns, self.container_id
        self.shim = shim
        self.task = TaskActor.start(
            None,
            state=state,
            task_dir=task_dir,
            spec=spec,
            directory=self.directory,
            shim=shim,
            # Through the registry, which counts messages in flight: an
            # actor reaped with one still queued would lose it.
            ended=lambda: registry.tell(ns, cid, TaskEnded(), start=False),
            cleanup=lambda s: rt.cleanup_dead(s.ns, s.container_id, binary),
            content=rt.content,
            leases=rt.leases,
            shown=lambda info: registry.show(ns, cid, info),
            runtime_binary=binary,
        )
        self.registry.pin((self.ns, self.container_id), self.task)
        if self.registry.watch is not None and shim_pid:
            self.registry.watch(self.ns, self.container_id, shim_pid)

    def _adopt(self, msg: AdoptTask) -> None:
        rt = self.registry.runtime
        assert rt is not None
        task_dir = rt.task_dir(self.ns, self.container_id)
        shim = ShimActor.start(None, self.ns, self.container_id, task_dir)
        self._start_task(msg.state, task_dir, {}, shim, msg.binary, msg.shim_pid)
        assert self.task is not None
        self.task.tell(Adopted())
        if msg.shim_alive:
            # Only the init's exit is replayed from the file; exec exits the
            # shim still queues arrive as events (see docs/protocol.md).
            for line in msg.exits:
                if int(line.get("pid", -1)) != msg.state.pid:
                    continue
                self.task.tell(
                    ProcessExited(
                        int(line["pid"]), int(line["exit_status"]), int(line["exited_at_ns"])
                    )
                )
        else:
            self.task.tell(ShimDied())

    def _task_ended(self) -> None:
        for ref in (self.task, self.shim):
            if ref is not None:
                ref.stop(block=False)
        self.task = self.shim = None
        self.registry.pin((self.ns, self.container_id), None)


class ContainerActors:
    """Starts container actors on demand and stops idle ones."""

    def __init__(
        self,
        directory: Directory,
        supervisor: pykka.ActorRef[Any] | None,
        *,
        idle_seconds: float = 30.0,
        runtime: TaskRuntime | None = None,
        watch: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self.directory = directory
        self.supervisor = supervisor
        self.idle_seconds = idle_seconds
        self.runtime = runtime
        self.watch = watch  # told of each shim's pid, to notice its death
        self._lock = threading.Lock()
        # (ns, id) -> [ref, messages in flight, last activity (monotonic)]
        self._actors: dict[tuple[str, str], list[Any]] = {}
        self._pinned: set[tuple[str, str]] = set()  # containers with a task
        self._tasks: dict[tuple[str, str], pykka.ActorRef[Any]] = {}
        # Live tasks' state as their actors last showed it: what Info and List
        # answer, so they agree with events already published.
        self._shown: dict[tuple[str, str], dict[str, Any]] = {}

    def show(self, ns: str, container_id: str, info: dict[str, Any] | None) -> None:
        """Record a task's current wire state (None: the task is gone)."""
        if info is None:
            self._shown.pop((ns, container_id), None)
        else:
            self._shown[(ns, container_id)] = info

    def shown(self, ns: str, container_id: str) -> dict[str, Any] | None:
        """A live task's current wire state, if its actor has shown one."""
        return self._shown.get((ns, container_id))

    def pin(self, key: tuple[str, str], task: pykka.ActorRef[Any] | None) -> None:
        """Keep a container's actor while it has a task (``task``), or stop keeping it."""
        with self._lock:
            if task is not None:
                self._pinned.add(key)
                self._tasks[key] = task
            else:
                self._pinned.discard(key)
                self._tasks.pop(key, None)

    def __len__(self) -> int:
        return len(self._actors)

    def alive(self, ns: str, container_id: str) -> bool:
        """Whether the container has an actor now."""
        return (ns, container_id) in self._actors

    def tell(self, ns: str, container_id: str, message: Any, *, start: bool = True) -> bool:
        """Send ``message`` to the container's actor, starting it if ``start``.

        Returns False (and sends nothing) when the container has no actor
        and ``start`` is False.
        """
        key = (ns, container_id)
        if isinstance(message, ProcessExited):
            # Straight to the task: one hop less on the exit -> event path.
            task = self._tasks.get(key)
            if task is not None:
                try:
                    task.tell(message)
                    return True
                except pykka.ActorDeadError:
                    pass
        with self._lock:
            entry = self._actors.get(key)
            if entry is None:
                if not start:
                    return False
                ref = ContainerActor.start(
                    self.supervisor, ns, container_id, self.directory, self._finished, self
                )
                entry = [ref, 0, time.monotonic()]
                self._actors[key] = entry
            entry[1] += 1
            entry[2] = time.monotonic()
            entry[0].tell(message)
        return True

    def _finished(self, key: tuple[str, str]) -> None:
        with self._lock:
            entry = self._actors.get(key)
            if entry is not None:
                entry[1] -= 1
                entry[2] = time.monotonic()

    def reap(self, now: float | None = None) -> int:
        """Stop the actors idle for ``idle_seconds``; returns how many."""
        now = time.monotonic() if now is None else now
        stopped = []
        with self._lock:
            for key, (ref, in_flight, last) in list(self._actors.items()):
                if key in self._pinned:
                    continue
                if in_flight == 0 and now - last >= self.idle_seconds:
                    del self._actors[key]
                    stopped.append(ref)
        for ref in stopped:
            ref.stop(block=False)
        return len(stopped)

    def stop_all(self) -> None:
        """Stop every container actor (daemon shutdown), after its queued work."""
        with self._lock:
            refs = [entry[0] for entry in self._actors.values()]
            self._actors.clear()
        for ref in refs:
            ref.stop(block=True, timeout=10)
