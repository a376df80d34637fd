"""``berth-bench mixed``: a weighted mix of container, task, exec and snapshot calls at once.

Each call of a client picks an operation by weight (``--mix``, default
``create=20,get=35,update=15,list=5,delete=15,lifecycle=2,exec=3,snapshot=5``):

- ``create``, ``get``, ``update``, ``delete``: containers of the client's
  own (label ``bench=1``); get, update and delete pick among those it
  created and has not deleted (with none, it creates instead);
- ``list``: List of the namespace with the filter ``labels.bench==1``;
- ``lifecycle``: a short task of ``true``, its exit observed;
- ``exec``: ``true`` exec'd into one of ``--tasks`` running tasks, its exit observed;
- ``snapshot``: Prepare on a committed base, then Remove.

The table has one row per operation under the phase's row. Correctness:
afterwards, List with ``labels.bench==1`` must give exactly the
acknowledged creates minus the acknowledged deletes (calls of unknown
outcome aside), and every started process's exit must have been seen.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import container_ops as cops
from bench.api import SnapshotsApi
from bench.load import NamedFailure, Op, OutOfWork, RunOptions
from bench.options import at_least_one
from bench.session import Session, run_load_scenario
from bench.snapshot_ops import SnapshotParams, make_base, remove_base, snapshot_op
from bench.task_ops import TaskParams, exec_op, lifecycle_op
from bench.task_setup import RunningTasks, check_exits, clear_namespace, scratch_rootfs
from bench.workers import WorkerContext

__all__ = [
    "DEFAULT_MIX",
    "NAMESPACE",
    "add_arguments",
    "container_mix",
    "mixed_op",
    "parse_container_mix",
    "parse_mix",
    "run",
]

NAMESPACE = "bench-mixed"
BASE = "bench-mixed-base"
DEFAULT_MIX = "create=20,get=35,update=15,list=5,delete=15,lifecycle=2,exec=3,snapshot=5"
OPERATIONS = ("create", "get", "update", "list", "delete", "lifecycle", "exec", "snapshot")
_FILTER = "labels.bench==1"


def parse_mix(text: str) -> dict[str, float]:
    """``name=weight,...`` into weights; names from :data:`OPERATIONS`."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.strip().partition("=")
        if name not in OPERATIONS:
            raise argparse.ArgumentTypeError(f"unknown operation {name!r} in --mix")
        try:
            weights[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad weight in --mix: {part!r}") from None
    if not weights or sum(weights.values()) <= 0 or min(weights.values()) < 0:
        raise argparse.ArgumentTypeError(f"--mix needs positive weights: {text!r}")
    return weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this scenario only (bench.cli adds the common ones)."""
    parser.add_argument(
        "--mix",
        type=parse_mix,
        default=parse_mix(DEFAULT_MIX),
        metavar="OP=W,...",
        help=f"operations and their weights (default {DEFAULT_MIX})",
    )
    parser.add_argument(
        "--tasks",
        type=at_least_one,
        default=2,
        metavar="M",
        help="running tasks the exec operation uses (default 2)",
    )


@dataclass(frozen=True)
class MixParams:
    """One client's share of a mixed phase."""

    weights: tuple[tuple[str, float], ...]
    task: TaskParams
    snapshot: SnapshotParams


CONTAINER_OPERATIONS = ("create", "get", "update", "list", "delete")


def parse_container_mix(text: str) -> dict[str, float]:
    """``--mix`` of ``berth-bench containers``: container operations only."""
    weights = parse_mix(text)
    if other := sorted(set(weights) - set(CONTAINER_OPERATIONS)):
        raise argparse.ArgumentTypeError(f"not a container operation: {other}")
    return weights


def container_mix(weights: dict[str, float], ns: str) -> MixParams:
    """A client's share of a mix of container calls only, in namespace ``ns``."""
    return MixParams(tuple(weights.items()), TaskParams(ns, ""), SnapshotParams(ns, ""))


def _container_ops(ctx: WorkerContext, ns: str) -> dict[str, Op]:
    """Container calls on the client's own live containers (creates when it has none)."""
    api = ctx.containers(ns)
    book = cops.worker_ledger(ctx, ns)
    create = cops.create_op(ctx, ns)
    rng = random.Random(3000 + ctx.index)

    def live() -> str:
        if book.next_delete >= len(book.created):
            raise OutOfWork
        return book.created[rng.randrange(book.next_delete, len(book.created))]

    def get() -> None:
        api.get(live())

    def update() -> None:
        api.update(live(), labels={"k": str(rng.random())}, update_mask=["labels.k"])

    def listing() -> None:
        api.list(_FILTER)

    return {
        "create": create,
        "get": get,
        "update": update,
        "list": listing,
        "delete": cops.delete_op(ctx, ns),
    }


def mixed_op(ctx: WorkerContext, params: MixParams) -> Op:
    """Pick an operation by weight for each call; name it, so the table splits by operation."""
    ops: dict[str, Callable[[], object]] = dict(_container_ops(ctx, params.task.ns))
    names = [name for name, _ in params.weights]
    if "lifecycle" in names:
        ops["lifecycle"] = lifecycle_op(ctx, params.task)
    if "exec" in names:
        ops["exec"] = exec_op(ctx, params.task)
    if "snapshot" in names:
        ops["snapshot"] = snapshot_op(ctx, params.snapshot)
    weights = [w for _, w in params.weights]
    rng = random.Random(4000 + ctx.index)

    def op() -> str:
        name = rng.choices(names, weights)[0]
        try:
            ops[name]()
        except OutOfWork:
            name = "create"  # nothing of its own to get, update or delete yet
            try:
                ops[name]()
            except Exception as exc:
                raise NamedFailure(name, exc) from exc
        except Exception as exc:
            raise NamedFailure(name, exc) from exc
        return name

    return op


def _check_containers(session: Session, backend: str, clients: int, shape: str) -> None:
    """List the namespace against the ledgers of every client of every shape.

    All shapes write into the one namespace (their ids differ: ``w<i>-`` and
    ``t<i>-``), so what is listed after any phase is what all of them wrote.
    """
    books: list[cops.Ledger] = []
    for pool in session.pools.values():
        previous, pool.backend = pool.backend, backend
        try:
            books += pool.run(cops.ledger, [NAMESPACE] * pool.size)
        finally:
            pool.backend = previous
    pool = session.pools[shape]
    previous, pool.backend = pool.backend, backend
    try:
        listed: set[str] = pool.run(cops.listed_ids, [(NAMESPACE, _FILTER)])[0]
    finally:
        pool.backend = previous
    check, breaches = cops.compare_ledgers(books, listed)
    when = session.tagged("after mix", shape)
    session.outcome.checks.append(
        {"backend": backend, "shape": shape, "ns": NAMESPACE, "clients": clients, "when": when}
        | check
    )
    for breach in breaches:
        session.breach(f"{backend} {NAMESPACE} {when} at {clients} clients: {breach}")


def _measure(session: Session, weights: dict[str, float], tasks: int) -> None:
    with scratch_rootfs(session.options.workdir) as rootfs:
        running = RunningTasks(session, NAMESPACE, rootfs)
        try:
            ids = {}
            for backend in session.backends:
                clear_namespace(session, backend, NAMESPACE)
                ids[backend] = running.start(backend, tasks) if "exec" in weights else [""]
                make_base(_snapshots(session, backend), BASE)
            for clients in session.options.clients:
                for shape in session.shapes:
                    for backend in session.backends:
                        tasks_of = ids[backend]
                        _mixed_phase(session, weights, rootfs, tasks_of, clients, backend, shape)
        finally:
            running.stop_all()
            for backend in session.backends:
                remove_base(_snapshots(session, backend), BASE)
            for backend in session.backends:
                clear_namespace(session, backend, NAMESPACE)


def _mixed_phase(
    session: Session,
    weights: dict[str, float],
    rootfs: Path,
    tasks: list[str],
    clients: int,
    backend: str,
    shape: str,
) -> None:
    """One mixed phase on ``backend`` by the clients of ``shape``, then its checks."""
    params = [
        MixParams(
            tuple(weights.items()),
            TaskParams(NAMESPACE, str(rootfs), tasks[i % len(tasks)]),
            SnapshotParams(NAMESPACE, BASE),
        )
        for i in range(clients)
    ]
    session.phase("mixed", clients, mixed_op, params, backend=backend, shape=shape)
    check_exits(session, backend, NAMESPACE, clients, f"mixed at {clients}", shape)
    _check_containers(session, backend, clients, shape)


def _snapshots(session: Session, backend: str) -> SnapshotsApi:
    if backend == "containerd":
        return session.ctrd(NAMESPACE).snapshots
    return session.berth_client(NAMESPACE).snapshots


def run(options: RunOptions, args: argparse.Namespace) -> int:
    """Run the scenario; 0, or 1 on a correctness breach or an aborted run."""
    weights: dict[str, float] = args.mix
    tasks: int = args.tasks
    return run_load_scenario(
        "mixed",
        options,
        lambda session: _measure(session, weights, tasks),
        namespaces=(NAMESPACE,),
        config={"mix": weights, "tasks": tasks},
        clean="List matched the acknowledged writes; every started process's exit was observed",
    )
