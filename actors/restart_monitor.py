"""The restart monitor: restarts supervised tasks when they exit, after a backoff.

Event-driven, with no polling loop: a task's actor tells the monitor when
the task's init exits (:class:`TaskExited`, also for exits found at
start-up), the monitor decides by the container's restart policy (its
labels, :mod:`actors.restart_policy`) and, to restart, records the
schedule (:mod:`actors.restart_records`, with ``/tasks/restart-scheduled``
in the same commit) and sets a timer. When the timer fires a restart job
on the monitor's small pool deletes the exited task and creates and
starts a new one with the options the first was created with, each step
through the container's actor like any client call, then the monitor
records ``/tasks/restarted``. The pool bounds how many restarts run at
once, so a mass of crash-looping containers queues instead of starving
the daemon.

A Kill through the API marks the desired state ``stopped`` durably before
the signal (:meth:`SupervisionHooks.before_kill`), so the exit it causes
is not restarted. At start-up the monitor reschedules every pending
restart at its recorded time (spread when many are due at once).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lmdb
import pykka

from actors.health_monitor import ForceRestart, Unwatch, Watch
from actors.local_reply import LocalReply
from actors.metadata import transact
from actors.restart_policy import (
    RestartPolicy,
    attempt_after_run,
    decide,
    delay_s,
    desired_state,
    policy_from_labels,
)
from actors.restart_records import desired_of, get_restart, list_restarts, new_restart, put_restart
from actors.store import Store, ns_key
from actors.supervision import Directory, SupervisedActor
from actors.task_create import create_task_message
from actors.tasks import TaskOp
from actors.timers import Timers
from wire.codec import pack, unpack
from wire.errors import BerthError, InvalidArgument, NotFound, Unavailable

if TYPE_CHECKING:
    from actors.containers import ContainerActors

__all__ = ["Reconciled", "Reconsider", "RestartMonitor", "SupervisionHooks", "TaskExited"]

log = logging.getLogger(__name__)

RESTART_WORKERS = 2  # restarts in progress at once; the rest wait their turn
_STEP_TIMEOUT = 60.0  # one step of a restart (delete, create, start)
_STARTUP_SPREAD_S = 0.01  # per restart already due at start-up: 500 of them spread over 5 s


@dataclass(frozen=True, slots=True)
class TaskExited:
    """A supervised-or-not task's init exited (the monitor decides whether it matters)."""

    ns: str
    container_id: str
    exit_status: int
    exited_at_ns: int
    oom: bool = False


@dataclass(frozen=True, slots=True)
class Reconciled:
    """The start-up reconcile is done: every task left running is adopted; resume schedules."""


@dataclass(frozen=True, slots=True)
class Reconsider:
    """The container's desired-state label was set by an Update: act on it now."""

    ns: str
    container_id: str


@dataclass(frozen=True, slots=True)
class _Due:
    ns: str
    container_id: str
    at_ns: int  # the schedule it belongs to: a later one supersedes it


@dataclass(frozen=True, slots=True)
class _Restarted:
    ns: str
    container_id: str
    pid: int
    started_at_ns: int
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class _Cancel:
    ns: str
    container_id: str


Key = tuple[str, str]


def _policy(labels: dict[str, str], key: Key) -> RestartPolicy | None:
    """The container's policy, or None when it has none (or one no longer valid)."""
    try:
        policy = policy_from_labels(labels)
    except InvalidArgument as exc:
        # Labels are checked at Create and Update; these predate the check.
        log.warning("container %s/%s: restart labels ignored: %s", key[0], key[1], exc)
        return None
    return None if policy.mode == "no" else policy


def _labels(txn: lmdb.Transaction, store: Store, ns: str, cid: str) -> dict[str, str] | None:
    raw = txn.get(ns_key(ns, cid), db=store.containers)
    if raw is None:
        return None
    labels: dict[str, str] = unpack(bytes(raw))["labels"] or {}
    return labels


class RestartMonitor(SupervisedActor):
    """Decides, schedules and runs restarts; its records are in the metadata store."""

    name = "restarts"

    def __init__(
        self,
        supervisor: pykka.ActorRef[Any] | None,
        store: Store,
        directory: Directory,
        actors: ContainerActors,
        *,
        workers: int = RESTART_WORKERS,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(supervisor)
        self.store = store
        self.directory = directory
        self.actors = actors
        self._rand = rand
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._timers: Timers | None = None
        self._scheduled: dict[Key, int] = {}  # key -> the at_ns of its pending restart
        self._restarting: set[Key] = set()
        # Exits that came while their restart was still finishing.
        self._held: dict[Key, TaskExited] = {}
        # Unhealthy tasks a health check killed to restart: restarted whatever the policy.
        self._forced: set[Key] = set()
        self.restarts = 0  # for tests and stats

    # lifecycle

    def on_start(self) -> None:
        me = self.actor_ref
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="restart")
        self._timers = Timers(me.tell, "restart-timers")
        # Schedules resume on Reconciled: a restart must find its old task adopted.

    def on_stop(self) -> None:
        if self._timers is not None:
            self._timers.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _resume(self) -> None:
        """Reschedule the restarts a previous daemon left pending, at their times.

        As Docker does, an ``always`` container stopped by hand is started
        again when the daemon starts (``unless-stopped`` is not).
        """
        now = time.time_ns()
        pending: list[tuple[str, str, int]] = []
        with self.store.read() as txn:
            for ns, cid, record in list_restarts(txn, self.store):
                if record["state"] == "BACKOFF":
                    pending.append((ns, cid, record["next_restart_at_ns"]))
                elif record["explicit"] and record["desired"] == "stopped":
                    labels = _labels(txn, self.store, ns, cid)
                    policy = _policy(labels, (ns, cid)) if labels is not None else None
                    task = txn.get(ns_key(ns, cid), db=self.store.tasks)
                    stopped = task is not None and unpack(bytes(task)).get("status") == "STOPPED"
                    if policy is not None and policy.mode == "always" and stopped:
                        record["desired"], record["explicit"] = "running", False
                        record["next_restart_at_ns"] = now
                        self._write((ns, cid), record, "BACKOFF", "")
                        pending.append((ns, cid, now))
        pending.sort(key=lambda p: p[2])
        late = 0
        for ns, cid, at_ns in pending:
            if at_ns <= now:
                # Due while the daemon was down: spread, oldest first.
                at_ns = now + int(late * _STARTUP_SPREAD_S * 1e9 * (1 + self._rand()))
                late += 1
            self._schedule((ns, cid), at_ns)
        if pending:
            log.info("restart monitor: %d pending restart(s) resumed", len(pending))

    # messages

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, TaskExited):
            self._exited(message)
        elif isinstance(message, _Due):
            self._due(message)
        elif isinstance(message, _Restarted):
            self._restarted(message)
        elif isinstance(message, Reconciled):
            self._resume()
        elif isinstance(message, ForceRestart):
            self._forced.add((message.ns, message.container_id))
        elif isinstance(message, Reconsider):
            self._reconsider((message.ns, message.container_id))
        elif isinstance(message, _Cancel):
            self._scheduled.pop((message.ns, message.container_id), None)
        else:
            log.warning("restart monitor: unexpected message %r", message)
        return None

    def _exited(self, msg: TaskExited) -> None:
        key = (msg.ns, msg.container_id)
        if key in self._restarting:
            self._held[key] = msg  # after the restart's own record
            return
        with self.store.read() as txn:
            labels = _labels(txn, self.store, *key)
            record = get_restart(txn, self.store, *key)
            task = txn.get(ns_key(*key), db=self.store.tasks)
        if labels is None:
            return  # the container is gone
        policy = _policy(labels, key)
        if key in self._forced:
            self._forced.discard(key)
            policy = policy or RestartPolicy(mode="always")
        if policy is None and record is None:
            return  # never supervised: nothing to keep
        record = record or new_restart()
        if task is not None:
            # What a replacement is created with, kept past the old task's delete.
            old = unpack(bytes(task))
            record["options"] = {
                **(old.get("options") or {}),
                "runtime_binary": old.get("runtime_binary", "runc"),
            }
        record["last_exits"].append(
            {"exit_status": msg.exit_status, "exited_at_ns": msg.exited_at_ns, "oom": msg.oom}
        )
        now = time.time_ns()
        if policy is None:
            self._write(key, record, "STOPPED", "no restart policy")
            return
        ran_s = (
            (msg.exited_at_ns - record["started_at_ns"]) / 1e9 if record["started_at_ns"] else None
        )
        attempt = (
            record["attempt"]
            if ran_s is None
            else attempt_after_run(policy, record["attempt"], ran_s)
        )
        decision = decide(
            policy,
            exit_status=msg.exit_status,
            oom=msg.oom,
            desired=desired_of(labels, record),
            restarts=record["retries"],
            recent_restarts_ns=record["restarts_ns"],
            now_ns=now,
        )
        if not decision.restart:
            state = "FAILED" if decision.give_up else "STOPPED"
            topic = "/tasks/gave-up" if decision.give_up else None
            self._write(key, record, state, decision.reason, topic=topic)
            return
        delay = delay_s(policy, attempt, self._rand())
        record["attempt"] = attempt + 1
        at_ns = now + int(delay * 1e9)
        record["next_restart_at_ns"] = at_ns
        payload = {
            "container_id": msg.container_id,
            "delay_ms": int(delay * 1000),
            "attempt": attempt + 1,
            "restart_count": record["restart_count"],
            "exit_status": msg.exit_status,
        }
        if self._write(
            key, record, "BACKOFF", "", topic="/tasks/restart-scheduled", payload=payload
        ):
            self._schedule(key, at_ns)

    def _reconsider(self, key: Key) -> None:
        """containerd's desired state, set by label: stop a pending restart, or start again."""
        if key in self._restarting:
            return  # the restart under way reads the labels again at its next exit
        with self.store.read() as txn:
            labels = _labels(txn, self.store, *key)
            record = get_restart(txn, self.store, *key)
            task = txn.get(ns_key(*key), db=self.store.tasks)
        if labels is None or record is None or _policy(labels, key) is None:
            return
        try:
            wanted = desired_state(labels)
        except InvalidArgument:
            return
        if wanted == "stopped" and record["state"] == "BACKOFF":
            self._scheduled.pop(key, None)
            self._write(key, record, "STOPPED", "stopped by label")
        elif wanted == "running" and record["state"] in ("STOPPED", "FAILED"):
            stopped = task is not None and unpack(bytes(task)).get("status") == "STOPPED"
            if not stopped or not record["options"]:
                return  # running already, or nothing to create a task from
            # Started again by request, as a Start through the API: not a retry.
            record.update(desired="running", explicit=False, attempt=0, retries=0, revived=True)
            now = time.time_ns()
            record["next_restart_at_ns"] = now
            if self._write(key, record, "BACKOFF", ""):
                self._schedule(key, now)

    def _schedule(self, key: Key, at_ns: int) -> None:
        self._scheduled[key] = at_ns
        assert self._timers is not None
        self._timers.add(at_ns, _Due(key[0], key[1], at_ns))

    def _due(self, msg: _Due) -> None:
        key = (msg.ns, msg.container_id)
        if self._scheduled.get(key) != msg.at_ns:
            return  # cancelled, or superseded by a later schedule
        del self._scheduled[key]
        with self.store.read() as txn:
            labels = _labels(txn, self.store, *key)
            record = get_restart(txn, self.store, *key)
            task = txn.get(ns_key(*key), db=self.store.tasks)
        if labels is None or record is None or record["state"] != "BACKOFF":
            return  # deleted, or changed while it waited
        if desired_of(labels, record) == "stopped":
            self._write(key, record, "STOPPED", "stopped by request")
            return
        self._restarting.add(key)
        assert self._pool is not None
        me = self.actor_ref
        self._pool.submit(self._restart_job, key, record["options"], task is not None, me)

    def _restart_job(
        self, key: Key, options: dict[str, Any], has_task: bool, me: pykka.ActorRef[Any]
    ) -> None:
        """Delete the exited task, create and start its replacement; tell the monitor.

        The old task may be gone already: a daemon that stopped mid-restart
        left the record in BACKOFF, and the next one carries on from it.
        """
        ns, cid = key
        pid = 0
        error: BaseException | None = None
        try:
            if has_task:
                delete = TaskOp("delete", {"restart": True}, LocalReply(f"restart {ns}/{cid}"))
                self._step(key, delete)
            if self._stop_requested(key):
                raise NotFound(f'task "{cid}": stopped by request during its restart')
            with self.store.read() as txn:
                raw = txn.get(ns_key(ns, cid), db=self.store.containers)
            if raw is None:
                raise NotFound(f'container "{cid}": not found')
            reply = LocalReply(f"restart {ns}/{cid}: create")
            message = create_task_message(
                ns,
                unpack(bytes(raw)),
                state=self._state_dir(),
                binary=str(options.get("runtime_binary", "runc")),
                mounts=list(options.get("rootfs", [])),
                stdin=str(options.get("stdin", "")),
                stdout=str(options.get("stdout", "")),
                stderr=str(options.get("stderr", "")),
                terminal=bool(options.get("terminal", False)),
                checkpoint="",
                reply=reply,
            )
            pid = int(self._step(key, message)["pid"])
            if self._stop_requested(key):
                # A Kill came while the task was being replaced: no start.
                self._step(key, TaskOp("delete", {"restart": True}, LocalReply(f"restart {cid}")))
                raise NotFound(f'task "{cid}": stopped by request during its restart')
            start = TaskOp("start", {"restart": True}, LocalReply(f"restart {ns}/{cid}: start"))
            self._step(key, start)
        except BerthError as exc:
            error = exc
        except Exception as exc:  # a bug: reported, and the container left alone
            log.exception("restart of %s/%s failed", ns, cid)
            error = exc
        with contextlib.suppress(pykka.ActorDeadError):
            me.tell(_Restarted(ns, cid, pid, time.time_ns(), error))

    def _stop_requested(self, key: Key) -> bool:
        with self.store.read() as txn:
            labels = _labels(txn, self.store, *key)
            record = get_restart(txn, self.store, *key)
        return labels is None or desired_of(labels, record) == "stopped"

    def _step(self, key: Key, message: Any) -> dict[str, Any]:
        reply: LocalReply = message.reply
        if not self.actors.tell(key[0], key[1], message):
            raise Unavailable("the daemon is stopping")
        return reply.result(_STEP_TIMEOUT)

    def _state_dir(self) -> Any:
        runtime = self.actors.runtime
        if runtime is None:
            raise Unavailable("tasks are not available in this daemon")
        return runtime.state

    def _restarted(self, msg: _Restarted) -> None:
        key = (msg.ns, msg.container_id)
        self._restarting.discard(key)
        held = self._held.pop(key, None)
        with self.store.read() as txn:
            record = get_restart(txn, self.store, *key)
        if record is None:
            return  # the container went meanwhile
        if isinstance(msg.error, Unavailable):
            # The daemon stops: not a failed run; the next daemon resumes the BACKOFF.
            log.info("restart of %s/%s left to the next daemon", msg.ns, msg.container_id)
            return
        if msg.error is not None:
            log.warning("restart of %s/%s failed: %s", msg.ns, msg.container_id, msg.error)
            # Counted as a failed run: the next attempt backs off further.
            record["started_at_ns"] = 0
            self._write(key, record, "STOPPED", f"restart failed: {msg.error}")
            if not isinstance(msg.error, NotFound):  # gone is final; anything else is retried
                self._exited(TaskExited(msg.ns, msg.container_id, 255, msg.started_at_ns))
            return
        self.restarts += 1
        record["restart_count"] += 1
        if not record.pop("revived", False):
            record["retries"] += 1
        record["restarts_ns"].append(msg.started_at_ns)
        record["started_at_ns"] = msg.started_at_ns
        record["next_restart_at_ns"] = 0
        payload = {
            "container_id": msg.container_id,
            "pid": msg.pid,
            "restart_count": record["restart_count"],
        }
        self._write(key, record, "RUNNING", "", topic="/tasks/restarted", payload=payload)
        if held is not None:
            self._exited(held)

    def _write(
        self,
        key: Key,
        record: dict[str, Any],
        state: str,
        reason: str,
        *,
        topic: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> bool:
        """Store ``record`` in ``state`` (and log ``topic``); False if the commit failed."""
        ns, cid = key
        record["state"] = state
        record["reason"] = reason
        if state != "BACKOFF":
            record["next_restart_at_ns"] = 0
        if topic == "/tasks/gave-up":
            payload = {
                "container_id": cid,
                "reason": reason,
                "restart_count": record["restart_count"],
            }

        def apply(txn: lmdb.Transaction, store: Store, stamp: Any) -> bytes:
            if txn.get(ns_key(ns, cid), db=store.containers) is None:
                return b""  # deleted meanwhile: its record went with it
            put_restart(txn, store, ns, cid, record)
            if topic is not None:
                store.log.append(txn, ns, topic, cid, payload or {})
            return pack({})

        try:
            transact(self.directory, apply)
        except BerthError as exc:
            log.error("restart monitor: %s/%s not recorded: %s", ns, cid, exc)
            return False
        return True


class SupervisionHooks:
    """What task actors tell the supervision: exits, and Kill and Start through the API."""

    def __init__(self, store: Store, directory: Directory) -> None:
        self.store = store
        self.directory = directory

    def exited(self, ns: str, cid: str, exit_status: int, exited_at_ns: int, oom: bool) -> None:
        """The task's init exited: the monitor decides."""
        # Unavailable: the daemon stops; the next one finds the exit and decides.
        with contextlib.suppress(Unavailable):
            self.directory.tell("health", Unwatch(ns, cid))
        with contextlib.suppress(Unavailable):
            self.directory.tell("restarts", TaskExited(ns, cid, exit_status, exited_at_ns, oom))

    def started(self, ns: str, cid: str) -> None:
        """The task runs (started, or adopted running): its health checks begin."""
        with contextlib.suppress(Unavailable):
            self.directory.tell("health", Watch(ns, cid, time.time_ns()))

    def before_kill(self, ns: str, cid: str) -> bool:
        """A Kill of the task through the API: desired ``stopped``, durably, if supervised.

        Returns whether the container is supervised (its stop is now recorded,
        and any pending restart cancelled).
        """
        with self.store.read() as txn:
            labels = _labels(txn, self.store, ns, cid)
            record = get_restart(txn, self.store, ns, cid)
        if labels is None or (_policy(labels, (ns, cid)) is None and record is None):
            return False
        self._set_desired(ns, cid, "stopped", explicit=True)
        with contextlib.suppress(Unavailable):
            self.directory.tell("restarts", _Cancel(ns, cid))
        return True

    def before_delete(self, ns: str, cid: str) -> None:
        """A Delete of the task through the API: a pending restart is cancelled, durably."""
        with self.store.read() as txn:
            record = get_restart(txn, self.store, ns, cid)
        if record is None or record["state"] != "BACKOFF":
            return

        def apply(txn: lmdb.Transaction, store: Store, stamp: Any) -> bytes:
            current = get_restart(txn, store, ns, cid)
            if current is not None and current["state"] == "BACKOFF":
                current.update(state="STOPPED", reason="task deleted", next_restart_at_ns=0)
                put_restart(txn, store, ns, cid, current)
            return b""

        transact(self.directory, apply)
        with contextlib.suppress(Unavailable):
            self.directory.tell("restarts", _Cancel(ns, cid))

    def before_start(self, ns: str, cid: str) -> None:
        """A Start through the API: desired ``running`` again, after a stop or a give-up.

        A restart's own Start finds the record in BACKOFF and leaves it: its
        backoff step must survive the restart.
        """
        with self.store.read() as txn:
            record = get_restart(txn, self.store, ns, cid)
        if record is not None and (
            record["desired"] != "running" or record["state"] in ("FAILED", "STOPPED")
        ):
            self._set_desired(ns, cid, "running", explicit=False)

    def _set_desired(self, ns: str, cid: str, desired: str, *, explicit: bool) -> None:
        def apply(txn: lmdb.Transaction, store: Store, stamp: Any) -> bytes:
            record = get_restart(txn, store, ns, cid) or new_restart()
            record["desired"] = desired
            record["explicit"] = explicit
            if desired == "stopped" and record["state"] == "BACKOFF":
                record["state"] = "STOPPED"
                record["reason"] = "stopped by request"
                record["next_restart_at_ns"] = 0
            elif desired == "running":
                # Started again by hand: a fresh run, a fresh backoff.
                record["state"] = "RUNNING"
                record["reason"] = ""
                record["attempt"] = 0
                record["retries"] = 0
                record["started_at_ns"] = time.time_ns()
            put_restart(txn, store, ns, cid, record)
            return b""

        transact(self.directory, apply)
