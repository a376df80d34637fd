"""The Containers benchmark's yardsticks: containerd's figures and the issue's targets.

Targets are informational: a MISS is printed, not turned into an exit
code. Only correctness breaches (see :mod:`bench.containers`) fail a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.stats import PhaseStats

__all__ = [
    "CONTAINERD_LIST_P50_MS",
    "CONTAINERD_OPS_PER_S",
    "LIST_PHASE",
    "MemoryResult",
    "ScaleResult",
    "TargetResult",
    "evaluate_targets",
]

# containerd's figures for the same calls, from the issue: measured with a Python gRPC
# client against containerd 1.6.20 on this 2-core machine. Calls per second, by
# (phase, concurrent clients); and List of 1,000 containers, p50 in ms, by clients.
CONTAINERD_OPS_PER_S: dict[tuple[str, int], float] = {
    ("create", 1): 786.0,
    ("create", 16): 1423.0,
    ("get", 1): 2042.0,
    ("get", 16): 3834.0,
    ("update", 1): 747.0,
    ("update", 16): 1589.0,
    ("delete", 1): 921.0,
    ("delete", 16): 1484.0,
}
CONTAINERD_LIST_P50_MS: dict[int, float] = {1: 14.8, 16: 133.0}

LIST_PHASE = "list-1000"
# Targets: berth at 16 clients against containerd's rate at 16 clients.
_RATE_TARGETS: tuple[tuple[str, float], ...] = (
    ("create", 3.0),
    ("get", 2.5),
    ("update", 3.0),
    ("delete", 3.0),
)
_TARGET_CLIENTS = 16
_LIST_P50_GOAL_MS = 5.0
_SCALE_RATIO_GOAL = 1.2
_MEMORY_GOAL_KIB = 1.0


@dataclass(frozen=True)
class ScaleResult:
    """Get latency (1 client) with a few and with many containers stored."""

    small: PhaseStats
    small_stored: int
    large: PhaseStats
    large_stored: int

    @property
    def ratio(self) -> float:
        """p50 with many stored over p50 with few stored."""
        return self.large.p50_ms / self.small.p50_ms if self.small.p50_ms else 0.0


@dataclass(frozen=True)
class MemoryResult:
    """The spawned daemon's RssAnon around the bulk creation of ``containers``."""

    before_kib: int
    after_kib: int
    containers: int
    emptied_kib: int | None = None  # after one List of them all, then deleting them all

    @property
    def kib_per_container(self) -> float:
        """RssAnon growth per stored container, KiB."""
        return (self.after_kib - self.before_kib) / self.containers if self.containers else 0.0


@dataclass(frozen=True)
class TargetResult:
    """One target: what it asks, what was measured, PASS / MISS / SKIP."""

    name: str
    goal: str
    measured: str
    status: str


def _find(phases: Sequence[PhaseStats], phase: str, clients: int) -> PhaseStats | None:
    # berth's first row: with --client-shape both, the processes shape's (run first).
    return next(
        (p for p in phases if p.backend == "berth" and p.phase == phase and p.clients == clients),
        None,
    )


def evaluate_targets(
    phases: Sequence[PhaseStats], scale: ScaleResult | None, memory: MemoryResult | None
) -> list[TargetResult]:
    """Every target of the issue, judged on this run's figures."""
    results: list[TargetResult] = []
    for phase, factor in _RATE_TARGETS:
        ref = CONTAINERD_OPS_PER_S[(phase, _TARGET_CLIENTS)]
        goal = f">= {factor:g}x containerd = {factor * ref:.0f}/s"
        name = f"{phase} ops/s at {_TARGET_CLIENTS} clients"
        stats = _find(phases, phase, _TARGET_CLIENTS)
        if stats is None:
            results.append(TargetResult(name, goal, "not measured", "SKIP"))
            continue
        ok = stats.ops_per_s >= factor * ref
        measured = f"{stats.ops_per_s:.0f}/s = {stats.ops_per_s / ref:.2f}x"
        results.append(TargetResult(name, goal, measured, "PASS" if ok else "MISS"))
    listing = _find(phases, LIST_PHASE, 1)
    name, goal = "List of 1,000, p50 at 1 client", f"< {_LIST_P50_GOAL_MS:g} ms"
    if listing is None:
        results.append(TargetResult(name, goal, "not measured", "SKIP"))
    else:
        ok = 0 < listing.p50_ms < _LIST_P50_GOAL_MS
        results.append(TargetResult(name, goal, f"{listing.p50_ms:.2f} ms", _status(ok)))
    name = "Get p50, many stored vs 1,000"
    goal = f"<= {_SCALE_RATIO_GOAL:g}x"
    if scale is None:
        results.append(TargetResult(name, goal, "not measured", "SKIP"))
    else:
        measured = (
            f"{scale.large.p50_ms:.3f} / {scale.small.p50_ms:.3f} ms = {scale.ratio:.2f}x"
            f" ({scale.large_stored:,} vs {scale.small_stored:,})"
        )
        ok = 0 < scale.ratio <= _SCALE_RATIO_GOAL
        results.append(TargetResult(name, goal, measured, _status(ok)))
    name, goal = "daemon RssAnon growth per container", f"< {_MEMORY_GOAL_KIB:g} KiB"
    if memory is None:
        results.append(TargetResult(name, goal, "not measured (daemon not spawned)", "SKIP"))
    else:
        ok = memory.kib_per_container < _MEMORY_GOAL_KIB
        measured = f"{memory.kib_per_container:.3f} KiB"
        results.append(TargetResult(name, goal, measured, _status(ok)))
    return results


def _status(ok: bool) -> str:
    return "PASS" if ok else "MISS"
