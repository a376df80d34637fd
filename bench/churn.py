"""Churn phases that the ``tasks`` and ``images`` scenarios run with ``--churn``.

They use the load engine (:mod:`bench.session`) on the same daemon, after
the scenario's own one-at-a-time measurements, with the common load
options (``--clients``, ``--duration``/``--ops``, ``--warmup``, ``--rate``,
``--compare``, ``--client-shape``):

- ``tasks --churn``: short task lifecycles (:func:`bench.task_ops.lifecycle_op`)
  in namespace ``bench-churn``; every started task's exit must be observed;
- ``images --churn``: snapshot Prepare + Remove on the imported image's
  top layer (:func:`bench.snapshot_ops.snapshot_op`), berth only (the
  containerd side of ``images`` runs through ``ctr``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bench.load import RunOptions
from bench.session import LoadOutcome, Session, open_session
from bench.snapshot_ops import SnapshotParams, snapshot_op
from bench.target import Target
from bench.task_setup import clear_namespace, lifecycle_phases

__all__ = ["TASK_CHURN_NS", "snapshot_churn", "task_churn"]

TASK_CHURN_NS = "bench-churn"


def task_churn(options: RunOptions, target: Target, rootfs: Path) -> LoadOutcome:
    """Lifecycle churn at each client count, on berth (and containerd with --compare)."""
    with open_session(options, target, (TASK_CHURN_NS,)) as session:
        try:
            _task_churn(session, rootfs)
        finally:
            for backend in session.backends:
                clear_namespace(session, backend, TASK_CHURN_NS)
        return session.outcome


def _task_churn(session: Session, rootfs: Path) -> None:
    for backend in session.backends:
        clear_namespace(session, backend, TASK_CHURN_NS)
    for _ in lifecycle_phases(session, TASK_CHURN_NS, rootfs, "churn at {clients}"):
        pass


def snapshot_churn(options: RunOptions, target: Target, ns: str, parent: str) -> LoadOutcome:
    """Prepare + Remove on ``parent`` at each client count, berth only."""
    berth_only = replace(options, compare=None)
    with open_session(berth_only, target, (ns,)) as session:
        params = SnapshotParams(ns, parent)
        for clients in options.clients:
            for shape in session.shapes:
                session.phase(
                    "snapshot", clients, snapshot_op, [params] * clients, shape=shape, shims=False
                )
        return session.outcome
