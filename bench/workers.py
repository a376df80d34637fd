"""Worker processes: one per simulated client, each with its own berth clients.

One Python process cannot load berthd hard enough from a single GIL, so
every simulated client is a process of its own (``multiprocessing`` with
the *spawn* start method: no zmq context is ever inherited). A
:class:`WorkerPool` starts them once; the parent then sends *jobs*: a
module-level function (picklable by reference) and its argument, run as
``job(ctx, arg)`` in the worker, whose return value comes back pickled.
Worker-side state that outlives a job (the ids a worker created, its
clients) lives in its :class:`WorkerContext`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

import berth

__all__ = ["Job", "WorkerContext", "WorkerFailed", "WorkerPool"]

Job = Callable[["WorkerContext", Any], Any]

_READY_TIMEOUT_S = 120.0  # a spawned worker imports berth: slow on a loaded machine, not this slow


class WorkerFailed(RuntimeError):
    """A job raised in a worker process; the message carries the worker's traceback."""


@dataclass
class WorkerContext:
    """A worker process: its index, the daemon's address, its clients and state."""

    index: int
    address: str
    timeout: float | None
    state: dict[str, Any] = field(default_factory=dict)
    _clients: dict[str, berth.Client] = field(default_factory=dict)

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


def _worker_main(index: int, address: str, timeout: float | None, conn: Connection) -> None:
    """A worker process: run jobs from the parent until told to stop (None)."""
    ctx = WorkerContext(index, address, timeout)
    conn.send("ready")
    try:
        while (message := conn.recv()) is not None:
            job, arg = message
            try:
                conn.send(("ok", job(ctx, arg)))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    except (EOFError, KeyboardInterrupt):
        pass  # the parent is gone or interrupted: just leave
    finally:
        ctx.close()


class WorkerPool:
    """``size`` worker processes, each with its own clients of the daemon at ``address``."""

    def __init__(self, size: int, address: str, *, timeout: float | None = 30.0) -> None:
        mp = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        for index in range(size):
            parent, child = mp.Pipe()
            proc = mp.Process(
                target=_worker_main,
                args=(index, address, timeout, child),
                name=f"bench-worker-{index}",
                daemon=True,
            )
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
        """How many workers there are."""
        return len(self._conns)

    def run(self, job: Job, args: Sequence[Any]) -> list[Any]:
        """Run ``job(ctx, args[i])`` on worker ``i``, for the first ``len(args)`` workers."""
        if len(args) > self.size:
            raise ValueError(f"{len(args)} jobs for a pool of {self.size} workers")
        for conn, arg in zip(self._conns, args, strict=False):
            conn.send((job, arg))
        results: list[Any] = []
        failures: list[str] = []
        for index, conn in enumerate(self._conns[: len(args)]):
            status, value = self._recv(index, conn)
            if status == "ok":
                results.append(value)
            else:
                failures.append(f"worker {index}:\n{value}")
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
