"""``berth-bench restarts``: supervision (issue 12): crash -> replacement running, CPU, health.

In one run, one backend at a time (so each crash loop has the machine to
itself), on the same busybox directory and command:

1. **berth** (:mod:`bench.restart_berth`): plain task create + start
   timed ``--iterations`` times; then ``--containers`` containers crash
   every 0.5 s under policy ``always`` with the first backoff step at its
   minimum (``--backoff-base``, default 1ms, and reset-after 0), for
   ``--duration`` seconds: each restart from the exit to the
   replacement's ``/tasks/start`` on an ``Events/Subscribe`` stream,
   step by step, and berthd's CPU per restart; plain create + start again
   while the loop still runs;
2. **Docker** (:mod:`bench.restart_docker`, ``--docker``): rounds of
   ``docker run -d --restart always``, die -> start;
3. **containerd's restart monitor** (:mod:`bench.restart_ctrd`, with
   ``--compare containerd``): labels ``containerd.io/restart.policy``
   and ``.status``, for ``--containerd-seconds`` (it polls every 10 s);
4. **health-check overhead** (``--health-containers``, 0 skips it):
   that many tasks of ``sleep 600`` without checks, then with
   ``berth.io/health.cmd`` = ``true`` every ``--health-interval``, for
   ``--health-seconds`` each: the CPU of berthd, the zygote and the
   shims, and of the whole machine.

A reference that cannot run here (no Docker daemon, no restart plugin) is
reported as skipped, with why; berth's figures are given all the same.
Correctness (exit 1): berth gave up on a container, its event stream
failed, or a container could not be removed. Everything is removed at
the end, also on failure (containers, the image, a private dockerd).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from typing import Any

import berth
from bench.ctrd import CtrdError
from bench.load import RunOptions
from bench.options import at_least_one, measure_busy, run_footer
from bench.report import machine_json, write_json
from bench.resources import listener_pid
from bench.restart_berth import (
    HEALTH_NAMESPACE,
    NAMESPACE,
    CrashLoop,
    berth_crash_loop,
    health_overhead,
)
from bench.restart_ctrd import ctrd_crash_loop, restart_plugin
from bench.restart_docker import docker_crash_loop, docker_daemon
from bench.restart_report import RestartsOutcome, format_report, outcome_json
from bench.session import containerd_address
from bench.target import CpuMeter, Target, TargetError, open_target
from bench.task_events import SubscriberError
from bench.task_setup import scratch_rootfs

__all__ = ["add_arguments", "run"]

_ABORTING = (TargetError, SubscriberError, berth.BerthError, CtrdError, RuntimeError, OSError)


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds: {text!r}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this scenario only (bench.cli adds the common ones).

    ``--duration`` is berth's crash-loop window; ``--compare containerd``
    adds containerd's restart monitor.
    """
    parser.add_argument(
        "--containers",
        type=at_least_one,
        default=10,
        metavar="N",
        help="crash-looping containers on each backend (default 10)",
    )
    parser.add_argument(
        "--iterations",
        type=at_least_one,
        default=20,
        metavar="N",
        help="plain berth task create + start timings, before the loop and during it (default 20)",
    )
    parser.add_argument(
        "--backoff-base",
        default="1ms",
        metavar="DURATION",
        help="berth.io/restart.backoff-base of berth's containers (default 1ms, the minimum)",
    )
    parser.add_argument(
        "--docker",
        default="auto",
        metavar="auto|off|HOST",
        help="Docker: auto (the CLI's daemon, else a private dockerd if installed), off, or a"
        " daemon address like unix:///run/docker.sock (default auto)",
    )
    parser.add_argument(
        "--docker-rounds",
        type=_count,
        default=3,
        metavar="R",
        help="rounds of fresh Docker containers; each gives N first restarts (default 3)",
    )
    parser.add_argument(
        "--docker-restarts",
        type=at_least_one,
        default=2,
        metavar="K",
        help="restarts of each Docker container per round (100 ms, then 200 ms backoff...;"
        " default 2)",
    )
    parser.add_argument(
        "--containerd-seconds",
        type=_seconds,
        default=40.0,
        metavar="S",
        help="with --compare containerd: how long its restart monitor (10 s polls) is watched"
        " (default 40)",
    )
    parser.add_argument(
        "--health-containers",
        type=_count,
        default=100,
        metavar="M",
        help="containers for the health-check overhead; 0 skips it (default 100)",
    )
    parser.add_argument(
        "--health-seconds",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="measured window with and without checks, each (default 30)",
    )
    parser.add_argument(
        "--health-interval",
        default="1s",
        metavar="DURATION",
        help="berth.io/health.interval of the checked containers (default 1s)",
    )


def _say(text: str) -> None:
    print(f"[restarts] {text}", file=sys.stderr, flush=True)


def _check(outcome: RestartsOutcome, loop: CrashLoop) -> None:
    outcome.loops.append(loop)
    if loop.gave_up:
        outcome.breaches.append(f"{loop.backend}: gave up on {loop.gave_up} container(s)")
    if loop.failure:
        outcome.breaches.append(f"{loop.backend}: event stream failed: {loop.failure}")
    if left := loop.extra.get("not_removed"):
        outcome.breaches.append(f"{loop.backend}: containers not removed: {left}")
    if not loop.timings:
        outcome.notes.append(f"{loop.backend}: no complete restart in the window")


def _measure(
    target: Target,
    options: RunOptions,
    args: argparse.Namespace,
    outcome: RestartsOutcome,
    containerd: str | None,
) -> None:
    prefix = f"rs{os.getpid()}-"
    pid = target.pid if target.spawned else listener_pid(target.address)
    with scratch_rootfs(options.workdir) as rootfs:
        _say(
            f"berth: {args.iterations} create + start, then {args.containers} containers"
            f" crash-looping for {options.load.duration:g} s"
        )
        loop = berth_crash_loop(
            target,
            pid,
            rootfs,
            containers=args.containers,
            duration_s=options.load.duration,
            iterations=args.iterations,
            backoff_base=args.backoff_base,
            prefix=prefix,
        )
        _check(outcome, loop)
        if args.docker_rounds:
            with docker_daemon(args.docker, options.workdir) as (docker, how):
                outcome.notes.append(f"docker: {how}")
                if docker is None:
                    outcome.skipped["docker"] = how
                else:
                    _say(f"docker: {how}; {args.docker_rounds} rounds of {args.containers}")
                    _check(
                        outcome,
                        docker_crash_loop(
                            docker,
                            rootfs,
                            containers=args.containers,
                            rounds=args.docker_rounds,
                            restarts_each=args.docker_restarts,
                            prefix=prefix,
                        ),
                    )
        if containerd is not None:
            if (why := restart_plugin(containerd)) is not None:
                outcome.skipped["containerd"] = why
            else:
                _say(f"containerd: restart monitor for {args.containerd_seconds:g} s")
                _check(
                    outcome,
                    ctrd_crash_loop(
                        containerd,
                        rootfs,
                        containers=args.containers,
                        seconds=args.containerd_seconds,
                        prefix=prefix,
                    ),
                )
        if args.health_containers:
            outcome.health = health_overhead(
                target,
                pid,
                rootfs,
                containers=args.health_containers,
                seconds=args.health_seconds,
                interval=args.health_interval,
                settle_s=3.0,
                prefix=prefix,
                progress=_say,
            )


def run(options: RunOptions, args: argparse.Namespace) -> int:
    """Run the scenario; 0, or 1 on a correctness breach or an aborted run."""
    containerd = containerd_address(options)  # SystemExit when --compare cannot be honoured
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    outcome = RestartsOutcome()
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
            daemon = target.to_json()
    except TargetError as exc:
        aborted = f"{type(exc).__name__}: {exc}"
    lines = format_report(outcome, args.containers)
    lines += [f"note: {note}" for note in outcome.notes]
    if outcome.breaches:
        lines.append(f"CORRECTNESS: {len(outcome.breaches)} breach(es)")
        lines += [f"  {b}" for b in outcome.breaches]
    else:
        lines.append("correctness: no give-up, event streams whole, everything removed")
    print("\n".join(lines + run_footer(idle, meter, aborted, target)))
    config: dict[str, Any] = {
        "address": options.address,
        "namespaces": [NAMESPACE, HEALTH_NAMESPACE],
        "containers": args.containers,
        "command": "sh -c 'sleep 0.5; exit 1'",
        "berth_window_s": options.load.duration,
        "iterations": args.iterations,
        "backoff_base": args.backoff_base,
        "docker": args.docker,
        "docker_rounds": args.docker_rounds,
        "docker_restarts": args.docker_restarts,
        "containerd_address": containerd,
        "containerd_seconds": args.containerd_seconds,
        "health_containers": args.health_containers,
        "health_seconds": args.health_seconds,
        "health_interval": args.health_interval,
        "host_busy_before": idle,
        "host_busy_during": meter.host_busy,
    }
    report = {
        "scenario": "restarts",
        "started_at": started,
        "machine": machine_json(),
        "config": config,
        **outcome_json(outcome),
        "notes": outcome.notes,
        "correctness": {"breaches": outcome.breaches, "breach_count": len(outcome.breaches)},
        "daemon": daemon,
        "aborted": aborted,
    }
    write_json(options.json_path, report)
    print(f"report: {options.json_path}")
    return 1 if outcome.breaches or aborted else 0
