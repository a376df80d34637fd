"""Worker-side operations of the Containers scenario, and its bulk jobs.

Each ``*_op`` function is an :data:`~bench.load.OpFactory`: run in a worker
process, it returns the call that worker repeats during a phase. A worker
keeps, per namespace, the ids it created and deleted (acknowledged) and the
ids whose outcome it cannot know (a call that timed out or whose reply was
lost may or may not have taken effect), so that the parent can check that
every acknowledged create is listable afterwards (:func:`ledger`).

The bulk jobs (:func:`bulk_create`, :func:`bulk_delete`) fill or empty a
namespace fast: each worker pipelines ``window`` calls at once on one
:class:`berth.AsyncClient`.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import berth
from bench.load import Op, OutOfWork, error_code
from bench.workers import WorkerContext

__all__ = [
    "AMBIGUOUS_CODES",
    "BENCH_SPEC",
    "Bulk",
    "BulkResult",
    "Ledger",
    "ListMismatch",
    "compare_ledgers",
    "create_op",
    "delete_op",
    "get_op",
    "get_range_op",
    "ledger",
    "list_op",
    "listed_ids",
    "update_op",
    "worker_ledger",
]

# A small OCI runtime spec, wrapped once as the Any the wire carries.
BENCH_SPEC = berth.oci_spec_any(
    {
        "ociVersion": "1.1.0",
        "process": {"args": ["/bin/sh"], "cwd": "/", "env": ["PATH=/usr/bin:/bin"]},
        "root": {"path": "rootfs"},
        "hostname": "bench",
    }
)
BENCH_LABELS = {"bench": "1"}

# A bulk job gives up after this long (seconds): base + per call.
BULK_JOB_BASE_S = 60.0
BULK_JOB_PER_CALL_S = 0.01

# Failures after which a write may or may not have been applied (protocol.md §2.5).
AMBIGUOUS_CODES = frozenset({"DEADLINE_EXCEEDED", "UNAVAILABLE", "INTERNAL"})


class ListMismatch(Exception):
    """A List answered with another number of containers than the namespace holds."""

    code = "LIST_MISMATCH"


@dataclass
class Ledger:
    """The ids one worker wrote in one namespace, by outcome."""

    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)
    next_delete: int = 0  # index in ``created`` of the next id to delete


def _ledger(ctx: WorkerContext, ns: str) -> Ledger:
    key = f"ledger:{ctx.backend}:{ns}"
    book = ctx.state.get(key)
    if book is None:
        book = ctx.state[key] = Ledger()
    assert isinstance(book, Ledger)
    return book


def ledger(ctx: WorkerContext, ns: str) -> Ledger:
    """Job: this worker's ledger of namespace ``ns`` (on the current backend)."""
    return _ledger(ctx, ns)


worker_ledger = _ledger


def listed_ids(ctx: WorkerContext, params: tuple[str, str]) -> set[str]:
    """Job: the ids List of namespace ``ns`` with ``filter`` returns (current backend)."""
    ns, filter = params
    listed = ctx.containers(ns).list(filter)
    return {c["id"] if isinstance(c, dict) else str(c.id) for c in listed}


def compare_ledgers(books: list[Ledger], listed: set[str]) -> tuple[dict[str, Any], list[str]]:
    """Check a listing against the workers' ledgers: the figures, and any breaches.

    Expected: acknowledged creates minus acknowledged deletes. A breach is an
    expected id not listed, or a listed id no write explains; ids whose
    outcome is unknown may be either way.
    """
    created = {cid for b in books for cid in b.created}
    deleted = {cid for b in books for cid in b.deleted}
    uncertain = {cid for b in books for cid in b.uncertain}
    expected = created - deleted
    missing = sorted(expected - uncertain - listed)
    unexpected = sorted(listed - expected - uncertain)
    breaches = []
    if missing:
        breaches.append(f"{len(missing)} acknowledged containers not listed, e.g. {missing[:3]}")
    if unexpected:
        breaches.append(
            f"{len(unexpected)} listed containers never acknowledged "
            f"(or acknowledged as deleted), e.g. {unexpected[:3]}"
        )
    figures = {
        "acked_creates": len(created),
        "acked_deletes": len(deleted),
        "uncertain": len(uncertain),
        "expected": len(expected),
        "listed": len(listed),
        "missing": len(missing),
        "unexpected": len(unexpected),
        "missing_sample": missing[:10],
        "unexpected_sample": unexpected[:10],
    }
    return figures, breaches


def _note_uncertain(book: Ledger, cid: str, exc: Exception) -> None:
    if error_code(exc) in AMBIGUOUS_CODES:
        book.uncertain.append(cid)


def create_op(ctx: WorkerContext, ns: str) -> Op:
    """Create containers with ids unique to this client (and shape), label ``bench=1``."""
    client = ctx.containers(ns)
    book = _ledger(ctx, ns)
    seq = itertools.count(len(book.created) + len(book.uncertain))
    prefix = f"{ctx.name}-"

    def op() -> None:
        cid = f"{prefix}{next(seq)}"
        try:
            client.create(cid, spec=BENCH_SPEC, labels=BENCH_LABELS)
        except Exception as exc:
            _note_uncertain(book, cid, exc)
            raise
        book.created.append(cid)

    return op


def get_op(ctx: WorkerContext, ns: str) -> Op:
    """Get a random one of the containers this worker created."""
    client = ctx.containers(ns)
    ids = _ledger(ctx, ns).created
    choice = random.Random(ctx.index).choice

    def op() -> None:
        if not ids:
            raise OutOfWork
        client.get(choice(ids))

    return op


def update_op(ctx: WorkerContext, ns: str) -> Op:
    """Set label ``k`` of a random one of this worker's containers (mask ``labels.k``)."""
    client = ctx.containers(ns)
    ids = _ledger(ctx, ns).created
    choice = random.Random(1000 + ctx.index).choice
    seq = itertools.count()

    def op() -> None:
        if not ids:
            raise OutOfWork
        client.update(choice(ids), labels={"k": str(next(seq))}, update_mask=["labels.k"])

    return op


def list_op(ctx: WorkerContext, params: tuple[str, int]) -> Op:
    """List the whole namespace, which must hold exactly ``expected`` containers."""
    ns, expected = params
    client = ctx.containers(ns)

    def op() -> None:
        got = len(client.list())
        if got != expected:
            raise ListMismatch(f"namespace {ns}: listed {got} containers, expected {expected}")

    return op


def delete_op(ctx: WorkerContext, ns: str) -> Op:
    """Delete this worker's containers, oldest first; out of work when none is left."""
    client = ctx.containers(ns)
    book = _ledger(ctx, ns)

    def op() -> None:
        if book.next_delete >= len(book.created):
            raise OutOfWork
        cid = book.created[book.next_delete]
        book.next_delete += 1
        try:
            client.delete(cid)
        except Exception as exc:
            _note_uncertain(book, cid, exc)
            raise
        book.deleted.append(cid)

    return op


def get_range_op(ctx: WorkerContext, params: tuple[str, str, int]) -> Op:
    """Get a random one of the ids ``<prefix><0..count-1>`` (a bulk-filled namespace)."""
    ns, prefix, count = params
    client = ctx.containers(ns)
    randrange = random.Random(2000 + ctx.index).randrange

    def op() -> None:
        client.get(f"{prefix}{randrange(count)}")

    return op


@dataclass(frozen=True)
class Bulk:
    """A bulk job's share: these ids of namespace ``ns``, ``window`` calls in flight."""

    ns: str
    ids: tuple[str, ...]
    window: int


@dataclass
class BulkResult:
    """How a bulk job went: acknowledged calls, failures by code."""

    acked: int = 0
    errors: dict[str, int] = field(default_factory=dict)


async def _pipelined(ctx: WorkerContext, share: Bulk, create: bool) -> BulkResult:
    # No per-call deadline: berthd keeps a deadline's bookkeeping until it passes,
    # which would blur the memory measured around a bulk creation. The whole
    # job has a limit instead.
    client = berth.AsyncClient(ctx.address, namespace=share.ns, timeout=None)
    ids = iter(share.ids)
    errors: Counter[str] = Counter()
    acked = 0

    async def lane() -> None:
        nonlocal acked
        for cid in ids:  # lanes share the iterator: each id is taken once
            try:
                if create:
                    await client.containers.create(cid, spec=BENCH_SPEC, labels=BENCH_LABELS)
                else:
                    await client.containers.delete(cid)
            except Exception as exc:
                errors[error_code(exc)] += 1
            else:
                acked += 1

    limit = BULK_JOB_BASE_S + len(share.ids) * BULK_JOB_PER_CALL_S
    try:
        lanes = asyncio.gather(*(lane() for _ in range(max(share.window, 1))))
        await asyncio.wait_for(lanes, limit)
    except TimeoutError:
        errors["BULK_TIMEOUT"] += 1
    finally:
        await client.aclose()
    return BulkResult(acked, dict(errors))


def bulk_create(ctx: WorkerContext, share: Bulk) -> BulkResult:
    """Job: create this share's containers, pipelined."""
    return asyncio.run(_pipelined(ctx, share, create=True))


def bulk_delete(ctx: WorkerContext, share: Bulk) -> BulkResult:
    """Job: delete this share's containers, pipelined."""
    return asyncio.run(_pipelined(ctx, share, create=False))
