"""The health monitor: runs each running task's health check as an exec, on its interval.

A task whose container has ``berth.io/health.cmd`` is watched from its
start (:class:`Watch`, from the task's actor; also when a restarted daemon
adopts it) until its init exits (:class:`Unwatch`). Each check is an exec
in the task, sent through the container's actor like a client's but quiet
(it publishes no EXEC_ADDED or EXIT: the task actor hands its exit back,
see :class:`actors.tasks.TaskActor`), with its output in a file under the
daemon's state directory; one still running at its timeout is killed.
Results move the task's :class:`~actors.health_config.HealthState`
(Docker's semantics); each change of status is logged as ``/tasks/health``.
An unhealthy task is killed (``on-failure=kill``) or killed and restarted
through the restart policy's backoff (``restart``). Health lives in
memory: after a daemon restart a task starts again from ``starting``, as
Docker's do after a daemon restart.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lmdb
import pykka

from actors.health_config import HealthConfig, HealthState, health_from_labels, truncate_output
from actors.local_reply import LocalReply
from actors.metadata import transact
from actors.store import Store, ns_key
from actors.supervision import Directory, SupervisedActor
from actors.tasks import TaskOp
from actors.timers import Timers
from wire.codec import pack, unpack
from wire.errors import BerthError, InvalidArgument, Unavailable

if TYPE_CHECKING:
    from actors.containers import ContainerActors

__all__ = ["ForceRestart", "HealthBoard", "HealthMonitor", "Unwatch", "Watch"]

log = logging.getLogger(__name__)

HEALTH_WORKERS = 8  # checks running at once (each mostly waits for its exec)
_KILL_WAIT_S = 5.0  # after killing a hung check, how long its exit may take
_STEP_TIMEOUT = 30.0

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Watch:
    """The task started: check its health if its container asks for it."""

    ns: str
    container_id: str
    started_at_ns: int


@dataclass(frozen=True, slots=True)
class Unwatch:
    """The task's init exited: no more checks."""

    ns: str
    container_id: str


@dataclass(frozen=True, slots=True)
class ForceRestart:
    """To the restart monitor: restart the task at its next exit whatever the policy."""

    ns: str
    container_id: str


@dataclass(frozen=True, slots=True)
class _Check:
    key: Key
    generation: int


@dataclass(frozen=True, slots=True)
class _Result:
    key: Key
    generation: int
    exit_code: int
    output: str
    started_ns: int
    ended_ns: int
    timed_out: bool


@dataclass(slots=True)
class _Watched:
    """One task being checked: its config, state, and which watch this is."""

    config: HealthConfig
    state: HealthState
    generation: int


class HealthBoard:
    """Every watched task's health, for Supervision/Get in the front end's thread.

    Written by the health monitor only, by replacing the whole map, so a
    reader in another thread never sees it half-changed.
    """

    def __init__(self) -> None:
        self.views: dict[Key, dict[str, Any]] = {}

    def get(self, ns: str, cid: str) -> dict[str, Any] | None:
        """The task's health (times in ns), or None if it is not watched."""
        return self.views.get((ns, cid))

    def put(self, key: Key, view: dict[str, Any]) -> None:
        """Show ``view`` for ``key``."""
        self.views = {**self.views, key: view}

    def remove(self, key: Key) -> None:
        """Show nothing for ``key``."""
        if key in self.views:
            self.views = {k: v for k, v in self.views.items() if k != key}


class HealthMonitor(SupervisedActor):
    """Schedules and runs health checks; knows every watched task's health."""

    name = "health"

    def __init__(
        self,
        supervisor: pykka.ActorRef[Any] | None,
        store: Store,
        directory: Directory,
        actors: ContainerActors,
        state_dir: Path,
        board: HealthBoard,
        *,
        workers: int = HEALTH_WORKERS,
    ) -> None:
        super().__init__(supervisor)
        self.store = store
        self.directory = directory
        self.actors = actors
        self.output_dir = state_dir / "health"
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._timers: Timers | None = None
        self._watched: dict[Key, _Watched] = {}
        self._generations = itertools.count(1)
        self.board = board
        self.checks = 0  # for tests and stats

    def on_start(self) -> None:
        self.output_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="health")
        self._timers = Timers(self.actor_ref.tell, "health-timers")

    def on_stop(self) -> None:
        if self._timers is not None:
            self._timers.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Watch):
            self._watch(message)
        elif isinstance(message, Unwatch):
            self._unwatch((message.ns, message.container_id))
        elif isinstance(message, _Check):
            self._check(message)
        elif isinstance(message, _Result):
            self._result(message)
        else:
            log.warning("health monitor: unexpected message %r", message)
        return None

    # watching

    def _watch(self, msg: Watch) -> None:
        key = (msg.ns, msg.container_id)
        self._unwatch(key)
        with self.store.read() as txn:
            raw = txn.get(ns_key(*key), db=self.store.containers)
        if raw is None:
            return
        try:
            config = health_from_labels(unpack(bytes(raw))["labels"] or {})
        except InvalidArgument as exc:
            log.warning("container %s/%s: health labels ignored: %s", *key, exc)
            return
        if config is None:
            return
        watched = _Watched(config, HealthState(config, msg.started_at_ns), next(self._generations))
        self._watched[key] = watched
        self._publish_view(key, watched)
        self._later(key, watched)

    def _unwatch(self, key: Key) -> None:
        self._watched.pop(key, None)  # its timer's _Check finds no watch, or a newer one
        self.board.remove(key)

    def _later(self, key: Key, watched: _Watched) -> None:
        since_start = (time.time_ns() - watched.state.started_ns) / 1e9
        delay = watched.state.next_interval_s(since_start)
        assert self._timers is not None
        self._timers.add(time.time_ns() + int(delay * 1e9), _Check(key, watched.generation))

    # checking

    def _check(self, msg: _Check) -> None:
        watched = self._watched.get(msg.key)
        if watched is None or watched.generation != msg.generation:
            return
        assert self._pool is not None
        me = self.actor_ref
        self._pool.submit(self._run, msg.key, watched.config, watched.generation, me)

    def _run(
        self, key: Key, config: HealthConfig, generation: int, me: pykka.ActorRef[Any]
    ) -> None:
        """One check: exec, wait for its exit up to the timeout (killing it then), read output."""
        ns, cid = key
        out = self.output_dir / f"{ns}.{cid}.out"
        out.unlink(missing_ok=True)
        exited = threading.Event()
        status: list[int] = []

        def on_exit(exit_status: int, _at_ns: int) -> None:
            status.append(exit_status)
            exited.set()

        started = time.time_ns()
        timed_out = False
        try:
            args = {
                "stdin": "",
                "stdout": f"file://{out}",
                "stderr": f"file://{out}",
                "terminal": False,
                "process": self._process(key, config),
                "on_exit": on_exit,
            }
            reply = LocalReply(f"health check {ns}/{cid}")
            if not self.actors.tell(ns, cid, TaskOp("exec", args, reply)):
                return
            pid = int(reply.result(_STEP_TIMEOUT)["pid"])
            if not exited.wait(config.timeout_s):
                timed_out = True
                kill = {"signal": 9, "all": False, "pid": pid, "supervised": True}
                self.actors.tell(ns, cid, TaskOp("kill", kill, LocalReply("health kill")))
                exited.wait(_KILL_WAIT_S)
            code = status[0] if status else -1
            output = _read(out)
        except BerthError as exc:
            # The task stopped under the check, or the exec could not start: a failure.
            code, output = -1, f"health check could not run: {exc.message}"
        except Exception as exc:
            log.exception("health check of %s/%s failed", ns, cid)
            code, output = -1, f"health check could not run: {type(exc).__name__}"
        finally:
            out.unlink(missing_ok=True)
        with contextlib.suppress(pykka.ActorDeadError):
            me.tell(_Result(key, generation, code, output, started, time.time_ns(), timed_out))

    def _process(self, key: Key, config: HealthConfig) -> bytes:
        """The check's OCI process: its command with the container's env, user and cwd."""
        with self.store.read() as txn:
            raw = txn.get(ns_key(*key), db=self.store.containers)
        if raw is None:
            raise Unavailable(f'container "{key[1]}": deleted')
        spec = json.loads(unpack(bytes(raw))["spec"]["value"])
        process = dict(spec.get("process") or {})
        return json.dumps(
            {
                "args": list(config.cmd),
                "env": process.get("env", []),
                "cwd": process.get("cwd", "/") or "/",
                "user": process.get("user", {"uid": 0, "gid": 0}),
                "terminal": False,
            }
        ).encode()

    def _result(self, msg: _Result) -> None:
        watched = self._watched.get(msg.key)
        if watched is None or watched.generation != msg.generation:
            return  # the task exited meanwhile
        self.checks += 1
        changed = watched.state.record(
            msg.exit_code, msg.output, msg.started_ns, msg.ended_ns, timed_out=msg.timed_out
        )
        self._publish_view(msg.key, watched)
        if changed:
            self._log_change(msg.key, watched)
        action = watched.state.needs_action() if changed else None
        if action is not None:
            self._act(msg.key, action)
        self._later(msg.key, watched)

    def _publish_view(self, key: Key, watched: _Watched) -> None:
        self.board.put(key, watched.state.to_wire())

    def _log_change(self, key: Key, watched: _Watched) -> None:
        ns, cid = key
        last = watched.state.log[-1] if watched.state.log else None
        payload = {
            "container_id": cid,
            "status": watched.state.status,
            "failing_streak": watched.state.failing_streak,
            "exit_code": last.exit_code if last is not None else 0,
        }

        def apply(txn: lmdb.Transaction, store: Store, stamp: Any) -> bytes:
            if txn.get(ns_key(ns, cid), db=store.containers) is not None:
                store.log.append(txn, ns, "/tasks/health", cid, payload)
            return pack({})

        try:
            transact(self.directory, apply)
        except BerthError as exc:
            log.error("health of %s/%s not logged: %s", ns, cid, exc)

    def _act(self, key: Key, action: str) -> None:
        ns, cid = key
        log.warning("task %s/%s is unhealthy: %s", ns, cid, action)
        if action == "restart":
            with contextlib.suppress(Unavailable):
                self.directory.tell("restarts", ForceRestart(ns, cid))
        # Not a requested stop: the restart policy decides on the exit.
        kill = {"signal": 9, "all": False, "pid": 0, "supervised": True}
        self.actors.tell(ns, cid, TaskOp("kill", kill, LocalReply("health kill")))


def _read(path: Path) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(64 * 1024)
    except FileNotFoundError:
        return ""
    return truncate_output(data.decode(errors="replace"))
