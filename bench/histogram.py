"""Latency percentiles with HdrHistogram: one summary type for every load phase.

Samples are nanoseconds. A histogram tracks 1 µs to 1 hour with three
significant digits, so every percentile it reports is within 0.1% of the
true sample (HdrHistogram reports the highest value equivalent to the
bucket, so never less than the sample). Percentiles of a phase are read
from one histogram merged from all its workers' samples.

In open loop the samples are already corrected for coordinated omission
(:mod:`bench.load` measures each call from when it was *due*, not from
when a busy client got round to sending it); the histogram only has to
count them. ``record_corrected_value`` is not used: it back-fills samples
from an assumed interval, which an open-loop schedule makes unnecessary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

__all__ = ["PERCENTILES", "LatencySummary", "new_histogram", "summarize"]

_LOWEST_NS = 1_000
_HIGHEST_NS = 3_600 * 1_000_000_000
_DIGITS = 3
_NS_PER_MS = 1_000_000
# The percentiles every table and report shows (p50 p90 p99 p99.9), then max.
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)


def new_histogram() -> Any:
    """An empty histogram of nanosecond latencies (hdrh has no type hints: Any)."""
    return HdrHistogram(_LOWEST_NS, _HIGHEST_NS, _DIGITS)


def _clamp(value: int) -> int:
    # Values outside the trackable range would raise; a sub-µs call is
    # counted as 1 µs, a call over an hour as an hour.
    return min(max(value, _LOWEST_NS), _HIGHEST_NS)


@dataclass(frozen=True)
class LatencySummary:
    """Count and percentiles of a set of latencies, in milliseconds."""

    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float

    def to_json(self) -> dict[str, Any]:
        """The figures as plain JSON values."""
        return {
            "n": self.n,
            "p50_ms": round(self.p50_ms, 4),
            "p90_ms": round(self.p90_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "p99_9_ms": round(self.p999_ms, 4),
            "max_ms": round(self.max_ms, 4),
            "mean_ms": round(self.mean_ms, 4),
        }


EMPTY = LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def summarize(values_ns: Iterable[int]) -> LatencySummary:
    """Record ``values_ns`` in a histogram and read its percentiles; max is exact."""
    hist = new_histogram()
    top = 0
    for value in values_ns:
        hist.record_value(_clamp(value))
        top = max(top, value)
    count = hist.get_total_count()
    if not count:
        return EMPTY
    # A bucket's highest equivalent value can pass the largest sample: cap it there.
    p50, p90, p99, p999 = (
        min(hist.get_value_at_percentile(q), top) / _NS_PER_MS for q in PERCENTILES
    )
    return LatencySummary(
        n=count,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        p999_ms=p999,
        max_ms=top / _NS_PER_MS,
        mean_ms=hist.get_mean_value() / _NS_PER_MS,
    )
