"""Task and shim actors: one of each per running task.

The :class:`TaskActor` holds the task's state (:mod:`actors.task_state`),
serializes its operations, and answers their requests. The
:class:`ShimActor` owns the one socket to the task's shim process and makes
the blocking calls; the task actor asks it and waits, which is safe because
a shim actor never asks anyone.

Exits reach the task actor as :class:`ProcessExited` messages (from the
shim's event stream, or read from its exit file after a restart); an exit
that arrives while ``Start`` is in flight queues behind it, so START is
always published before EXIT.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykka

from actors.events import Publish
from actors.image_records import GC_ROOT_LABEL, add_content
from actors.leases import Leases
from actors.metadata import DeleteTask, PutTask, transact
from actors.supervision import Directory, SupervisedActor
from actors.task_state import ExecProcess, TaskState, TaskStatus
from runtime.checkpoint import store_checkpoint
from runtime.content import ContentStore
from runtime.shim_client import ShimClient, read_exits
from wire.codec import pack, timestamp_or_nil
from wire.errors import BerthError, Unavailable
from wire.reply import Reply

__all__ = [
    "Adopted",
    "OomKilled",
    "ProcessExited",
    "ShimActor",
    "ShimCall",
    "ShimDied",
    "TaskActor",
    "TaskOp",
]

log = logging.getLogger(__name__)

SHIM_CALL_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class ShimCall:
    """Ask (``ask``) the shim actor to make one call to its shim."""

    op: str
    args: dict[str, Any] = field(default_factory=dict)


class ShimActor(SupervisedActor):
    """Owns the socket to one shim; makes its calls one at a time."""

    def __init__(
        self, supervisor: pykka.ActorRef[Any] | None, ns: str, cid: str, task_dir: Path
    ) -> None:
        super().__init__(supervisor)
        self.name = f"shim:{ns}/{cid}"
        self.task_dir = task_dir
        self.client: ShimClient | None = None

    def on_start(self) -> None:
        super().on_start()
        # zmq sockets belong to one thread: make it in the actor's own.
        self.client = ShimClient(self.task_dir, timeout=SHIM_CALL_TIMEOUT)

    def on_stop(self) -> None:
        if self.client is not None:
            self.client.close()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ShimCall):
            assert self.client is not None
            return self.client.call(message.op, **message.args)
        log.warning("%s: unexpected message %r", self.name, message)
        return None


@dataclass(frozen=True, slots=True)
class TaskOp:
    """A Tasks RPC for this task: ``op`` names it, ``args`` are its validated fields."""

    op: str
    args: dict[str, Any]
    reply: Reply


@dataclass(frozen=True, slots=True)
class ProcessExited:
    """A process of the task exited (from the shim, or its exit file)."""

    pid: int
    exit_status: int
    exited_at_ns: int


@dataclass(frozen=True, slots=True)
class OomKilled:
    """The kernel's OOM killer struck in the task's memory cgroup."""

    pid: int


@dataclass(frozen=True, slots=True)
class ShimDied:
    """The task's shim process is gone."""


@dataclass(frozen=True, slots=True)
class Adopted:
    """Restart: the task was taken back from its shim; record what the shim said."""


@dataclass(frozen=True, slots=True)
class _Created:
    """Internal: the task was created; record it, publish CREATE, answer."""

    reply: Reply


class TaskActor(SupervisedActor):
    """One task: its state, its operations in order, its events."""

    def __init__(
        self,
        supervisor: pykka.ActorRef[Any] | None,
        *,
        state: TaskState,
        task_dir: Path,
        spec: dict[str, Any],
        directory: Directory,
        shim: pykka.ActorRef[Any],
        ended: Callable[[], None],
        cleanup: Callable[[TaskState], None],
        content: ContentStore,
        shown: Callable[[dict[str, Any] | None], None] = lambda _info: None,
        runtime_binary: str = "runc",
        leases: Leases | None = None,
    ) -> None:
        super().__init__(supervisor)
        self.state = state
        self.name = f"task:{state.ns}/{state.container_id}"
        self.task_dir = task_dir
        self.spec = spec
        self.directory = directory
        self.shim = shim
        self._ended = ended
        self._cleanup = cleanup
        self.content = content
        self._shown = shown  # where Info and List read a live task's state
        self.runtime_binary = runtime_binary
        self.leases = leases or Leases()

    # plumbing

    def _call(self, op: str, **args: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = self.shim.ask(  # type: ignore[assignment]
                ShimCall(op, args), timeout=SHIM_CALL_TIMEOUT + 5
            )
        except pykka.ActorDeadError:
            raise Unavailable(f"{self.state.owner}: shim is gone") from None
        return result

    def _publish(
        self, type_: str, pid: int = 0, exit_status: int = 0, exited_at_ns: int = 0
    ) -> None:
        try:
            self.directory.tell(
                "events",
                Publish(
                    self.state.ns, self.state.container_id, type_, pid, exit_status, exited_at_ns
                ),
            )
        except Unavailable:
            log.error("%s: event bus unavailable; %s event lost", self.name, type_)

    def _show(self) -> None:
        """Make the current state what Info and List answer."""
        self._shown(self.info())

    def _persist(self) -> None:
        s = self.state
        record = {
            "pid": s.pid,
            "status": s.status.value,
            "exit_status": s.exit_status,
            "exited_at_ns": s.exited_at_ns,
            "task_dir": str(self.task_dir),
            "runtime_binary": self.runtime_binary,
        }
        self._show()
        # Not waited for: this actor's writes reach the metadata actor in
        # order, Info and List answer from what _show published, and a
        # restarted daemon takes a live task's status from its shim.
        self.directory.tell("metadata", PutTask(s.ns, s.container_id, record, False))

    def info(self) -> dict[str, Any]:
        """The wire Task of this task."""
        s = self.state
        return {
            "id": s.container_id,
            "container_id": s.container_id,
            "pid": s.pid,
            "status": s.status.value,
            "spec": None,
            "exit_status": s.exit_status,
            "exited_at": timestamp_or_nil(s.exited_at_ns),
        }

    # messages

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, TaskOp):
            try:
                handler = getattr(self, f"_op_{message.op}")
                handler(message.args, message.reply)
            except BerthError as exc:
                message.reply.fail(exc)
            except Exception as exc:
                message.reply.fail(exc)
        elif isinstance(message, ProcessExited):
            self._exited(message)
        elif isinstance(message, Adopted):
            self._persist()  # the record may trail the shim: its writes are not waited for
        elif isinstance(message, OomKilled):
            self._publish("OOM", message.pid)
        elif isinstance(message, ShimDied):
            self._shim_died()
        elif isinstance(message, _Created):
            self._persist()
            self._publish("CREATE", self.state.pid)
            message.reply.ok({"container_id": self.state.container_id, "pid": self.state.pid})
        else:
            log.warning("%s: unexpected message %r", self.name, message)
        return None

    def _exited(self, event: ProcessExited) -> None:
        if not self.state.exited(event.pid, event.exit_status, event.exited_at_ns):
            return  # already known: the exit file and the event queue both carry it
        # Published before the task record is updated: the exit is already
        # durable in the shim's exit file, from which a restarted daemon
        # recovers it (re-emitting EXIT if it crashed in between).
        if event.pid == self.state.pid:
            self._show()  # Info agrees with the event from the moment it is out
        self._publish("EXIT", event.pid, event.exit_status, event.exited_at_ns)
        if event.pid == self.state.pid:
            self._persist()

    def _shim_died(self) -> None:
        if self.state.status is TaskStatus.STOPPED and self.task_dir.exists() is False:
            return
        log.error("%s: shim died; cleaning up the task", self.name)
        self._cleanup(self.state)  # kills processes, removes mounts and runc state
        if self.state.status is not TaskStatus.STOPPED:
            status, at = _exit_from_file(self.task_dir, self.state.pid)
            self.state.exited(self.state.pid, status, at)
            self._persist()
            self._publish("EXIT", self.state.pid, status, at)
        shutil.rmtree(self.task_dir, ignore_errors=True)

    def _op_start(self, args: dict[str, Any], reply: Reply) -> None:
        self.state.check_startable()
        self._call("start")
        self.state.started()
        self._persist()
        self._publish("START", self.state.pid)
        reply.ok({})

    def _op_kill(self, args: dict[str, Any], reply: Reply) -> None:
        pid = 0 if args["all"] else self.state.live_pid(args["pid"])
        if args["all"]:
            self.state.check_live()
        self._call("kill", signal=args["signal"] or 15, all=args["all"], pid=pid)
        reply.ok({})

    def _op_pause(self, args: dict[str, Any], reply: Reply) -> None:
        self.state.check_pausable()
        self._call("pause")
        self.state.paused()
        self._persist()
        self._publish("PAUSED", self.state.pid)
        reply.ok({})

    def _op_resume(self, args: dict[str, Any], reply: Reply) -> None:
        self.state.check_resumable()
        self._call("resume")
        self.state.resumed()
        self._persist()
        self._publish("RESUMED", self.state.pid)
        reply.ok({})

    def _op_exec(self, args: dict[str, Any], reply: Reply) -> None:
        self.state.check_running("exec")
        result = self._call("exec", **args)
        pid = int(result["pid"])
        self.state.execs[pid] = ExecProcess(pid)
        self._publish("EXEC_ADDED", pid)
        reply.ok({"pid": pid})

    def _op_pty(self, args: dict[str, Any], reply: Reply) -> None:
        pid = self.state.live_pid(args["pid"])
        self._call("pty", pid=pid, width=args["width"], height=args["height"])
        reply.ok({})

    def _op_close_stdin(self, args: dict[str, Any], reply: Reply) -> None:
        pid = self.state.live_pid(args["pid"])
        self._call("close_stdin", pid=pid)
        reply.ok({})

    def _op_processes(self, args: dict[str, Any], reply: Reply) -> None:
        self.state.check_live()
        pids = self._call("ps")["pids"]
        reply.ok(
            {
                "processes": [
                    {
                        "pid": pid,
                        "args": [],
                        "env": [],
                        "user": None,
                        "cwd": "",
                        "terminal": False,
                        "exit_status": 0,
                        "status": "RUNNING",
                        "runtime_data": None,
                    }
                    for pid in pids
                ]
            }
        )

    def _op_checkpoint(self, args: dict[str, Any], reply: Reply) -> None:
        self.state.check_live()
        result = self._call("checkpoint", **args)
        image = Path(result["image_path"])
        ns = self.state.ns
        try:
            with self.leases.hold() as lease:
                descriptor = store_checkpoint(image, self.content, hold=lease.blob)
                # A root of garbage collection until the user deletes it
                # (Content/Delete), as containerd labels checkpoints.
                labels = {GC_ROOT_LABEL: str(time.time_ns())}

                def record(txn: Any, store: Any, stamp: Any) -> bytes:
                    add_content(txn, store, ns, [descriptor["digest"]], stamp, labels)
                    return b""

                transact(self.directory, record)
        finally:
            shutil.rmtree(image, ignore_errors=True)
        reply.ok({"descriptors": [descriptor]})

    def _op_delete(self, args: dict[str, Any], reply: Reply) -> None:
        self.state.check_deletable()
        if self.state.status is TaskStatus.CREATED:
            result = self._call("delete")
            self.state.exited(
                self.state.pid, int(result["exit_status"]), int(result["exited_at_ns"])
            )
        else:
            try:
                self._call("delete")
            except Unavailable:
                self._cleanup(self.state)
        shutil.rmtree(self.task_dir, ignore_errors=True)
        s = self.state
        done = threading.Event()
        self.directory.tell("metadata", DeleteTask(s.ns, s.container_id, lambda _r: done.set()))
        done.wait(30)
        self._shown(None)
        self._publish("DELETE", s.pid, s.exit_status, s.exited_at_ns)
        reply.ok_packed(
            pack(
                {
                    "container_id": s.container_id,
                    "exit_status": s.exit_status,
                    "exited_at": timestamp_or_nil(s.exited_at_ns),
                }
            )
        )
        self._ended()


def _exit_from_file(task_dir: Path, pid: int) -> tuple[int, int]:
    """The init's exit from the shim's exit file, else 255 now."""
    for line in read_exits(task_dir):
        if int(line.get("pid", -1)) == pid:
            return int(line["exit_status"]), int(line["exited_at_ns"])
    return 255, time.time_ns()
