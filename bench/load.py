"""Closed-loop phases: what every worker does during a phase, and how the parent runs one.

:func:`closed_loop` is the job that measures a phase in a worker (see
:mod:`bench.workers`): every worker waits for a common start time, then
calls its operation back to back (closed loop: one call in flight per
client) through the warm-up and the measured window, timing each call with
``time.perf_counter_ns``. :func:`run_phase` runs it on the first
``clients`` workers and aggregates their samples (:mod:`bench.stats`).
"""

from __future__ import annotations

import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from threading import Event, Thread
from typing import Any, Protocol

from bench.stats import PhaseStats, WorkerSample, aggregate
from bench.workers import WorkerContext, WorkerPool

__all__ = [
    "Load",
    "LoopPlan",
    "Op",
    "OpFactory",
    "OutOfWork",
    "RunOptions",
    "WindowMeter",
    "closed_loop",
    "error_code",
    "run_phase",
]

Op = Callable[[], None]
# Builds, in the worker, the operation a phase repeats; ``(ctx, params) -> op``.
OpFactory = Callable[[WorkerContext, Any], Op]

_START_LEAD_S = 0.2  # time given to every worker to receive its plan before the common start


class OutOfWork(Exception):
    """Raised by an operation when its worker has nothing left to do in this phase."""


def error_code(exc: BaseException) -> str:
    """The code a failed call is counted under: the wire code, else the exception's class."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else type(exc).__name__


@dataclass(frozen=True)
class LoopPlan:
    """One phase as one worker runs it; times are ``time.monotonic_ns()`` values.

    The worker starts calling at ``start_ns``; calls that start before
    ``measure_ns`` are warm-up. It stops at ``end_ns`` or, when ``ops`` is
    set, after that many measured calls.
    """

    make_op: OpFactory
    params: Any
    start_ns: int
    measure_ns: int
    end_ns: int | None
    ops: int | None


def _sleep_until(deadline_ns: int) -> None:
    while (left := deadline_ns - time.monotonic_ns()) > 0:
        time.sleep(left / 1e9)


def closed_loop(ctx: WorkerContext, plan: LoopPlan) -> WorkerSample:
    """Job: repeat the plan's operation back to back; the measured sample."""
    op = plan.make_op(ctx, plan.params)
    latencies: array[int] = array("q")
    ends: array[int] = array("q")
    errors: Counter[str] = Counter()
    # perf_counter_ns times the calls; the plan's monotonic times are mapped onto it.
    offset = time.perf_counter_ns() - time.monotonic_ns()
    measure = plan.measure_ns + offset
    end = None if plan.end_ns is None else plan.end_ns + offset
    measured = 0
    last_end = 0
    out_of_work = False
    _sleep_until(plan.start_ns)
    while True:
        start = time.perf_counter_ns()
        if (end is not None and start >= end) or (plan.ops is not None and measured >= plan.ops):
            break
        try:
            op()
        except OutOfWork:
            out_of_work = True
            break
        except Exception as exc:
            errors[error_code(exc)] += 1
            ok = False
        else:
            ok = True
        stop = time.perf_counter_ns()
        if start >= measure:
            measured += 1
            last_end = stop
            if ok:
                latencies.append(stop - start)
                ends.append(stop - offset)
    return WorkerSample(
        latencies_ns=latencies,
        ends_ns=ends,
        errors=dict(errors),
        last_end_ns=last_end - offset if last_end else 0,
        out_of_work=out_of_work,
    )


@dataclass(frozen=True)
class Load:
    """How long each phase runs: ``ops`` measured calls (split among clients) or a duration."""

    duration: float
    warmup: float
    ops: int | None = None


@dataclass(frozen=True)
class RunOptions:
    """What every scenario is given by :mod:`bench.cli`: target, clients, load, report."""

    address: str | None  # None: spawn a berthd for the run
    clients: tuple[int, ...]
    load: Load
    json_path: Path
    timeout: float | None  # seconds, per call; None: no deadline
    workdir: str | None  # where a spawned daemon's temporary directory goes


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class WindowMeter(Protocol):
    """Something measured over a phase's measured window (e.g. CPU use)."""

    def begin(self) -> None: ...

    def end(self) -> None: ...


def _meter_window(meter: WindowMeter, measure_ns: int, end_ns: int | None, done: Event) -> None:
    """Begin ``meter`` when the window opens, end it when it closes or the phase is done."""
    if done.wait(max(measure_ns - time.monotonic_ns(), 0) / 1e9):
        return
    meter.begin()
    done.wait(None if end_ns is None else max(end_ns - time.monotonic_ns(), 0) / 1e9)
    meter.end()


def run_phase(
    pool: WorkerPool,
    phase: str,
    clients: int,
    make_op: OpFactory,
    params: Sequence[Any],
    load: Load,
    meter: WindowMeter | None = None,
) -> PhaseStats:
    """Run one phase on the first ``clients`` workers (``params[i]`` for worker i).

    A ``meter`` is begun and ended around the measured window, on a thread.
    """
    start = time.monotonic_ns() + int((_START_LEAD_S + 0.005 * clients) * 1e9)
    measure = start + int(load.warmup * 1e9)
    end = None if load.ops is not None else measure + int(load.duration * 1e9)
    counts: list[int | None] = (
        list(_split(load.ops, clients)) if load.ops is not None else [None] * clients
    )
    plans = [LoopPlan(make_op, params[i], start, measure, end, counts[i]) for i in range(clients)]
    done = Event()
    watcher = None
    if meter is not None:
        watcher = Thread(target=_meter_window, args=(meter, measure, end, done), daemon=True)
        watcher.start()
    try:
        samples: list[WorkerSample] = pool.run(closed_loop, plans)
    finally:
        done.set()
        if watcher is not None:
            watcher.join()
    return aggregate(phase, clients, measure, samples)
