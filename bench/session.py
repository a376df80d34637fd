"""One load run of a scenario built on the load engine: target, workers, phases, report.

The scenarios ``exec``, ``events`` and ``mixed`` (and the churn phases of
``tasks`` and ``images``) describe only their phases and checks, in a
``measure(session)`` function; :func:`run_load_scenario` does the rest:

1. spawns berthd (or uses ``--address``), and with ``--compare
   containerd`` connects to containerd and makes the bench's lease in
   each namespace the run uses;
2. starts the clients (one per client of the largest count) in each
   shape of ``--client-shape``: worker processes, or threads of one
   worker process (:mod:`bench.workers`);
3. runs ``measure``, whose loops run each phase in every shape
   (:attr:`Session.shapes`); each :meth:`Session.phase` samples the daemon's CPU
   and memory and the shims' memory (:mod:`bench.resources`) over its
   measured window;
4. prints the table (:mod:`bench.table`) and the correctness verdict,
   writes the JSON report and, with ``--plots``, the PNG plots.

The exit code is 1 when a correctness breach was recorded or the run was
aborted, 2 when ``--compare`` cannot be honoured, else 0.
"""

from __future__ import annotations

import contextlib
import datetime
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import berth
from bench import ctrd as ctrd_mod
from bench.load import OpFactory, RunOptions, run_phase
from bench.options import busy_warning, measure_busy, usage_error
from bench.report import closing_lines, machine_json, write_json
from bench.resources import ResourceSampler, listener_pid
from bench.stats import PhaseStats
from bench.table import format_phases, pair_phases
from bench.target import Target, TargetError, open_target
from bench.workers import WorkerFailed, WorkerPool, worker_pools

__all__ = [
    "BenchAborted",
    "LoadOutcome",
    "Session",
    "churn_json",
    "containerd_address",
    "open_session",
    "plots_for",
    "run_load_scenario",
]

DEFAULT_CONTAINERD = "unix:///run/containerd/containerd.sock"


class BenchAborted(RuntimeError):
    """The run cannot go on (set-up failed, the daemon died)."""


_ABORTING = (BenchAborted, TargetError, WorkerFailed, berth.BerthError, OSError, RuntimeError)


@dataclass
class LoadOutcome:
    """What a load run measured and checked, filled in as it goes."""

    phases: list[PhaseStats] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # scenario-specific figures


class Session:
    """The run in progress: what ``measure`` functions use to run phases and record findings."""

    def __init__(
        self,
        options: RunOptions,
        target: Target,
        pools: dict[str, WorkerPool],
        namespaces: tuple[str, ...],
        containerd: str | None,
    ) -> None:
        self.options = options
        self.target = target
        self.pools = pools  # by client shape, in the order the phases run them
        self.shapes = list(pools)
        self.pool = pools[self.shapes[0]]  # set-up jobs that care for no shape
        self.namespaces = namespaces
        self.containerd_address = containerd
        self.outcome = LoadOutcome()
        self.backends = ["berth"] + (["containerd"] if containerd else [])
        self._pids = {
            "berth": target.pid if target.spawned else listener_pid(target.address),
            "containerd": None if containerd is None else listener_pid(containerd),
        }
        self._ctrd: dict[str, ctrd_mod.Containerd] = {}
        self._berth: dict[str, berth.Client] = {}

    def berth_client(self, namespace: str) -> berth.Client:
        """The parent's own berth client for ``namespace`` (set-up and checks)."""
        client = self._berth.get(namespace)
        if client is None:
            client = self._berth[namespace] = berth.Client(
                self.target.address, namespace=namespace, timeout=60.0
            )
        return client

    def pid(self, backend: str) -> int | None:
        """The daemon's pid, when it runs on this host and we can see it."""
        return self._pids.get(backend)

    def ctrd(self, namespace: str) -> ctrd_mod.Containerd:
        """The parent's own containerd client for ``namespace`` (set-up and checks)."""
        if self.containerd_address is None:
            raise BenchAborted("no containerd in this run")
        client = self._ctrd.get(namespace)
        if client is None:
            client = ctrd_mod.Containerd(
                self.containerd_address, namespace, timeout=60.0, lease=ctrd_mod.LEASE
            )
            self._ctrd[namespace] = client
        return client

    def phase(
        self,
        name: str,
        clients: int,
        make_op: OpFactory,
        params: Sequence[Any],
        *,
        backend: str = "berth",
        shape: str | None = None,
        shims: bool = True,
    ) -> PhaseStats:
        """Run one measured phase against ``backend`` and keep its figures.

        ``shape`` picks the clients (``processes`` or ``threads``; default
        the first of the run's shapes).
        """
        socket = None
        if backend == "containerd" and self.containerd_address:
            socket = self.containerd_address.removeprefix("unix://")
        sampler = ResourceSampler(self.pid(backend), backend, self.namespaces, socket, shims=shims)
        stats = run_phase(
            self.pools[shape or self.shapes[0]],
            name,
            clients,
            make_op,
            params,
            self.options.load,
            meters=[sampler],
            backend=backend,
        )
        stats = replace(stats, resources=sampler.figures(stats.ops))
        self.outcome.phases.append(stats)
        self.target.check_alive()
        return stats

    def tagged(self, when: str, shape: str) -> str:
        """``when`` of a check, naming the shape unless every client is a process."""
        return when if self.shapes == ["processes"] else f"{when} ({shape})"

    def breach(self, message: str) -> None:
        """Record a correctness breach (the run will exit 1)."""
        self.outcome.breaches.append(message)

    def close(self) -> None:
        for client in self._ctrd.values():
            client.close()
        for own in self._berth.values():
            own.close()


def containerd_address(options: RunOptions) -> str | None:
    """containerd's address with ``--compare containerd``, else None.

    Exits 2 (with the reason) when the comparison cannot be honoured.
    """
    if options.compare is None:
        return None
    if options.compare != "containerd":
        usage_error(f"--compare {options.compare!r}: only containerd is known")
    if (why := ctrd_mod.available()) is not None:
        usage_error(f"--compare containerd needs grpcio and containerd: {why}")
    return options.containerd_address or DEFAULT_CONTAINERD


@contextlib.contextmanager
def _leases(session: Session) -> Iterator[None]:
    """The bench's lease in each namespace on containerd, for the run's duration."""
    if session.containerd_address is None:
        yield
        return
    for ns in session.namespaces:
        session.ctrd(ns).create_lease(ctrd_mod.LEASE)
    try:
        yield
    finally:
        for ns in session.namespaces:
            with contextlib.suppress(*_ABORTING):
                session.ctrd(ns).delete_lease(ctrd_mod.LEASE)


@contextlib.contextmanager
def open_session(
    options: RunOptions, target: Target, namespaces: tuple[str, ...]
) -> Iterator[Session]:
    """Workers, containerd (with ``--compare``) and the bench's leases, for one load run."""
    containerd = containerd_address(options)
    with worker_pools(
        options.shapes,
        max(options.clients),
        target.address,
        timeout=options.timeout,
        containerd_address=containerd,
    ) as pools:
        session = Session(options, target, pools, namespaces, containerd)
        try:
            with _leases(session):
                yield session
        finally:
            session.close()


def churn_json(outcome: LoadOutcome) -> dict[str, Any]:
    """The figures of churn phases run inside another scenario (tasks, images)."""
    return {
        "phases": [p.to_json() for p in outcome.phases],
        "comparison": _comparison(outcome.phases),
        "checks": outcome.checks,
        "breaches": outcome.breaches,
        "notes": outcome.notes,
    }


def _comparison(phases: Sequence[PhaseStats]) -> list[dict[str, Any]]:
    rows = []
    for berth_phase, other in pair_phases(phases):
        if other is None:
            continue

        def ratio(a: float, b: float) -> float | None:
            return round(a / b, 3) if a > 0 and b > 0 else None

        rows.append(
            {
                "phase": berth_phase.phase,
                "shape": berth_phase.shape,
                "clients": berth_phase.clients,
                "ops_per_s_ratio": ratio(berth_phase.ops_per_s, other.ops_per_s),
                "p50_ratio": ratio(other.p50_ms, berth_phase.p50_ms),
                "p99_ratio": ratio(other.p99_ms, berth_phase.p99_ms),
                "p99_9_ratio": ratio(other.p999_ms, berth_phase.p999_ms),
                "meaning": "ops/s berth / containerd; latencies containerd / berth",
            }
        )
    return rows


def plots_for(options: RunOptions, scenario: str, phases: Sequence[PhaseStats]) -> dict[str, Any]:
    """With ``--plots``: write the PNG files and say where (or why not); for the report."""
    if options.plots is None:
        return {"skipped": "no --plots directory"}
    from bench.plots import write_plots

    plots = write_plots(phases, options.plots, scenario)
    if "skipped" in plots:
        print(f"plots skipped: {plots['skipped']}")
    else:
        print(f"plots: {', '.join(plots['files'])}")
    return plots


def run_load_scenario(
    scenario: str,
    options: RunOptions,
    measure: Callable[[Session], None],
    *,
    namespaces: tuple[str, ...],
    config: dict[str, Any],
    clean: str,
) -> int:
    """Run ``measure`` against the target (and containerd), then report; the exit code."""
    containerd = containerd_address(options)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    idle = measure_busy()
    aborted: str | None = None
    session: Session | None = None
    daemon: dict[str, Any] = {"spawned": None}
    try:
        with open_target(options.address, workdir=options.workdir) as target:
            try:
                with worker_pools(
                    options.shapes,
                    max(options.clients),
                    target.address,
                    timeout=options.timeout,
                    containerd_address=containerd,
                ) as pools:
                    session = Session(options, target, pools, namespaces, containerd)
                    try:
                        with _leases(session):
                            measure(session)
                    finally:
                        session.close()
            except _ABORTING as exc:
                aborted = f"{type(exc).__name__}: {exc}"
            target.stop()
            daemon = target.to_json(session.pid("berth") if session else None)
    except TargetError as exc:
        aborted = f"{type(exc).__name__}: {exc}"
    outcome = session.outcome if session is not None else LoadOutcome()
    lines = format_phases(outcome.phases)
    lines += [f"note: {note}" for note in outcome.notes]
    lines += closing_lines([], outcome.breaches, clean)[3:]  # no targets: just the verdict
    print("\n".join(lines))
    if (warning := busy_warning(idle)) is not None:
        print(warning)
    if aborted:
        print(f"ABORTED: {aborted}")
    plots = plots_for(options, scenario, outcome.phases)
    report = {
        "scenario": scenario,
        "started_at": started,
        "machine": {**machine_json(), "host_busy_before": idle},
        "config": {
            "address": options.address,
            "clients": list(options.clients),
            "duration_s": None if options.load.ops is not None else options.load.duration,
            "ops": options.load.ops,
            "warmup_s": options.load.warmup,
            "rate": options.load.rate,
            "mode": "open" if options.load.rate else "closed",
            "client_shape": options.client_shape,
            "shapes": list(options.shapes),
            "timeout_s": options.timeout,
            "compare": options.compare,
            "containerd_address": containerd,
            "namespaces": list(namespaces),
            **config,
        },
        "phases": [p.to_json() for p in outcome.phases],
        "comparison": _comparison(outcome.phases),
        "correctness": {
            "checks": outcome.checks,
            "breaches": outcome.breaches,
            "breach_count": len(outcome.breaches),
        },
        **outcome.extra,
        "notes": outcome.notes,
        "plots": plots,
        "daemon": daemon,
        "containerd": None
        if containerd is None
        else {"address": containerd, "pid": session.pid("containerd") if session else None},
        "ctr": shutil.which("ctr"),
        "aborted": aborted,
    }
    write_json(options.json_path, report)
    print(f"report: {options.json_path}")
    return 1 if outcome.breaches or aborted else 0
