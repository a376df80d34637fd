"""The Containers benchmark's report: the human table and the JSON document.

:class:`Outcome` is everything a run found; :func:`format_report` prints
it beside containerd's figures (:mod:`bench.targets`), :func:`report_json`
turns it, with the run's configuration, into the JSON report.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import PhaseStats
from bench.table import format_ms
from bench.targets import (
    CONTAINERD_LIST_P50_MS,
    CONTAINERD_OPS_PER_S,
    LIST_PHASE,
    MemoryResult,
    ScaleResult,
    TargetResult,
)

__all__ = ["Outcome", "format_report", "report_json", "write_json"]


_BULK_SHOWN = 10_000  # bulk jobs at least this large are summed up in the table's notes


@dataclass
class Outcome:
    """What a run measured and checked, filled in as it goes."""

    phases: list[PhaseStats] = field(default_factory=list)
    scale: ScaleResult | None = None
    memory: MemoryResult | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)
    bulks: list[dict[str, Any]] = field(default_factory=list)


def _reference(stats: PhaseStats) -> tuple[str, str]:
    """containerd's figure for this row and berth's ratio to it (higher is better)."""
    if stats.phase == LIST_PHASE:
        ref_ms = CONTAINERD_LIST_P50_MS.get(stats.clients)
        if ref_ms is None or not stats.p50_ms:
            return "", ""
        return f"p50 {ref_ms:g} ms", f"{ref_ms / stats.p50_ms:.2f}x"
    ref = CONTAINERD_OPS_PER_S.get((stats.phase, stats.clients))
    if ref is None:
        return "", ""
    return f"{ref:.0f}/s", f"{stats.ops_per_s / ref:.2f}x"


_HEADER = (
    f"{'phase':<13}{'shape':<10}{'clients':>7}{'ops/s':>8}{'p50 ms':>9}{'p90 ms':>9}"
    f"{'p99 ms':>9}{'p99.9 ms':>10}{'max ms':>9}{'errors':>7}{'berthd':>8}{'host':>6}"
    f"  {'containerd':>12}{'ratio':>7}"
)


def _cpu(stats: PhaseStats) -> tuple[str, str]:
    cores = "" if stats.daemon_cores is None else f"{stats.daemon_cores:.2f}"
    host = "" if stats.host_busy is None else f"{stats.host_busy:.0%}"
    return cores, host


def _row(stats: PhaseStats, label: str | None = None) -> str:
    ref, ratio = _reference(stats) if label is None else ("", "")
    cores, host = _cpu(stats)
    return (
        f"{label or stats.phase:<13}{stats.shape:<10}{stats.clients:>7}{stats.ops_per_s:>8.0f}"
        f"{format_ms(stats.p50_ms, 9)}{format_ms(stats.p90_ms, 9)}{format_ms(stats.p99_ms, 9)}"
        f"{format_ms(stats.p999_ms, 10)}{format_ms(stats.max_ms, 9)}"
        f"{stats.error_count:>7}{cores:>8}{host:>6}  {ref:>12}{ratio:>7}"
    )


def format_report(outcome: Outcome, targets: Sequence[TargetResult]) -> str:
    """The human summary: the table, error codes, scale and memory, targets, correctness."""
    lines = [_HEADER, "-" * len(_HEADER)]
    # containerd's rows measured in this run (--compare) and mixes are in bench.table's table.
    ours = [p for p in outcome.phases if p.backend == "berth" and not p.per_op]
    lines += [_row(p) for p in ours]
    scale, memory = outcome.scale, outcome.memory
    extra = [] if scale is None else [scale.small, scale.large]
    if scale is not None:
        lines.append(_row(scale.small, f"get@{scale.small_stored:,}"))
        lines.append(_row(scale.large, f"get@{scale.large_stored:,}"))
    for p in [*ours, *extra]:
        at = f"{p.clients} clients" + ("" if p.shape == "processes" else f" ({p.shape})")
        if p.errors:
            lines.append(f"  errors in {p.phase} at {at}: {p.errors}")
        if p.out_of_work:
            lines.append(
                f"  {p.phase} at {at}: {p.out_of_work} worker(s) ran out of ids; "
                "window cut when the first did"
            )
    lines.append(
        "(ratio: berth/containerd throughput; for list-1000, containerd p50 / berth p50;"
        " berthd: CPU cores the daemon used, host: the machine's CPU busy, clients included;"
        " shape: one process per client, or threads of one process)"
    )
    if memory is not None:
        lines.append(
            f"daemon RssAnon {memory.before_kib:,} -> {memory.after_kib:,} KiB over "
            f"{memory.containers:,} containers: {memory.kib_per_container:.3f} KiB/container"
            + (
                ""
                if memory.emptied_kib is None
                else f"; {memory.emptied_kib:,} KiB after listing them all and deleting them"
            )
        )
    for bulk in outcome.bulks:
        if bulk["count"] >= _BULK_SHOWN:
            lines.append(
                f"bulk {bulk['job']} of {bulk['count']:,} in {bulk['ns']}: {bulk['per_s']:,.0f}/s"
                f" ({bulk['workers']} processes, {bulk['in_flight']} calls in flight)"
            )
    lines += closing_lines(
        targets, outcome.breaches, "every acknowledged create was listable; no breach"
    )
    return "\n".join(lines)


def closing_lines(
    targets: Sequence[TargetResult], breaches: Sequence[str], clean: str
) -> list[str]:
    """The end of every scenario's table: targets met or missed, then correctness."""
    lines = ["", "targets (informational):"]
    lines += [f"  {t.status:<5} {t.name}: {t.measured}  (goal {t.goal})" for t in targets]
    lines.append("")
    if breaches:
        lines.append(f"CORRECTNESS: {len(breaches)} breach(es)")
        lines += [f"  {b}" for b in breaches]
    else:
        lines.append(f"correctness: {clean}")
    return lines


def machine_json() -> dict[str, Any]:
    """The ``machine`` part of every JSON report: CPUs, Python, platform."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _reference_json() -> dict[str, Any]:
    return {
        "source": "Python gRPC client against containerd 1.6.20 on this 2-core machine",
        "ops_per_s": {f"{p}@{c}": v for (p, c), v in CONTAINERD_OPS_PER_S.items()},
        "list_1000_p50_ms": {str(c): v for c, v in CONTAINERD_LIST_P50_MS.items()},
    }


def _scale_json(scale: ScaleResult | None) -> dict[str, Any] | None:
    if scale is None:
        return None
    return {
        "small_stored": scale.small_stored,
        "large_stored": scale.large_stored,
        "get_small": scale.small.to_json(),
        "get_large": scale.large.to_json(),
        "p50_ratio": round(scale.ratio, 4),
    }


def _memory_json(memory: MemoryResult | None) -> dict[str, Any] | None:
    if memory is None:
        return None
    return {
        "rss_anon_before_kib": memory.before_kib,
        "rss_anon_after_kib": memory.after_kib,
        "containers": memory.containers,
        "kib_per_container": round(memory.kib_per_container, 4),
        "rss_anon_after_list_and_delete_kib": memory.emptied_kib,
    }


def report_json(
    outcome: Outcome,
    targets: Sequence[TargetResult],
    *,
    scenario: str,
    started: str,
    config: dict[str, Any],
    daemon: dict[str, Any],
    aborted: str | None,
) -> dict[str, Any]:
    """Every figure of the run as one JSON document."""
    return {
        "scenario": scenario,
        "started_at": started,
        "machine": machine_json(),
        "config": config,
        "phases": [p.to_json() for p in outcome.phases],
        "scale": _scale_json(outcome.scale),
        "memory": _memory_json(outcome.memory),
        "bulk": outcome.bulks,
        "correctness": {
            "checks": outcome.checks,
            "breaches": outcome.breaches,
            "breach_count": len(outcome.breaches),
        },
        "targets": [asdict(t) for t in targets],
        "reference": _reference_json(),
        "daemon": daemon,
        "aborted": aborted,
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write the report, pretty-printed."""
    path.write_text(json.dumps(report, indent=2) + "\n")
