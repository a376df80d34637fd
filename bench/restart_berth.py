"""berth's side of ``berth-bench restarts``: a crash loop, plain create + start, health checks.

- :func:`berth_crash_loop`: ``--containers`` containers whose task runs
  ``sh -c 'sleep 0.5; exit 1'`` under policy ``always`` with the first
  backoff step at its minimum (``berth.io/restart.backoff-base`` 1ms: a
  jittered first delay of 0.5-1 ms) and ``berth.io/restart.reset-after``
  0 (every run resets the backoff, so every restart waits the base), for
  ``--duration`` seconds, each restart timed from the ``Events/Subscribe``
  stream (:class:`bench.restart_watch.BerthRestartWatch`); berthd's CPU
  over that window (and its zygote's, with the shims and every ``runc``
  they reaped) divided by the restarts in it. Plain task create + start
  (no restart policy, same command) is timed ``--iterations`` times
  before the loop, on a quiet daemon, and as many times again while the
  loop still runs (after the CPU window), under the same load; the
  restarts of that second window are kept apart (``timings_loaded``),
  to be set against those create + starts.
- :func:`health_overhead`: ``--health-containers`` tasks of ``sleep
  600`` without checks, then as many with ``berth.io/health.cmd`` =
  ``true`` every ``--health-interval``, each for ``--health-seconds``:
  the CPU of berthd, the zygote and the shims (with the ``runc exec``
  and check processes they reaped), and the whole machine's busy cores.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import berth
from bench.restart_cpu import CpuGroup, CpuWindow
from bench.restart_watch import BerthRestartWatch, RestartTiming
from bench.target import Target
from bench.task_host import find_processes, task_spec
from bench.task_ops import remove_berth_container
from wire.codec import timestamp_ns

__all__ = [
    "CRASH_ARGS",
    "HEALTH_NAMESPACE",
    "NAMESPACE",
    "CrashLoop",
    "HealthPhase",
    "berth_crash_loop",
    "berth_groups",
    "health_overhead",
    "remove_all",
]

NAMESPACE = "bench-restarts"
HEALTH_NAMESPACE = "bench-health"
CRASH_ARGS = ["sh", "-c", "sleep 0.5; exit 1"]
_REMOVE_TIMEOUT_S = 20.0
_PROBE_GAP_S = 0.2  # between two create + start probes during the crash loop


@dataclass
class CrashLoop:
    """What a crash loop measured (any backend)."""

    backend: str
    containers: int
    timings: list[RestartTiming]  # complete restarts whose exit fell in the window
    restarts: int  # replacements started in the CPU window
    window: CpuWindow
    exits: int = 0
    gave_up: int = 0
    failure: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def berth_groups(pid: int | None, namespace: str) -> list[CpuGroup]:
    """berthd; and its zygote with the namespace's live shims, each with what it reaped.

    One group for the zygote and the shims: a shim that ends in the window
    moves from the shims' sum into the zygote's children, so only their
    sum means something.
    """
    if pid is None:
        return []

    def zygote_and_shims() -> list[int]:
        zygote = find_processes("berth-zygote", parent=pid)
        return zygote + find_processes(f"berth-shim {namespace}/")

    return [
        CpuGroup("berthd", lambda: [pid]),
        CpuGroup("zygote+shims", zygote_and_shims, children=True),
    ]


def remove_all(client: berth.Client, ids: list[str]) -> list[str]:
    """Remove every container of ``ids`` and its task, supervised or not; the ids left.

    A Kill records a supervised task's desired state ``stopped``; a
    restart under way may still hold the task for a moment (its delete then
    fails), so each container is retried until it is gone.
    """
    left = list(ids)
    deadline = time.monotonic() + _REMOVE_TIMEOUT_S
    while left and time.monotonic() < deadline:
        for cid in list(left):
            remove_berth_container(client, cid)
            try:
                client.containers.get(cid)
            except berth.NotFound:
                left.remove(cid)
        if left:
            time.sleep(0.1)
    return left


def _create_start(
    client: berth.Client,
    spec: dict[str, Any],
    ids: list[str],
    gap_s: float = 0.0,
) -> dict[str, list[int]]:
    """Time Tasks/Create and Tasks/Start (ns) of a fresh container each, removed after."""
    out: dict[str, list[int]] = {"create": [], "start": [], "create_start": []}
    for cid in ids:
        client.containers.create(cid, spec=spec)
        try:
            began = time.perf_counter_ns()
            client.tasks.create(cid)
            created = time.perf_counter_ns()
            client.tasks.start(cid)
            started = time.perf_counter_ns()
        finally:
            remove_all(client, [cid])
        out["create"].append(created - began)
        out["start"].append(started - created)
        out["create_start"].append(started - began)
        time.sleep(gap_s)
    return out


def berth_crash_loop(
    target: Target,
    pid: int | None,
    rootfs: Path,
    *,
    containers: int,
    duration_s: float,
    iterations: int,
    backoff_base: str,
    prefix: str,
) -> CrashLoop:
    """The crash loop on berth, with plain create + start alone and under the loop's load."""
    spec = task_spec(CRASH_ARGS, rootfs)
    labels = berth.restart_labels("always", backoff_base=backoff_base, reset_after="0")
    client = berth.Client(target.address, namespace=NAMESPACE, timeout=60.0)
    ids = [f"{prefix}r{i}" for i in range(containers)]
    extra: dict[str, Any] = {"labels": labels}
    window = CpuWindow(berth_groups(pid, NAMESPACE))
    watch: BerthRestartWatch | None = None
    try:
        remove_all(client, [c["id"] for c in client.containers.list()])  # a rerun's leftovers
        _create_start(client, spec, [f"{prefix}w{i}" for i in range(3)])  # warm-up
        quiet = [f"{prefix}q{i}" for i in range(iterations)]
        extra["create_start_alone"] = _create_start(client, spec, quiet)
        watch = BerthRestartWatch(target.address, NAMESPACE).start()
        for cid in ids:
            client.containers.create(cid, spec=spec, labels=labels)
            client.tasks.create(cid)
            client.tasks.start(cid)
        window.begin()
        begin_ns = time.time_ns()
        time.sleep(duration_s)
        end_ns = time.time_ns()
        window.end()
        target.check_alive()
        loaded = [f"{prefix}l{i}" for i in range(iterations)]
        extra["create_start_loaded"] = _create_start(client, spec, loaded, _PROBE_GAP_S)
        probed_ns = time.time_ns()
        extra["supervision"] = _supervision_summary(client, ids)
    finally:
        if left := remove_all(client, ids):
            extra["not_removed"] = left
        if watch is not None:
            watch.close()
        client.close()
    books = watch.restarts
    # The restarts while the probes ran: the same moments as create_start_loaded.
    extra["timings_loaded"] = books.within(end_ns, probed_ns)
    return CrashLoop(
        "berth",
        containers,
        books.within(begin_ns, end_ns),
        books.restarted_between(begin_ns, end_ns),
        window,
        exits=books.exits,
        gave_up=len(books.gave_up),
        failure=watch.failure,
        extra=extra,
    )


def _supervision_summary(client: berth.Client, ids: list[str]) -> dict[str, Any]:
    """Supervision/Get of each container: states and restart counts, at the loop's end."""
    states: dict[str, int] = {}
    counts = []
    for cid in ids:
        sv = client.supervision.get(cid)
        states[sv["state"]] = states.get(sv["state"], 0) + 1
        counts.append(int(sv["restart_count"]))
    return {"states": states, "restart_counts": counts}


@dataclass
class HealthPhase:
    """One health window: its containers' CPU, and what the checks did."""

    name: str
    containers: int
    window: CpuWindow
    checks: dict[str, Any] = field(default_factory=dict)


def _run_sleepers(
    client: berth.Client, spec: dict[str, Any], ids: list[str], labels: dict[str, str]
) -> None:
    for cid in ids:
        client.containers.create(cid, spec=spec, labels=labels)
        client.tasks.create(cid)
        client.tasks.start(cid)


def _check_figures(client: berth.Client, ids: list[str]) -> dict[str, Any]:
    """From each container's last 5 results: intervals between checks, durations, statuses."""
    statuses: dict[str, int] = {}
    intervals: list[float] = []
    durations: list[float] = []
    failed = 0
    for cid in ids:
        health = client.supervision.get(cid).get("health") or {}
        status = str(health.get("status", "none"))
        statuses[status] = statuses.get(status, 0) + 1
        log = health.get("log") or []
        starts = [timestamp_ns(entry["start"]) for entry in log]
        intervals += [(b - a) / 1e9 for a, b in itertools.pairwise(starts)]
        for entry in log:
            durations.append((timestamp_ns(entry["end"]) - timestamp_ns(entry["start"])) / 1e6)
            failed += int(entry["exit_code"]) != 0
    intervals.sort()
    durations.sort()

    def pick(values: list[float], q: float) -> float | None:
        return round(values[min(len(values) - 1, int(q * len(values)))], 4) if values else None

    return {
        "statuses": statuses,
        "interval_s": {
            "n": len(intervals),
            "p50": pick(intervals, 0.5),
            "p99": pick(intervals, 0.99),
        },
        "check_ms": {
            "n": len(durations),
            "p50": pick(durations, 0.5),
            "p99": pick(durations, 0.99),
        },
        "failed_in_logs": failed,
    }


def health_overhead(
    target: Target,
    pid: int | None,
    rootfs: Path,
    *,
    containers: int,
    seconds: float,
    interval: str,
    settle_s: float,
    prefix: str,
    progress: Callable[[str], None] = lambda _: None,
) -> list[HealthPhase]:
    """``containers`` sleepers without health checks, then as many with; a window each."""
    spec = task_spec(["sleep", "600"], rootfs)
    client = berth.Client(target.address, namespace=HEALTH_NAMESPACE, timeout=60.0)
    phases: list[HealthPhase] = []
    runs: tuple[tuple[str, dict[str, str]], ...] = (
        ("without checks", {}),
        ("with checks", berth.health_labels("true", interval=interval)),
    )
    try:
        remove_all(client, [c["id"] for c in client.containers.list()])
        for k, (name, labels) in enumerate(runs):
            ids = [f"{prefix}h{k}-{i}" for i in range(containers)]
            progress(f"health: starting {containers} containers {name}")
            try:
                _run_sleepers(client, spec, ids, labels)
                time.sleep(settle_s)
                progress(f"health: {name}, measuring {seconds:g} s")
                window = CpuWindow(berth_groups(pid, HEALTH_NAMESPACE)).begin()
                time.sleep(seconds)
                window.end()
                target.check_alive()
                phase = HealthPhase(name, containers, window)
                if labels:
                    phase.checks = _check_figures(client, ids)
                phases.append(phase)
            finally:
                for cid in ids:
                    with contextlib.suppress(berth.BerthError):
                        client.tasks.kill(cid, signal.SIGKILL, all=True)
                remove_all(client, ids)
    finally:
        client.close()
    return phases
