"""PNG plots of a load run: latency percentiles and throughput over time (matplotlib).

matplotlib is an optional extra (``berth[plots]``); without it the plots
are skipped and the report says so. For each phase, client count and
client shape, one figure of two panels over the measured window, berth
and (with ``--compare``) containerd on the same axes (the threads shape's
files end in ``-threads``):

- top: p50 and p99 latency per slice of the window (log scale);
- bottom: throughput per slice.

And one figure of the latency percentile spectrum of every phase
(p50 ... p99.9 and max) side by side.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.stats import PhaseStats
from bench.table import phase_label

__all__ = ["write_plots"]

_COLOURS = {"berth": "tab:blue", "containerd": "tab:orange"}


def _pyplot() -> Any:
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")  # files only: no display needed
    return importlib.import_module("matplotlib.pyplot")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _timeline_figure(plt: Any, group: Sequence[PhaseStats], path: Path) -> None:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    first = group[0]
    for stats in group:
        t = [row["t_s"] for row in stats.timeline]
        colour = _COLOURS.get(stats.backend, "tab:gray")
        top.plot(t, [r["p50_ms"] for r in stats.timeline], color=colour, ls="-",
                 label=f"{stats.backend} p50")  # fmt: skip
        top.plot(t, [r["p99_ms"] for r in stats.timeline], color=colour, ls="--",
                 label=f"{stats.backend} p99")  # fmt: skip
        bottom.plot(t, [r["ops_per_s"] for r in stats.timeline], color=colour,
                    label=stats.backend)  # fmt: skip
    top.set_yscale("log")
    top.set_ylabel("latency, ms")
    top.legend(fontsize="small")
    shape = "" if first.shape == "processes" else f", {first.shape} of one process"
    top.set_title(f"{first.phase} at {first.clients} clients ({first.mode} loop{shape})")
    bottom.set_ylabel("calls/s")
    bottom.set_xlabel("seconds into the measured window")
    bottom.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _percentile_figure(plt: Any, phases: Sequence[PhaseStats], path: Path, title: str) -> None:
    labels = ["p50", "p90", "p99", "p99.9", "max"]
    fig, axis = plt.subplots(figsize=(9, 5))
    for stats in phases:
        values = [stats.p50_ms, stats.p90_ms, stats.p99_ms, stats.p999_ms, stats.max_ms]
        style = "-" if stats.backend == "berth" else "--"
        axis.plot(labels, values, ls=style, marker="o", label=phase_label(stats))
    axis.set_yscale("log")
    axis.set_ylabel("latency, ms")
    axis.set_title(f"{title}: latency by percentile")
    axis.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(phases: Sequence[PhaseStats], directory: Path, scenario: str) -> dict[str, Any]:
    """Write the PNG files into ``directory``: ``{"files": [...]}``, or ``{"skipped": why}``."""
    if not phases:
        return {"skipped": "no phase was measured"}
    try:
        plt = _pyplot()
    except ImportError:
        return {"skipped": "matplotlib is not installed (pip install 'berth[plots]')"}
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    groups: dict[tuple[str, int, str], list[PhaseStats]] = {}
    for stats in phases:
        groups.setdefault((stats.phase, stats.clients, stats.shape), []).append(stats)
    for (phase, clients, shape), group in groups.items():
        if not any(stats.timeline for stats in group):
            continue
        suffix = "" if shape == "processes" else f"-{shape}"
        path = directory / f"{scenario}-{_slug(phase)}-c{clients}{suffix}-timeline.png"
        _timeline_figure(plt, group, path)
        files.append(str(path))
    path = directory / f"{scenario}-percentiles.png"
    _percentile_figure(plt, phases, path, scenario)
    files.append(str(path))
    return {"files": files}
