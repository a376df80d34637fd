"""``berth-bench tasks``: the benchmark of the Tasks service, beside raw ``runc run``.

One client, one thing at a time, in namespace ``bench-tasks``; an Events
subscription (:mod:`bench.task_events`) is opened before anything starts
and every ``EXIT`` is awaited through it. After a few warm-up rounds:

1. **lifecycle of ``true``** (``--iterations``): container create, task
   create, start, wait for the ``EXIT``, task delete, container delete;
   each step is timed too. Each round alternates with one raw
   ``runc run`` of the same spec (:mod:`bench.task_host`), so the floor is
   measured under the same conditions;
2. **exec + wait of ``true``** (``--iterations``) in a task running
   ``sleep 600``: the Exec call until the ``EXIT`` of the exec's pid;
3. **memory** with ``--tasks`` tasks running ``sleep 600``: PSS and RSS of
   every shim (title ``berth-shim bench-tasks/<id>``), and the PSS growth
   per running task of berthd and (apart) its zygote: each read once
   settled (``--settle``) before the tasks start and again while they all
   run (:mod:`bench.task_memory`). With ``--compare containerd`` the same
   on containerd: its shims, and its daemon's growth per task;
4. **exit -> event**: each of those tasks' init is SIGKILLed by the bench
   itself (``os.kill``), from just before the kill until its ``EXIT``
   frame is received. By wall clock it is split in three: kill ->
   ``exited_at`` (stamped by the shim when it reaps the process), ->
   ``timestamp`` (stamped by the event bus when it publishes), -> arrival.

There are no snapshots yet: the containers run on the spec's absolute
``root.path``, a busybox directory, read-only. Correctness: every started
process's ``EXIT`` must arrive (with the expected status) and seqs must
increase; any breach makes the run exit 1. Everything created is removed,
also on failure; with a spawned daemon, leftover shims and runc state too.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import shutil
import tempfile
from pathlib import Path
from typing import Any

import berth
from bench.churn import task_churn
from bench.ctrd import CtrdError
from bench.load import RunOptions
from bench.options import at_least_one, measure_busy, run_footer
from bench.report import write_json
from bench.session import churn_json, containerd_address, plots_for
from bench.table import format_phases
from bench.target import CpuMeter, Target, TargetError, open_target
from bench.task_bench import DEFAULT_SETTLE_S, NAMESPACE, WARMUP_ROUNDS, TaskBench, sweep
from bench.task_events import SubscriberError
from bench.task_memory import containerd_memory
from bench.task_report import TasksOutcome, format_report
from bench.task_report import report_json as tasks_report_json
from bench.task_targets import evaluate_targets

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this scenario only (bench.cli adds the common ones)."""
    parser.add_argument(
        "--iterations",
        type=at_least_one,
        default=100,
        metavar="N",
        help="measured lifecycles, raw runc runs and execs, each (default 100)",
    )
    parser.add_argument(
        "--churn",
        action="store_true",
        help="then churn short task lifecycles with --clients concurrent clients"
        " (--duration/--ops, --rate, --compare apply)",
    )
    parser.add_argument(
        "--tasks",
        type=at_least_one,
        default=50,
        metavar="M",
        help="running tasks for the memory reading, then killed one by one for "
        "the exit -> event latency (default 50)",
    )
    parser.add_argument(
        "--settle",
        type=_seconds,
        default=DEFAULT_SETTLE_S,
        metavar="SECONDS",
        help="memory step: how long the daemon is left to settle (read at 0.5 s, then each"
        f" second) before the tasks start and after the last has started (default"
        f" {DEFAULT_SETTLE_S:g})",
    )
    parser.add_argument(
        "--containerd-pid",
        type=at_least_one,
        metavar="PID",
        help="with --compare containerd: containerd's daemon pid for the memory step"
        " (default: the process listening on --containerd-address, else containerd.pid"
        " beside the socket)",
    )


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds: {text!r}")
    return value


_ABORTING = (TargetError, SubscriberError, berth.BerthError, CtrdError, RuntimeError, OSError)


def _measure(
    target: Target,
    options: RunOptions,
    args: argparse.Namespace,
    outcome: TasksOutcome,
    containerd: str | None,
) -> None:
    """Every measurement against ``target``, into ``outcome``; cleanup even when one fails.

    With ``containerd`` (an address), its memory step follows berth's.
    """
    workdir = Path(tempfile.mkdtemp(prefix="bt-", dir=options.workdir or "/tmp"))
    try:
        bench = TaskBench(target, options, workdir, outcome)
        try:
            if leftovers := bench.clear_namespace():
                outcome.notes.append(f"removed {len(leftovers)} leftover container(s)")
            bench.events.start()
            bench.lifecycles(args.iterations)
            bench.execs(args.iterations)
            bench.memory_and_exits(args.tasks, args.settle)
            target.check_alive()
            if containerd is not None:
                outcome.containerd = containerd_memory(
                    containerd,
                    namespace=NAMESPACE,
                    rootfs=bench.rootfs,
                    count=args.tasks,
                    settle_s=args.settle,
                    warmup_rounds=WARMUP_ROUNDS,
                    prefix=bench.prefix,
                    pid=args.containerd_pid,
                    timeout=options.timeout,
                )
            if args.churn:
                outcome.churn = task_churn(options, target, bench.rootfs)
        finally:
            with contextlib.suppress(*_ABORTING):
                bench.cleanup()
            bench.close()
            sweep(target, outcome)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(options: RunOptions, args: argparse.Namespace) -> int:
    """Run the scenario; 0, or 1 on a correctness breach or an aborted run."""
    containerd = containerd_address(options)  # SystemExit when --compare cannot be honoured
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    outcome = TasksOutcome()
    aborted: str | None = None
    target: Target | None = None
    daemon: dict[str, Any] = {"spawned": None}
    idle = measure_busy()
    meter = CpuMeter(None)
    try:
        with open_target(options.address, workdir=options.workdir) as target:
            meter = CpuMeter(target.pid)
            meter.begin()
            try:
                _measure(target, options, args, outcome, containerd)
            except _ABORTING as exc:
                aborted = f"{type(exc).__name__}: {exc}"
            meter.end()
            target.stop()
            daemon = target.to_json()  # before the spawned daemon's directory goes
    except TargetError as exc:  # it could not be spawned
        aborted = f"{type(exc).__name__}: {exc}"
    if outcome.events is not None and outcome.events.out_of_order:
        outcome.breaches.append(f"event seqs not increasing: {outcome.events.out_of_order[:10]}")
    if outcome.churn is not None:
        outcome.breaches += outcome.churn.breaches
    targets = evaluate_targets(outcome)
    print(format_report(outcome, targets))
    if outcome.churn is not None:
        print("\nlifecycle churn (--churn):")
        print("\n".join(format_phases(outcome.churn.phases)))
    for line in run_footer(idle, meter, aborted, target):
        print(line)
    config: dict[str, Any] = {
        "address": options.address,
        "namespace": NAMESPACE,
        "iterations": args.iterations,
        "warmup_rounds": WARMUP_ROUNDS,
        "tasks": args.tasks,
        "settle_s": args.settle,
        "compare": options.compare,
        "containerd_address": containerd,
        "containerd_pid_option": args.containerd_pid,
        "churn": args.churn,
        "timeout_s": options.timeout,
        "host_busy_before": idle,
        "host_busy_during": meter.host_busy,
        "daemon_cores_during": meter.daemon_cores,
        "rootfs": "busybox directory as the spec's absolute root.path, readonly (no snapshots)",
    }
    report = tasks_report_json(
        outcome,
        targets,
        started=started,
        config=config,
        daemon=daemon,
        aborted=aborted,
    )
    if outcome.churn is not None:
        report["churn"] = churn_json(outcome.churn)
        report["churn"]["plots"] = plots_for(options, "tasks-churn", outcome.churn.phases)
    write_json(options.json_path, report)
    print(f"report: {options.json_path}")
    return 1 if outcome.breaches or aborted else 0
