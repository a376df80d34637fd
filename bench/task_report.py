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


@dataclass
class TasksOutcome:
    """Everything a run measured and checked, filled in as it goes."""

    samples: dict[str, list[int]] = field(default_factory=dict)
    running_tasks: int = 0  # tasks running while memory was read
    shims: MemorySummary | None = None
    daemon: ProcessMemory | None = None
    zygote: ProcessMemory | None = None
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
        lines.append(f"memory with {outcome.running_tasks} running tasks:")
        if outcome.shims is not None:
            lines.append(_memory_line("  shims", outcome.shims))
        for label, mem in (("  berthd", outcome.daemon), ("  berth-zygote", outcome.zygote)):
            if mem is not None:
                lines.append(_memory_line(label, mem))
        lines.append(
            f"  (containerd's shim: PSS {CONTAINERD_SHIM_PSS_MB:g} MB,"
            f" RSS {CONTAINERD_SHIM_RSS_MB:g} MB)"
        )
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
            "shims": _mem_json(outcome.shims),
            "daemon": _mem_json(outcome.daemon),
            "zygote": _mem_json(outcome.zygote),
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
