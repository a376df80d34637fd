"""One task as its shim holds it: the ops the server dispatches to.

Plain code, no sockets: :mod:`runtime.shim.server` decodes a request, calls
the method of the same name with the request's fields and sends back what
it returns or the error it raises. The server reaps (:meth:`Task.reap`)
before each request and on every SIGCHLD, never while a runc command it
waits for runs. An exec without a terminal is only spawned: the server
answers it once its runc is reaped (:mod:`runtime.shim.execs`).

States, as the shim sees them::

    (no init) --create--> CREATED --start--> RUNNING <--pause/resume--> PAUSED
                             |                  |
                             +----- exit -------+--> STOPPED --delete--> (shim exits)

``CREATED`` and ``PAUSED`` come from ``runc state``; ``STOPPED`` from the
shim's own reaping of the init, which is the one source of truth for it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal as signals
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.exec_fifo import start_through_fifo
from runtime.mounts import mount_all, unmount_all
from runtime.runc import Runc, RuncError
from runtime.runc_cleanup import remove_stopped
from runtime.shim.config import ShimConfig
from runtime.shim.execs import PendingExec, spawn_exec
from runtime.shim.helper import ForkingRunc
from runtime.shim.launch import PlainStdio, ProcessIO, launch, socket_path
from runtime.shim.process import Event, ExitLog, Process, ProcessTable, reap_children
from runtime.shim.streams import set_winsize
from runtime.spec import load_process
from wire.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable

__all__ = ["Task"]

log = logging.getLogger(__name__)

# How long a delete waits for a CREATED task's init to die of SIGKILL.
_KILL_WAIT = 5.0


class Task:
    """The task of one shim; ``finished`` tells the server to exit after replying."""

    def __init__(self, config: ShimConfig, runc: Runc, publish: Callable[[Event], None]) -> None:
        self.config = config
        self.runc = runc
        exits = ExitLog(config.task_dir / "exits")
        self.table = ProcessTable(exits, publish, config.namespace, config.id)
        # Held for the shim's life, so a console socket path under a deep
        # task_dir can go through /proc/<pid>/fd/<n> (see socket_path).
        self._dir_fd = os.open(config.task_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.console_socket = socket_path(config.task_dir, "console.sock", self._dir_fd)
        self.bundle = config.task_dir / "bundle"
        self.rootfs = self.bundle / "rootfs"
        self.started = False
        self._mounted = False
        self._exec_ids = itertools.count(1)
        # runc pid -> exec being started (runtime.shim.execs)
        self.pending: dict[int, PendingExec] = {}
        self.completed: list[tuple[PendingExec, int | BaseException]] = []
        # pid -> (status, exited_at_ns) of children reaped while execs were under way
        self._unclaimed: dict[int, tuple[int, int]] = {}
        # Set by delete, a failed create and shutdown: the server replies, then exits.
        self.finished = False
        # Whether the server removes task_dir before replying (not on shutdown).
        self.remove_task_dir = False

    @property
    def name(self) -> str:
        """``<ns>/<id>``, for messages."""
        return self.config.name

    @property
    def init(self) -> Process | None:
        """The task's init, once created."""
        return self.table.init

    # -- ops -------------------------------------------------------------

    def create(
        self,
        bundle_spec: bytes | str,
        rootfs: list[dict[str, Any]],
        stdin: str,
        stdout: str,
        stderr: str,
        terminal: bool,
        checkpoint: str = "",
    ) -> dict[str, Any]:
        """Write the bundle, mount the rootfs, run ``runc create`` (or ``restore``) -> ``{pid}``.

        On any failure everything is undone (runc state, mounts, fds) and the
        shim exits after the error reply, removing task_dir.
        """
        if self.init is not None or self.finished:
            raise FailedPrecondition(f"task {self.name}: already created")
        try:
            pid = self._create(bundle_spec, rootfs, stdin, stdout, stderr, terminal, checkpoint)
        except BaseException:
            self._abandon()
            raise
        return {"pid": pid}

    def start(self) -> dict[str, Any]:
        """``runc start`` of a CREATED task -> ``{}``."""
        init = self._require_init()
        # CREATED -> RUNNING
        if self.started or init.exited:
            raise FailedPrecondition(f"task {self.name}: already started")
        if not self._start_through_fifo(init.pid):
            self.runc.start(self.config.id)
        self.started = True
        return {}

    def _start_through_fifo(self, pid: int) -> bool:
        if not self._runtime_is_runc:
            return False
        return start_through_fifo(self.config.runc_root, self.config.id, pid, self.runc.timeout)

    @property
    def _runtime_is_runc(self) -> bool:
        # Only runc keeps its state where runtime.exec_fifo and
        # runtime.runc_cleanup look for it; any other runtime gets its CLI.
        return Path(self.config.runc_binary).name == "runc"

    def state(self) -> dict[str, Any]:
        """``{pid, status, exit_status, exited_at_ns, execs: [...]}``."""
        init = self._require_init()
        if not init.exited:
            status = str(self.runc.state(self.config.id).get("status", "unknown")).upper()
            if status == "STOPPED":
                # runc saw the init gone before our SIGCHLD turn: reap it now,
                # so STOPPED always comes with its exit status.
                self.reap()
        if init.exited:
            status = "STOPPED"
        return {
            "pid": init.pid,
            "status": status,
            "exit_status": init.exit_status,
            "exited_at_ns": init.exited_at_ns,
            "execs": [p.describe() for p in self.table.execs.values()],
        }

    def kill(self, signal: int = 15, all: bool = False, pid: int = 0) -> dict[str, Any]:
        """Signal the init (``runc kill``), every process, or one exec -> ``{}``."""
        init = self._require_init()
        signal = signal or signals.SIGTERM
        if not 1 <= signal <= 64:
            raise InvalidArgument(f"task {self.name}: signal {signal} is outside 1-64")
        if init.exited:
            raise NotFound(f"task {self.name}: stopped")
        if pid in (0, init.pid):
            self.runc.kill(self.config.id, signal, all=all)
            return {}
        process = self.table.find_live(pid)
        if process is None:
            raise NotFound(f"task {self.name}: no process {pid}")
        try:
            # Safe from pid reuse: an exec is our child until we reap it.
            os.kill(pid, signal)
        except ProcessLookupError:
            raise NotFound(f"task {self.name}: no process {pid}") from None
        return {}

    def exec(
        self, process: bytes, stdin: str, stdout: str, stderr: str, terminal: bool
    ) -> dict[str, Any] | PendingExec:
        """``runc exec --detach`` of an OCI Process (JSON) -> ``{pid}``.

        Without a terminal the exec is only started: the server answers when
        the :class:`PendingExec` it returns is finished (see :meth:`reap`).
        """
        init = self._require_init()
        if not self.started or init.exited:
            raise FailedPrecondition(f"task {self.name}: not running")
        spec = load_process(process, owner=f"task {self.name}")
        exec_id = next(self._exec_ids)
        record = Process(pid=0, exec_id=exec_id)
        if not terminal and isinstance(self.runc, ForkingRunc):
            return self._spawn_exec(spec, record, stdin, stdout, stderr)
        pid_file = self.config.task_dir / f"exec-{exec_id}.pid"

        def run(io: ProcessIO) -> int:
            return self.runc.exec(self.config.id, spec, pid_file=pid_file, **io.as_kwargs())

        try:
            record.pid = self._launch(record, run, stdin, stdout, stderr, terminal)
        except BaseException:
            record.release()
            raise
        finally:
            pid_file.unlink(missing_ok=True)
        self.table.execs[record.pid] = record
        return {"pid": record.pid}

    def _spawn_exec(
        self, spec: dict[str, Any], record: Process, stdin: str, stdout: str, stderr: str
    ) -> PendingExec:
        assert isinstance(self.runc, ForkingRunc)
        try:
            wiring = PlainStdio(record, stdin, stdout, stderr, name=self._label(record))
            pending = spawn_exec(
                self.runc, self.config.id, spec, record, wiring, self.config.task_dir
            )
        except BaseException:
            record.release()
            raise
        self.pending[pending.runc_pid] = pending
        return pending

    def reap(self) -> None:
        """Reap exited children: finish the execs whose runc exited, then record exits.

        Each finished exec goes to :attr:`completed` with its new pid, or
        the error that ended it, for the server to answer.
        """
        exits = []
        for pid, status, exited_at_ns in reap_children():
            pending = self.pending.pop(pid, None)
            if pending is None:
                exits.append((pid, status, exited_at_ns))
                continue
            try:
                new_pid = pending.finish(status)
            except BaseException as exc:
                self.completed.append((pending, exc))
                continue
            self.table.execs[new_pid] = pending.record
            self.completed.append((pending, new_pid))
        for pid, status, exited_at_ns in exits:
            init = self.table.init
            known = pid in self.table.execs or (init is not None and pid == init.pid)
            if self.pending and not known:
                # runc's intermediate process exits before runc does, so an
                # exec's process is re-parented to us, and may exit and be
                # reaped, before runc has told us its pid: keep the exit
                # until the execs under way have finished.
                self._unclaimed[pid] = (status, exited_at_ns)
                continue
            self.table.on_exit(pid, status, exited_at_ns)
        for _pending, outcome in self.completed:
            if isinstance(outcome, int) and outcome in self._unclaimed:
                self.table.on_exit(outcome, *self._unclaimed.pop(outcome))
        if not self.pending:
            # No exec can claim them now: they were the container's own orphans.
            self._unclaimed.clear()

    def next_deadline(self) -> float | None:
        """When the oldest exec under way times out (monotonic), if any is."""
        return min((p.deadline for p in self.pending.values()), default=None)

    def expire_pending(self, now: float) -> None:
        """Kill the runc of every exec past its deadline."""
        for pending in self.pending.values():
            pending.expire(now)

    def pty(self, pid: int, width: int, height: int) -> dict[str, Any]:
        """Resize the pty of the init (``pid`` 0) or an exec -> ``{}``."""
        process = self._live_process(pid)
        if process.pty_master is None:
            raise FailedPrecondition(f"task {self.name}: process {process.pid} has no terminal")
        set_winsize(process.pty_master, height, width)
        return {}

    def close_stdin(self, pid: int = 0) -> dict[str, Any]:
        """Deliver what the stdin FIFO holds, then end the process's stdin -> ``{}``."""
        process = self._live_process(pid)
        if process.close_stdin is not None:
            close, process.close_stdin = process.close_stdin, None
            close()
        return {}

    def pause(self) -> dict[str, Any]:
        """``runc pause`` -> ``{}``."""
        self._require_live()
        self.runc.pause(self.config.id)
        return {}

    def resume(self) -> dict[str, Any]:
        """``runc resume`` -> ``{}``."""
        self._require_live()
        self.runc.resume(self.config.id)
        return {}

    def ps(self) -> dict[str, Any]:
        """``runc ps`` -> ``{pids}``."""
        self._require_live()
        return {"pids": self.runc.ps(self.config.id)}

    def checkpoint(
        self,
        image_path: str = "",
        work_path: str = "",
        allow_tcp: bool = False,
        allow_unix_sockets: bool = False,
        allow_terminal: bool = False,
        file_locks: bool = False,
        empty_namespaces: list[str] | None = None,
        exit: bool = False,
    ) -> dict[str, Any]:
        """``runc checkpoint`` -> ``{image_path}``; UNAVAILABLE with CRIU's reason on failure.

        Without ``image_path`` the image goes to ``<task_dir>/checkpoint``
        (the wire's request names no place; the daemon takes it from there).
        """
        self._require_live()
        self._require_criu()
        image = Path(image_path) if image_path else self.config.task_dir / "checkpoint"
        work = Path(work_path) if work_path else self.config.task_dir / "checkpoint-work"
        try:
            self.runc.checkpoint(
                self.config.id,
                image,
                work,
                leave_running=not exit,
                allow_tcp=allow_tcp,
                allow_unix_sockets=allow_unix_sockets,
                allow_terminal=allow_terminal,
                file_locks=file_locks,
                empty_namespaces=tuple(empty_namespaces or ()),
            )
        except RuncError as exc:
            # A failed dump leaves the task running: CRIU rolls it back.
            raise Unavailable(exc.message) from exc
        return {"image_path": str(image)}

    def delete(self) -> dict[str, Any]:
        """Tear the task down -> ``{exit_status, exited_at_ns}``; the shim then exits.

        Only a task whose init has exited, or was never started: a CREATED
        task's waiting init is killed first (status 137).
        """
        init = self.init
        if init is not None and not init.exited:
            if self.started:
                raise FailedPrecondition(f"task {self.name}: cannot delete a running task")
            # CREATED -> STOPPED: the init waits on runc's exec fifo; kill it.
            self._kill_created(init)
        self._teardown()
        self.finished = self.remove_task_dir = True
        if init is None:
            return {"exit_status": 0, "exited_at_ns": 0}
        return {"exit_status": init.exit_status, "exited_at_ns": init.exited_at_ns}

    def shutdown(self) -> dict[str, Any]:
        """Exit the shim leaving the container and task_dir as they are (tests) -> ``{}``."""
        self.finished = True
        return {}

    # -- helpers -----------------------------------------------------------

    def _create(
        self,
        bundle_spec: bytes | str,
        rootfs: list[dict[str, Any]],
        stdin: str,
        stdout: str,
        stderr: str,
        terminal: bool,
        checkpoint: str,
    ) -> int:
        if checkpoint:
            self._require_criu()
        self.bundle.mkdir(mode=0o711, exist_ok=True)
        if isinstance(bundle_spec, str):  # a client that sent the JSON as text
            bundle_spec = bundle_spec.encode()
        _write_file(self.bundle / "config.json", bundle_spec)
        self.rootfs.mkdir(exist_ok=True)
        if rootfs:
            self._mounted = True
            mount_all(rootfs, self.rootfs)
        record = Process(pid=0, exec_id=0)
        self.table.init = record
        pid_file = self.config.task_dir / "init.pid"
        task_id = self.config.id

        def run(io: ProcessIO) -> int:
            if not checkpoint:
                return self.runc.create(task_id, self.bundle, pid_file=pid_file, **io.as_kwargs())
            work = self.config.task_dir / "restore-work"
            return self.runc.restore(
                task_id, self.bundle, Path(checkpoint), work, pid_file=pid_file, **io.as_kwargs()
            )

        record.pid = self._launch(record, run, stdin, stdout, stderr, terminal)
        # A restored task runs at once: RESTORED -> RUNNING without a start.
        self.started = bool(checkpoint)
        return record.pid

    def _launch(
        self,
        record: Process,
        run: Callable[[ProcessIO], int],
        stdin: str,
        stdout: str,
        stderr: str,
        terminal: bool,
    ) -> int:
        name = self._label(record)
        console = self.console_socket
        return launch(
            record, run, stdin, stdout, stderr, terminal, name=name, console_socket=console
        )

    def _abandon(self) -> None:
        """Undo a failed create: runc state, mounts, fds; the shim exits after replying."""
        try:
            self._teardown()
        except Exception:
            log.exception("task %s: cleaning up after a failed create", self.name)
        self.finished = self.remove_task_dir = True

    def _teardown(self) -> None:
        init = self.init
        removed = (
            init is not None
            and init.exited
            and self._runtime_is_runc
            and remove_stopped(self.config.runc_root, self.config.id)
        )
        if not removed:
            with contextlib.suppress(RuncError, Unavailable):
                self.runc.delete(self.config.id, force=True)
        for process in self.table.all():
            process.release()
        if self._mounted:
            unmount_all(self.rootfs)
            self._mounted = False

    def _kill_created(self, init: Process) -> None:
        try:
            self.runc.kill(self.config.id, signals.SIGKILL)
        except RuncError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init.pid, signals.SIGKILL)
        deadline = time.monotonic() + _KILL_WAIT
        while not init.exited and time.monotonic() < deadline:
            self.reap()
            if not init.exited:
                time.sleep(0.005)
        if not init.exited:
            # Never observed: the wire's status for an exit nobody saw.
            self.table.on_exit(init.pid, 255, time.time_ns())

    def _require_init(self) -> Process:
        if self.init is None:
            raise FailedPrecondition(f"task {self.name}: not created")
        return self.init

    def _require_live(self) -> Process:
        init = self._require_init()
        if init.exited:
            raise FailedPrecondition(f"task {self.name}: stopped")
        return init

    def _require_criu(self) -> None:
        reason = self.runc.criu_available()
        if reason is not None:
            raise Unavailable(f"task {self.name}: checkpoint needs CRIU: {reason}")

    def _live_process(self, pid: int) -> Process:
        self._require_init()
        process = self.table.find_live(pid)
        if process is None:
            raise NotFound(f"task {self.name}: no process {pid}")
        return process

    def _label(self, process: Process) -> str:
        kind = "init" if process.exec_id == 0 else f"exec {process.exec_id}"
        return f"task {self.name} {kind}"


def _write_file(path: Path, data: bytes) -> None:
    """``path.write_bytes(data)`` with os calls: io's objects and code stay shared."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
