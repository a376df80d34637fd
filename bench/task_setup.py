"""The parent's side of the task loads: running tasks to exec into, and emptying namespaces.

Works on either backend: berthd through :class:`berth.Client`, containerd
through :class:`bench.ctrd.Containerd`. Every container runs on the
busybox directory of the run (the spec's absolute ``root.path``,
read-only).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import berth
from bench.session import Session
from bench.task_host import task_spec
from bench.task_ops import (
    ExitLedger,
    TaskParams,
    cleanup_job,
    exit_ledger,
    lifecycle_op,
    remove_berth_container,
    remove_containerd_container,
)
from runtime.rootfs import make_busybox_rootfs

__all__ = [
    "RunningTasks",
    "check_exits",
    "clear_namespace",
    "lifecycle_phases",
    "scratch_rootfs",
]


@contextlib.contextmanager
def scratch_rootfs(workdir: str | None) -> Iterator[Path]:
    """A busybox directory for the run's containers, removed afterwards."""
    where = Path(tempfile.mkdtemp(prefix="bt-", dir=workdir or "/tmp"))
    try:
        yield make_busybox_rootfs(where / "rootfs")
    finally:
        shutil.rmtree(where, ignore_errors=True)


def clear_namespace(session: Session, backend: str, ns: str) -> list[str]:
    """Remove every task and container of ``ns`` (a reused daemon's leftovers); the ids."""
    if backend == "containerd":
        ctrd = session.ctrd(ns)
        ids = [c.id for c in ctrd.containers.list()]
        for cid in ids:
            remove_containerd_container(ctrd, cid)
        return ids
    with berth.Client(session.target.address, namespace=ns, timeout=60.0) as client:
        ids = [c["id"] for c in client.containers.list()]
        for cid in ids:
            remove_berth_container(client, cid)
    return ids


class RunningTasks:
    """Tasks running ``sleep 600`` on each backend, made by the parent and removed at the end."""

    def __init__(self, session: Session, ns: str, rootfs: Path) -> None:
        self.session, self.ns = session, ns
        self.spec = task_spec(["sleep", "600"], rootfs)
        self.ids: dict[str, list[str]] = {}

    def start(self, backend: str, count: int) -> list[str]:
        """Start ``count`` tasks on ``backend``; their container ids."""
        ids = [f"p{os.getpid()}-run{i}" for i in range(count)]
        self.ids[backend] = []
        for cid in ids:
            self.ids[backend].append(cid)
            if backend == "containerd":
                ctrd = self.session.ctrd(self.ns)
                ctrd.containers.create(cid, spec=berth.oci_spec_any(self.spec))
                ctrd.tasks.create(cid)
                ctrd.tasks.start(cid)
            else:
                with self._client() as client:
                    client.containers.create(cid, spec=self.spec)
                    client.tasks.create(cid)
                    client.tasks.start(cid)
        return ids

    def _client(self) -> berth.Client:
        return berth.Client(self.session.target.address, namespace=self.ns, timeout=60.0)

    def stop_all(self) -> None:
        """Kill and delete every task started here, and its container."""
        for backend, ids in self.ids.items():
            if backend == "containerd":
                ctrd = self.session.ctrd(self.ns)
                for cid in ids:
                    remove_containerd_container(ctrd, cid)
            else:
                with self._client() as client:
                    for cid in ids:
                        remove_berth_container(client, cid)
        self.ids.clear()


def check_exits(
    session: Session, backend: str, ns: str, clients: int, when: str, shape: str | None = None
) -> int:
    """Every process the clients of ``shape`` started had its exit observed; the number started.

    Lost exits and wrong statuses become breaches. What failed calls left
    behind in ``ns`` is removed by the clients that made it.
    """
    shape = shape or session.shapes[0]
    pool = session.pools[shape]
    when = session.tagged(when, shape)
    previous, pool.backend = pool.backend, backend
    try:
        books: list[ExitLedger] = pool.run(exit_ledger, [ns] * clients)
        left: list[list[str]] = pool.run(cleanup_job, [ns] * clients)
    finally:
        pool.backend = previous
    started = sum(b.started for b in books)
    observed = sum(b.observed for b in books)
    lost = [what for b in books for what in b.lost]
    wrong = [what for b in books for what in b.wrong_status]
    session.outcome.checks.append(
        {
            "backend": backend,
            "shape": shape,
            "ns": ns,
            "clients": clients,
            "when": when,
            "started": started,
            "exits_observed": observed,
            "exits_lost": len(lost),
            "wrong_status": len(wrong),
            "left_and_removed": sum(len(ids) for ids in left),
        }
    )
    if lost:
        session.breach(
            f"{backend} {ns} {when}: {len(lost)} exit(s) never observed, e.g. {lost[:3]}"
        )
    if wrong:
        session.breach(
            f"{backend} {ns} {when}: {len(wrong)} exit(s) with a wrong status: {wrong[:3]}"
        )
    return started


def lifecycle_phases(
    session: Session, ns: str, rootfs: Path, when: str
) -> Iterator[tuple[int, str, str, int]]:
    """Run a lifecycle phase per client count, shape and backend, checking its exits.

    Yields ``(clients, shape, backend, started)`` after each phase, with the
    number of processes its clients started; ``when`` is formatted with
    ``clients`` to say where a breach was seen.
    """
    params = TaskParams(ns, str(rootfs))
    for clients in session.options.clients:
        for shape in session.shapes:
            for backend in session.backends:
                session.phase(
                    "lifecycle",
                    clients,
                    lifecycle_op,
                    [params] * clients,
                    backend=backend,
                    shape=shape,
                )
                label = when.format(clients=clients)
                started = check_exits(session, backend, ns, clients, label, shape)
                yield clients, shape, backend, started
