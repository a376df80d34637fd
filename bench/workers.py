"""Worker processes and threads: the simulated clients, each with its own berth clients.

A :class:`WorkerPool` has one of two *shapes* (:data:`SHAPES`):

- ``processes`` (the default): every simulated client is a process of its
  own (``multiprocessing`` with the *spawn* start method: no zmq context
  is ever inherited), since one Python process cannot load berthd hard
  enough from a single GIL;
- ``threads``: every simulated client is a thread of ONE worker process,
  each thread with its own :class:`WorkerContext` and so its own
  ``berth.Client`` (its own ZeroMQ connection) and containerd channel:
  the way an application embeds the client, its threads sharing one GIL.

The pool starts its clients once; the parent then sends *jobs*: a
module-level function (picklable by reference) and its argument, run as
``job(ctx, arg)`` by the client, whose return value comes back pickled.
Client-side state that outlives a job (the ids a client created, its
connections) lives in its :class:`WorkerContext`; in the threads shape,
each context is only ever used by its own thread (where its sockets are
made and closed).

Every job runs against one *backend*, berthd (``berth``) or, with
``--compare containerd``, containerd through its gRPC API
(``containerd``); the pool sends the current one with each job, and
:meth:`WorkerContext.containers` hands out the matching client. Each
worker also counts its calls in two slots of a shared array (succeeded,
failed), which the parent reads for the live progress display without
asking the workers anything.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from types import TracebackType
from typing import TYPE_CHECKING, Any

import berth

if TYPE_CHECKING:
    from bench.api import ContainersApi, SnapshotsApi
    from bench.ctrd import Containerd

__all__ = [
    "SHAPES",
    "Counters",
    "Job",
    "WorkerContext",
    "WorkerFailed",
    "WorkerPool",
    "worker_pools",
]

Job = Callable[["WorkerContext", Any], Any]

# How the clients of a phase are laid out: one process each, or threads of one process.
SHAPES = ("processes", "threads")

_READY_TIMEOUT_S = 120.0  # a spawned worker imports berth: slow on a loaded machine, not this slow


class WorkerFailed(RuntimeError):
    """A job raised in a worker process; the message carries the worker's traceback."""


class Counters:
    """Calls made so far by each worker, (succeeded, failed), in memory shared with the parent."""

    def __init__(self, workers: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.array = ctx.RawArray("q", 2 * workers)  # no lock: each slot has one writer

    def totals(self, workers: int) -> tuple[int, int]:
        """Succeeded and failed calls of the first ``workers`` workers."""
        values = self.array[: 2 * workers]
        return sum(values[0::2]), sum(values[1::2])


class _Slot:
    """One worker's two counters: ``slot[0]`` succeeded, ``slot[1]`` failed."""

    def __init__(self, array: Any, index: int) -> None:
        self._array, self._base = array, 2 * index

    def __getitem__(self, i: int) -> int:
        return int(self._array[self._base + i])

    def __setitem__(self, i: int, value: int) -> None:
        self._array[self._base + i] = value


@dataclass
class WorkerContext:
    """A simulated client: its index, the daemon's address, its connections and state."""

    index: int
    address: str
    timeout: float | None
    containerd_address: str | None = None
    counters: Any = None  # the shared array of Counters
    backend: str = "berth"  # the daemon the current job talks to
    shape: str = "processes"  # or "threads": a thread of the pool's one process
    state: dict[str, Any] = field(default_factory=dict)
    _clients: dict[str, berth.Client] = field(default_factory=dict)
    _containerd: dict[str, Containerd] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """What this client's ids start with: ``w<index>`` (a process), ``t<index>`` (a thread).

        Two pools of different shapes can load one namespace in the same run.
        """
        return f"{'t' if self.shape == 'threads' else 'w'}{self.index}"

    def progress_slot(self) -> _Slot:
        """This worker's counters of calls made (for the parent's progress display)."""
        return _Slot(self.counters if self.counters is not None else [0, 0], self.index)

    def containerd(self, namespace: str) -> Containerd:
        """This worker's containerd client for ``namespace`` (one gRPC channel each)."""
        client = self._containerd.get(namespace)
        if client is None:
            from bench.ctrd import LEASE, Containerd  # grpc is optional: imported when used

            if self.containerd_address is None:
                raise WorkerFailed("no containerd address given to the workers")
            client = Containerd(
                self.containerd_address, namespace, timeout=self.timeout, lease=LEASE
            )
            self._containerd[namespace] = client
        return client

    def containers(self, namespace: str) -> ContainersApi:
        """The Containers service of the current backend, for ``namespace``."""
        if self.backend == "containerd":
            return self.containerd(namespace).containers
        return self.client(namespace).containers

    def snapshots(self, namespace: str) -> SnapshotsApi:
        """The Snapshots service of the current backend, for ``namespace``."""
        if self.backend == "containerd":
            return self.containerd(namespace).snapshots
        return self.client(namespace).snapshots

    def client(self, namespace: str) -> berth.Client:
        """This worker's client for ``namespace`` (one DEALER connection each)."""
        client = self._clients.get(namespace)
        if client is None:
            client = berth.Client(self.address, namespace=namespace, timeout=self.timeout)
            self._clients[namespace] = client
        return client

    def close(self) -> None:
        """Close every client."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        for other in self._containerd.values():
            other.close()
        self._containerd.clear()
        for value in self.state.values():  # event subscribers: stop their threads
            close = getattr(value, "close", None)
            if callable(close):
                close()


def _worker_main(
    index: int,
    address: str,
    timeout: float | None,
    containerd_address: str | None,
    counters: Any,
    conn: Connection,
) -> None:
    """A worker process: run jobs from the parent until told to stop (None)."""
    ctx = WorkerContext(index, address, timeout, containerd_address, counters)
    conn.send("ready")
    try:
        while (message := conn.recv()) is not None:
            job, arg, ctx.backend = message
            try:
                conn.send(("ok", job(ctx, arg)))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    except (EOFError, KeyboardInterrupt):
        pass  # the parent is gone or interrupted: just leave
    finally:
        ctx.close()


def _client_thread(ctx: WorkerContext, inbox: queue.SimpleQueue[Any], outbox: Any) -> None:
    """One client of a threads pool: run the jobs put in ``inbox`` until None, on ``ctx``."""
    try:
        while (item := inbox.get()) is not None:
            job, arg, ctx.backend = item
            try:
                outbox.put((ctx.index, ("ok", job(ctx, arg))))
            except Exception:
                outbox.put((ctx.index, ("error", traceback.format_exc())))
    finally:
        ctx.close()  # in this thread, where its sockets were made


def _threads_main(
    size: int,
    address: str,
    timeout: float | None,
    containerd_address: str | None,
    counters: Any,
    conn: Connection,
) -> None:
    """The one process of a threads pool: ``size`` client threads, each its own context.

    A message carries one job and one argument per client; client ``i``'s
    thread runs it with ``args[i]``, all at once, and the replies go back
    together, in client order.
    """
    outbox: queue.SimpleQueue[tuple[int, tuple[str, Any]]] = queue.SimpleQueue()
    inboxes: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in range(size)]
    threads = []
    for index, inbox in enumerate(inboxes):
        ctx = WorkerContext(index, address, timeout, containerd_address, counters, shape="threads")
        thread = threading.Thread(
            target=_client_thread,
            args=(ctx, inbox, outbox),
            name=f"bench-client-{index}",
            daemon=True,  # a job that hangs must not keep the process from leaving
        )
        thread.start()
        threads.append(thread)
    conn.send("ready")
    try:
        while (message := conn.recv()) is not None:
            job, args, backend = message
            for inbox, arg in zip(inboxes, args, strict=False):
                inbox.put((job, arg, backend))
            replies: list[Any] = [None] * len(args)
            for _ in args:
                index, reply = outbox.get()
                replies[index] = reply
            conn.send(replies)
    except (EOFError, KeyboardInterrupt):
        pass  # the parent is gone or interrupted: just leave
    finally:
        for inbox in inboxes:
            inbox.put(None)
        for thread in threads:
            thread.join(10)


class WorkerPool:
    """``size`` clients of the daemon at ``address``, each with its own connections.

    ``shape`` ``processes``: one worker process per client; ``threads``: one
    worker process whose ``size`` threads are the clients (:data:`SHAPES`).
    """

    def __init__(
        self,
        size: int,
        address: str,
        *,
        timeout: float | None = 30.0,
        containerd_address: str | None = None,
        shape: str = "processes",
    ) -> None:
        if shape not in SHAPES:
            raise ValueError(f"unknown client shape {shape!r}; one of {SHAPES}")
        mp = multiprocessing.get_context("spawn")
        self.shape = shape
        self.counters = Counters(size)
        self.backend = "berth"  # sent with every job: the daemon it talks to
        self._size = size
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        common = (address, timeout, containerd_address, self.counters.array)
        hosts: list[tuple[Callable[..., None], tuple[Any, ...], str]] = (
            [(_threads_main, (size, *common), "bench-threads")]
            if shape == "threads"
            else [(_worker_main, (i, *common), f"bench-worker-{i}") for i in range(size)]
        )
        for target, args, name in hosts:
            parent, child = mp.Pipe()
            proc = mp.Process(target=target, args=(*args, child), name=name, daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        for index, conn in enumerate(self._conns):
            if not conn.poll(_READY_TIMEOUT_S) or self._recv(index, conn) != "ready":
                self.close()
                raise WorkerFailed(f"worker {index} did not start")

    @property
    def size(self) -> int:
        """How many clients there are (processes, or threads of the one process)."""
        return self._size

    def run(self, job: Job, args: Sequence[Any]) -> list[Any]:
        """Run ``job(ctx, args[i])`` on client ``i``, for the first ``len(args)`` clients."""
        if len(args) > self.size:
            raise ValueError(f"{len(args)} jobs for a pool of {self.size} workers")
        if self.shape == "threads":
            if not args:
                return []
            self._conns[0].send((job, list(args), self.backend))
            replies: list[tuple[str, Any]] = self._recv(0, self._conns[0])
            what = "client thread"
        else:
            for conn, arg in zip(self._conns, args, strict=False):
                conn.send((job, arg, self.backend))
            replies = [self._recv(i, conn) for i, conn in enumerate(self._conns[: len(args)])]
            what = "worker"
        results: list[Any] = []
        failures: list[str] = []
        for index, (status, value) in enumerate(replies):
            if status == "ok":
                results.append(value)
            else:
                failures.append(f"{what} {index}:\n{value}")
        if failures:
            raise WorkerFailed("\n".join(failures))
        return results

    @staticmethod
    def _recv(index: int, conn: Connection) -> Any:
        try:
            return conn.recv()
        except EOFError:
            raise WorkerFailed(f"worker {index} died") from None

    def close(self) -> None:
        """Stop every worker and wait for it."""
        for conn in self._conns:
            with contextlib.suppress(OSError):  # already gone
                conn.send(None)
        for proc in self._procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        for conn in self._conns:
            conn.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def worker_pools(
    shapes: Sequence[str],
    size: int,
    address: str,
    *,
    timeout: float | None,
    containerd_address: str | None,
) -> Iterator[dict[str, WorkerPool]]:
    """One pool of ``size`` clients per shape, in order; all closed at the end."""
    with contextlib.ExitStack() as stack:
        pools = {}
        for shape in shapes:
            pool = WorkerPool(
                size, address, timeout=timeout, containerd_address=containerd_address, shape=shape
            )
            pools[shape] = stack.enter_context(pool)
        yield pools
