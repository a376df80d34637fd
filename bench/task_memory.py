"""The memory step of ``berth-bench tasks``: shims, and the daemons' growth per running task.

A daemon's memory is read before the M tasks are started (after the
warm-up, once the daemon has settled) and again while all M run, once it
has settled again: :func:`settle` reads each process at 0.5 s and then
every second until ``--settle`` seconds have passed, and the last reading
of each series is the one used (a daemon may keep per-task state for a
while after a call and let it go when the task is idle; the series is in
the report to show it). :class:`Growth` is ``(after - before) / M`` of
PSS, and of USS and RSS beside it.

:func:`containerd_memory` does the same on containerd with
``--compare containerd``: a few unmeasured lifecycles of ``true``, the
daemon's reading, M tasks running ``sleep 600`` (same spec, same busybox
directory), the daemon's reading and every ``containerd-shim-runc-v2``
of those tasks; then they are killed and removed.
:func:`find_containerd_pid` says which process containerd's daemon is.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import berth
from bench import ctrd as ctrd_mod
from bench.resources import listener_pid, listener_pids
from bench.task_host import ProcessMemory, process_memory, task_spec
from bench.task_ops import EXIT_TIMEOUT_S, remove_containerd_container

__all__ = [
    "ContainerdMemory",
    "Growth",
    "MemorySummary",
    "containerd_memory",
    "containerd_shim_pids",
    "find_containerd_pid",
    "settle",
    "settle_times",
    "total_per_task",
]

# (seconds after the settle window began, the reading), in order.
Series = list[tuple[float, ProcessMemory]]


@dataclass(frozen=True)
class MemorySummary:
    """Mean and max of RSS and PSS (KiB) over a set of processes."""

    count: int
    rss_mean_kib: float
    rss_max_kib: int
    pss_mean_kib: float
    pss_max_kib: int

    @classmethod
    def of(cls, readings: Sequence[ProcessMemory]) -> MemorySummary | None:
        """Summarise readings; None when there are none."""
        if not readings:
            return None
        return cls(
            count=len(readings),
            rss_mean_kib=statistics.fmean(r.rss_kib for r in readings),
            rss_max_kib=max(r.rss_kib for r in readings),
            pss_mean_kib=statistics.fmean(r.pss_kib for r in readings),
            pss_max_kib=max(r.pss_kib for r in readings),
        )


def settle_times(seconds: float) -> list[float]:
    """When :func:`settle` reads: 0.5 s, then each whole second, and ``seconds`` itself."""
    if seconds <= 0.5:
        return [max(seconds, 0.0)]
    times = [0.5, *(float(s) for s in range(1, int(seconds) + 1))]
    if times[-1] < seconds:
        times.append(seconds)
    return times


def settle(pids: Mapping[str, int], seconds: float) -> dict[str, Series]:
    """Read each process of ``pids`` (name -> pid) at :func:`settle_times`; the series by name.

    A process that has gone has no reading at that time.
    """
    began = time.monotonic()
    series: dict[str, Series] = {name: [] for name in pids}
    for at in settle_times(seconds):
        delay = began + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for name, pid in pids.items():
            if (mem := process_memory(pid)) is not None:
                series[name].append((round(time.monotonic() - began, 2), mem))
    return series


@dataclass(frozen=True)
class Growth:
    """One daemon process's memory before the tasks were started and while they all ran."""

    name: str
    pid: int
    tasks: int
    before: ProcessMemory
    after: ProcessMemory
    before_series: tuple[tuple[float, int], ...]  # (s, PSS KiB): the settle window before
    after_series: tuple[tuple[float, int], ...]  # the same after the last task started

    @classmethod
    def of(cls, name: str, before: Series, after: Series, tasks: int) -> Growth | None:
        """From the two settle series (their last readings); None if either is empty."""
        if not before or not after or tasks < 1:
            return None
        return cls(
            name=name,
            pid=after[-1][1].pid,
            tasks=tasks,
            before=before[-1][1],
            after=after[-1][1],
            before_series=tuple((at, m.pss_kib) for at, m in before),
            after_series=tuple((at, m.pss_kib) for at, m in after),
        )

    def _per_task(self, field_name: str) -> float:
        grown = getattr(self.after, field_name) - getattr(self.before, field_name)
        return float(grown) / self.tasks

    @property
    def pss_per_task_kib(self) -> float:
        """(PSS after - PSS before) / tasks."""
        return self._per_task("pss_kib")

    @property
    def uss_per_task_kib(self) -> float:
        """The same of USS (private pages only)."""
        return self._per_task("uss_kib")

    @property
    def rss_per_task_kib(self) -> float:
        """The same of RSS."""
        return self._per_task("rss_kib")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "tasks": self.tasks,
            "pss_per_task_kib": round(self.pss_per_task_kib, 2),
            "uss_per_task_kib": round(self.uss_per_task_kib, 2),
            "rss_per_task_kib": round(self.rss_per_task_kib, 2),
            "before": asdict(self.before),
            "after": asdict(self.after),
            "before_pss_series_kib": [list(point) for point in self.before_series],
            "after_pss_series_kib": [list(point) for point in self.after_series],
        }


def total_per_task(
    growths: Sequence[Growth], shims: MemorySummary | None, tasks: int
) -> float | None:
    """(the daemon processes' PSS growth + the shims' PSS) / tasks, in KiB.

    The zygote's PSS falls as the shims it forks come to share its pages
    (those pages are then counted in the shims' PSS instead); this sum is
    what the tasks cost all of a runtime's processes together.
    """
    if not growths or shims is None or tasks < 1:
        return None
    grown = sum(g.after.pss_kib - g.before.pss_kib for g in growths)
    return (grown + shims.pss_mean_kib * shims.count) / tasks


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def find_containerd_pid(address: str, given: int | None = None) -> tuple[int | None, str]:
    """containerd's daemon pid and how it was found, in this order:

    1. ``given`` (``--containerd-pid``), if that process exists;
    2. the process listening on the socket (:func:`bench.resources.listener_pid`:
       ``/proc/net/unix`` for the socket's inode, ``/proc/*/fd`` for its
       holder), preferring one named ``containerd`` when several hold it;
    3. ``containerd.pid`` beside the socket (``containerd-sandbox up`` writes
       it), if that process is alive and named ``containerd``.

    (2) sees only sockets of this network namespace; a containerd in
    another one needs (1).
    """
    if given is not None:
        if _comm(given) is None:
            return None, f"--containerd-pid {given}: no such process"
        return given, "--containerd-pid"
    path = address.removeprefix("unix://")
    holders = listener_pids(path)
    named = [pid for pid in holders if _comm(pid) == "containerd"]
    if len(named) == 1:
        return named[0], f"listener of {path}"
    if holders and (pid := listener_pid(path)) is not None:
        return pid, f"listener of {path} ({_comm(pid)}, of {len(holders)} holder(s))"
    pidfile = Path(path).parent / "containerd.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().split()[0])
        if _comm(pid) == "containerd":
            return pid, str(pidfile)
    return None, f"no process listens on {path} here and no {pidfile}: give --containerd-pid"


def _argv(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _arg(argv: list[str], flag: str) -> str | None:
    if flag in argv and argv.index(flag) + 1 < len(argv):
        return argv[argv.index(flag) + 1]
    return None


def containerd_shim_pids(namespace: str, ids: set[str]) -> list[int]:
    """The ``containerd-shim-runc-v2 -namespace <namespace> -id <id> ...`` of ``ids``.

    Matched by their own arguments (not by containerd's ``-address``, which
    may be spelt unlike ``--containerd-address``): the ids are this run's.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = _argv(entry.name)
        if not argv or "containerd-shim" not in argv[0]:
            continue
        if _arg(argv, "-namespace") == namespace and _arg(argv, "-id") in ids:
            found.append(int(entry.name))
    return sorted(found)


@dataclass
class ContainerdMemory:
    """containerd's side of the memory step: its shims, and its daemon's growth per task."""

    address: str
    pid: int | None
    pid_found_by: str
    running_tasks: int = 0
    shims: MemorySummary | None = None
    daemon: ProcessMemory | None = None  # the last reading with the tasks running
    growth: Growth | None = None
    notes: list[str] = field(default_factory=list)

    def total_pss_per_task_kib(self) -> float | None:
        """(containerd's PSS growth + its shims' PSS) / tasks: all the tasks cost it."""
        return total_per_task(
            [self.growth] if self.growth is not None else [], self.shims, self.running_tasks
        )

    def to_json(self) -> dict[str, Any]:
        total = self.total_pss_per_task_kib()
        return {
            "address": self.address,
            "pid": self.pid,
            "pid_found_by": self.pid_found_by,
            "running_tasks": self.running_tasks,
            "shims": None if self.shims is None else asdict(self.shims),
            "daemon": None if self.daemon is None else asdict(self.daemon),
            "daemon_pss_per_task_kib": (
                None if self.growth is None else round(self.growth.pss_per_task_kib, 2)
            ),
            "total_pss_per_task_kib": None if total is None else round(total, 2),
            "growth": None if self.growth is None else self.growth.to_json(),
            "notes": self.notes,
        }


class _ContainerdTasks:
    """The step's containers on containerd, each tracked until removed."""

    def __init__(self, ctrd: ctrd_mod.Containerd, rootfs: Path, prefix: str) -> None:
        self.ctrd, self.prefix = ctrd, prefix
        self.true_spec = berth.oci_spec_any(task_spec(["true"], rootfs))
        self.sleep_spec = berth.oci_spec_any(task_spec(["sleep", "600"], rootfs))
        self.live: list[str] = []

    def lifecycle(self, cid: str, notes: list[str]) -> None:
        """Create, start, wait for and delete a task of ``true`` (unmeasured)."""
        self.live.append(cid)
        self.ctrd.containers.create(cid, spec=self.true_spec)
        self.ctrd.tasks.create(cid)
        self.ctrd.tasks.start(cid)
        if (status := self.ctrd.tasks.wait(cid, timeout=EXIT_TIMEOUT_S)) != 0:
            notes.append(f"containerd warm-up task {cid} exited {status}")
        self.ctrd.tasks.delete(cid)
        self.ctrd.containers.delete(cid)
        self.live.remove(cid)

    def start_sleep(self, cid: str) -> None:
        self.live.append(cid)
        self.ctrd.containers.create(cid, spec=self.sleep_spec)
        self.ctrd.tasks.create(cid)
        self.ctrd.tasks.start(cid)

    def remove_all(self) -> None:
        """Kill (SIGKILL), wait for, delete every task left, and its container."""
        for cid in self.live:
            remove_containerd_container(self.ctrd, cid)
        self.live.clear()


def containerd_memory(
    address: str,
    *,
    namespace: str,
    rootfs: Path,
    count: int,
    settle_s: float,
    warmup_rounds: int,
    prefix: str,
    pid: int | None = None,
    timeout: float | None = 60.0,
) -> ContainerdMemory:
    """containerd's shims and daemon growth with ``count`` tasks running ``sleep 600``.

    Raises :class:`bench.ctrd.CtrdError` when containerd fails a call; what
    the step made is removed all the same.
    """
    found, how = find_containerd_pid(address, pid)
    result = ContainerdMemory(address=address, pid=found, pid_found_by=how)
    if found is None:
        result.notes.append(f"containerd's daemon pid not found ({how}): no daemon growth")
    elif (comm := _comm(found)) != "containerd":
        result.notes.append(f"containerd's daemon pid {found} is named {comm!r}")
    ctrd = ctrd_mod.Containerd(address, namespace, timeout=timeout, lease=ctrd_mod.LEASE)
    ctrd.create_lease(ctrd_mod.LEASE)
    tasks = _ContainerdTasks(ctrd, rootfs, prefix)
    try:
        if leftovers := [c.id for c in ctrd.containers.list()]:
            result.notes.append(f"removed {len(leftovers)} leftover containerd container(s)")
            for cid in leftovers:
                remove_containerd_container(ctrd, cid)
        for i in range(warmup_rounds):
            tasks.lifecycle(f"{prefix}cw{i}", result.notes)
        pids = {} if found is None else {"containerd": found}
        before = settle(pids, settle_s)
        ids = [f"{prefix}cm{i}" for i in range(count)]
        for cid in ids:
            tasks.start_sleep(cid)
        after = settle(pids, settle_s)
        result.running_tasks = count
        shims = containerd_shim_pids(namespace, set(ids))
        readings = [m for shim in shims if (m := process_memory(shim)) is not None]
        result.shims = MemorySummary.of(readings)
        if len(readings) != count:
            result.notes.append(
                f"{len(readings)} containerd shim(s) of {namespace} found for {count} tasks"
            )
        if found is not None:
            result.growth = Growth.of(
                "containerd", before["containerd"], after["containerd"], count
            )
            result.daemon = result.growth.after if result.growth is not None else None
    finally:
        try:
            tasks.remove_all()
        finally:
            ctrd.delete_lease(ctrd_mod.LEASE)
            ctrd.close()
    return result
