"""Load phases: what every worker does during a phase, and how the parent runs one.

:func:`run_loop` is the job that measures a phase in a worker (see
:mod:`bench.workers`). Every worker waits for a common start time, then
calls its operation through the warm-up and the measured window, timing
each call with ``time.perf_counter_ns``:

- **closed loop** (no rate): back to back, one call in flight per client;
- **open loop** (``Load.rate`` calls/s over all clients): each worker
  calls on a fixed schedule of its share of the rate, the workers' first
  calls spread over one interval. A call is timed from when it was *due*,
  so when the daemon stalls, the calls that a closed-loop client would
  simply not have sent yet are counted with the wait they suffered (no
  coordinated omission); the time from sending is kept apart as the
  service time. A worker that falls behind sends at once, never skips.

An operation returns None, or the name of what it did when it picks among
several (a mix); a failure of a named operation is raised as
:class:`NamedFailure`. :func:`run_phase` runs a phase on the first
``clients`` workers and aggregates their samples (:mod:`bench.stats`).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from threading import Event, Thread
from typing import Any, Protocol

from bench import progress
from bench.stats import PhaseStats, WorkerSample, aggregate
from bench.workers import SHAPES, WorkerContext, WorkerPool

__all__ = [
    "CLIENT_SHAPES",
    "NOT_SENT",
    "Load",
    "LoopPlan",
    "NamedFailure",
    "Op",
    "OpFactory",
    "OutOfWork",
    "RunOptions",
    "WindowMeter",
    "closed_loop",
    "error_code",
    "run_loop",
    "run_phase",
]

# A call; it returns None, or the name of the operation it picked (a mix).
Op = Callable[[], "str | None"]
# Builds, in the worker, the operation a phase repeats; ``(ctx, params) -> op``.
OpFactory = Callable[[WorkerContext, Any], Op]

# --client-shape: one process per client, all clients threads of one process, or both in turn.
CLIENT_SHAPES = (*SHAPES, "both")
# Open loop: a call still due when the window closed, never sent (the rate was not kept).
NOT_SENT = "NOT_SENT"
_START_LEAD_S = 0.2  # time given to every worker to receive its plan before the common start


class OutOfWork(Exception):
    """Raised by an operation when its worker has nothing left to do in this phase."""


class NamedFailure(Exception):
    """A failed call of the operation ``name`` of a mix; ``__cause__`` is the failure."""

    def __init__(self, name: str, cause: BaseException) -> None:
        super().__init__(f"{name}: {cause}")
        self.name = name
        self.cause = cause


def error_code(exc: BaseException) -> str:
    """The code a failed call is counted under: the wire code, else the exception's class."""
    if isinstance(exc, NamedFailure):
        return error_code(exc.cause)
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else type(exc).__name__


@dataclass(frozen=True)
class LoopPlan:
    """One phase as one worker runs it; times are ``time.monotonic_ns()`` values.

    The worker starts calling at ``start_ns``; calls that start (closed
    loop) or are due (open loop) before ``measure_ns`` are warm-up. It
    stops at ``end_ns`` or, when ``ops`` is set, after that many measured
    calls. ``interval_ns`` (open loop) is the time between two of this
    worker's calls, and ``offset_ns`` when its first one is due after
    ``start_ns``. ``backend`` is the daemon the phase loads (``berth`` or
    ``containerd``); ``counter`` the worker's slot in the progress counters.
    """

    make_op: OpFactory
    params: Any
    start_ns: int
    measure_ns: int
    end_ns: int | None
    ops: int | None
    phase: str = "op"
    interval_ns: int | None = None
    offset_ns: int = 0
    backend: str = "berth"


def _sleep_until(deadline_ns: int) -> None:
    while (left := deadline_ns - time.monotonic_ns()) > 0:
        time.sleep(left / 1e9)


class _Recorder:
    """A worker's samples of one phase, filled call by call."""

    def __init__(self, ctx: WorkerContext, phase: str) -> None:
        self.sample = WorkerSample()
        self.phase = phase
        self.index: dict[str, int] = {}
        self.errors: Counter[str] = Counter()
        self.op_errors: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.progress = ctx.progress_slot()

    def ok(self, name: str | None, latency: int, end: int, service: int | None) -> None:
        sample = self.sample
        key = name or self.phase
        index = self.index.get(key)
        if index is None:
            index = self.index[key] = len(sample.op_names)
            sample.op_names.append(key)
        sample.latencies_ns.append(latency)
        sample.ends_ns.append(end)
        sample.op_index.append(index)
        if service is not None:
            sample.service_ns.append(service)

    def failed(self, exc: Exception, end: int | None) -> None:
        code = error_code(exc)
        self.errors[code] += 1
        self.op_errors[exc.name if isinstance(exc, NamedFailure) else self.phase][code] += 1
        if end is not None:
            self.sample.error_ends_ns.append(end)

    def done(self, last_end: int, out_of_work: bool, max_lag: int) -> WorkerSample:
        sample = self.sample
        sample.errors = dict(self.errors)
        sample.op_errors = {name: dict(codes) for name, codes in self.op_errors.items()}
        sample.last_end_ns = last_end
        sample.out_of_work = out_of_work
        sample.max_lag_ns = max_lag
        return sample


def run_loop(ctx: WorkerContext, plan: LoopPlan) -> WorkerSample:
    """Job: repeat the plan's operation, closed or open loop; the measured sample."""
    ctx.backend = plan.backend
    op = plan.make_op(ctx, plan.params)
    rec = _Recorder(ctx, plan.phase)
    # perf_counter_ns times the calls; the plan's monotonic times are mapped onto it.
    offset = time.perf_counter_ns() - time.monotonic_ns()
    measure = plan.measure_ns + offset
    end = None if plan.end_ns is None else plan.end_ns + offset
    interval = plan.interval_ns
    due = plan.start_ns + plan.offset_ns + offset
    measured = 0
    last_end = 0
    max_lag = 0
    out_of_work = False
    counts = rec.progress
    _sleep_until(plan.start_ns if interval is None else due - offset)
    while True:
        if interval is not None:
            _sleep_until(due - offset)
        start = time.perf_counter_ns()
        began = start if interval is None else due  # open loop: timed from when it was due
        if (end is not None and began >= end) or (plan.ops is not None and measured >= plan.ops):
            break
        if end is not None and start >= end:
            # Open loop, behind schedule when the window closed: the calls still due
            # were never sent. They count as failures (NOT_SENT), not as nothing.
            assert interval is not None
            unsent = -(-(end - max(due, measure)) // interval)
            rec.errors[NOT_SENT] += unsent
            rec.op_errors[plan.phase][NOT_SENT] += unsent
            break
        try:
            name = op()
        except OutOfWork:
            out_of_work = True
            break
        except Exception as exc:
            stop = time.perf_counter_ns()
            rec.failed(exc, stop - offset if began >= measure else None)
            counts[1] += 1
            ok = False
        else:
            stop = time.perf_counter_ns()
            counts[0] += 1
            ok = True
        if interval is not None:
            max_lag = max(max_lag, start - due)
            due += interval
        if began >= measure:
            measured += 1
            last_end = stop
            if ok:
                service = None if interval is None else stop - start
                rec.ok(name, stop - began, stop - offset, service)
    return rec.done(last_end - offset if last_end else 0, out_of_work, max_lag)


# The name the containers scenario's phases were written against.
closed_loop = run_loop


@dataclass(frozen=True)
class Load:
    """How long each phase runs, and at what pace.

    ``ops`` measured calls (split among the clients) or ``duration``
    seconds, after ``warmup`` seconds that are not measured; closed loop,
    or open loop at ``rate`` calls/s over all clients.
    """

    duration: float
    warmup: float
    ops: int | None = None
    rate: float | None = None


@dataclass(frozen=True)
class RunOptions:
    """What every scenario is given by :mod:`bench.cli`: target, clients, load, report."""

    address: str | None  # None: spawn a berthd for the run
    clients: tuple[int, ...]
    load: Load
    json_path: Path
    timeout: float | None  # seconds, per call; None: no deadline
    workdir: str | None  # where a spawned daemon's temporary directory goes
    plots: Path | None = None  # where PNG plots go (matplotlib); None: no plots
    compare: str | None = None  # "containerd": run every phase against it too
    containerd_address: str | None = None  # its socket, for --compare
    client_shape: str = "processes"  # or "threads", or "both" (see bench.workers)

    @property
    def shapes(self) -> tuple[str, ...]:
        """The shapes every phase runs in, one after the other: processes, then threads."""
        return SHAPES if self.client_shape == "both" else (self.client_shape,)


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
    *,
    meters: Sequence[WindowMeter] = (),
    backend: str = "berth",
) -> PhaseStats:
    """Run one phase on the first ``clients`` workers (``params[i]`` for worker i).

    The pool's shape (processes, or threads of one process) is the phase's
    ``shape``. Each meter (``meter`` and ``meters``) is begun and ended around the
    measured window, on a thread. ``backend`` names the daemon the
    operations talk to (:meth:`WorkerContext.containers` and friends pick
    their client by it).
    """
    start = time.monotonic_ns() + int((_START_LEAD_S + 0.005 * clients) * 1e9)
    measure = start + int(load.warmup * 1e9)
    end = None if load.ops is not None else measure + int(load.duration * 1e9)
    counts: list[int | None] = (
        list(_split(load.ops, clients)) if load.ops is not None else [None] * clients
    )
    interval = None if not load.rate else int(clients / load.rate * 1e9)
    plans = [
        LoopPlan(
            make_op,
            params[i],
            start,
            measure,
            end,
            counts[i],
            phase=phase,
            interval_ns=interval,
            offset_ns=0 if interval is None else interval * i // clients,
            backend=backend,
        )
        for i in range(clients)
    ]
    done = Event()
    watchers = [
        Thread(target=_meter_window, args=(m, measure, end, done), daemon=True)
        for m in ([meter] if meter is not None else []) + list(meters)
    ]
    for watcher in watchers:
        watcher.start()
    label = phase if backend == "berth" else f"{phase} ({backend})"
    if pool.shape != "processes":
        label += f" [{pool.shape}]"
    previous, pool.backend = pool.backend, backend
    try:
        with progress.watch(label, clients, pool.counters, measure, end, load.ops):
            samples: list[WorkerSample] = pool.run(run_loop, plans)
    finally:
        pool.backend = previous
        done.set()
        for watcher in watchers:
            watcher.join()
    mode = "closed" if interval is None else "open"
    stats = aggregate(phase, clients, measure, samples, mode=mode, rate=load.rate)
    return replace(stats, backend=backend, shape=pool.shape)
