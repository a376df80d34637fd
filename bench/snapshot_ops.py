"""Worker-side snapshot churn: Prepare a writable snapshot on a committed parent, then Remove it.

Works on either backend through :class:`bench.api.SnapshotsApi`. The
parent is the image's top chain id (``berth-bench images --churn``) or a
committed base the parent made (:func:`make_base`, ``mixed``). A Prepare
that answers no mounts, or a Remove that fails, is an error of the call.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import dataclass

from bench.api import SnapshotsApi
from bench.load import Op
from bench.workers import WorkerContext

__all__ = ["NoMounts", "SnapshotParams", "make_base", "remove_base", "snapshot_op"]


class NoMounts(Exception):
    """A Prepare answered without mounts."""

    code = "NO_MOUNTS"


@dataclass(frozen=True)
class SnapshotParams:
    """Namespace and the committed parent to prepare on."""

    ns: str
    parent: str


def snapshot_op(ctx: WorkerContext, params: SnapshotParams) -> Op:
    """Prepare a snapshot on ``params.parent`` and remove it: one call of the phase."""
    snapshots = ctx.snapshots(params.ns)
    seq = itertools.count()
    prefix = f"w{ctx.index}-{os.getpid()}-snap"

    def op() -> None:
        key = f"{prefix}{next(seq)}"
        mounts = snapshots.prepare(key, params.parent)
        if not mounts:
            with contextlib.suppress(Exception):
                snapshots.remove(key)
            raise NoMounts(f"Prepare {key} on {params.parent}: no mounts")
        snapshots.remove(key)

    return op


def make_base(snapshots: SnapshotsApi, name: str) -> str:
    """A committed, empty snapshot ``name`` to prepare on (made again if a run left one)."""
    with contextlib.suppress(Exception):
        snapshots.remove(name)
    active = f"{name}-active"
    with contextlib.suppress(Exception):
        snapshots.remove(active)
    snapshots.prepare(active, "")
    snapshots.commit(name, active)
    return name


def remove_base(snapshots: SnapshotsApi, name: str) -> None:
    """Remove the base (best effort: a snapshot left by a failed call still holds it)."""
    with contextlib.suppress(Exception):
        snapshots.remove(name)
