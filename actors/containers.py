"""Container actors: one per container while something about it is in flight.

A :class:`ContainerActor` serializes the operations that involve one
container's runtime (task create and adoption, and it passes the task's
operations on to the task's actor), so two of them can never interleave.
Metadata-only calls do not need one (the metadata actor's transactions
serialize them), and a million stored containers must not mean a million
threads, so :class:`ContainerActors` starts an actor on the first message
for a container and stops it once it has had no message in flight for
``idle_seconds``, or for the shorter ``task_idle_seconds`` when the
container has a task: a running task is kept by its handle in
:class:`~actors.task_actors.TaskActors`, not by a thread.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pykka

from actors.metadata import DeleteContainer, DeleteTask, PutTask
from actors.supervision import Directory, SupervisedActor
from actors.task_actors import TaskActors
from actors.task_handle import TaskHandle
from actors.task_state import TaskState
from actors.tasks import (
    Adopted,
    OomKilled,
    ProcessExited,
    Settled,
    ShimDied,
    TaskOp,
    _Created,
)
from runtime.checkpoint import unpack_checkpoint
from runtime.shim_client import ShimClient
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
class AdoptTask:
    """Restart: take over a task whose shim is alive (or gone) from a previous daemon."""

    state: TaskState
    binary: str
    shim_alive: bool
    exits: list[dict[str, Any]]
    shim_pid: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    # Called once what the adoption records (a replayed EXIT) is committed.
    settled: Callable[[], None] | None = field(default=None, compare=False)


class ContainerActor(SupervisedActor):
    """Serializes one container's operations; creates or adopts its task."""

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
            elif isinstance(message, AdoptTask):
                self._adopt(message)
            else:
                log.warning("%s: unexpected message %r", self.name, message)
        finally:
            self._finished((self.ns, self.container_id))
        return None

    def _forward(self, message: Any, reply: Reply | None) -> None:
        # To the task's actor, started from its handle if it has none now.
        tasks = self.registry.tasks
        if tasks.tell(self.ns, self.container_id, message) or reply is None:
            return
        if tasks.stopping:
            reply.fail(Unavailable(f'task "{self.container_id}": the daemon is stopping'))
            return
        hooks = tasks.supervision
        # Between a restart's delete and its create there is no task: the
        # stop is recorded all the same, and the restart does not go on.
        killed = isinstance(message, TaskOp) and message.op == "kill" and hooks is not None
        if killed and hooks is not None and hooks.before_kill(self.ns, self.container_id):
            reply.ok({})
            return
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
        tasks = self.registry.tasks
        if tasks.get(self.ns, self.container_id) is not None or rt is None:
            msg.reply.fail(
                AlreadyExists(f'container "{self.container_id}": already has a task')
                if rt is not None
                else Unavailable("tasks are not available in this daemon")
            )
            return
        task_dir = rt.task_dir(self.ns, self.container_id)
        options = {
            "rootfs": msg.rootfs,
            "stdin": msg.stdin,
            "stdout": msg.stdout,
            "stderr": msg.stderr,
            "terminal": msg.terminal,
        }
        record = {
            "pid": 0,
            "status": "CREATED",
            "exit_status": 0,
            "exited_at_ns": 0,
            "task_dir": str(task_dir),
            "runtime_binary": msg.runtime_binary,
            "options": options,
        }
        # The record commits while the shim is forked; its outcome (the
        # container may have been deleted meanwhile) is checked before the
        # shim is told to create anything.
        recorded = self._metadata_later(
            lambda done: PutTask(self.ns, self.container_id, record, True, done)
        )
        client: ShimClient | None = None
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
            client = tasks.connect(task_dir)
            outcome = recorded()
            if isinstance(outcome, BaseException):
                # Not our record to undo: leave it, stop the idle shim.
                with contextlib.suppress(Exception):
                    client.call("shutdown")
                client.close()
                shutil.rmtree(task_dir, ignore_errors=True)
                msg.reply.fail(outcome)
                return
            created = client.call(
                "create",
                bundle_spec=msg.bundle_spec,
                rootfs=msg.rootfs,
                stdin=msg.stdin,
                stdout=msg.stdout,
                stderr=msg.stderr,
                terminal=msg.terminal,
                checkpoint=checkpoint,
            )
        except Exception as exc:
            if client is not None:
                client.close()
            shutil.rmtree(task_dir, ignore_errors=True)
            if not isinstance(recorded(), BaseException):  # ours: undo it
                self._metadata(lambda done: DeleteTask(self.ns, self.container_id, done))
            msg.reply.fail(exc)
            return
        finally:
            # runc restore has read the images by the time create answers.
            shutil.rmtree(task_dir.parent / f".{self.container_id}.restore", ignore_errors=True)
        state = TaskState(self.ns, self.container_id, pid=int(created["pid"]))
        handle = TaskHandle(state, task_dir, msg.runtime_binary, client, options=options)
        self._keep(handle, shim_pid)
        if not tasks.send(handle, _Created(msg.reply)):
            msg.reply.fail(Unavailable(f'task "{self.container_id}": the daemon is stopping'))

    def _keep(self, handle: TaskHandle, shim_pid: int) -> None:
        """Hand the new task to the registry, and have its shim watched."""
        handle.shim_pid = shim_pid
        self.registry.tasks.add(handle)
        if self.registry.watch is not None and shim_pid:
            self.registry.watch(self.ns, self.container_id, shim_pid)

    def _adopt(self, msg: AdoptTask) -> None:
        rt = self.registry.runtime
        assert rt is not None
        tasks = self.registry.tasks
        task_dir = rt.task_dir(self.ns, self.container_id)
        handle = TaskHandle(
            msg.state, task_dir, msg.binary, tasks.connect(task_dir), options=msg.options
        )
        try:
            self._keep(handle, msg.shim_pid)
        except AlreadyExists:
            log.error("%s: adopted twice; keeping the task already adopted", self.name)
            handle.client.close()
            if msg.settled is not None:
                msg.settled()
            return
        tasks.send(handle, Adopted())
        if msg.shim_alive:
            # Only the init's exit is replayed from the file; exec exits the
            # shim still queues arrive as events (see docs/protocol.md).
            for line in msg.exits:
                if int(line.get("pid", -1)) != msg.state.pid:
                    continue
                tasks.send(
                    handle,
                    ProcessExited(
                        int(line["pid"]), int(line["exit_status"]), int(line["exited_at_ns"])
                    ),
                )
        else:
            tasks.send(handle, ShimDied())
        if msg.settled is not None and not tasks.send(handle, Settled(msg.settled)):
            msg.settled()


class ContainerActors:
    """Starts container actors on demand and stops idle ones; keeps the tasks' handles."""

    def __init__(
        self,
        directory: Directory,
        supervisor: pykka.ActorRef[Any] | None,
        *,
        idle_seconds: float = 30.0,
        task_idle_seconds: float = 2.0,
        runtime: TaskRuntime | None = None,
        watch: Callable[[str, str, int], None] | None = None,
        connect: Callable[[Path], ShimClient] | None = None,
    ) -> None:
        self.directory = directory
        self.supervisor = supervisor
        self.idle_seconds = idle_seconds
        self.runtime = runtime
        self.watch = watch  # told of each shim's pid, to notice its death
        self._lock = threading.Lock()
        # (ns, id) -> [ref, messages in flight, last activity (monotonic)]
        self._actors: dict[tuple[str, str], list[Any]] = {}
        # Live tasks' state as their actors last showed it: what Info and List
        # answer, so they agree with events already published.
        self._shown: dict[tuple[str, str], dict[str, Any]] = {}
        self.tasks = TaskActors(
            directory,
            idle_seconds=task_idle_seconds,
            runtime=runtime,
            show=self.show,
            lock=self._lock,  # one lock: an event goes to the task, else its container
            connect=connect,
        )

    @property
    def task_idle_seconds(self) -> float:
        """How long an idle task's actor, or its container's, is kept."""
        return self.tasks.idle_seconds

    def show(self, ns: str, container_id: str, info: dict[str, Any] | None) -> None:
        """Record a task's current wire state (None: the task is gone)."""
        if info is None:
            self._shown.pop((ns, container_id), None)
        else:
            self._shown[(ns, container_id)] = info

    def shown(self, ns: str, container_id: str) -> dict[str, Any] | None:
        """A live task's current wire state, if its actor has shown one."""
        return self._shown.get((ns, container_id))

    def __len__(self) -> int:
        return len(self._actors)

    def alive(self, ns: str, container_id: str) -> bool:
        """Whether the container has an actor now."""
        return (ns, container_id) in self._actors

    def tell(self, ns: str, container_id: str, message: Any, *, start: bool = True) -> bool:
        """Send ``message`` to the container's actor, starting it if ``start``.

        A task's events (exits, OOM, its shim's death) go straight to the
        task's actor when the container has a task. Returns False (and
        sends nothing) when the container has no actor and ``start`` is False.
        """
        key = (ns, container_id)
        with self._lock:
            # A task's event goes straight to its actor: one hop less on the
            # exit -> event path, and the container needs no actor for it.
            # Without a task (its create is in flight) the container's actor
            # queues it behind that.
            task_event = isinstance(message, ProcessExited | OomKilled | ShimDied)
            if task_event and self.tasks.tell_locked(key, message):
                return True
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
        """Stop the container and task actors idle long enough; returns how many.

        A container with a task is idle after ``task_idle_seconds``, one
        without after ``idle_seconds``; task actors as :meth:`TaskActors.reap`.
        """
        now = time.monotonic() if now is None else now
        stopped = []
        with self._lock:
            for key, (ref, in_flight, last) in list(self._actors.items()):
                has_task = self.tasks.has_locked(key)
                idle = self.tasks.idle_seconds if has_task else self.idle_seconds
                if in_flight == 0 and now - last >= idle:
                    del self._actors[key]
                    stopped.append(ref)
        for ref in stopped:
            ref.stop(block=False)
        return len(stopped) + self.tasks.reap(now)

    def stop_all(self) -> None:
        """Stop every container actor after its queued work, then the task actors.

        Daemon shutdown: the tasks keep running (a restarted daemon adopts them).
        """
        with self._lock:
            refs = [entry[0] for entry in self._actors.values()]
            self._actors.clear()
        for ref in refs:
            ref.stop(block=True, timeout=10)
        self.tasks.stop_all()
