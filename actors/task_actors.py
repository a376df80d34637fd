"""Task actors started on demand from their handles, and stopped when idle.

A pykka actor is a thread (about 24 KiB of the daemon's memory, and a
start of about 0.4 ms), and most running tasks get no message for minutes:
so a task is kept as a :class:`~actors.task_handle.TaskHandle` and its
:class:`~actors.tasks.TaskActor` exists only while messages for it are in
flight or were lately. :class:`TaskActors` holds the handles by
``(namespace, id)`` from the task's creation (or adoption) until its delete,
starts the task's actor on the first message for a task without one, and
stops an actor once it has had no message in flight for ``idle_seconds``.

Messages in flight are counted under the registry's lock, as
:class:`~actors.containers.ContainerActors` counts its own: a send raises
the count, the actor lowers it after handling the message, and only an
actor at zero is reaped, its ref dropped under the same lock before it is
told to stop; so a message is never sent to an actor that will not handle
it, and the next one starts a new actor. Two actors of one task never run
at once: the reaped one had nothing left to do.

Execs run their shim calls on one bounded pool for the daemon (threads
made as needed, up to ``exec_workers``), each over a connection of its own
to the shim, so execs into one task proceed side by side.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pykka

from actors.leases import Leases
from actors.supervision import Directory
from actors.task_handle import TaskHandle
from actors.tasks import TaskActor
from runtime.shim_client import ShimClient
from wire.errors import AlreadyExists, Unavailable

if TYPE_CHECKING:
    from actors.restart_monitor import SupervisionHooks
    from actors.task_runtime import TaskRuntime
    from runtime.content import ContentStore

__all__ = ["EXEC_WORKERS", "SHIM_CALL_TIMEOUT", "TaskActors"]

log = logging.getLogger(__name__)

SHIM_CALL_TIMEOUT = 60.0  # seconds a call to a shim may take
EXEC_WORKERS = 8  # concurrent exec calls across the daemon's shims

Key = tuple[str, str]


def _connect(task_dir: Path) -> ShimClient:
    return ShimClient(task_dir, timeout=SHIM_CALL_TIMEOUT)


class TaskActors:
    """The daemon's task handles, and their actors while they have work.

    ``lock`` is shared with the container registry, so it can route an
    event to a task or, failing that, to its container in one step.
    ``connect`` makes a shim connection for a task_dir (tests give fakes).
    """

    def __init__(
        self,
        directory: Directory,
        *,
        idle_seconds: float = 2.0,
        runtime: TaskRuntime | None = None,
        show: Callable[[str, str, dict[str, Any] | None], None] = lambda _ns, _id, _info: None,
        lock: threading.Lock | None = None,
        connect: Callable[[Path], ShimClient] | None = None,
        exec_workers: int = EXEC_WORKERS,
    ) -> None:
        self._directory = directory
        self.idle_seconds = idle_seconds
        self.runtime = runtime
        self._leases = runtime.leases if runtime is not None else Leases()
        self._show = show
        self._lock = lock or threading.Lock()
        self.connect = connect or _connect
        self._handles: dict[Key, TaskHandle] = {}
        self._stopping = False
        self._exec_workers = exec_workers
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._pool_closed = False
        #: the restart monitor's hooks, set by the daemon (None in tests without one)
        self.supervision: SupervisionHooks | None = None

    # TaskHost: what a task actor uses

    @property
    def directory(self) -> Directory:
        """The daemon's named actors."""
        return self._directory

    @property
    def content(self) -> ContentStore | None:
        """The content store checkpoints go to (None without a runtime)."""
        return self.runtime.content if self.runtime is not None else None

    @property
    def leases(self) -> Leases:
        """The daemon's leases (see :mod:`actors.leases`)."""
        return self._leases

    def send(self, handle: TaskHandle, message: Any) -> bool:
        """Tell ``handle``'s actor ``message``, starting one if it has none.

        False (nothing sent) when the task was deleted or the daemon stops.
        """
        with self._lock:
            return self._send_locked(handle, message)

    def finished(self, handle: TaskHandle) -> None:
        """Called by the task's actor after each message it handled."""
        with self._lock:
            handle.in_flight = max(0, handle.in_flight - 1)
            handle.last = time.monotonic()

    def end(self, handle: TaskHandle) -> None:
        """The task was deleted: drop its handle, close its connection, stop its actor.

        The actor (usually the caller) handles what was sent to it before,
        and stops.
        """
        key = (handle.state.ns, handle.state.container_id)
        with self._lock:
            if self._handles.get(key) is handle:
                del self._handles[key]
            handle.ended = True
            ref, handle.ref = handle.ref, None
        handle.client.close()
        if ref is not None:
            ref.stop(block=False)

    def show(self, ns: str, container_id: str, info: dict[str, Any] | None) -> None:
        """Make ``info`` the task's state for Info and List (None: the task is gone)."""
        self._show(ns, container_id, info)

    def cleanup(self, handle: TaskHandle) -> None:
        """Tear down a task whose shim is gone (processes, mounts, runc state)."""
        if self.runtime is not None:
            s = handle.state
            self.runtime.cleanup_dead(s.ns, s.container_id, handle.runtime_binary)

    def run_exec(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the exec pool, made on first use."""
        with self._pool_lock:
            if self._pool_closed:
                raise Unavailable("tasks: the daemon is stopping; exec refused")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self._exec_workers, thread_name_prefix="exec"
                )
            self._pool.submit(job)

    def exec_client(self, handle: TaskHandle) -> ShimClient:
        """A new connection to the task's shim, for one exec."""
        return self.connect(handle.task_dir)

    # the registry

    def add(self, handle: TaskHandle) -> None:
        """Keep a new task's handle; its actor starts with its first message."""
        key = (handle.state.ns, handle.state.container_id)
        with self._lock:
            if key in self._handles:
                raise AlreadyExists(f'container "{key[1]}": already has a task')
            self._handles[key] = handle

    def get(self, ns: str, container_id: str) -> TaskHandle | None:
        """The task of container ns/id, if it has one."""
        return self._handles.get((ns, container_id))

    def has_locked(self, key: Key) -> bool:
        """Whether container ``key`` has a task; the caller holds the shared lock."""
        return key in self._handles

    def alive(self, ns: str, container_id: str) -> bool:
        """Whether the task of ns/id has an actor now."""
        handle = self._handles.get((ns, container_id))
        return handle is not None and handle.ref is not None

    @property
    def stopping(self) -> bool:
        """Whether the daemon is stopping (task actors are not started any more)."""
        return self._stopping

    def __len__(self) -> int:
        return len(self._handles)

    def tell(self, ns: str, container_id: str, message: Any) -> bool:
        """Send ``message`` to the task of ns/id; False when there is none."""
        with self._lock:
            return self.tell_locked((ns, container_id), message)

    def tell_locked(self, key: Key, message: Any) -> bool:
        """:meth:`tell`, for a caller that holds the shared lock."""
        handle = self._handles.get(key)
        return handle is not None and self._send_locked(handle, message)

    def _send_locked(self, handle: TaskHandle, message: Any) -> bool:
        if handle.ended or self._stopping:
            return False
        for _attempt in range(2):
            if handle.ref is None:
                handle.ref = TaskActor.start(None, handle, self)
                handle.in_flight = 0
            try:
                handle.ref.tell(message)
            except pykka.ActorDeadError:
                # It died of an unexpected error (the requests it held were
                # answered); the task's state is in the handle: a new actor
                # carries on.
                log.error("%s: its actor died; starting another", handle.name)
                handle.ref = None
                continue
            handle.in_flight += 1
            handle.last = time.monotonic()
            return True
        return False

    def reap(self, now: float | None = None) -> int:
        """Stop the task actors idle for ``idle_seconds`` (their handles stay); how many."""
        now = time.monotonic() if now is None else now
        stopped = []
        with self._lock:
            for handle in self._handles.values():
                ref = handle.ref
                if ref is None:
                    continue
                if not ref.is_alive():
                    handle.ref = None  # died: the next message starts another
                elif handle.in_flight == 0 and now - handle.last >= self.idle_seconds:
                    handle.ref = None
                    stopped.append(ref)
        for ref in stopped:
            ref.stop(block=False)
        return len(stopped)

    def stop_all(self) -> None:
        """Daemon shutdown: finish the execs under way, stop every task actor.

        The tasks themselves keep running; a restarted daemon adopts them.
        """
        with self._pool_lock:
            self._pool_closed = True
            pool = self._pool
        if pool is not None:
            # Each answers its client through its task's actor, still running.
            pool.shutdown(wait=True)
        with self._lock:
            self._stopping = True
            handles = list(self._handles.values())
            refs = [h.ref for h in handles if h.ref is not None]
            for handle in handles:
                handle.ref = None
        for ref in refs:
            ref.stop(block=True, timeout=10)
        for handle in handles:
            handle.client.close()
