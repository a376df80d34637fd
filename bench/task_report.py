"""The Tasks benchmark's report: the outcome of a run, the human table, the JSON document.

:class:`TasksOutcome` is what a run of :mod:`bench.tasks` measured and
checked (raw nanosecond samples per measurement, memory readings, breaches);
:func:`format_report` prints it beside containerd's figures
(:mod:`bench.task_targets`) and :func:`report_json` turns it into the JSON
report.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.report import closing_lines, machine_json
from bench.stats import percentile
from bench.targets import TargetResult
from bench.task_events import EventStats
from bench.task_host import ProcessMemory
from bench.task_memory import ContainerdMemory, Growth, MemorySummary, total_per_task
from bench.task_targets import (
    CONTAINERD_LIFECYCLE_P99_MS,
    CONTAINERD_MS,
    CONTAINERD_SHIM_PSS_MB,
    CONTAINERD_SHIM_RSS_MB,
)

__all__ = ["ROWS", "Latency", "MemorySummary", "TasksOutcome", "format_report", "report_json"]

_NS_PER_MS = 1_000_000

# The table's rows: (key of the samples, label).
ROWS: tuple[tuple[str, str], ...] = (
    ("lifecycle", "lifecycle of true"),
    ("container_create", "  container create"),
    ("task_create", "  task create"),
    ("task_start", "  task start"),
    ("wait_exit", "  start -> EXIT event"),
    ("task_delete", "  task delete"),
    ("container_delete", "  container delete"),
    ("runc_run", "raw runc run of true"),
    ("exec_wait", "exec + wait of true"),
    ("exec_call", "  Exec call alone"),
    ("exit_event", "exit -> event received"),
    ("exit_stamp", "  kill -> exited_at"),
    ("exit_daemon", "  exited_at -> published"),
    ("exit_deliver", "  published -> received"),
)


@dataclass(frozen=True)
class Latency:
    """Percentiles of one measurement, in milliseconds."""

    n: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, samples_ns: Sequence[int]) -> Latency:
        """Summarise raw nanosecond samples."""
        ordered = sorted(samples_ns)
        if not ordered:
            return cls(0, 0.0, 0.0, 0.0, 0.0)
        return cls(
            n=len(ordered),
            p50_ms=percentile(ordered, 50) / _NS_PER_MS,
            p99_ms=percentile(ordered, 99) / _NS_PER_MS,
            max_ms=ordered[-1] / _NS_PER_MS,
            mean_ms=statistics.fmean(ordered) / _NS_PER_MS,
        )


@dataclass
class TasksOutcome:
    """Everything a run measured and checked, filled in as it goes."""

    samples: dict[str, list[int]] = field(default_factory=dict)
    running_tasks: int = 0  # tasks running while memory was read
    settle_s: float = 0.0  # how long after the last start (and before the first) memory was read
    shims: MemorySummary | None = None
    daemon: ProcessMemory | None = None  # berthd's last reading with the tasks running
    zygote: ProcessMemory | None = None
    growth: dict[str, Growth] = field(default_factory=dict)  # "berthd", "berth-zygote"
    containerd: ContainerdMemory | None = None  # --compare containerd
    events: EventStats | None = None
    breaches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    churn: Any = None  # bench.session.LoadOutcome of --churn

    def add(self, key: str, value_ns: int) -> None:
        """Record one sample of measurement ``key``."""
        self.samples.setdefault(key, []).append(value_ns)

    def latency(self, key: str) -> Latency | None:
        """The summary of measurement ``key``, None if it has no sample."""
        values = self.samples.get(key)
        return Latency.of(values) if values else None

    def pss_per_task_kib(self, name: str) -> float | None:
        """The PSS growth per running task of ``name`` (``berthd``, ``berth-zygote``)."""
        growth = self.growth.get(name)
        return None if growth is None else growth.pss_per_task_kib

    def total_pss_per_task_kib(self) -> float | None:
        """(berthd's and the zygote's PSS growth + the shims' PSS) / running tasks."""
        return total_per_task(list(self.growth.values()), self.shims, self.running_tasks)

    def ratios(self) -> dict[str, float | None] | None:
        """berth / containerd of shim PSS mean, daemon PSS growth and total PSS per task.

        A ratio is given only when both figures are positive.
        """
        ctrd = self.containerd
        if ctrd is None:
            return None

        def ratio(ours: float | None, theirs: float | None) -> float | None:
            if ours is None or theirs is None or ours <= 0 or theirs <= 0:
                return None
            return round(ours / theirs, 3)

        theirs = None if ctrd.growth is None else ctrd.growth.pss_per_task_kib
        return {
            "shim_pss_mean": ratio(
                None if self.shims is None else self.shims.pss_mean_kib,
                None if ctrd.shims is None else ctrd.shims.pss_mean_kib,
            ),
            "daemon_pss_per_task": ratio(self.pss_per_task_kib("berthd"), theirs),
            "total_pss_per_task": ratio(
                self.total_pss_per_task_kib(), ctrd.total_pss_per_task_kib()
            ),
        }


_HEADER = (
    f"{'measurement':<26}{'n':>5}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}"
    f"{'containerd p50':>16}{'ratio':>7}"
)


def _row(key: str, label: str, lat: Latency) -> str:
    ref = CONTAINERD_MS.get(key)
    ref_text = "" if ref is None else f"{ref:g}"
    ratio = "" if ref is None or not ref else f"{lat.p50_ms / ref:.2f}x"
    return (
        f"{label:<26}{lat.n:>5}{lat.p50_ms:>10.3f}{lat.p99_ms:>10.3f}{lat.max_ms:>10.3f}"
        f"{ref_text:>16}{ratio:>7}"
    )


def _memory_line(label: str, mem: ProcessMemory | MemorySummary) -> str:
    if isinstance(mem, MemorySummary):
        return (
            f"{label:<26}{mem.count:>5}  PSS mean {mem.pss_mean_kib:,.0f} KiB, max"
            f" {mem.pss_max_kib:,}; RSS mean {mem.rss_mean_kib:,.0f} KiB, max {mem.rss_max_kib:,}"
        )
    return f"{label:<26}{1:>5}  PSS {mem.pss_kib:,} KiB; RSS {mem.rss_kib:,} KiB"


def _growth_lines(label: str, growth: Growth) -> list[str]:
    before, after = growth.before, growth.after
    series = " ".join(f"{pss:,}" for _, pss in growth.after_series)
    times = "/".join(f"{at:g}" for at, _ in growth.after_series)
    return [
        f"{label:<26}{growth.pss_per_task_kib:>+9,.1f} KiB/task  PSS {before.pss_kib:,} ->"
        f" {after.pss_kib:,} KiB; USS {growth.uss_per_task_kib:+,.1f}, RSS"
        f" {growth.rss_per_task_kib:+,.1f} KiB/task",
        f"{'':<28}PSS at {times} s after the last start: {series}",
    ]


def _ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _memory_lines(outcome: TasksOutcome) -> list[str]:
    lines = [
        f"memory with {outcome.running_tasks} running tasks, read {outcome.settle_s:g} s"
        " after the last start:"
    ]
    if outcome.shims is not None:
        lines.append(_memory_line("  shims", outcome.shims))
    for label, mem in (("  berthd", outcome.daemon), ("  berth-zygote", outcome.zygote)):
        if mem is not None:
            lines.append(_memory_line(label, mem))
    if outcome.growth:
        lines.append(
            f"daemon PSS growth per running task, (after - before) / {outcome.running_tasks}"
            f" (before: read {outcome.settle_s:g} s after the warm-up's last task went):"
        )
        for name in ("berthd", "berth-zygote"):
            if (growth := outcome.growth.get(name)) is not None:
                lines += _growth_lines(f"  {name}", growth)
        if (total := outcome.total_pss_per_task_kib()) is not None:
            lines.append(f"{'  berthd + zygote + shims':<26}{total:>+9,.1f} KiB/task")
    if (ctrd := outcome.containerd) is not None:
        pid = "pid unknown" if ctrd.pid is None else f"pid {ctrd.pid} by {ctrd.pid_found_by}"
        lines.append(f"containerd, same run ({pid}), {ctrd.running_tasks} running tasks:")
        if ctrd.shims is not None:
            lines.append(_memory_line("  containerd-shim-runc-v2", ctrd.shims))
        if ctrd.daemon is not None:
            lines.append(_memory_line("  containerd", ctrd.daemon))
        if ctrd.growth is not None:
            lines += _growth_lines("  containerd growth", ctrd.growth)
        if (total := ctrd.total_pss_per_task_kib()) is not None:
            lines.append(f"{'  containerd + shims':<26}{total:>+9,.1f} KiB/task")
        lines += [f"  note: {note}" for note in ctrd.notes]
        if (ratios := outcome.ratios()) is not None:
            lines.append(
                f"berth / containerd: shim PSS mean {_ratio_text(ratios['shim_pss_mean'])};"
                " daemon PSS growth per task (berthd / containerd)"
                f" {_ratio_text(ratios['daemon_pss_per_task'])}; all processes' PSS per task"
                f" {_ratio_text(ratios['total_pss_per_task'])}"
            )
    lines.append(
        f"  (containerd's shim, reference: PSS {CONTAINERD_SHIM_PSS_MB:g} MB,"
        f" RSS {CONTAINERD_SHIM_RSS_MB:g} MB)"
    )
    return lines


def format_report(outcome: TasksOutcome, targets: Sequence[TargetResult]) -> str:
    """The human summary: latencies, memory, events, targets, correctness."""
    lines = [_HEADER, "-" * len(_HEADER)]
    for key, label in ROWS:
        if (lat := outcome.latency(key)) is not None:
            lines.append(_row(key, label, lat))
    lines.append(
        "(no snapshots yet: root.path is a busybox dir, read-only; containerd's lifecycle"
        f" p50 {CONTAINERD_MS['lifecycle']:g} / p99 {CONTAINERD_LIFECYCLE_P99_MS:g} ms"
        " includes snapshot prepare/remove)"
    )
    if outcome.running_tasks:
        lines += _memory_lines(outcome)
    if (ev := outcome.events) is not None:
        lines.append(
            f"events: {ev.received} received, seq {ev.first_seq}..{ev.last_seq}, "
            f"{ev.gaps} gap(s) ({ev.missing_seqs} seq(s) skipped), "
            f"{len(ev.out_of_order)} out of order, {ev.duplicate_exits} duplicate EXIT(s)"
        )
    lines += [f"note: {note}" for note in outcome.notes]
    lines += closing_lines(
        targets, outcome.breaches, "every started process's EXIT was observed; seqs increasing"
    )
    return "\n".join(lines)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _mem_json(mem: ProcessMemory | MemorySummary | None) -> dict[str, Any] | None:
    return None if mem is None else asdict(mem)


def report_json(
    outcome: TasksOutcome,
    targets: Sequence[TargetResult],
    *,
    started: str,
    config: dict[str, Any],
    daemon: dict[str, Any],
    aborted: str | None,
) -> dict[str, Any]:
    """Every figure of the run as one JSON document (raw samples included, in ns)."""
    return {
        "scenario": "tasks",
        "started_at": started,
        "machine": machine_json(),
        "config": config,
        "latency_ms": {
            key: asdict(lat) for key, _ in ROWS if (lat := outcome.latency(key)) is not None
        },
        "samples_ns": outcome.samples,
        "memory": {
            "running_tasks": outcome.running_tasks,
            "settle_s": outcome.settle_s,
            "shims": _mem_json(outcome.shims),
            "daemon": _mem_json(outcome.daemon),
            "zygote": _mem_json(outcome.zygote),
            "daemon_pss_per_task_kib": _rounded(outcome.pss_per_task_kib("berthd")),
            "zygote_pss_per_task_kib": _rounded(outcome.pss_per_task_kib("berth-zygote")),
            "total_pss_per_task_kib": _rounded(outcome.total_pss_per_task_kib()),
            "growth": {name: g.to_json() for name, g in outcome.growth.items()},
            "containerd": None if outcome.containerd is None else outcome.containerd.to_json(),
            "ratios": outcome.ratios(),
        },
        "events": None if outcome.events is None else outcome.events.to_json(),
        "correctness": {"breaches": outcome.breaches, "breach_count": len(outcome.breaches)},
        "notes": outcome.notes,
        "targets": [asdict(t) for t in targets],
        "reference": {
            "source": "containerd 1.6.20 + runc 1.1.5 on this machine, through its API",
            "p50_ms": CONTAINERD_MS,
            "lifecycle_p99_ms": CONTAINERD_LIFECYCLE_P99_MS,
            "shim_pss_mb": CONTAINERD_SHIM_PSS_MB,
            "shim_rss_mb": CONTAINERD_SHIM_RSS_MB,
            "lifecycle_includes_snapshots": True,
        },
        "daemon": daemon,
        "aborted": aborted,
    }
