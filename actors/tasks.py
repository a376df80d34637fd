"""Task actors: one task's state, operations and events, while it has messages.

The :class:`TaskActor` of a task serializes its operations and answers
their requests, calling the task's shim through the handle's
:class:`~runtime.shim_client.ShimClient` and waiting (a shim never calls
back). It is started from the task's :class:`~actors.task_handle.TaskHandle`
when a message for the task arrives and stopped once idle
(:class:`actors.task_actors.TaskActors`); the handle keeps the state between.

Exits reach the task actor as :class:`ProcessExited` messages (from the
shim's event stream, or read from its exit file after a restart); an exit
that arrives while ``Start`` is in flight queues behind it, so START is
always published before EXIT.

Execs do not hold the actor for the ~20 ms runc takes: the shim call runs
on the daemon's exec pool over its own connection, and its answer comes
back as :class:`_ExecDone`, when the exec is recorded, EXEC_ADDED is
published and the client answered. An exec's exit can arrive before that
answer; :class:`~actors.task_state.TaskState` holds it until then. Delete,
Pause and Checkpoint wait for the execs that are starting (and everything
sent after them waits behind them, in order), so no EXEC_ADDED follows
DELETE and no exec joins a frozen or dumped cgroup.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

from actors.image_records import GC_ROOT_LABEL, add_content
from actors.metadata import DeleteTask, LogTaskEvent, PutTask, TaskEvent, Transact, transact
from actors.supervision import SupervisedActor
from actors.task_handle import TaskHandle, TaskHost
from actors.task_state import TaskState, TaskStatus
from runtime.checkpoint import store_checkpoint
from runtime.shim_client import read_exits
from wire.codec import pack, timestamp_or_nil
from wire.errors import BerthError, FailedPrecondition, NotFound, Unavailable
from wire.reply import Reply

__all__ = [
    "Adopted",
    "OomKilled",
    "ProcessExited",
    "Settled",
    "ShimDied",
    "TaskActor",
    "TaskOp",
]

log = logging.getLogger(__name__)


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
    """The task's shim process is gone.

    ``shim_pid`` names the shim (0: not known): one of an earlier task of
    the same container (deleted, its shim exiting late) is not this task's.
    """

    shim_pid: int = 0


@dataclass(frozen=True, slots=True)
class Adopted:
    """Restart: the task was taken back from its shim; record what the shim said."""


@dataclass(frozen=True, slots=True)
class Settled:
    """Call ``done`` once every write this task's actor sent so far is committed."""

    done: Callable[[], None]


@dataclass(frozen=True, slots=True)
class _Created:
    """Internal: the task was created; record it, publish CREATE, answer."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class _ExecDone:
    """Internal: the shim answered an exec (its pid, or why it failed)."""

    outcome: int | BaseException
    reply: Reply
    # A health check's exec: called with its exit instead of publishing events.
    on_exit: Callable[[int, int], None] | None = None


# Operations that wait for the execs now starting: Delete must not let an
# EXEC_ADDED follow DELETE; Pause and Checkpoint would freeze or dump a
# cgroup an exec is joining. (They were serialized with execs before execs
# ran beside the actor; every other operation still does not wait.)
_AFTER_EXECS = frozenset({"delete", "pause", "checkpoint"})


class TaskActor(SupervisedActor):
    """One task: its state, its operations in order, its events."""

    def __init__(
        self, supervisor: pykka.ActorRef[Any] | None, handle: TaskHandle, host: TaskHost
    ) -> None:
        super().__init__(supervisor)
        self.handle = handle
        self.host = host
        self.name = handle.name

    @property
    def state(self) -> TaskState:
        """The task's state (kept by the handle, across actors)."""
        return self.handle.state

    @property
    def task_dir(self) -> Path:
        """The task's state directory: bundle, shim socket, exit file."""
        return self.handle.task_dir

    # plumbing

    def _call(self, op: str, **args: Any) -> dict[str, Any]:
        return self.handle.client.call(op, **args)

    def _publish(self, event: TaskEvent, answer: Callable[[], None] | None = None) -> None:
        """Log an event that changes no record; ``answer`` runs once it is committed."""
        s = self.state
        self._tell_metadata(LogTaskEvent(s.ns, s.container_id, event, _after(answer)))

    def _tell_metadata(self, write: Any) -> None:
        try:
            self.host.directory.tell("metadata", write)
        except Unavailable:
            # Only while the daemon stops: the shim's exit file still holds
            # any exit, and the next daemon logs it.
            log.error("%s: metadata store unavailable; %r not logged", self.name, write)

    def _show(self) -> None:
        """Make the current state what Info and List answer."""
        self.host.show(self.state.ns, self.state.container_id, self.info())

    def _persist(
        self, event: TaskEvent | None = None, answer: Callable[[], None] | None = None
    ) -> None:
        """Record the task's state (and log ``event`` with it); ``answer`` runs after the commit."""
        s = self.state
        record = {
            "pid": s.pid,
            "status": s.status.value,
            "exit_status": s.exit_status,
            "exited_at_ns": s.exited_at_ns,
            "task_dir": str(self.task_dir),
            "runtime_binary": self.handle.runtime_binary,
            "options": self.handle.options,
        }
        self._show()
        # Not waited for by the actor: this task's writes reach the metadata
        # actor in order (one actor at a time sends them), Info and List
        # answer from what _show published, and a restarted daemon takes a
        # live task's status from its shim. The client's answer waits for
        # the commit, so an acknowledged operation's event is in the log.
        self._tell_metadata(
            PutTask(s.ns, s.container_id, record, False, _after(answer), event=event)
        )

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
        try:
            if isinstance(message, TaskOp):
                self.handle.deferred.append(message)
                self._run_deferred()
            elif isinstance(message, ProcessExited):
                self._exited(message)
            elif isinstance(message, _ExecDone):
                self._exec_done(message)
                self._run_deferred()
            elif isinstance(message, Adopted):
                self._persist()  # the record may trail the shim: its writes are not waited for
                hooks = self.host.supervision
                if hooks is not None and self.state.status is TaskStatus.RUNNING:
                    hooks.started(self.state.ns, self.state.container_id)
            elif isinstance(message, OomKilled):
                self.state.oom_killed = True
                self._publish(TaskEvent("OOM", message.pid))
            elif isinstance(message, ShimDied):
                if not (message.shim_pid and self.handle.shim_pid != message.shim_pid):
                    self._shim_died()
            elif isinstance(message, Settled):
                done = message.done
                # Behind this actor's earlier writes in the metadata actor's mailbox.
                self._tell_metadata(Transact(lambda *_: b"", done=lambda _r: done()))
            elif isinstance(message, _Created):
                body = {"container_id": self.state.container_id, "pid": self.state.pid}
                reply = message.reply
                self._persist(TaskEvent("CREATE", self.state.pid), lambda: reply.ok(body))
            else:
                log.warning("%s: unexpected message %r", self.name, message)
        finally:
            self.host.finished(self.handle)
        return None

    def _run_deferred(self) -> None:
        """Run the operations in order, up to one that must wait for starting execs."""
        deferred = self.handle.deferred
        while deferred:
            if self.state.execs_starting and deferred[0].op in _AFTER_EXECS:
                return  # its turn comes with the last _ExecDone
            self._op(deferred.pop(0))

    def _op(self, message: TaskOp) -> None:
        try:
            if self.handle.ended:
                hooks = self.host.supervision
                # Deleted by a restart under way: the stop is recorded, so no start.
                s = self.state
                if message.op == "kill" and hooks and hooks.before_kill(s.ns, s.container_id):
                    message.reply.ok({})
                    return
                raise NotFound(f"{self.state.owner}: not found")
            handler = getattr(self, f"_op_{message.op}")
            handler(message.args, message.reply)
        except BerthError as exc:
            message.reply.fail(exc)
        except Exception as exc:
            message.reply.fail(exc)

    def _exited(self, event: ProcessExited) -> None:
        if self.state.hold_exit(event.pid, event.exit_status, event.exited_at_ns):
            return  # perhaps an exec's whose reply is still coming: see _exec_done
        on_exit = self.handle.quiet.pop(event.pid, None)
        if on_exit is not None:
            # A health check: no events, and nothing kept of it.
            self.state.execs.pop(event.pid, None)
            on_exit(event.exit_status, event.exited_at_ns)
            return
        if not self.state.exited(event.pid, event.exit_status, event.exited_at_ns):
            return  # already known: the exit file and the event queue both carry it
        # Logged with the task's record (the init's) in one commit; a daemon
        # that dies before it recovers the exit from the shim's exit file.
        exit_event = TaskEvent("EXIT", event.pid, event.exit_status, event.exited_at_ns)
        if event.pid == self.state.pid:
            self._persist(exit_event)  # shown first: Info agrees before the event is out
            self._supervise_exit()
        else:
            self._publish(exit_event)

    def _supervise_exit(self) -> None:
        hooks = self.host.supervision
        if hooks is not None:
            s = self.state
            hooks.exited(s.ns, s.container_id, s.exit_status, s.exited_at_ns, s.oom_killed)

    def _shim_died(self) -> None:
        if self.state.status is TaskStatus.STOPPED and self.task_dir.exists() is False:
            return
        log.error("%s: shim died; cleaning up the task", self.name)
        self.host.cleanup(self.handle)  # kills processes, removes mounts and runc state
        if self.state.status is not TaskStatus.STOPPED:
            status, at = _exit_from_file(self.task_dir, self.state.pid)
            self.state.exited(self.state.pid, status, at)
            self._persist(TaskEvent("EXIT", self.state.pid, status, at))
            self._supervise_exit()
        shutil.rmtree(self.task_dir, ignore_errors=True)

    def _op_start(self, args: dict[str, Any], reply: Reply) -> None:
        self.state.check_startable()
        hooks = self.host.supervision
        if hooks is not None and not args.get("restart"):  # a restart's start changes no wish
            hooks.before_start(self.state.ns, self.state.container_id)
        self._call("start")
        self.state.started()
        if hooks is not None and self.state.status is TaskStatus.RUNNING:
            hooks.started(self.state.ns, self.state.container_id)
        self._persist(TaskEvent("START", self.state.pid), lambda: reply.ok({}))

    def _op_kill(self, args: dict[str, Any], reply: Reply) -> None:
        hooks = self.host.supervision
        by_api = not args.get("supervised")  # the health monitor's kills are not requests
        supervised = False
        if hooks is not None and by_api and (args["all"] or args["pid"] in (0, self.state.pid)):
            # Durably "stopped" before the signal: the exit it causes is not restarted.
            supervised = hooks.before_kill(self.state.ns, self.state.container_id)
            if supervised and self.state.status is TaskStatus.STOPPED:
                # Exited, perhaps waiting for its restart: the stop is what was asked.
                reply.ok({})
                return
        pid = 0 if args["all"] else self.state.live_pid(args["pid"])
        if args["all"]:
            self.state.check_live()
        try:
            self._call("kill", signal=args["signal"] or 15, all=args["all"], pid=pid)
        except (NotFound, FailedPrecondition):
            if not supervised:
                raise
            # It exited as the kill went out (its exit is on its way): stopped, as asked.
        reply.ok({})

    def _op_pause(self, args: dict[str, Any], reply: Reply) -> None:
        self.state.check_pausable()
        self._call("pause")
        self.state.paused()
        self._persist(TaskEvent("PAUSED", self.state.pid), lambda: reply.ok({}))

    def _op_resume(self, args: dict[str, Any], reply: Reply) -> None:
        self.state.check_resumable()
        self._call("resume")
        self.state.resumed()
        self._persist(TaskEvent("RESUMED", self.state.pid), lambda: reply.ok({}))

    def _op_exec(self, args: dict[str, Any], reply: Reply) -> None:
        self.state.check_running("exec")
        handle, host = self.handle, self.host
        on_exit = args.pop("on_exit", None)  # a health check's (never from the wire)

        def call_shim() -> None:
            # On a pool thread, over a connection of its own: the shim
            # serves each connection independently, so execs of one task
            # run side by side while this actor goes on with its messages.
            outcome: int | BaseException
            try:
                with host.exec_client(handle) as client:
                    outcome = int(client.call("exec", **args)["pid"])
            except Exception as exc:
                outcome = exc
            if not host.send(handle, _ExecDone(outcome, reply, on_exit)):
                # No actor takes it (the daemon is stopping): answer from
                # here; the process runs, but no EXEC_ADDED is published.
                if isinstance(outcome, BaseException):
                    reply.fail(outcome)
                else:
                    reply.ok({"pid": outcome})

        self.state.exec_starting()
        try:
            host.run_exec(call_shim)
        except Exception as exc:
            self._exec_done(_ExecDone(exc, reply))

    def _exec_done(self, done: _ExecDone) -> None:
        # Record the exec and announce it, then the exits that waited for it.
        pid = done.outcome if isinstance(done.outcome, int) else None
        released = self.state.exec_started(pid)
        if isinstance(done.outcome, BaseException):
            done.reply.fail(done.outcome)
        elif done.on_exit is not None:
            self.handle.quiet[done.outcome] = done.on_exit
            done.reply.ok({"pid": done.outcome})
        else:
            pid_body = {"pid": done.outcome}
            reply = done.reply
            self._publish(TaskEvent("EXEC_ADDED", done.outcome), lambda: reply.ok(pid_body))
        for exited_pid, status, at in released:
            self._exited(ProcessExited(exited_pid, status, at))

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
        content = self.host.content
        try:
            if content is None:
                raise Unavailable(f"{self.state.owner}: checkpoints are not stored by this daemon")
            with self.host.leases.hold() as lease:
                descriptor = store_checkpoint(image, content, hold=lease.blob)
                # A root of garbage collection until the user deletes it
                # (Content/Delete), as containerd labels checkpoints.
                labels = {GC_ROOT_LABEL: str(time.time_ns())}

                def record(txn: Any, store: Any, stamp: Any) -> bytes:
                    add_content(txn, store, ns, [descriptor["digest"]], stamp, labels)
                    return b""

                transact(self.host.directory, record)
        finally:
            shutil.rmtree(image, ignore_errors=True)
        reply.ok({"descriptors": [descriptor]})

    def _op_delete(self, args: dict[str, Any], reply: Reply) -> None:
        self.state.check_deletable()
        hooks = self.host.supervision
        if hooks is not None and not args.get("restart"):
            hooks.before_delete(self.state.ns, self.state.container_id)
        if self.state.status is TaskStatus.CREATED:
            result = self._call("delete")
            self.state.exited(
                self.state.pid, int(result["exit_status"]), int(result["exited_at_ns"])
            )
        else:
            try:
                self._call("delete")
            except Unavailable:
                self.host.cleanup(self.handle)
        shutil.rmtree(self.task_dir, ignore_errors=True)
        s = self.state
        done = threading.Event()
        event = TaskEvent("DELETE", s.pid, s.exit_status, s.exited_at_ns)
        self._tell_metadata(DeleteTask(s.ns, s.container_id, lambda _r: done.set(), event=event))
        done.wait(30)
        self.host.show(s.ns, s.container_id, None)
        # Before the reply: a Create sent after it must find no task here.
        self.host.end(self.handle)
        reply.ok_packed(
            pack(
                {
                    "container_id": s.container_id,
                    "exit_status": s.exit_status,
                    "exited_at": timestamp_or_nil(s.exited_at_ns),
                }
            )
        )


def _after(answer: Callable[[], None] | None) -> Any:
    """A metadata write's completion that runs ``answer`` whatever the commit's outcome.

    The operation itself has happened (the shim did it); a commit that
    failed is logged by the metadata actor, and the state is recovered from
    the shim after a restart.
    """
    if answer is None:
        return None
    return lambda _result: answer()


def _exit_from_file(task_dir: Path, pid: int) -> tuple[int, int]:
    """The init's exit from the shim's exit file, else 255 now."""
    for line in read_exits(task_dir):
        if int(line.get("pid", -1)) == pid:
            return int(line["exit_status"]), int(line["exited_at_ns"])
    return 255, time.time_ns()
