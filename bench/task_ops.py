"""Worker-side operations on tasks: lifecycle churn and exec storms, on berth or containerd.

Each ``*_op`` is an :data:`~bench.load.OpFactory`. Every container runs on
the busybox directory the parent made (the spec's absolute ``root.path``,
read-only: no snapshot on either daemon, so both pay for the same work).

How an exit is observed:

- berth: each worker process has its own ``Tasks/Events`` subscription
  per namespace (:class:`~bench.task_events.EventSubscriber`, opened and
  ``ready`` before the worker's first call), and waits there for the
  ``EXIT`` of the pid it started;
- containerd: ``Tasks/Wait`` after ``Start`` (it answers at once for a
  process that has already exited).

Every process a worker starts is counted in its :class:`ExitLedger`; an
exit not observed within :data:`EXIT_TIMEOUT_S` (or with another status
than expected) fails the call with code ``EXIT_LOST`` (or
``EXIT_STATUS``), and the parent turns the ledger into breaches.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import berth
from bench.load import Op
from bench.task_events import EventSubscriber
from bench.task_host import task_spec
from bench.workers import WorkerContext
from berth.client import process_any
from runtime.spec import DEFAULT_PATH

__all__ = [
    "EXIT_TIMEOUT_S",
    "ExitLedger",
    "ExitLost",
    "TaskParams",
    "cleanup_job",
    "exec_op",
    "exit_ledger",
    "lifecycle_op",
]

EXIT_TIMEOUT_S = 10.0
TRUE_PROCESS = {"args": ["true"], "cwd": "/", "env": [DEFAULT_PATH]}


class ExitLost(Exception):
    """A started process whose exit was not observed in time."""

    code = "EXIT_LOST"


class ExitStatus(Exception):
    """An exit observed with another status than expected."""

    code = "EXIT_STATUS"


@dataclass(frozen=True)
class TaskParams:
    """What a task operation needs: namespace, rootfs, and for exec the task to exec into."""

    ns: str
    rootfs: str
    task: str = ""  # exec: the container id of a running task


@dataclass
class ExitLedger:
    """One worker's started processes in one namespace, and what became of their exits."""

    started: int = 0
    observed: int = 0
    lost: list[str] = field(default_factory=list)
    wrong_status: list[str] = field(default_factory=list)
    live: set[str] = field(default_factory=set)  # containers made and not yet deleted


def _ledger(ctx: WorkerContext, ns: str) -> ExitLedger:
    key = f"exits:{ctx.backend}:{ns}"
    book = ctx.state.get(key)
    if book is None:
        book = ctx.state[key] = ExitLedger()
    assert isinstance(book, ExitLedger)
    return book


def exit_ledger(ctx: WorkerContext, ns: str) -> ExitLedger:
    """Job: this worker's exit ledger of ``ns`` since the last call, which starts a new one.

    Draining it lets each phase be checked on its own calls only.
    """
    book = _ledger(ctx, ns)
    drained = ExitLedger(book.started, book.observed, book.lost, book.wrong_status, set(book.live))
    book.started, book.observed, book.lost, book.wrong_status = 0, 0, [], []
    return drained


def _subscriber(ctx: WorkerContext, ns: str) -> EventSubscriber:
    key = f"events:{ns}"
    sub = ctx.state.get(key)
    if sub is None:
        sub = ctx.state[key] = EventSubscriber(ctx.address, ns).start()
    assert isinstance(sub, EventSubscriber)
    return sub


def _observe(book: ExitLedger, what: str, status: int | None, expected: int = 0) -> None:
    if status is None:
        book.lost.append(what)
        raise ExitLost(f"no exit of {what} within {EXIT_TIMEOUT_S}s")
    book.observed += 1
    if status != expected:
        book.wrong_status.append(f"{what}: {status}")
        raise ExitStatus(f"{what} exited {status}, expected {expected}")


def _berth_wait(sub: EventSubscriber, cid: str, pid: int) -> int | None:
    seen = sub.wait_exit(cid, pid, EXIT_TIMEOUT_S)
    return None if seen is None else int(seen.event.get("exit_status") or 0)


def _ids(ctx: WorkerContext, kind: str) -> itertools.count[int]:
    key = f"ids:{kind}"
    counter = ctx.state.get(key)
    if counter is None:
        counter = ctx.state[key] = itertools.count()
    assert isinstance(counter, itertools.count)
    return counter


def lifecycle_op(ctx: WorkerContext, params: TaskParams) -> Op:
    """Container create, task create, start, exit observed, task delete, container delete."""
    book = _ledger(ctx, params.ns)
    seq = _ids(ctx, f"lc:{params.ns}")
    prefix = f"w{ctx.index}-{os.getpid()}-lc"
    spec = task_spec(["true"], Path(params.rootfs))
    if ctx.backend == "containerd":
        ctrd = ctx.containerd(params.ns)
        spec_any = berth.oci_spec_any(spec)

        def ctrd_op() -> None:
            cid = f"{prefix}{next(seq)}"
            book.live.add(cid)
            ctrd.containers.create(cid, spec=spec_any)
            ctrd.tasks.create(cid)
            book.started += 1
            ctrd.tasks.start(cid)
            status = ctrd.tasks.wait(cid, timeout=EXIT_TIMEOUT_S)
            _observe(book, cid, status)
            ctrd.tasks.delete(cid)
            ctrd.containers.delete(cid)
            book.live.discard(cid)

        return ctrd_op
    client = ctx.client(params.ns)
    sub = _subscriber(ctx, params.ns)
    spec_any = berth.oci_spec_any(spec)

    def op() -> None:
        cid = f"{prefix}{next(seq)}"
        book.live.add(cid)
        client.containers.create(cid, spec=spec_any)
        pid = int(client.tasks.create(cid)["pid"])
        book.started += 1
        client.tasks.start(cid)
        _observe(book, cid, _berth_wait(sub, cid, pid))
        client.tasks.delete(cid)
        client.containers.delete(cid)
        book.live.discard(cid)

    return op


def exec_op(ctx: WorkerContext, params: TaskParams) -> Op:
    """Exec ``true`` into the running task ``params.task`` and observe its exit."""
    book = _ledger(ctx, params.ns)
    cid = params.task
    if ctx.backend == "containerd":
        ctrd = ctx.containerd(params.ns)
        seq = _ids(ctx, f"ex:{params.ns}")
        prefix = f"w{ctx.index}-{os.getpid()}-ex"

        def ctrd_op() -> None:
            exec_id = f"{prefix}{next(seq)}"
            ctrd.tasks.exec(cid, exec_id, TRUE_PROCESS)
            book.started += 1
            try:
                ctrd.tasks.start(cid, exec_id)
                status = ctrd.tasks.wait(cid, exec_id, timeout=EXIT_TIMEOUT_S)
                _observe(book, f"{cid} exec {exec_id}", status)
            finally:
                with contextlib.suppress(Exception):
                    ctrd.tasks.delete_process(cid, exec_id)

        return ctrd_op
    client = ctx.client(params.ns)
    sub = _subscriber(ctx, params.ns)
    process = process_any(TRUE_PROCESS)

    def op() -> None:
        pid = int(client.tasks.exec(cid, spec=process)["pid"])
        book.started += 1
        _observe(book, f"{cid} exec pid {pid}", _berth_wait(sub, cid, pid))

    return op


def cleanup_job(ctx: WorkerContext, ns: str) -> list[str]:
    """Job: kill and delete what this worker's failed calls left in ``ns``; the ids."""
    book = _ledger(ctx, ns)
    left = sorted(book.live)
    for cid in left:
        if ctx.backend == "containerd":
            remove_containerd_container(ctx.containerd(ns), cid)
        else:
            remove_berth_container(ctx.client(ns), cid)
        book.live.discard(cid)
    return left


def remove_berth_container(client: berth.Client, cid: str) -> None:
    """Best effort: kill and delete the task of ``cid`` (waiting for it to stop), then it."""
    with contextlib.suppress(berth.BerthError):
        task = client.tasks.info(cid)
        if task["status"] in ("RUNNING", "PAUSED", "CREATED"):
            with contextlib.suppress(berth.BerthError):
                client.tasks.kill(cid, signal.SIGKILL, all=True)
            deadline = time.monotonic() + EXIT_TIMEOUT_S
            while client.tasks.info(cid)["status"] not in ("STOPPED",):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        client.tasks.delete(cid)
    with contextlib.suppress(berth.BerthError):
        client.containers.delete(cid)


def remove_containerd_container(ctrd: Any, cid: str) -> None:
    """Best effort, on containerd: kill and wait for the task of ``cid``, delete it and ``cid``."""
    with contextlib.suppress(Exception):
        ctrd.tasks.kill(cid, signal.SIGKILL, all=True)
        ctrd.tasks.wait(cid, timeout=EXIT_TIMEOUT_S)
    with contextlib.suppress(Exception):
        ctrd.tasks.delete(cid)
    with contextlib.suppress(Exception):
        ctrd.containers.delete(cid)
