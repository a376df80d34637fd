"""The Images benchmark's yardsticks: containerd's figures and the issue's targets.

containerd's import time is measured in the same run when a containerd
socket and ``ctr`` are given (``--containerd-address``); otherwise the
figure below, measured on this machine with the same archive, stands in,
and only for the archive size it was measured with. Targets are
informational: a MISS is printed, not turned into an exit code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.image_archive import ARCHIVE_VERSION
from bench.targets import TargetResult

if TYPE_CHECKING:
    from bench.image_report import ImagesOutcome

__all__ = [
    "CONTAINERD_IMPORT_ARCHIVE_VERSION",
    "CONTAINERD_IMPORT_S",
    "CONTAINERD_PREPARE_MS",
    "CONTAINERD_REMOVE_MS",
    "CONTAINERD_SOURCE",
    "evaluate_targets",
    "reference_import_s",
]

CONTAINERD_SOURCE = "containerd 1.6.20 (Debian), overlayfs, on this 2-core machine"
# Snapshot Prepare (on an image's top layer) and Remove, p50 ms, through containerd's API.
CONTAINERD_PREPARE_MS = 2.7
CONTAINERD_REMOVE_MS = 1.5
# `ctr images import` (unpacking with overlayfs) of the archive of --archive-mb MB that
# bench.image_archive builds, in seconds, by archive size: on this machine, root under /tmp
# (containerd-sandbox's default, like a spawned berthd's), the median of the medians of five
# `berth-bench images --containerd-address ...` runs (2.10, 2.16, 2.18, 2.75, 3.69 s).
# Only for archives of CONTAINERD_IMPORT_ARCHIVE_VERSION: another version is another archive.
CONTAINERD_IMPORT_S: dict[int, float] = {100: 2.18}
CONTAINERD_IMPORT_ARCHIVE_VERSION = 1


def _target(name: str, goal: str, measured: str | None, ok: bool) -> TargetResult:
    if measured is None:
        return TargetResult(name, goal, "not measured", "SKIP")
    return TargetResult(name, goal, measured, "PASS" if ok else "MISS")


def reference_import_s(outcome: ImagesOutcome) -> tuple[float | None, str]:
    """containerd's import median for this run's archive, and where it comes from."""
    if outcome.ctr_imports_s:
        return outcome.ctr_median_s, "measured in this run"
    ref = CONTAINERD_IMPORT_S.get(outcome.archive_mb)
    if ref and CONTAINERD_IMPORT_ARCHIVE_VERSION == ARCHIVE_VERSION:
        return ref, "reference figure (bench/image_targets.py), not measured in this run"
    return None, f"no containerd in this run and no reference for {outcome.archive_mb} MB"


def evaluate_targets(outcome: ImagesOutcome) -> list[TargetResult]:
    """The issue's targets, judged on this run's figures (informational)."""
    berth_s = outcome.berth_median_s
    ref_s, source = reference_import_s(outcome)
    goal = "<= containerd's `ctr images import`"
    if ref_s is None:
        results = [TargetResult("import + unpack, median", goal, source, "SKIP")]
    else:
        results = [
            _target(
                "import + unpack, median",
                goal,
                None
                if berth_s is None
                else f"{berth_s:.2f} s vs {ref_s:.2f} s = {berth_s / ref_s:.2f}x ({source})",
                berth_s is not None and berth_s <= ref_s,
            )
        ]
    for key, name, ref in (
        ("prepare_rootfs", "Prepare (PrepareRootfs on the image) p50", CONTAINERD_PREPARE_MS),
        ("remove", "Remove p50", CONTAINERD_REMOVE_MS),
    ):
        lat = outcome.latency(key)
        results.append(
            _target(
                name,
                f"< {ref:g} ms (containerd)",
                None if lat is None else f"{lat.p50_ms:.3f} ms = {lat.p50_ms / ref:.2f}x",
                lat is not None and lat.p50_ms < ref,
            )
        )
    return results
