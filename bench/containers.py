"""``berth-bench containers``: the benchmark of the Containers service.

For each client count (``--clients``, default 1 and 16), in namespace
``bench-c<N>``, with one worker process per client (``--client-shape
threads``: the clients are threads of one process, in ``bench-c<N>-threads``;
``both``: each phase in both shapes, one after the other):

1. ``create``: unique ids, label ``bench=1``, a small OCI spec;
2. ``get``: random ids among those the worker created;
3. ``update``: label ``k`` of random ids, mask ``labels.k``;
4. ``list-1000``: List of namespace ``bench-list``, filled beforehand with
   exactly 1,000 containers (a listing of any other size is an error);
5. ``delete``: the ids the worker created, oldest first.

Correctness while loading: after create, update and delete, the
namespace is listed and compared with the workers' acknowledged creates
minus acknowledged deletes; an acknowledged container missing, or one
listed that no write can explain, is a breach. So is ``NOT_FOUND`` for an
acknowledged id (get, update, delete) and a List of ``bench-list`` that
does not hold 1,000. Any breach makes the run exit 1.

Scale (``--scale N``, 0 to skip), before the load phases: Get latency at
1 client with 1,000 containers stored in ``bench-scale``, then again after
bulk-creating up to N; with a spawned daemon, its RssAnon before and after
that bulk creation gives the memory per stored container. The namespace
is emptied again before the load phases.

With a spawned daemon, each phase also reports the CPU the daemon used
(in cores) and how busy the whole machine was: on a small machine the
client processes compete with the daemon for CPU.
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import berth
from bench import container_ops as ops
from bench import mixed
from bench.container_compare import ContainerdSide
from bench.ctrd import available as ctrd_available
from bench.load import OpFactory, RunOptions, run_phase
from bench.options import at_least_one, busy_warning, measure_busy, usage_error
from bench.report import Outcome, format_report, report_json, write_json
from bench.resources import ResourceSampler, listener_pid
from bench.session import DEFAULT_CONTAINERD, plots_for
from bench.stats import PhaseStats, merge_errors
from bench.table import format_phases
from bench.target import CpuMeter, Target, TargetError, open_target
from bench.targets import LIST_PHASE, MemoryResult, ScaleResult, evaluate_targets
from bench.workers import Job, WorkerFailed, WorkerPool, worker_pools

__all__ = ["add_arguments", "run"]

NS_LIST = "bench-list"
NS_SCALE = "bench-scale"
LIST_SIZE = 1_000
SCALE_BASE = 1_000  # containers stored for the first Get measurement of the scale check
# Bulk fills: few processes with deep pipelines load berthd harder than many
# shallow ones, since every client process also takes CPU from the daemon
# (on 2 cores: 16 processes x 4 in flight ~5,400 creates/s, 2 x 64 ~11,000/s).
BULK_WORKERS = 2  # worker processes that bulk-create (at most the pool's size)
BULK_IN_FLIGHT = 128  # calls in flight across them, pipelined on AsyncClients
_LIST_METHOD = "containerd.v1.Containers/List"
_SETTLE_S = 0.5  # pause before reading the daemon's memory


class BenchAborted(RuntimeError):
    """The run cannot go on (a bulk fill failed, the daemon died)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this scenario only (bench.cli adds the common ones)."""
    parser.add_argument(
        "--scale",
        type=int,
        default=100_000,
        metavar="N",
        help=f"containers stored for the Get scale check (> {SCALE_BASE:,}; 0 skips it)",
    )
    parser.add_argument(
        "--mix",
        type=mixed.parse_container_mix,
        metavar="OP=W,...",
        help="also run a phase of weighted container calls, e.g."
        " create=1,get=4,list=1,update=2,delete=1 (correctness checked as for the others)",
    )
    parser.add_argument(
        "--bulk-workers",
        type=at_least_one,
        default=BULK_WORKERS,
        metavar="N",
        help=f"processes that fill namespaces in bulk (default {BULK_WORKERS})",
    )
    parser.add_argument(
        "--bulk-in-flight",
        type=at_least_one,
        default=BULK_IN_FLIGHT,
        metavar="N",
        help=f"calls in flight across them when filling in bulk (default {BULK_IN_FLIGHT})",
    )


def load_namespace(clients: int, shape: str = "processes") -> str:
    """The namespace the load phases use at ``clients`` clients of ``shape``."""
    return f"bench-c{clients}" if shape == "processes" else f"bench-c{clients}-{shape}"


def mix_namespace(clients: int, shape: str = "processes") -> str:
    """The namespace of ``--mix`` at ``clients`` clients of ``shape``."""
    return f"bench-mix-c{clients}" if shape == "processes" else f"bench-mix-c{clients}-{shape}"


class _Bench:
    """One run against one daemon: phases, checks and their results."""

    def __init__(
        self,
        pools: dict[str, WorkerPool],
        target: Target,
        options: RunOptions,
        args: argparse.Namespace,
    ) -> None:
        self.pools = pools  # by client shape, in the order the phases run them
        self.shapes = list(pools)
        self.pool = pools[self.shapes[0]]  # bulk fills and the scale check
        self.target = target
        self.options = options
        self.bulk_workers: int = args.bulk_workers
        self.bulk_in_flight: int = args.bulk_in_flight
        self.outcome = Outcome()
        self.mix: dict[str, float] | None = args.mix
        # Listing 100,000 containers takes a while: a generous timeout.
        self.client = berth.Client(target.address, timeout=max(options.timeout or 0, 120.0))
        self.ctrd: ContainerdSide | None = None
        self.backends = ["berth"]
        if options.compare == "containerd":
            address = options.containerd_address or DEFAULT_CONTAINERD
            self.ctrd = ContainerdSide(address, max(options.timeout or 0, 120.0))
            self.backends.append("containerd")
        self.pids = {"berth": target.pid or listener_pid(target.address)}
        if self.ctrd is not None:
            self.pids["containerd"] = listener_pid(self.ctrd.address)

    def close(self) -> None:
        self.client.close()
        if self.ctrd is not None:
            self.ctrd.close()

    def listed_ids(self, ns: str, backend: str = "berth") -> set[str]:
        """The ids List returns for namespace ``ns``."""
        if backend == "containerd" and self.ctrd is not None:
            return self.ctrd.listed_ids(ns)
        reply = self.client.call(_LIST_METHOD, {"filter": ""}, namespace=ns)
        return {c["id"] for c in reply["containers"]}

    def bulk(self, job: Job, ns: str, prefix: str, start: int, stop: int) -> None:
        """Create (or delete) ``<prefix><start..stop-1>`` in ``ns``, pipelined on the pool."""
        self.bulk_ids(job, ns, [f"{prefix}{i}" for i in range(start, stop)])

    def bulk_ids(self, job: Job, ns: str, ids: Sequence[str]) -> None:
        workers = max(1, min(self.pool.size, self.bulk_workers, len(ids)))
        window = max(1, self.bulk_in_flight // workers)
        shares = [ops.Bulk(ns, tuple(ids[w::workers]), window) for w in range(workers)]
        began = time.monotonic()
        results: list[ops.BulkResult] = self.pool.run(job, shares)
        seconds = time.monotonic() - began
        acked = sum(r.acked for r in results)
        errors = merge_errors(r.errors for r in results)
        self.outcome.bulks.append(
            {
                "job": getattr(job, "__name__", str(job)),
                "ns": ns,
                "count": len(ids),
                "acked": acked,
                "seconds": round(seconds, 3),
                "per_s": round(acked / seconds, 1) if seconds else 0.0,
                "workers": workers,
                "in_flight": workers * window,
                "errors": errors,
            }
        )
        if errors:
            raise BenchAborted(f"bulk {job.__name__} in {ns} failed: {errors}")

    def load_namespaces(self) -> list[str]:
        """The namespaces of the load phases, at every client count and shape."""
        return [load_namespace(n, shape) for n in self.options.clients for shape in self.shapes]

    def prepare(self) -> None:
        """Empty the namespaces used (a reused daemon); fill ``bench-list``."""
        for ns in [NS_LIST, NS_SCALE, *self.load_namespaces()]:
            if leftovers := sorted(self.listed_ids(ns)):
                self.bulk_ids(ops.bulk_delete, ns, leftovers)
        self.bulk(ops.bulk_create, NS_LIST, "l-", 0, LIST_SIZE)
        if (count := len(self.listed_ids(NS_LIST))) != LIST_SIZE:
            raise BenchAborted(f"{NS_LIST} holds {count} containers after filling {LIST_SIZE}")
        if self.ctrd is not None:
            for ns in [NS_LIST, *self.load_namespaces()]:
                self.ctrd.empty(ns)
            self.ctrd.fill(NS_LIST, "l-", LIST_SIZE)

    def phase(
        self,
        name: str,
        clients: int,
        make_op: OpFactory,
        params: Sequence[Any],
        backend: str = "berth",
        shape: str | None = None,
    ) -> PhaseStats:
        meter = CpuMeter(self.pids.get(backend))
        sampler = ResourceSampler(self.pids.get(backend), backend, (), shims=False)
        stats = run_phase(
            self.pools[shape or self.shapes[0]],
            name,
            clients,
            make_op,
            params,
            self.options.load,
            meter,
            meters=[sampler],
            backend=backend,
        )
        stats = replace(
            stats,
            daemon_cores=meter.daemon_cores,
            host_busy=meter.host_busy,
            resources=sampler.figures(stats.ops),
        )
        self.target.check_alive()
        for code in ("NOT_FOUND", ops.ListMismatch.code):
            if stats.errors.get(code):
                self.outcome.breaches.append(
                    f"{backend} {name} at {clients} clients ({stats.shape}):"
                    f" {stats.errors[code]} x {code} on containers that exist"
                )
        return stats

    def load_phases(self, clients: int) -> None:
        """The five phases at ``clients`` clients, in each shape and on each backend in turn.

        Each shape has its own namespace (``bench-c<N>``, ``bench-c<N>-threads``),
        so each shape's phases find the same store and each check its own ledgers.
        """
        list_params = [(NS_LIST, LIST_SIZE)] * clients
        steps: list[tuple[str, OpFactory, str | None]] = [
            ("create", ops.create_op, "after create"),
            ("get", ops.get_op, None),
            ("update", ops.update_op, "after update"),
            (LIST_PHASE, ops.list_op, None),
            ("delete", ops.delete_op, "after delete"),
        ]
        for name, make_op, check in steps:
            for shape in self.shapes:
                ns = load_namespace(clients, shape)
                params: list[Any] = list_params if name == LIST_PHASE else [ns] * clients
                for backend in self.backends:
                    self.outcome.phases.append(
                        self.phase(name, clients, make_op, params, backend, shape)
                    )
                    if check is not None:
                        self.check(ns, clients, check, backend, shape)
        if self.mix:
            self.mixed_phase(clients)

    def mixed_phase(self, clients: int) -> None:
        """``--mix``: one phase of weighted container calls in each shape, then its check."""
        assert self.mix is not None
        for shape in self.shapes:
            ns = mix_namespace(clients, shape)
            for backend in self.backends:
                if self.ctrd is not None and backend == "containerd":
                    self.ctrd.empty(ns)
                elif leftovers := sorted(self.listed_ids(ns)):
                    self.bulk_ids(ops.bulk_delete, ns, leftovers)
                params = [mixed.container_mix(self.mix, ns)] * clients
                stats = self.phase("mix", clients, mixed.mixed_op, params, backend, shape)
                self.outcome.phases.append(stats)
                self.check(ns, clients, "after mix", backend, shape)

    def check(
        self,
        ns: str,
        clients: int,
        when: str,
        backend: str = "berth",
        shape: str | None = None,
    ) -> None:
        """Compare List of ``ns`` with what the clients of ``shape`` had acknowledged."""
        shape = shape or self.shapes[0]
        pool = self.pools[shape]
        previous, pool.backend = pool.backend, backend
        try:
            books: list[ops.Ledger] = pool.run(ops.ledger, [ns] * clients)
        finally:
            pool.backend = previous
        check, breaches = ops.compare_ledgers(books, self.listed_ids(ns, backend))
        self.outcome.checks.append(
            {"backend": backend, "shape": shape, "ns": ns, "clients": clients, "when": when} | check
        )
        self.outcome.breaches += [f"{backend} {ns} {when}: {breach}" for breach in breaches]

    def scale_check(self, scale: int) -> None:
        """Get p50 with 1,000 then ``scale`` stored, and memory per container; then empty it.

        It runs first, so that the memory baseline is not blurred by what the
        load phases left behind; emptying the namespace afterwards lets the
        load phases run on a small store, as containerd's figures were taken.
        """
        self.bulk(ops.bulk_create, NS_SCALE, "s-", 0, SCALE_BASE)
        small = self.phase("get", 1, ops.get_range_op, [(NS_SCALE, "s-", SCALE_BASE)])
        before = self._settled_rss()
        self.bulk(ops.bulk_create, NS_SCALE, "s-", SCALE_BASE, scale)
        after = self._settled_rss()
        large = self.phase("get", 1, ops.get_range_op, [(NS_SCALE, "s-", scale)])
        self.outcome.scale = ScaleResult(small, SCALE_BASE, large, scale)
        listed = len(self.listed_ids(NS_SCALE))
        self.outcome.checks.append(
            {"ns": NS_SCALE, "when": "after bulk create", "expected": scale, "listed": listed}
        )
        if listed != scale:
            self.outcome.breaches.append(
                f"{NS_SCALE}: {listed} listed after {scale} acknowledged creates"
            )
        self.bulk(ops.bulk_delete, NS_SCALE, "s-", 0, scale)
        emptied = self._settled_rss()
        if before is not None and after is not None:
            self.outcome.memory = MemoryResult(before, after, scale - SCALE_BASE, emptied)

    def _settled_rss(self) -> int | None:
        time.sleep(_SETTLE_S)
        return self.target.rss_anon_kib()

    def cleanup(self) -> None:
        """Remove what this run stored (only on a daemon it did not spawn)."""
        for ns in [NS_LIST, NS_SCALE, *self.load_namespaces()]:
            if leftovers := sorted(self.listed_ids(ns)):
                self.bulk_ids(ops.bulk_delete, ns, leftovers)


def _config(options: RunOptions, args: argparse.Namespace, spawned: bool) -> dict[str, Any]:
    return {
        "address": options.address,
        "spawned": spawned,
        "clients": list(options.clients),
        "duration_s": None if options.load.ops is not None else options.load.duration,
        "ops": options.load.ops,
        "warmup_s": options.load.warmup,
        "timeout_s": options.timeout,
        "scale": args.scale,
        "list_size": LIST_SIZE,
        "scale_base": SCALE_BASE,
        "bulk_workers": args.bulk_workers,
        "bulk_in_flight": args.bulk_in_flight,
        "rate": options.load.rate,
        "mode": "open" if options.load.rate else "closed",
        "client_shape": options.client_shape,
        "shapes": list(options.shapes),
        "mix": args.mix,
        "compare": options.compare,
        "containerd_address": options.containerd_address,
    }


def run(options: RunOptions, args: argparse.Namespace) -> int:
    """Run the scenario; 0, or 1 on a correctness breach or an aborted run."""
    scale: int = args.scale
    if options.compare and (why := ctrd_available()) is not None:
        usage_error(f"--compare containerd: {why}")
    if scale != 0 and scale <= SCALE_BASE:
        usage_error(f"--scale must be 0 or more than {SCALE_BASE:,}")
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    idle = measure_busy()
    aborted: str | None = None
    bench: _Bench | None = None
    with open_target(options.address, workdir=options.workdir) as target:
        try:
            with worker_pools(
                options.shapes,
                max(options.clients),
                target.address,
                timeout=options.timeout,
                containerd_address=options.compare
                and (options.containerd_address or DEFAULT_CONTAINERD),
            ) as pools:
                bench = _Bench(pools, target, options, args)
                try:
                    bench.prepare()
                    if scale:
                        bench.scale_check(scale)
                    for clients in options.clients:
                        bench.load_phases(clients)
                    if not target.spawned:
                        bench.cleanup()
                finally:
                    bench.close()
        except (BenchAborted, TargetError, WorkerFailed, berth.BerthError) as exc:
            aborted = f"{type(exc).__name__}: {exc}"
        target.stop()
        daemon = target.to_json()
    outcome = bench.outcome if bench else Outcome()
    targets = evaluate_targets(outcome.phases, outcome.scale, outcome.memory)
    print(format_report(outcome, targets))
    if options.compare or args.mix:
        print("\nmeasured in this run, side by side:" if options.compare else "")
        print("\n".join(format_phases(outcome.phases)))
    if (warning := busy_warning(idle)) is not None:
        print(warning)
    if aborted:
        print(f"ABORTED: {aborted}")
    if target.spawned and target.exit_code != 0:
        print(f"note: berthd exited {target.exit_code} on SIGTERM; log tail in the JSON report")
    report = report_json(
        outcome,
        targets,
        scenario="containers",
        started=started,
        config=_config(options, args, target.spawned) | {"host_busy_before": idle},
        daemon=daemon,
        aborted=aborted,
    )
    report["plots"] = plots_for(options, "containers", outcome.phases)
    write_json(options.json_path, report)
    print(f"report: {options.json_path}")
    return 1 if outcome.breaches or aborted else 0
