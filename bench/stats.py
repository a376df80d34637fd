"""Latency statistics: percentiles over plain sorted lists, and per-phase aggregation.

A worker process measures one phase as a :class:`WorkerSample` (the latency
of each successful call in nanoseconds, error counts by code, and when its
last measured call ended); the parent merges the samples of all workers of
a phase into one :class:`PhaseStats`. No histogram library: the samples of
a phase (at most a few hundred thousand ints) are simply sorted.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PhaseStats", "WorkerSample", "aggregate", "merge_errors", "percentile"]

_NS_PER_MS = 1_000_000


def percentile(sorted_values: Sequence[int], q: float) -> int:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of an ascending sequence; 0 if empty."""
    if not sorted_values:
        return 0
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {q!r}")
    rank = math.ceil(q / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


def merge_errors(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Error counts by code, summed over several workers, sorted by code."""
    total: Counter[str] = Counter()
    for one in counts:
        total.update(one)
    return dict(sorted(total.items()))


@dataclass
class WorkerSample:
    """What one worker measured in one phase; pickled back to the parent.

    ``latencies_ns`` holds one entry per successful call made in the
    measured window (after the warm-up), and ``ends_ns`` when each of these
    calls ended (``time.monotonic_ns()``). ``errors`` counts failed calls by
    error code over the whole phase, warm-up included. ``last_end_ns`` is
    when the worker's last measured call ended (0 if it made none);
    ``out_of_work`` tells that the worker stopped early because it had
    nothing left to do (e.g. no id left to delete).
    """

    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    ends_ns: array[int] = field(default_factory=lambda: array("q"))
    errors: dict[str, int] = field(default_factory=dict)
    last_end_ns: int = 0
    out_of_work: bool = False


@dataclass(frozen=True)
class PhaseStats:
    """One phase at one client count: throughput, latency percentiles, errors."""

    phase: str
    clients: int
    ops: int
    seconds: float
    ops_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    out_of_work: int = 0  # workers that ran out of work before the end of the phase
    cut: bool = False  # the window was cut when the first worker ran out of work
    daemon_cores: float | None = None  # CPU the daemon used in the window, in cores
    host_busy: float | None = None  # fraction of the machine's CPU busy in the window

    @property
    def error_count(self) -> int:
        """Failed calls, all codes together."""
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        """Every figure, as plain JSON values."""
        return {
            "phase": self.phase,
            "clients": self.clients,
            "ops": self.ops,
            "seconds": round(self.seconds, 6),
            "ops_per_s": round(self.ops_per_s, 1),
            "p50_ms": round(self.p50_ms, 4),
            "p90_ms": round(self.p90_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "max_ms": round(self.max_ms, 4),
            "errors": dict(self.errors),
            "error_count": self.error_count,
            "out_of_work": self.out_of_work,
            "window_cut": self.cut,
            "daemon_cpu_cores": _rounded(self.daemon_cores),
            "host_cpu_busy": _rounded(self.host_busy),
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def aggregate(
    phase: str, clients: int, measure_start_ns: int, samples: Sequence[WorkerSample]
) -> PhaseStats:
    """Merge the workers' samples of a phase whose measured window began at ``measure_start_ns``.

    Throughput is successful calls per second over the measured window,
    which ends when the last worker's last measured call ended, or, if a
    worker ran out of work, when it did: from then on fewer clients were
    calling, so only the calls that ended before count.
    """
    ran_out = [s.last_end_ns for s in samples if s.out_of_work]
    cut = min(ran_out) if ran_out else None
    if cut is None:
        latencies = sorted(value for sample in samples for value in sample.latencies_ns)
        window_end = max((s.last_end_ns for s in samples), default=0)
    else:
        latencies = sorted(
            latency
            for sample in samples
            for latency, end in zip(sample.latencies_ns, sample.ends_ns, strict=True)
            if end <= cut
        )
        window_end = cut
    seconds = max(window_end - measure_start_ns, 0) / 1e9
    ops = len(latencies)

    def ms(q: float) -> float:
        return percentile(latencies, q) / _NS_PER_MS

    return PhaseStats(
        phase=phase,
        clients=clients,
        ops=ops,
        seconds=seconds,
        ops_per_s=ops / seconds if seconds > 0 else 0.0,
        p50_ms=ms(50),
        p90_ms=ms(90),
        p99_ms=ms(99),
        max_ms=(latencies[-1] / _NS_PER_MS) if latencies else 0.0,
        errors=merge_errors(s.errors for s in samples),
        out_of_work=len(ran_out),
        cut=cut is not None,
    )
