"""The measurements of ``berth-bench tasks`` (:mod:`bench.tasks`) and their cleanup.

:class:`TaskBench` drives one daemon through one :class:`berth.Client`, one
call at a time, in namespace :data:`NAMESPACE`, and awaits every ``EXIT``
through its :class:`~bench.task_events.EventSubscriber`. Every container it
makes is tracked until deleted, so :meth:`TaskBench.cleanup` can remove
what a failed run left; :func:`sweep` is the last resort for a spawned
daemon (shims killed, runc state deleted).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from pathlib import Path

import berth
from bench.load import RunOptions
from bench.resources import listener_pid
from bench.target import Target
from bench.task_events import EventSubscriber, ExitSeen
from bench.task_host import (
    RawRunc,
    find_processes,
    kill_shims,
    process_memory,
    runc_delete_all,
    shim_pids,
    task_spec,
)
from bench.task_memory import Growth, MemorySummary, settle
from bench.task_report import TasksOutcome
from runtime.rootfs import make_busybox_rootfs
from runtime.spec import DEFAULT_PATH
from wire.codec import timestamp_ns

__all__ = [
    "DEFAULT_SETTLE_S",
    "EXIT_TIMEOUT_S",
    "LIFECYCLE_STEPS",
    "NAMESPACE",
    "WARMUP_ROUNDS",
    "TaskBench",
    "sweep",
]

NAMESPACE = "bench-tasks"
WARMUP_ROUNDS = 3  # unmeasured rounds before the lifecycle, runc and exec measurements
EXIT_TIMEOUT_S = 10.0  # how long an EXIT may take to arrive before it counts as lost
_SETTLE_S = 0.5  # pause after killing leftover shims
DEFAULT_SETTLE_S = 5.0  # --settle: how long the daemon is left to settle before each reading
_KILL_PAUSE_S = 0.02  # between two kills, so that each starts from an idle daemon
# The steps of a lifecycle, in order; each is timed.
LIFECYCLE_STEPS = (
    "container_create",
    "task_create",
    "task_start",
    "wait_exit",
    "task_delete",
    "container_delete",
)


def id_prefix() -> str:
    """What the ids of this run's containers start with (and so its shims' titles)."""
    return f"b{os.getpid()}-"


class TaskBench:
    """One run against one daemon: the measurements, their checks, and cleanup."""

    def __init__(
        self, target: Target, options: RunOptions, workdir: Path, outcome: TasksOutcome
    ) -> None:
        self.target = target
        self.outcome = outcome
        self.rootfs = make_busybox_rootfs(workdir / "rootfs")
        self.raw = RawRunc(workdir, ["true"], self.rootfs)
        self.client = berth.Client(target.address, namespace=NAMESPACE, timeout=options.timeout)
        self.events = EventSubscriber(target.address, NAMESPACE)
        self.live: dict[str, int] = {}  # containers made and not yet deleted -> init pid
        self._ids = itertools.count()
        self.prefix = id_prefix()

    def _id(self, kind: str) -> str:
        return f"{self.prefix}{kind}{next(self._ids)}"

    def _await_exit(self, cid: str, pid: int, status: int, what: str) -> ExitSeen | None:
        seen = self.events.wait_exit(cid, pid, EXIT_TIMEOUT_S)
        if seen is None:
            self.outcome.breaches.append(f"no EXIT for {what} {cid} pid {pid} in {EXIT_TIMEOUT_S}s")
        elif seen.event.get("exit_status") != status:
            self.outcome.breaches.append(
                f"EXIT of {what} {cid} pid {pid}: status {seen.event.get('exit_status')}, "
                f"expected {status}"
            )
        return seen

    def _make_container(self, cid: str, args: list[str]) -> None:
        self.live[cid] = 0
        self.client.containers.create(cid, spec=task_spec(args, self.rootfs))

    def _start_task(self, cid: str, args: list[str]) -> int:
        self._make_container(cid, args)
        pid = int(self.client.tasks.create(cid)["pid"])
        self.live[cid] = pid
        self.client.tasks.start(cid)
        return pid

    # -- measurements ------------------------------------------------------

    def lifecycle_once(self, measured: bool) -> None:
        """One lifecycle of ``true``, each step timed."""
        cid = self._id("lc")
        marks = [time.perf_counter_ns()]
        self._make_container(cid, ["true"])
        marks.append(time.perf_counter_ns())
        pid = int(self.client.tasks.create(cid)["pid"])
        self.live[cid] = pid
        marks.append(time.perf_counter_ns())
        self.client.tasks.start(cid)
        marks.append(time.perf_counter_ns())
        if self._await_exit(cid, pid, 0, "task") is None:
            return  # left to cleanup
        marks.append(time.perf_counter_ns())
        self.client.tasks.delete(cid)
        marks.append(time.perf_counter_ns())
        self.client.containers.delete(cid)
        marks.append(time.perf_counter_ns())
        del self.live[cid]
        if measured:
            for key, begin, end in zip(LIFECYCLE_STEPS, marks[:-1], marks[1:], strict=True):
                self.outcome.add(key, end - begin)
            self.outcome.add("lifecycle", marks[-1] - marks[0])

    def runc_once(self, measured: bool) -> None:
        """One raw ``runc run`` of ``true``."""
        elapsed, _ = self.raw.run(self._id("raw"))
        if measured:
            self.outcome.add("runc_run", elapsed)

    def lifecycles(self, iterations: int) -> None:
        """Lifecycles alternating with raw runc runs, after the warm-up rounds."""
        for i in range(WARMUP_ROUNDS + iterations):
            self.lifecycle_once(i >= WARMUP_ROUNDS)
            self.runc_once(i >= WARMUP_ROUNDS)

    def execs(self, iterations: int) -> None:
        """Exec + wait of ``true`` in one task running ``sleep 600``."""
        cid = self._id("ex")
        init = self._start_task(cid, ["sleep", "600"])
        process = {"args": ["true"], "cwd": "/", "env": [DEFAULT_PATH]}
        for i in range(WARMUP_ROUNDS + iterations):
            began = time.perf_counter_ns()
            pid = int(self.client.tasks.exec(cid, spec=process)["pid"])
            called = time.perf_counter_ns()
            if self._await_exit(cid, pid, 0, "exec in") is None:
                continue
            if i >= WARMUP_ROUNDS:
                self.outcome.add("exec_wait", time.perf_counter_ns() - began)
                self.outcome.add("exec_call", called - began)
        self._stop_and_remove(cid, init)

    def daemon_pids(self) -> dict[str, int]:
        """berthd (spawned, or listening on the address here) and its zygote, by name."""
        pids: dict[str, int] = {}
        daemon = self.target.pid if self.target.spawned else listener_pid(self.target.address)
        if daemon is not None:
            pids["berthd"] = daemon
            if zygotes := find_processes("berth-zygote", parent=daemon):
                pids["berth-zygote"] = zygotes[0]
        return pids

    def memory_and_exits(self, count: int, settle_s: float) -> None:
        """Memory with ``count`` running tasks, then kill each: exit -> event latency.

        The daemon and its zygote are read once settled (``settle_s``, see
        :func:`bench.task_memory.settle`) before the tasks start and again
        after the last has started; the shims with the second reading.
        """
        pids = self.daemon_pids()
        before = settle(pids, settle_s)
        running: dict[str, int] = {}
        for _ in range(count):
            cid = self._id("m")
            running[cid] = self._start_task(cid, ["sleep", "600"])
        after = settle(pids, settle_s)
        self.outcome.settle_s = settle_s
        self.read_memory(len(running))
        for name in pids:
            if (growth := Growth.of(name, before[name], after[name], len(running))) is not None:
                self.outcome.growth[name] = growth
        if (daemon := self.outcome.growth.get("berthd")) is not None:
            self.outcome.daemon = daemon.after
        if (zygote := self.outcome.growth.get("berth-zygote")) is not None:
            self.outcome.zygote = zygote.after
        stopped = []
        for cid, pid in running.items():
            time.sleep(_KILL_PAUSE_S)
            wall = time.time_ns()
            began = time.perf_counter_ns()
            os.kill(pid, signal.SIGKILL)
            seen = self._await_exit(cid, pid, 128 + signal.SIGKILL, "task")
            if seen is None:
                continue  # left to cleanup
            self.outcome.add("exit_event", seen.received_ns - began)
            self._split_exit(seen, wall)
            stopped.append(cid)
        for cid in stopped:
            self.client.tasks.delete(cid)
            self.client.containers.delete(cid)
            del self.live[cid]

    def _split_exit(self, seen: ExitSeen, killed_wall_ns: int) -> None:
        """Where an exit's latency went, by wall clock: the shim, the daemon, the delivery.

        ``exited_at`` is stamped by the shim when it reaps the process, the
        event's ``timestamp`` by the event bus when it publishes it (after
        the task's record is committed); the bench stamps the frame's arrival.
        """
        exited_at, published = seen.event.get("exited_at"), seen.event.get("timestamp")
        if exited_at is None or published is None:
            return
        self.outcome.add("exit_stamp", timestamp_ns(exited_at) - killed_wall_ns)
        self.outcome.add("exit_daemon", timestamp_ns(published) - timestamp_ns(exited_at))
        self.outcome.add("exit_deliver", seen.received_wall_ns - timestamp_ns(published))

    def read_memory(self, running: int) -> None:
        """PSS and RSS of this run's shims in the namespace."""
        self.outcome.running_tasks = running
        shims = shim_pids(NAMESPACE, self.prefix)
        readings = [m for pid in shims if (m := process_memory(pid)) is not None]
        self.outcome.shims = MemorySummary.of(readings)
        if len(readings) != running:
            self.outcome.notes.append(
                f"{len(readings)} shim(s) of {NAMESPACE} found for {running} running tasks"
            )

    # -- cleanup -------------------------------------------------------------

    def _stop_and_remove(self, cid: str, pid: int) -> None:
        self.client.tasks.kill(cid, signal.SIGKILL)
        self._await_exit(cid, pid, 128 + signal.SIGKILL, "task")
        self.client.tasks.delete(cid)
        self.client.containers.delete(cid)
        del self.live[cid]

    def clear_namespace(self) -> list[str]:
        """Remove every task and container of the namespace (a reused daemon's leftovers)."""
        removed = [c["id"] for c in self.client.containers.list()]
        for cid in removed:
            self._remove(cid)
        return removed

    def _remove(self, cid: str) -> None:
        """Best effort: kill and delete the task of ``cid``, then the container."""
        with contextlib.suppress(berth.BerthError):
            task = self.client.tasks.info(cid)
            if task["status"] in ("RUNNING", "PAUSED"):
                with contextlib.suppress(berth.BerthError):
                    self.client.tasks.kill(cid, signal.SIGKILL, all=True)
                deadline = time.monotonic() + EXIT_TIMEOUT_S
                while self.client.tasks.info(cid)["status"] != "STOPPED":
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
            self.client.tasks.delete(cid)
        with contextlib.suppress(berth.BerthError):
            self.client.containers.delete(cid)

    def cleanup(self) -> None:
        """Remove what this run made, even after a failure: raw runc state, tasks, containers.

        When a spawned daemon has died, its tasks are left to :func:`sweep`.
        """
        if leftovers := self.raw.cleanup():
            self.outcome.notes.append(f"raw runc containers left and removed: {leftovers}")
        if self.live:
            self.outcome.notes.append(f"{len(self.live)} container(s) left to clean up")
        proc = self.target.proc
        for cid in list(self.live):
            if proc is not None and proc.poll() is not None:
                break
            self._remove(cid)
            del self.live[cid]

    def close(self) -> None:
        self.events.close()
        self.outcome.events = self.events.stats
        self.client.close()


def sweep(target: Target, outcome: TasksOutcome) -> None:
    """Last resort: kill this run's shims still alive, and (spawned daemon) its runc state.

    A daemon that is alive cleans up after a dead shim (its task's processes,
    mounts and runc state); runc's own ``delete --force`` covers a dead one.
    """
    if killed := kill_shims(NAMESPACE, id_prefix()):
        outcome.notes.append(f"shims left after cleanup, killed: {killed}")
        time.sleep(_SETTLE_S)
    if target.workdir is None:
        return
    if removed := runc_delete_all(target.workdir / "state" / "runc" / NAMESPACE):
        outcome.notes.append(f"runc containers left after cleanup, removed: {removed}")
