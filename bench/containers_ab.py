"""``berth-bench containers-ab``: Containers Create/Update/Delete on two berthds, alternating.

What a change costs, measured in one run: side **A** is the berthd of
this checkout, side **B** the berthd of another source tree
(``--berthd-tree``, e.g. ``git worktree add /tmp/berth-prelog 05382b9``,
berth before its event log), run by the same interpreter with that tree
first on ``PYTHONPATH`` (:func:`bench.target.open_target`). Both are
spawned at the start, each on a fresh root, each with its own pool of
client processes (one per client, so the two pools never share a
connection); only one side is loaded at a time.

For each client count (``--clients``, default 16) and each of
``--rounds`` R rounds, in namespace ``ab-c<N>-r<R>``: ``create`` (unique
ids, label ``bench=1``), ``update`` (label ``k`` of random own ids, mask
``labels.k``) and ``delete`` (own ids, oldest first), the same operations
as ``berth-bench containers`` (:mod:`bench.container_ops`). Each phase
runs on A then B in even rounds and B then A in odd ones, so drift of
a noisy machine falls on both sides alike. The report gives every row,
and per phase the median over the rounds of ops/s, p50 and p99 for each
side with the ratio A / B; the target (informational) is a cost of at
most 10% in ops/s (``A / B >= 0.90``).

Correctness, per side and round: after create and after delete, List of
the namespace equals the clients' acknowledged creates minus deletes.

The daemons' CPU time per call (µs/op, each side's process over its
measured windows) is reported beside, with its ratio: on a shared machine
it moves less with the neighbours' load than ops/s does.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import berth
from bench import container_ops as ops
from bench.load import OpFactory, RunOptions, run_phase
from bench.options import at_least_one, busy_warning, measure_busy, usage_error
from bench.report import machine_json, write_json
from bench.stats import PhaseStats
from bench.target import CpuMeter, Target, TargetError, open_target
from bench.workers import WorkerFailed, WorkerPool

__all__ = ["MAX_COST", "add_arguments", "run"]

MAX_COST = 0.10  # the target: A's ops/s at least 90% of B's
_STEPS: tuple[tuple[str, OpFactory], ...] = (
    ("create", ops.create_op),
    ("update", ops.update_op),
    ("delete", ops.delete_op),
)
_CHECKED = ("create", "delete")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this scenario only (bench.cli adds the common ones)."""
    parser.add_argument(
        "--berthd-tree",
        type=Path,
        required=True,
        metavar="PATH",
        help="source tree of side B's berthd (a git worktree of another commit)",
    )
    parser.add_argument(
        "--rounds",
        type=at_least_one,
        default=3,
        metavar="R",
        help="rounds of create/update/delete per side, alternating which goes first (default 3)",
    )
    parser.set_defaults(clients=(16,))


@dataclass
class _Side:
    name: str  # "A" or "B"
    label: str  # what it runs
    target: Target
    pool: WorkerPool


def _phase(
    side: _Side, name: str, clients: int, make_op: OpFactory, ns: str, options: RunOptions
) -> PhaseStats:
    meter = CpuMeter(side.target.pid)
    stats = run_phase(side.pool, name, clients, make_op, [ns] * clients, options.load, meter)
    side.target.check_alive()
    return replace(
        stats, backend=side.name, daemon_cores=meter.daemon_cores, host_busy=meter.host_busy
    )


def _check(side: _Side, ns: str, clients: int, when: str) -> tuple[dict[str, Any], list[str]]:
    books: list[ops.Ledger] = side.pool.run(ops.ledger, [ns] * clients)
    with berth.Client(side.target.address, namespace=ns, timeout=120.0) as client:
        listed = {c["id"] for c in client.containers.list()}
    figures, breaches = ops.compare_ledgers(books, listed)
    tag = f"side {side.name} {ns} after {when}"
    return {"side": side.name, "ns": ns, "when": when} | figures, [f"{tag}: {b}" for b in breaches]


def _row(stats: PhaseStats, round_: int) -> dict[str, Any]:
    cpu = None
    if stats.daemon_cores is not None and stats.ops:
        cpu = round(stats.daemon_cores * stats.seconds / stats.ops * 1e6)
    return {
        "side": stats.backend,
        "round": round_,
        "phase": stats.phase,
        "clients": stats.clients,
        "ops": stats.ops,
        "ops_per_s": round(stats.ops_per_s, 1),
        "p50_ms": round(stats.p50_ms, 3),
        "p99_ms": round(stats.p99_ms, 3),
        "p99_9_ms": round(stats.p999_ms, 3),
        "errors": stats.errors,
        "daemon_cpu_us_per_op": cpu,
        "host_busy": None if stats.host_busy is None else round(stats.host_busy, 2),
    }


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per client count and phase: each side's median over the rounds, and A / B."""
    out = []
    keys = sorted({(r["clients"], r["phase"]) for r in rows}, key=lambda k: (k[0], _order(k[1])))
    for clients, phase in keys:
        median: dict[str, dict[str, float]] = {}
        for side in ("A", "B"):
            mine = [
                r for r in rows if (r["clients"], r["phase"], r["side"]) == (clients, phase, side)
            ]
            median[side] = {
                f: statistics.median(r[f] for r in mine)
                for f in ("ops_per_s", "p50_ms", "p99_ms", "daemon_cpu_us_per_op")
                if all(r[f] is not None for r in mine)
            }
        a, b = median["A"], median["B"]
        ratio = a["ops_per_s"] / b["ops_per_s"] if b.get("ops_per_s") else None
        out.append(
            {
                "clients": clients,
                "phase": phase,
                "A": a,
                "B": b,
                "ops_per_s_ratio": None if ratio is None else round(ratio, 3),
                "p50_ratio": round(a["p50_ms"] / b["p50_ms"], 3) if b.get("p50_ms") else None,
                "p99_ratio": round(a["p99_ms"] / b["p99_ms"], 3) if b.get("p99_ms") else None,
                "cpu_per_op_ratio": round(a["daemon_cpu_us_per_op"] / b["daemon_cpu_us_per_op"], 3)
                if a.get("daemon_cpu_us_per_op") and b.get("daemon_cpu_us_per_op")
                else None,
                "meaning": "ratios A / B: ops/s below 1 and latencies above 1 are A's cost",
                "met": ratio is not None and ratio >= 1 - MAX_COST,
            }
        )
    return out


def _order(phase: str) -> int:
    return [name for name, _ in _STEPS].index(phase)


def _print(report: dict[str, Any]) -> None:
    sides = report["sides"]
    print(f"A: {sides['A']}\nB: {sides['B']}")
    header = (
        f"{'clients':>7}  {'phase':<7}{'round':>6}  {'side':<5}{'ops/s':>9}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'p99.9 ms':>10}{'CPU µs/op':>11}  errors"
    )
    print(header)
    print("-" * len(header))
    for r in report["rows"]:
        cpu = "-" if r["daemon_cpu_us_per_op"] is None else f"{r['daemon_cpu_us_per_op']:,}"
        print(
            f"{r['clients']:>7}  {r['phase']:<7}{r['round']:>6}  {r['side']:<5}"
            f"{r['ops_per_s']:>9,.0f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['p99_9_ms']:>10.3f}"
            f"{cpu:>11}  {sum(r['errors'].values()) or 0}"
        )
    print(f"\nmedian of {report['config']['rounds']} round(s), A / B:")
    header = (
        f"{'clients':>7}  {'phase':<7}{'A ops/s':>9}{'B ops/s':>9}{'ratio':>7}"
        f"{'A p50':>8}{'B p50':>8}{'ratio':>7}{'A p99':>8}{'B p99':>8}{'ratio':>7}"
        f"{'CPU/op':>8}  target"
    )
    print(header)
    print("-" * len(header))
    for s in report["summary"]:
        a, b = s["A"], s["B"]
        verdict = f"ops/s ratio >= {1 - MAX_COST:.2f} {'MET' if s['met'] else 'MISS'}"
        print(
            f"{s['clients']:>7}  {s['phase']:<7}{a['ops_per_s']:>9,.0f}{b['ops_per_s']:>9,.0f}"
            f"{s['ops_per_s_ratio'] or 0:>7.3f}{a['p50_ms']:>8.3f}{b['p50_ms']:>8.3f}"
            f"{s['p50_ratio'] or 0:>7.3f}{a['p99_ms']:>8.3f}{b['p99_ms']:>8.3f}"
            f"{s['p99_ratio'] or 0:>7.3f}{s['cpu_per_op_ratio'] or 0:>8.3f}  {verdict}"
        )


@contextlib.contextmanager
def _sides(options: RunOptions, tree: Path) -> Iterator[tuple[_Side, _Side]]:
    size = max(options.clients)
    with contextlib.ExitStack() as stack:
        a_target = stack.enter_context(open_target(None, workdir=options.workdir))
        b_target = stack.enter_context(open_target(None, workdir=options.workdir, tree=tree))
        a_pool = stack.enter_context(WorkerPool(size, a_target.address, timeout=options.timeout))
        b_pool = stack.enter_context(WorkerPool(size, b_target.address, timeout=options.timeout))
        yield (
            _Side("A", "this checkout's berthd", a_target, a_pool),
            _Side("B", f"berthd of {tree}", b_target, b_pool),
        )


def run(options: RunOptions, args: argparse.Namespace) -> int:
    """Run the scenario; 0, or 1 on a correctness breach or an aborted run."""
    tree: Path = args.berthd_tree.resolve()
    if options.address is not None:
        usage_error("containers-ab spawns both of its daemons: leave out --address")
    if not (tree / "berth" / "daemon.py").is_file():
        usage_error(f"--berthd-tree {tree}: no berth/daemon.py there")
    if options.compare or options.client_shape != "processes":
        usage_error("containers-ab takes neither --compare nor --client-shape")
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    idle = measure_busy()
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    breaches: list[str] = []
    aborted: str | None = None
    labels = {"A": "this checkout's berthd", "B": f"berthd of {tree}"}
    try:
        with _sides(options, tree) as (a, b):
            for clients in options.clients:
                for round_ in range(args.rounds):
                    ns = f"ab-c{clients}-r{round_}"
                    order = (a, b) if round_ % 2 == 0 else (b, a)
                    for name, make_op in _STEPS:
                        for side in order:
                            stats = _phase(side, name, clients, make_op, ns, options)
                            rows.append(_row(stats, round_))
                            if name in _CHECKED:
                                check, found = _check(side, ns, clients, name)
                                checks.append(check)
                                breaches += found
    except (TargetError, WorkerFailed, berth.BerthError, OSError) as exc:
        aborted = f"{type(exc).__name__}: {exc}"
    report: dict[str, Any] = {
        "scenario": "containers-ab",
        "started_at": started,
        "machine": {**machine_json(), "host_busy_before": idle},
        "config": {
            "clients": list(options.clients),
            "rounds": args.rounds,
            "duration_s": None if options.load.ops is not None else options.load.duration,
            "ops": options.load.ops,
            "warmup_s": options.load.warmup,
            "rate": options.load.rate,
            "timeout_s": options.timeout,
            "berthd_tree": str(tree),
        },
        "sides": labels,
        "rows": rows,
        "summary": _summary(rows) if rows else [],
        "checks": checks,
        "breaches": breaches,
        "aborted": aborted,
    }
    if rows:
        _print(report)
    for breach in breaches:
        print(f"BREACH: {breach}")
    if not breaches and not aborted:
        print("correctness: every listing matched the acknowledged creates minus deletes")
    if (warning := busy_warning(idle)) is not None:
        print(warning)
    if aborted:
        print(f"ABORTED: {aborted}")
    write_json(options.json_path, report)
    print(f"report: {options.json_path}")
    return 1 if breaches or aborted else 0
