"""Latency statistics: per-phase aggregation of the workers' samples.

A worker process measures one phase as a :class:`WorkerSample` (the latency
of each successful call in nanoseconds, which operation it was, error
counts by code, when each call ended); the parent merges the samples of
all workers of a phase into one :class:`PhaseStats`, reading percentiles
from an HdrHistogram (:mod:`bench.histogram`), and cuts the measured
window into a timeline (throughput and percentiles per slice) for the
report and the plots.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.histogram import LatencySummary, summarize

__all__ = [
    "OpStats",
    "PhaseStats",
    "WorkerSample",
    "aggregate",
    "merge_errors",
    "percentile",
]

_NS_PER_MS = 1_000_000
_TIMELINE_SLICES = 20  # a short window is cut into this many slices ...
_TIMELINE_MAX_SLICE_S = 1.0  # ... a long one into slices of a second


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
    measured window (after the warm-up), ``ends_ns`` when each of these
    calls ended (``time.monotonic_ns()``) and ``op_index`` which operation
    it was (an index into ``op_names``; a phase of one operation has one
    name). In open loop a latency runs from when the call was due, and
    ``service_ns`` holds the same calls timed from when they were sent.
    ``errors`` counts failed calls by error code over the whole phase,
    warm-up included, ``op_errors`` the same by operation, and
    ``error_ends_ns`` when each failure in the measured window ended.
    ``last_end_ns`` is when the worker's last measured call ended (0 if it
    made none); ``out_of_work`` tells that the worker stopped early because
    it had nothing left to do (e.g. no id left to delete). ``max_lag_ns``
    is, in open loop, how late the latest call was sent.
    """

    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    ends_ns: array[int] = field(default_factory=lambda: array("q"))
    op_index: array[int] = field(default_factory=lambda: array("H"))
    op_names: list[str] = field(default_factory=list)
    service_ns: array[int] = field(default_factory=lambda: array("q"))
    errors: dict[str, int] = field(default_factory=dict)
    op_errors: dict[str, dict[str, int]] = field(default_factory=dict)
    error_ends_ns: array[int] = field(default_factory=lambda: array("q"))
    last_end_ns: int = 0
    out_of_work: bool = False
    max_lag_ns: int = 0


@dataclass(frozen=True)
class OpStats:
    """One operation of a phase that mixes several: its share of the figures."""

    name: str
    ops: int
    ops_per_s: float
    latency: LatencySummary
    errors: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """Every figure, as plain JSON values."""
        return {
            "op": self.name,
            "ops": self.ops,
            "ops_per_s": round(self.ops_per_s, 1),
            **self.latency.to_json(),
            "errors": dict(self.errors),
        }


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
    p999_ms: float = 0.0
    mean_ms: float = 0.0
    mode: str = "closed"  # or "open": a target rate, latency from when each call was due
    rate: float | None = None  # open loop: the target rate, calls/s over all clients
    backend: str = "berth"  # or "containerd" (--compare)
    shape: str = "processes"  # the clients: one process each, or "threads" of one process
    service: LatencySummary | None = None  # open loop: latency from when each call was sent
    max_lag_ms: float = 0.0  # open loop: how late the latest call was sent
    per_op: tuple[OpStats, ...] = ()  # a mix: each operation's share
    timeline: tuple[dict[str, Any], ...] = ()  # slices of the window: ops/s, p50, p99, errors
    resources: dict[str, Any] | None = None  # bench.resources: daemon CPU per op, memory

    @property
    def error_count(self) -> int:
        """Failed calls, all codes together."""
        return sum(self.errors.values())

    @property
    def latency(self) -> LatencySummary:
        """The percentiles as one summary."""
        return LatencySummary(
            self.ops, self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.mean_ms
        )

    def to_json(self) -> dict[str, Any]:
        """Every figure, as plain JSON values."""
        return {
            "phase": self.phase,
            "backend": self.backend,
            "shape": self.shape,
            "clients": self.clients,
            "mode": self.mode,
            "rate": self.rate,
            "ops": self.ops,
            "seconds": round(self.seconds, 6),
            "ops_per_s": round(self.ops_per_s, 1),
            "p50_ms": round(self.p50_ms, 4),
            "p90_ms": round(self.p90_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "p99_9_ms": round(self.p999_ms, 4),
            "max_ms": round(self.max_ms, 4),
            "mean_ms": round(self.mean_ms, 4),
            "errors": dict(self.errors),
            "error_count": self.error_count,
            "out_of_work": self.out_of_work,
            "window_cut": self.cut,
            "daemon_cpu_cores": _rounded(self.daemon_cores),
            "host_cpu_busy": _rounded(self.host_busy),
            "service_time": None if self.service is None else self.service.to_json(),
            "max_send_lag_ms": round(self.max_lag_ms, 3),
            "per_op": [op.to_json() for op in self.per_op],
            "timeline": list(self.timeline),
            "resources": self.resources,
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(frozen=True)
class _Kept:
    """The samples of a phase that count: (latency, end, op name) and service times."""

    latencies: list[int]
    ends: list[int]
    names: list[str]
    service: list[int]


def _kept(samples: Sequence[WorkerSample], cut: int | None) -> _Kept:
    kept = _Kept([], [], [], [])
    for sample in samples:
        names = sample.op_names or ["op"]
        index = sample.op_index or array("H", [0]) * len(sample.latencies_ns)
        service = sample.service_ns
        for i, (latency, end) in enumerate(zip(sample.latencies_ns, sample.ends_ns, strict=True)):
            if cut is not None and end > cut:
                continue
            kept.latencies.append(latency)
            kept.ends.append(end)
            kept.names.append(names[index[i]])
            if service:
                kept.service.append(service[i])
    return kept


def _timeline(
    start_ns: int, seconds: float, ends: Sequence[int], latencies: Sequence[int], errors: list[int]
) -> tuple[dict[str, Any], ...]:
    """Throughput, p50, p99 and errors per slice of the measured window."""
    if seconds <= 0:
        return ()
    width = min(_TIMELINE_MAX_SLICE_S, seconds / _TIMELINE_SLICES)
    count = max(1, math.ceil(seconds / width - 1e-9))
    slices: list[list[int]] = [[] for _ in range(count)]
    failed = [0] * count
    for end, latency in zip(ends, latencies, strict=True):
        slices[min(int((end - start_ns) / 1e9 / width), count - 1)].append(latency)
    for end in errors:
        if end >= start_ns:
            failed[min(int((end - start_ns) / 1e9 / width), count - 1)] += 1
    rows = []
    for i, values in enumerate(slices):
        lat = summarize(values)
        span = min(width, seconds - i * width) or width
        rows.append(
            {
                "t_s": round((i + 1) * width, 3),
                "ops_per_s": round(len(values) / span, 1),
                "p50_ms": round(lat.p50_ms, 4),
                "p99_ms": round(lat.p99_ms, 4),
                "errors": failed[i],
            }
        )
    return tuple(rows)


def _per_op(kept: _Kept, seconds: float, samples: Sequence[WorkerSample]) -> tuple[OpStats, ...]:
    by_name: dict[str, list[int]] = defaultdict(list)
    for name, latency in zip(kept.names, kept.latencies, strict=True):
        by_name[name].append(latency)
    errors: dict[str, list[Mapping[str, int]]] = defaultdict(list)
    for sample in samples:
        for name, codes in sample.op_errors.items():
            errors[name].append(codes)
    names = sorted(set(by_name) | set(errors))
    return tuple(
        OpStats(
            name=name,
            ops=len(by_name[name]),
            ops_per_s=len(by_name[name]) / seconds if seconds > 0 else 0.0,
            latency=summarize(by_name[name]),
            errors=merge_errors(errors[name]),
        )
        for name in names
    )


def aggregate(
    phase: str,
    clients: int,
    measure_start_ns: int,
    samples: Sequence[WorkerSample],
    *,
    mode: str = "closed",
    rate: float | None = None,
) -> PhaseStats:
    """Merge the workers' samples of a phase whose measured window began at ``measure_start_ns``.

    Throughput is successful calls per second over the measured window,
    which ends when the last worker's last measured call ended, or, if a
    worker ran out of work, when it did: from then on fewer clients were
    calling, so only the calls that ended before count.
    """
    ran_out = [s.last_end_ns for s in samples if s.out_of_work]
    cut = min(ran_out) if ran_out else None
    kept = _kept(samples, cut)
    window_end = cut if cut is not None else max((s.last_end_ns for s in samples), default=0)
    seconds = max(window_end - measure_start_ns, 0) / 1e9
    lat = summarize(kept.latencies)
    mixed = len({name for s in samples for name in s.op_names}) > 1
    error_ends = [end for s in samples for end in s.error_ends_ns]
    return PhaseStats(
        phase=phase,
        clients=clients,
        ops=lat.n,
        seconds=seconds,
        ops_per_s=lat.n / seconds if seconds > 0 else 0.0,
        p50_ms=lat.p50_ms,
        p90_ms=lat.p90_ms,
        p99_ms=lat.p99_ms,
        p999_ms=lat.p999_ms,
        max_ms=lat.max_ms,
        mean_ms=lat.mean_ms,
        errors=merge_errors(s.errors for s in samples),
        out_of_work=len(ran_out),
        cut=cut is not None,
        mode=mode,
        rate=rate,
        service=summarize(kept.service) if mode == "open" else None,
        max_lag_ms=max((s.max_lag_ns for s in samples), default=0) / _NS_PER_MS,
        per_op=_per_op(kept, seconds, samples) if mixed else (),
        timeline=_timeline(measure_start_ns, seconds, kept.ends, kept.latencies, error_ends),
    )
