"""The final table of a load run: one row per phase, containerd's beside berth's as a ratio.

Columns: the clients' shape (``processes``, one process per client, or
``threads`` of one process; ``--client-shape``), ops/s, p50, p90, p99,
p99.9, max, errors (all codes). A phase that mixes operations gets one
indented row per operation. With ``--compare containerd`` each berth row
is followed by containerd's row of the same phase, client count and shape
and a ratio row: throughput berth / containerd, latencies containerd /
berth, so above 1 means berth did better everywhere. Under the table:
errors by code, open-loop notes, and the resource figures
(:mod:`bench.resources`).
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.stats import OpStats, PhaseStats

__all__ = ["format_ms", "format_phases", "pair_phases", "phase_label"]

_HEADER = (
    f"{'phase':<18}{'backend':<11}{'shape':<10}{'clients':>7}{'ops/s':>9}{'p50 ms':>9}"
    f"{'p90 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'max ms':>9}{'errors':>8}"
)


def format_ms(value: float, width: int) -> str:
    # Three decimals while they fit; a latency of seconds in whole milliseconds.
    text = f"{value:.3f}" if value < 1_000 else f"{value:,.0f}"
    return f"{text:>{width}}"


def _cells(ops_per_s: float, p50: float, p90: float, p99: float, p999: float, top: float) -> str:
    widths = ((p50, 9), (p90, 9), (p99, 9), (p999, 10), (top, 9))
    return f"{ops_per_s:>9,.0f}" + "".join(format_ms(value, width) for value, width in widths)


def phase_label(stats: PhaseStats) -> str:
    """``phase @clients backend``, and the shape when the clients were threads."""
    label = f"{stats.phase} @{stats.clients} {stats.backend}"
    return label if stats.shape == "processes" else f"{label} {stats.shape}"


def _row(stats: PhaseStats, label: str | None = None) -> str:
    return (
        f"{label or stats.phase:<18}{stats.backend:<11}{stats.shape:<10}{stats.clients:>7}"
        + _cells(
            stats.ops_per_s, stats.p50_ms, stats.p90_ms, stats.p99_ms, stats.p999_ms, stats.max_ms
        )
        + f"{stats.error_count:>8}"
    )


def _op_row(op: OpStats, stats: PhaseStats) -> str:
    lat = op.latency
    return (
        f"{'  ' + op.name:<18}{stats.backend:<11}{stats.shape:<10}{'':>7}"
        + _cells(op.ops_per_s, lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.p999_ms, lat.max_ms)
        + f"{sum(op.errors.values()):>8}"
    )


def _ratio(num: float, den: float) -> str:
    return f"{num / den:.2f}x" if num > 0 and den > 0 else "-"


def _ratio_row(berth: PhaseStats, other: PhaseStats) -> str:
    # Throughput: berth / containerd. Latency: containerd / berth. Above 1: berth did better.
    cells = [
        _ratio(berth.ops_per_s, other.ops_per_s),
        _ratio(other.p50_ms, berth.p50_ms),
        _ratio(other.p90_ms, berth.p90_ms),
        _ratio(other.p99_ms, berth.p99_ms),
        _ratio(other.p999_ms, berth.p999_ms),
        _ratio(other.max_ms, berth.max_ms),
    ]
    widths = (9, 9, 9, 9, 10, 9)
    return f"{'  ratio':<18}{'':<11}{'':<10}{'':>7}" + "".join(
        f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)
    )


def pair_phases(
    phases: Sequence[PhaseStats],
) -> list[tuple[PhaseStats, PhaseStats | None]]:
    """Each berth phase with containerd's of the same name, client count and shape, if any."""
    others = {(p.phase, p.clients, p.shape): p for p in phases if p.backend != "berth"}
    return [(p, others.get((p.phase, p.clients, p.shape))) for p in phases if p.backend == "berth"]


def _resource_line(stats: PhaseStats) -> str | None:
    r = stats.resources
    if not r:
        return None
    parts = []
    if r.get("daemon_cpu_per_op_us") is not None:
        parts.append(
            f"daemon CPU {r['daemon_cpu_per_op_us']:,.0f} µs/op ({r['daemon_cores']:.2f} cores)"
        )
    if r.get("daemon_pss_kib_max") is not None:
        parts.append(
            f"daemon RSS {r['daemon_rss_kib_max']:,} KiB, PSS {r['daemon_pss_kib_max']:,} KiB max"
        )
    if r.get("shims_max"):
        parts.append(
            f"shims up to {r['shims_max']} (PSS {r['shim_pss_kib_mean']:,.0f} KiB each on"
            f" average, {r['shim_pss_kib_total_max']:,} KiB in all at most;"
            f" RSS max {r['shim_rss_kib_max']:,})"
        )
    if not parts:
        return None
    return f"  {phase_label(stats)}: " + "; ".join(parts)


def format_phases(phases: Sequence[PhaseStats]) -> list[str]:
    """The table's lines, then errors by code, open-loop figures and resources."""
    lines = [_HEADER, "-" * len(_HEADER)]
    for berth, other in pair_phases(phases):
        lines.append(_row(berth))
        lines += [_op_row(op, berth) for op in berth.per_op]
        if other is not None:
            lines.append(_row(other))
            lines += [_op_row(op, other) for op in other.per_op]
            lines.append(_ratio_row(berth, other))
    if any(other is not None for _, other in pair_phases(phases)):
        lines.append(
            "(ratio: ops/s berth / containerd, latencies containerd / berth: > 1 is berth)"
        )
    for p in phases:
        label = phase_label(p)
        if p.errors:
            lines.append(f"  errors in {label}: {p.errors}")
        if p.mode == "open" and p.service is not None:
            lines.append(
                f"  {label}: open loop at {p.rate:,.0f}/s; latency from when each call was due"
                f" (service time from sending: p50 {p.service.p50_ms:.3f},"
                f" p99 {p.service.p99_ms:.3f} ms; latest send {p.max_lag_ms:.1f} ms behind)"
            )
        if p.out_of_work:
            lines.append(f"  {label}: {p.out_of_work} worker(s) ran out of work; window cut")
    resource_lines = [line for p in phases if (line := _resource_line(p)) is not None]
    if resource_lines:
        lines.append("resources, sampled during each measured window:")
        lines += resource_lines
    return lines
