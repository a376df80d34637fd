"""The Images benchmark's report: the outcome of a run, the human table, the JSON document.

:class:`ImagesOutcome` is what a run of :mod:`bench.images` measured and
checked (import times in seconds, snapshot latencies as raw nanosecond
samples, breaches); :func:`format_report` prints it beside containerd's
figures (:mod:`bench.image_targets`) and :func:`report_json` turns it
into the JSON report.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.image_archive import BenchArchive
from bench.image_targets import (
    CONTAINERD_IMPORT_S,
    CONTAINERD_PREPARE_MS,
    CONTAINERD_REMOVE_MS,
    CONTAINERD_SOURCE,
    reference_import_s,
)
from bench.report import closing_lines, machine_json
from bench.targets import TargetResult
from bench.task_report import Latency

__all__ = ["SNAPSHOT_ROWS", "ImagesOutcome", "format_report", "report_json"]

_MB = 1_000_000

# The snapshot table's rows: (key of the samples, label, containerd's p50 in ms).
SNAPSHOT_ROWS: tuple[tuple[str, str, float | None], ...] = (
    ("prepare_rootfs", "PrepareRootfs (image)", CONTAINERD_PREPARE_MS),
    ("remove", "  then Remove", CONTAINERD_REMOVE_MS),
    ("prepare", "Prepare (top chain id)", CONTAINERD_PREPARE_MS),
    ("remove_prepared", "  then Remove", CONTAINERD_REMOVE_MS),
)


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class ImagesOutcome:
    """Everything a run measured and checked, filled in as it goes."""

    archive_mb: int = 0
    archive: BenchArchive | None = None
    fresh: str = ""  # how each import was made to unpack afresh
    berth_imports_s: list[float] = field(default_factory=list)
    berth_fresh: list[bool] = field(default_factory=list)  # per run: it wrote every blob too
    berth_cleanup_s: list[float] = field(default_factory=list)  # Delete + GC/Run
    ctr_imports_s: list[float] = field(default_factory=list)
    ctr_cleanup_s: list[float] = field(default_factory=list)  # ctr images rm --sync
    containerd: dict[str, Any] | None = None  # address, versions, unpigz, or why not
    churn: Any = None  # bench.session.LoadOutcome of --churn
    mount_type: str | None = None  # of the snapshots PrepareRootfs made
    samples: dict[str, list[int]] = field(default_factory=dict)
    breaches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, value_ns: int) -> None:
        """Record one sample of snapshot measurement ``key``."""
        self.samples.setdefault(key, []).append(value_ns)

    def latency(self, key: str) -> Latency | None:
        """The summary of measurement ``key``, None if it has no sample."""
        values = self.samples.get(key)
        return Latency.of(values) if values else None

    @property
    def berth_median_s(self) -> float | None:
        """berthd's median import time over the runs that started from nothing."""
        return _median(
            [s for s, fresh in zip(self.berth_imports_s, self.berth_fresh, strict=True) if fresh]
        )

    @property
    def ctr_median_s(self) -> float | None:
        """containerd's median import time in this run."""
        return _median(self.ctr_imports_s)


def _archive_line(archive: BenchArchive) -> str:
    how = "cached" if archive.build_s is None else f"built in {archive.build_s:.1f} s"
    return (
        f"archive {archive.path} ({how}): {len(archive.layers)} gzip layers,"
        f" {archive.layer_bytes / _MB:.1f} MB compressed, {archive.diff_bytes / _MB:.1f} MB"
        f" of tars, {archive.files:,} files"
    )


def _runs_row(
    label: str, runs: Sequence[float], median: float | None, cleanups: Sequence[float], width: int
) -> str:
    cells = "".join(f"{r:>8.2f}" for r in runs) + " " * 8 * (width - len(runs))
    cleanup = _median(cleanups)
    return (
        f"  {label:<20}{cells}{'' if median is None else f'{median:.2f}':>9}"
        f"{'' if cleanup is None else f'{cleanup:.2f}':>11}"
    )


def _import_lines(outcome: ImagesOutcome) -> list[str]:
    width = max(len(outcome.berth_imports_s), len(outcome.ctr_imports_s), 1)
    runs = "".join(f"{f'run {i + 1}':>8}" for i in range(width))
    lines = [f"{'import + unpack, s':<22}{runs}{'median':>9}{'cleanup':>11}"]
    berth = outcome.berth_median_s
    lines.append(
        _runs_row("berthd", outcome.berth_imports_s, berth, outcome.berth_cleanup_s, width)
    )
    if outcome.ctr_imports_s:
        lines.append(
            _runs_row(
                "containerd (ctr)",
                outcome.ctr_imports_s,
                outcome.ctr_median_s,
                outcome.ctr_cleanup_s,
                width,
            )
        )
    ref, source = reference_import_s(outcome)
    if ref is not None and berth is not None:
        lines.append(
            f"  berthd / containerd: {berth / ref:.2f}x  (containerd {ref:.2f} s: {source})"
        )
    else:
        lines.append(f"  containerd: {source}")
    lines.append(f"  (between runs: {outcome.fresh}; the cleanup is not in the import time)")
    if not all(outcome.berth_fresh):
        stale = [i + 1 for i, fresh in enumerate(outcome.berth_fresh) if not fresh]
        lines.append(
            f"  berthd runs {stale} found the blobs stored already and only unpacked:"
            " left out of its median"
        )
    return lines


_HEADER = (
    f"{'snapshots':<26}{'n':>5}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}"
    f"{'containerd p50':>16}{'ratio':>7}"
)


def _snapshot_lines(outcome: ImagesOutcome) -> list[str]:
    lines = [_HEADER, "-" * len(_HEADER)]
    for key, label, ref in SNAPSHOT_ROWS:
        if (lat := outcome.latency(key)) is None:
            continue
        ratio = "" if not ref else f"{lat.p50_ms / ref:.2f}x"
        lines.append(
            f"{label:<26}{lat.n:>5}{lat.p50_ms:>10.3f}{lat.p99_ms:>10.3f}{lat.max_ms:>10.3f}"
            f"{'' if ref is None else f'{ref:g}':>16}{ratio:>7}"
        )
    lines.append(
        f"(mounts: {outcome.mount_type or '?'}; PrepareRootfs also finds the image's top chain"
        " id in its manifest and config, which containerd's Prepare is given)"
    )
    return lines


def format_report(outcome: ImagesOutcome, targets: Sequence[TargetResult]) -> str:
    """The human summary: the archive, import times, snapshot latencies, targets, correctness."""
    lines = [] if outcome.archive is None else [_archive_line(outcome.archive)]
    if outcome.containerd is not None and (why := outcome.containerd.get("skipped")):
        lines.append(f"containerd side by side: not run ({why})")
    if outcome.berth_imports_s or outcome.ctr_imports_s:
        lines += _import_lines(outcome)
    if outcome.samples:
        lines += ["", *_snapshot_lines(outcome)]
    lines += [f"note: {note}" for note in outcome.notes]
    lines += closing_lines(
        targets,
        outcome.breaches,
        "every import named its image and unpacked afresh; every snapshot made was removed",
    )
    return "\n".join(lines)


def report_json(
    outcome: ImagesOutcome,
    targets: Sequence[TargetResult],
    *,
    started: str,
    config: dict[str, Any],
    daemon: dict[str, Any],
    aborted: str | None,
) -> dict[str, Any]:
    """Every figure of the run as one JSON document (raw snapshot samples included, in ns)."""
    ref, source = reference_import_s(outcome)
    return {
        "scenario": "images",
        "started_at": started,
        "machine": machine_json(),
        "config": config,
        "archive": None if outcome.archive is None else outcome.archive.to_json(),
        "import": {
            "fresh": outcome.fresh,
            "berth_s": outcome.berth_imports_s,
            "berth_fresh": outcome.berth_fresh,
            "berth_median_s": outcome.berth_median_s,
            "berth_cleanup_s": outcome.berth_cleanup_s,
            "containerd_s": outcome.ctr_imports_s,
            "containerd_median_s": outcome.ctr_median_s,
            "containerd_cleanup_s": outcome.ctr_cleanup_s,
            "containerd_reference_s": ref,
            "containerd_reference_source": source,
            "ratio": None
            if ref is None or outcome.berth_median_s is None
            else outcome.berth_median_s / ref,
        },
        "containerd": outcome.containerd,
        "snapshots": {
            "mount_type": outcome.mount_type,
            "latency_ms": {
                key: asdict(lat)
                for key, _, _ in SNAPSHOT_ROWS
                if (lat := outcome.latency(key)) is not None
            },
            "samples_ns": outcome.samples,
        },
        "correctness": {"breaches": outcome.breaches, "breach_count": len(outcome.breaches)},
        "notes": outcome.notes,
        "targets": [asdict(t) for t in targets],
        "reference": {
            "source": CONTAINERD_SOURCE,
            "prepare_p50_ms": CONTAINERD_PREPARE_MS,
            "remove_p50_ms": CONTAINERD_REMOVE_MS,
            "import_median_s_by_archive_mb": {str(k): v for k, v in CONTAINERD_IMPORT_S.items()},
        },
        "daemon": daemon,
        "aborted": aborted,
    }
