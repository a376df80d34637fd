"""``berth-bench images``: import + unpack of a ~100 MB archive, and snapshot Prepare + Remove.

One client, one call at a time, in namespace ``bench-images``
(:mod:`bench.image_bench`):

1. **import + unpack** (``--imports`` runs, default 3) of the archive that
   :mod:`bench.image_archive` builds once and caches: the wall time of
   ``berth.v1.Images/Import``, from the call to the reply (blobs stored and
   verified, every layer unpacked with the daemon's snapshotter, records
   committed). Between runs the image is deleted (``containerd.v1.Images/
   Delete``) and collected (``berth.v1.GC/Run``), so each run starts from
   nothing; a daemon without Images/Delete gets a namespace per run, and
   only the runs that stored every blob count. With
   ``--containerd-address`` and ``ctr`` on the PATH, each run also times
   ``ctr images import`` of the same file into that containerd
   (:mod:`bench.image_ctr`), the two taking turns at going first;
   otherwise containerd's figure is the reference of
   :mod:`bench.image_targets`;
2. **snapshot latency** (``--iterations``, after 10 unmeasured rounds):
   ``berth.v1.Images/PrepareRootfs`` on the image then
   ``Snapshot/Remove``, and the same with a plain ``Snapshot/Prepare`` on
   the image's top chain id (found with ``Snapshot/List``), each timed.

Correctness (exit code 1): an import whose reply lacks the archive's
image, snapshots of a deleted image still there after GC/Run (the next
import would not unpack them), a Prepare without mounts, or a snapshot of
this run left after its Remove.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import subprocess
from pathlib import Path
from typing import Any

import berth
from bench.churn import snapshot_churn
from bench.image_archive import bench_archive
from bench.image_bench import (
    NAMESPACE,
    WARMUP_ROUNDS,
    BerthImages,
    unjournaled_ext4,
    warm,
)
from bench.image_ctr import CtrImports, containerd_side
from bench.image_report import ImagesOutcome, format_report, report_json
from bench.image_targets import evaluate_targets
from bench.load import RunOptions
from bench.options import at_least_one, measure_busy, run_footer
from bench.report import write_json
from bench.session import churn_json, plots_for
from bench.table import format_phases
from bench.target import CpuMeter, Target, TargetError, open_target

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this scenario only (bench.cli adds the common ones)."""
    parser.add_argument(
        "--churn",
        action="store_true",
        help="then churn snapshot Prepare + Remove on the image with --clients concurrent"
        " clients (--duration/--ops, --rate apply)",
    )
    parser.add_argument(
        "--iterations",
        type=at_least_one,
        default=200,
        metavar="N",
        help="measured Prepare + Remove rounds, for each kind of Prepare (default 200)",
    )
    parser.add_argument(
        "--imports",
        type=at_least_one,
        default=3,
        metavar="N",
        help="timed imports, each unpacking afresh (default 3)",
    )
    parser.add_argument(
        "--archive-mb",
        type=at_least_one,
        default=100,
        metavar="MB",
        help="file data in the archive's layers, in 10^6 bytes (default 100)",
    )


_ABORTING = (TargetError, berth.BerthError, RuntimeError, OSError)


def _ctr_import(ctr: CtrImports, outcome: ImagesOutcome, run: int) -> CtrImports | None:
    """One run of the containerd side; None from then on when it fails."""
    try:
        ctr.import_once(run)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        outcome.notes.append(f"containerd side stopped: {exc}")
        if outcome.containerd is not None:
            outcome.containerd["error"] = str(exc)
        outcome.ctr_imports_s.clear()  # partial figures: the reference figure stands in
        return None
    return ctr


def _measure(
    target: Target, options: RunOptions, args: argparse.Namespace, outcome: ImagesOutcome
) -> None:
    """Every measurement against ``target``, into ``outcome``; cleanup even when one fails."""
    archive = outcome.archive
    assert archive is not None
    bench = BerthImages(target, options, outcome, archive)
    ctr = containerd_side(args, outcome, archive)
    try:
        bench.clear()
        warm(archive.path)
        root = target.workdir or archive.path.parent
        if (device := unjournaled_ext4(root)) is not None:
            outcome.notes.append(
                f"{root} is on ext4 without a journal ({device}): for minutes after thousands of"
                " files were deleted nearby (cleanups, earlier runs, other work in the same"
                " directory), creating files there is slow, and imports measure that; put both"
                " daemons' roots on a fresh filesystem (bench/README.md, images)"
            )
        for run in range(args.imports):
            # Turn about, so that neither daemon always runs right after the other's cleanup.
            if ctr is not None and run % 2 == 1:
                ctr = _ctr_import(ctr, outcome, run)
            bench.import_once(run, last=run == args.imports - 1)
            target.check_alive()
            if ctr is not None and run % 2 == 0:
                ctr = _ctr_import(ctr, outcome, run)
        bench.snapshots(args.iterations)
        target.check_alive()
        if args.churn and (top := bench.top_chain_id()) is not None:
            outcome.churn = snapshot_churn(options, target, bench.image_ns, top)
    finally:
        with contextlib.suppress(*_ABORTING):
            bench.cleanup()
        bench.close()


def run(options: RunOptions, args: argparse.Namespace) -> int:
    """Run the scenario; 0, or 1 on a correctness breach or an aborted run."""
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    outcome = ImagesOutcome(archive_mb=args.archive_mb)
    aborted: str | None = None
    target: Target | None = None
    daemon: dict[str, Any] = {"spawned": None}
    cache_dir = Path(options.workdir or "/tmp") / "berth-bench-cache"
    idle = measure_busy()
    meter = CpuMeter(None)
    try:
        outcome.archive = bench_archive(cache_dir, args.archive_mb)
        with open_target(options.address, workdir=options.workdir) as target:
            meter = CpuMeter(target.pid)
            meter.begin()
            try:
                _measure(target, options, args, outcome)
            except _ABORTING as exc:
                aborted = f"{type(exc).__name__}: {exc}"
            meter.end()
            target.stop()
            daemon = target.to_json()  # before the spawned daemon's directory goes
    except (TargetError, OSError) as exc:  # no archive, or no daemon
        aborted = f"{type(exc).__name__}: {exc}"
    if outcome.churn is not None:
        outcome.breaches += outcome.churn.breaches
    targets = evaluate_targets(outcome)
    print(format_report(outcome, targets))
    if outcome.churn is not None:
        print("\nsnapshot churn (--churn):")
        print("\n".join(format_phases(outcome.churn.phases)))
    for line in run_footer(idle, meter, aborted, target):
        print(line)
    config: dict[str, Any] = {
        "address": options.address,
        "namespace": NAMESPACE,
        "imports": args.imports,
        "iterations": args.iterations,
        "warmup_rounds": WARMUP_ROUNDS,
        "archive_mb": args.archive_mb,
        "churn": args.churn,
        "cache_dir": str(cache_dir),
        "containerd_address": args.containerd_address,
        "timeout_s": options.timeout,
        "host_busy_before": idle,
        "host_busy_during": meter.host_busy,
        "daemon_cores_during": meter.daemon_cores,
    }
    report = report_json(
        outcome, targets, started=started, config=config, daemon=daemon, aborted=aborted
    )
    if outcome.churn is not None:
        report["churn"] = churn_json(outcome.churn)
        report["churn"]["plots"] = plots_for(options, "images-churn", outcome.churn.phases)
    write_json(options.json_path, report)
    print(f"report: {options.json_path}")
    return 1 if outcome.breaches or aborted else 0
