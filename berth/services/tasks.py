"""containerd.v1.services.execution.Tasks.

Handlers validate completely (types, ids, signal ranges, stdio, specs)
before anything is looked up; then Info and List answer from the store's
task records, Events subscribes to the event bus, and every other call
goes to the container's actor, which serializes it with the container's
other operations and hands it to the task's actor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from actors.containers import ContainerActors
from actors.events import Subscribe
from actors.restart_records import get_restart
from actors.snapshot_records import snapshot_mounts
from actors.store import Store, ns_key, ns_prefix
from actors.supervision import Directory
from actors.task_create import create_task_message
from actors.tasks import TaskOp
from runtime.content import ContentStore
from runtime.runc import Runc
from runtime.snapshot_base import Snapshotter
from runtime.spec import load_process
from runtime.stdio import check_stdio
from wire.codec import pack, timestamp_or_nil, unpack
from wire.errors import InvalidArgument, NotFound, Unavailable
from wire.filter import parse_filter
from wire.frontend import Request, Route
from wire.identifiers import check_identifier
from wire.messages import (
    CHECKPOINT_TASK,
    CLOSE_STDIN,
    CREATE_TASK,
    DELETE_TASK,
    EVENTS,
    EXEC_PROCESS,
    INFO_TASK,
    KILL_TASK,
    LIST_TASKS,
    PAUSE_TASK,
    PROCESSES,
    PTY,
    RESUME_TASK,
    START_TASK,
)
from wire.schema import Message

__all__ = ["TasksService", "task_from_record"]

Mounts = list[dict[str, Any]]

_PKG = "containerd.v1.services.execution.Tasks"
_EVERYTHING = parse_filter("")


def task_from_record(container_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """The wire Task for a stored task record."""
    return {
        "id": container_id,
        "container_id": container_id,
        "pid": int(record.get("pid", 0)),
        "status": record.get("status", "UNKNOWN"),
        "spec": None,
        "exit_status": int(record.get("exit_status", 0)),
        "exited_at": timestamp_or_nil(int(record.get("exited_at_ns", 0))),
    }


class TasksService:
    """Handlers of the Tasks service; they hold no state of their own."""

    def __init__(
        self,
        store: Store,
        directory: Directory,
        actors: ContainerActors,
        runtimes: dict[str, str],
        state: Path,
        content: ContentStore,
        snapshotter: Snapshotter,
    ) -> None:
        self.store = store
        self.directory = directory
        self.actors = actors
        self.runtimes = runtimes
        self.state = state
        self.content = content
        self.snapshotter = snapshotter

    def routes(self) -> dict[str, Route]:
        """This service's entries of the method table."""
        ops = {
            "Start": (START_TASK, "start"),
            "Delete": (DELETE_TASK, "delete"),
            "Pause": (PAUSE_TASK, "pause"),
            "Resume": (RESUME_TASK, "resume"),
            "Processes": (PROCESSES, "processes"),
            "Checkpoint": (CHECKPOINT_TASK, "checkpoint"),
            "Kill": (KILL_TASK, "kill"),
            "Pty": (PTY, "pty"),
            "CloseStdin": (CLOSE_STDIN, "close_stdin"),
            "Exec": (EXEC_PROCESS, "exec"),
        }
        table = {
            f"{_PKG}/{name}": Route(self._task_op(schema, op)) for name, (schema, op) in ops.items()
        }
        table[f"{_PKG}/Create"] = Route(self.create)
        table[f"{_PKG}/Info"] = Route(self.info)
        table[f"{_PKG}/List"] = Route(self.list)
        table[f"{_PKG}/Events"] = Route(self.events, stream=True)
        return table

    # reads

    def _record(self, ns: str, cid: str) -> dict[str, Any]:
        with self.store.read() as txn:
            raw = txn.get(ns_key(ns, cid), db=self.store.tasks)
        if raw is None:
            raise NotFound(f'task "{cid}": not found')
        record: dict[str, Any] = unpack(bytes(raw))
        return record

    def info(self, request: Request) -> None:
        """Info {container_id} -> {task}."""
        body = INFO_TASK.decode(request.body)
        cid = check_identifier("container", body["container_id"])
        task = self.actors.shown(request.ns, cid)
        if task is None:
            task = task_from_record(cid, self._record(request.ns, cid))
        request.reply.ok({"task": task})

    def list(self, request: Request) -> None:
        """List {} -> {tasks}: every task of the namespace."""
        LIST_TASKS.decode(request.body)
        prefix = ns_prefix(request.ns)
        with self.store.read() as txn:
            # Taken first: a task's state is shown before its event commits,
            # so every event up to this seq is reflected below.
            seq = self.store.log.latest(txn)
            tasks = []
            for key, raw in self.store.scan(txn, self.store.tasks, prefix):
                cid = key[len(prefix) :].decode()
                shown = self.actors.shown(request.ns, cid)
                tasks.append(shown if shown is not None else task_from_record(cid, unpack(raw)))
        request.reply.ok_packed(pack({"tasks": tasks, "seq": seq}))

    def events(self, request: Request) -> None:
        """Events {} -> stream of Event, from the ``ready`` frame on."""
        EVENTS.decode(request.body)
        self.directory.tell("events", Subscribe(request.reply, _EVERYTHING, task_ns=request.ns))

    # writes

    def create(self, request: Request) -> None:
        """Create {container_id, rootfs, stdio, terminal, checkpoint} -> {container_id, pid}."""
        body = CREATE_TASK.decode(request.body)
        cid = check_identifier("container", body["container_id"])
        owner = f'task "{cid}"'
        for name in ("stdin", "stdout", "stderr"):
            check_stdio(body[name], field=name, owner=owner)
        checkpoint = ""
        if body["checkpoint"] is not None:
            checkpoint = body["checkpoint"]["digest"]
            self.content.path_of(checkpoint)  # InvalidArgument / NotFound before anything
            reason = Runc().criu_available()
            if reason is not None:
                raise Unavailable(f"{owner}: restore needs CRIU, which cannot run here: {reason}")
        mounts: list[dict[str, Any]] = body["rootfs"]
        with self.store.read() as txn:
            raw = txn.get(ns_key(request.ns, cid), db=self.store.containers)
            if raw is None:
                raise NotFound(f'container "{cid}": not found')
            container = unpack(bytes(raw))
            if not mounts and container["rootfs"]:
                mounts = self._snapshot_mounts(txn, request.ns, container["rootfs"], cid)
        name = container["runtime"] or "linux"
        binary = self.runtimes.get(name)
        if binary is None:
            raise NotFound(f'runtime "{name}": not found (container "{cid}")')
        message = create_task_message(
            request.ns,
            container,
            state=self.state,
            binary=binary,
            mounts=mounts,
            stdin=body["stdin"],
            stdout=body["stdout"],
            stderr=body["stderr"],
            terminal=body["terminal"],
            checkpoint=checkpoint,
            reply=request.reply,
        )
        self.actors.tell(request.ns, cid, message)

    def _restarting(self, ns: str, cid: str) -> bool:
        """Whether a restart is pending or under way (its task may be between delete and create)."""
        with self.store.read() as txn:
            record = get_restart(txn, self.store, ns, cid)
        return record is not None and record["state"] == "BACKOFF"

    def _snapshot_mounts(self, txn: Any, ns: str, key: str, cid: str) -> Mounts:
        """The mounts of the container's rootfs snapshot (NotFound naming both)."""
        try:
            return snapshot_mounts(txn, self.store, self.snapshotter, ns, key)
        except NotFound:
            raise NotFound(f'snapshot "{key}": not found (container "{cid}")') from None

    def _task_op(self, schema: Message, op: str) -> Any:
        def handle(request: Request) -> None:
            body = schema.decode(request.body)
            cid = check_identifier("container", body.pop("container_id"))
            owner = f'task "{cid}"'
            if op == "kill":
                signal = body["signal"] or 15  # 0 means SIGTERM
                if not 1 <= signal <= 64:
                    raise InvalidArgument(f"{owner}: signal {signal} is outside 1-64")
                body["signal"] = signal
            elif op == "exec":
                for name in ("stdin", "stdout", "stderr"):
                    check_stdio(body[name], field=name, owner=owner)
                spec = body.pop("spec")
                if spec is None:
                    raise InvalidArgument(f"{owner}: exec needs a process spec")
                process = load_process(spec["value"], owner=owner)
                process["terminal"] = body["terminal"]
                body["process"] = json.dumps(process).encode()
            if op != "kill" or not self._restarting(request.ns, cid):
                self._record(request.ns, cid)  # NotFound without starting an actor
            self.actors.tell(request.ns, cid, TaskOp(op, body, request.reply))

        handle.__name__ = op
        return handle
