"""The ``berth-shim`` process: one per task, serving its ipc socket from one thread.

:func:`run_shim` turns the calling process (a grandchild of the zygote) into
the shim: own session (a daemon's death or its terminal's signals do not
reach it), title ``berth-shim <ns>/<id>``, child subreaper (the task's
processes are re-parented to it when runc exits), working directory
``task_dir``, an exclusive ``flock`` on ``task_dir`` (a second shim for the
same task refuses to start), stderr appended to ``task_dir/shim.log``.

Sockets (the framing and the event datagrams: :mod:`runtime.shim.protocol`):

- a unix ``SOCK_STREAM`` listener at ``<task_dir>/shim.sock`` (mode 0600),
  answering length-prefixed msgpack requests ``{"op": str, "seq": int,
  ...fields}`` with ``{"seq": seq, "ok": {...}}`` or ``{"seq": seq, "error":
  {"code", "message"}}``, in order, on the connection they came on; the ops
  are the methods of :class:`~runtime.shim.task.Task` named in ``OPS``;
- a unix ``SOCK_DGRAM`` socket connected to the daemon's event socket, on
  which every exit goes out as ``{"namespace", "id", "type": "EXIT", "pid",
  "exit_status", "exited_at_ns"}`` after it was written to the exits file.
  Events the daemon cannot take (it is down, or its queue is full) wait in
  the shim and are sent again on later turns of the loop (see
  :mod:`runtime.shim.events`); the exits file is the ground truth.

The loop (``select.poll``, one thread, no zmq) polls the listener, the
connections, a SIGCHLD wake-up pipe, the stdio copies and, while the daemon's
queue is full, the event socket. It reaps children at the top of each turn
and before each request, never while a runc command it waits for runs, so
it cannot take the exit status that wait is for. An exec without a terminal
is not waited for: its runc is spawned, reaped like any child, and the
request answered then (:mod:`runtime.shim.execs`); until then that
connection's further requests wait, so replies stay in order on each. A reply to ``delete`` (or to a
failed ``create``) is sent after task_dir is gone, and then the shim exits.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal.signal without its enums
import contextlib
import ctypes
import dataclasses
import fcntl
import logging
import os
import select
import shutil
import signal
import socket
import sys
import time
from typing import Any, NoReturn

import msgpack
from setproctitle import setproctitle

from runtime.mounts import unmount_all
from runtime.runc import RuncError
from runtime.shim import lines
from runtime.shim.config import ShimConfig
from runtime.shim.events import EventSender
from runtime.shim.execs import PendingExec
from runtime.shim.helper import ForkingRunc
from runtime.shim.oom import OomWatch
from runtime.shim.protocol import SHIM_SOCKET, FrameBuffer, frame
from runtime.shim.task import Task
from wire.errors import BerthError, to_wire

__all__ = [
    "LOG_FORMAT",
    "OPS",
    "SHIM_SOCKET",
    "configure_logging",
    "prctl",
    "run_shim",
]

log = logging.getLogger(__name__)

# Connections waiting for the loop to accept them.
_BACKLOG = 128
# How long a reply may wait for a client that does not read it.
_REPLY_TIMEOUT = 5.0
_READ_SIZE = 256 * 1024
# The loop wakes on its own this often, in case a wake-up was ever missed.
_IDLE_POLL_MS = 10_000
# The zygote's and every shim's log format: the pid tells them apart.
LOG_FORMAT = "%(asctime)s berth[%(process)d] %(levelname)s %(name)s: %(message)s"
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

# Request op -> Task method. The table is the whole protocol's list of ops.
OPS: dict[str, str] = {
    op: op
    for op in (
        "create",
        "start",
        "state",
        "kill",
        "exec",
        "pty",
        "close_stdin",
        "pause",
        "resume",
        "ps",
        "checkpoint",
        "delete",
        "shutdown",
    )
}


# Resolved once, in the zygote: every shim shares it instead of building
# its own ctypes function objects (about 200 KiB of private memory each).
_libc_prctl = ctypes.CDLL(None, use_errno=True).prctl


def prctl(option: int, value: int) -> None:
    """``prctl(option, value)`` through libc; OSError on failure."""
    if _libc_prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}): {os.strerror(errno)}")


def run_shim(config: ShimConfig, *, ready_fd: int | None = None) -> NoReturn:
    """Become the shim for ``config``'s task, serve until it is deleted, and exit.

    ``ready_fd`` (from the zygote) receives one msgpack map once the socket
    is bound, ``{"pid": pid}``, or ``{"error": message}`` if start-up failed,
    and is then closed.
    """
    # The shim works in task_dir (see ShimServer): make every path absolute first.
    config = dataclasses.replace(
        config, task_dir=config.task_dir.absolute(), runc_root=config.runc_root.absolute()
    )
    try:
        shim = ShimServer(config)
    except BaseException as exc:
        log.exception("shim %s: start-up failed", config.name)
        _report(ready_fd, {"error": f"shim {config.name}: {exc}"})
        os._exit(1)
    _report(ready_fd, {"pid": os.getpid()})
    status = 1
    try:
        shim.serve()
        status = 0
    except BaseException:
        log.exception("shim %s: loop failed", config.name)
    finally:
        shim.close()
    os._exit(status)


def _report(ready_fd: int | None, message: dict[str, Any]) -> None:
    if ready_fd is None:
        return
    try:
        os.write(ready_fd, msgpack.packb(message, use_bin_type=True))
    except OSError as exc:
        log.warning("reporting start-up to the zygote: %s", exc)
    finally:
        os.close(ready_fd)


class ShimServer:
    """The shim's process set-up, its sockets and its loop."""

    def __init__(self, config: ShimConfig) -> None:
        self.config = config
        # try/except rather than contextlib.suppress, and _signal.signal
        # rather than signal.signal (its enum conversions), here and in the
        # loop: code a shim never runs leaves the zygote's pages shared.
        try:  # noqa: SIM105
            os.setsid()
        except PermissionError:  # already a session leader
            pass
        setproctitle(f"berth-shim {config.name}")
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        created = not config.task_dir.exists()
        config.task_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chdir(config.task_dir)
        self._lock_fd = os.open(config.task_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another shim serves {config.task_dir}") from None
        try:
            _log_to(config)
            self._open()
        except BaseException:
            if created:
                shutil.rmtree(config.task_dir, ignore_errors=True)
            raise
        # Each runc command in a child of its own: see runtime.shim.helper.
        runc = ForkingRunc(config.runc_binary, config.runc_root, log_dir=config.task_dir)
        self.task = Task(config, runc, self.events.publish)
        lines.info(__name__, f"shim {config.name}: serving (pid {os.getpid()})")

    def _open(self) -> None:
        # SIGCHLD must have a Python handler for the wake-up fd to be written.
        self._wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        _signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        self.listener = socket.socket(
            socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )
        try:  # noqa: SIM105
            os.unlink(SHIM_SOCKET)  # left by a shim that was killed; we hold the flock
        except FileNotFoundError:
            pass
        # Owner only: whoever can send here can run processes as root. The
        # umask closes the window between bind and chmod.
        old_umask = os.umask(0o077)
        try:
            # Relative to task_dir: fits in a unix address however deep it is.
            self.listener.bind(SHIM_SOCKET)
            os.chmod(SHIM_SOCKET, 0o600)
        finally:
            os.umask(old_umask)
        self.listener.listen(_BACKLOG)
        # fd -> (connection, what it sent that is not a whole request yet)
        self.connections: dict[int, tuple[socket.socket, FrameBuffer]] = {}
        # runc pid of an exec under way -> (connection fd or -1, request seq)
        self._deferred: dict[int, tuple[int, Any]] = {}
        self._deferred_fds: set[int] = set()
        self._resume: set[int] = set()  # connections whose exec was answered
        self.events = EventSender(self.config.events_address)
        self._oom: OomWatch | None = None
        self._oom_tried = False

    def serve(self) -> None:
        """Run the loop until the task is deleted (or a ``shutdown`` request)."""
        listener = self.listener.fileno()
        while not self.task.finished:
            poller = select.poll()
            poller.register(listener, select.POLLIN)
            poller.register(self._wake_r, select.POLLIN)
            for fd in self.connections:
                if fd not in self._deferred_fds:  # one request at a time per connection
                    poller.register(fd, select.POLLIN)
            wanted: dict[int, int] = {}
            copiers = [c for p in self.task.table.all() for c in p.copiers]
            for copier in copiers:
                for fd, write in copier.interest():
                    wanted[fd] = wanted.get(fd, 0) | (select.POLLOUT if write else select.POLLIN)
            events_fd = self.events.fileno()
            if events_fd is not None:
                wanted[events_fd] = select.POLLOUT
            oom = self._oom_watch()
            if oom is not None:
                wanted[oom.fd] = wanted.get(oom.fd, 0) | oom.flags
            for fd, flags in wanted.items():
                poller.register(fd, flags)
            timeout = _IDLE_POLL_MS
            retry = self.events.retry_after()
            if retry is not None:
                timeout = min(timeout, int(retry * 1000) + 1)
            deadline = self.task.next_deadline()
            if deadline is not None:
                timeout = max(0, min(timeout, int((deadline - time.monotonic()) * 1000) + 1))
            ready = dict(poller.poll(timeout))
            if deadline is not None:
                self.task.expire_pending(time.monotonic())
            if self._wake_r in ready:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            # Before reaping: the OOM event goes out ahead of the EXIT it caused.
            if oom is not None and oom.fd in ready:
                self._oom_seen(oom)
            self.task.reap()
            for copier in copiers:
                for fd in (copier.src, copier.dst):
                    if fd in ready:
                        copier.on_ready(fd)
            self.events.flush()
            for fd in [fd for fd in self.connections if fd in ready]:
                self._read_requests(fd)
            if listener in ready:
                self._accept()
            self._settle()
        self._abandon_pending()

    def _settle(self) -> None:
        """Answer the execs that finished, then what their connections sent behind them."""
        while True:
            completed, self.task.completed = self.task.completed, []
            for pending, outcome in completed:
                fd, seq = self._deferred.pop(pending.runc_pid)
                self._deferred_fds.discard(fd)
                if isinstance(outcome, BaseException):
                    reply = self._error_reply(seq, "exec", outcome)
                else:
                    reply = {"seq": seq, "ok": {"pid": outcome}}
                if fd in self.connections and self._send(fd, reply):
                    self._resume.add(fd)
            if not self._resume:
                return
            fd = self._resume.pop()
            if fd in self.connections:
                self._process_buffer(fd)

    def _abandon_pending(self) -> None:
        """The shim is exiting: execs still starting get an error, their runc is killed."""
        for runc_pid, (fd, seq) in list(self._deferred.items()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(runc_pid, signal.SIGKILL)
            message = f"shim {self.config.name}: exiting"
            if fd in self.connections:
                self._send(fd, _error(seq, "UNAVAILABLE", message))
        self._deferred.clear()
        self._deferred_fds.clear()
        self._resume.clear()

    def _oom_watch(self) -> OomWatch | None:
        init = self.task.init
        if self._oom is None and init is not None and not init.exited and not self._oom_tried:
            self._oom_tried = True
            try:
                self._oom = OomWatch(init.pid)
            except OSError as exc:
                log.warning("shim %s: no OOM events: %s", self.config.name, exc)
        if self._oom is not None and (init is None or init.exited):
            self._oom.close()
            self._oom = None
        return self._oom

    def _oom_seen(self, oom: OomWatch) -> None:
        init = self.task.init
        for _ in range(oom.check()):
            self.events.publish(
                {
                    "namespace": self.config.namespace,
                    "id": self.config.id,
                    "type": "OOM",
                    "pid": init.pid if init is not None else 0,
                    "exit_status": 0,
                    "exited_at_ns": 0,
                }
            )

    def close(self) -> None:
        """Close the sockets; a last try to deliver queued events."""
        self.events.flush(force=True)
        self.events.close()
        for connection, _ in self.connections.values():
            connection.close()
        self.connections.clear()
        self.listener.close()
        self.task.table.exits.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the client will time out
                log.warning("shim %s: accept: %s", self.config.name, exc)
                return
            # Reads happen only when poll says so; a reply's write may wait
            # this long for a client that does not read.
            connection.settimeout(_REPLY_TIMEOUT)
            self.connections[connection.fileno()] = (connection, FrameBuffer())

    def _read_requests(self, fd: int) -> None:
        connection, buffer = self.connections[fd]
        try:
            data = connection.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(fd)
            return
        buffer.feed(data)
        self._process_buffer(fd)

    def _process_buffer(self, fd: int) -> None:
        """Answer the whole requests a connection has sent, until one is deferred."""
        _, buffer = self.connections[fd]
        while fd in self.connections and fd not in self._deferred_fds:
            try:
                payload = buffer.next()
            except ValueError as exc:
                log.warning("shim %s: %s; closing the connection", self.config.name, exc)
                self._drop(fd)
                return
            if payload is None:
                return
            if self.task.finished:
                message = f"shim {self.config.name}: exiting"
                reply = _error(_seq_of(payload), "UNAVAILABLE", message)
            else:
                outcome = self.handle(payload)
                if isinstance(outcome, PendingExec):
                    # Answered when its runc is reaped (_settle).
                    self._deferred[outcome.runc_pid] = (fd, _seq_of(payload))
                    self._deferred_fds.add(fd)
                    return
                reply = outcome
                if self.task.finished and self.task.remove_task_dir:
                    self._remove_task_dir()
            self._send(fd, reply)

    def _send(self, fd: int, reply: dict[str, Any]) -> bool:
        """Send one reply; a connection that cannot take it is dropped."""
        connection, _ = self.connections[fd]
        try:
            connection.sendall(frame(reply), socket.MSG_NOSIGNAL)
        except OSError as exc:
            log.warning("shim %s: reply not sent: %s", self.config.name, exc)
            self._drop(fd)
            return False
        return True

    def _drop(self, fd: int) -> None:
        connection, _ = self.connections.pop(fd)
        connection.close()
        # An exec still starting for it runs on; its answer has nowhere to go.
        for runc_pid, (owner, _seq) in list(self._deferred.items()):
            if owner == fd:
                self._deferred[runc_pid] = (-1, _seq)
        self._deferred_fds.discard(fd)
        self._resume.discard(fd)

    def handle(self, payload: bytes) -> dict[str, Any] | PendingExec:
        """One request payload -> its reply map, or the exec that will answer it later."""
        try:
            request = msgpack.unpackb(payload, raw=False)
        except Exception:
            request = None
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return _error(None, "INVALID_ARGUMENT", "request is not a map with an op")
        seq = request.get("seq")
        op = request["op"]
        if op not in OPS:
            return _error(seq, "UNIMPLEMENTED", f"shim: unknown op {op!r}")
        args = {key: value for key, value in request.items() if key not in ("op", "seq")}
        method = getattr(self.task, OPS[op])
        self.task.reap()
        try:
            result = method(**args)
        except TypeError as exc:
            # Raised by the call itself (no deeper frame): the fields do not fit.
            if exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
                return _error(seq, "INVALID_ARGUMENT", f"shim {op}: {exc}")
            return self._error_reply(seq, op, exc)
        except Exception as exc:
            return self._error_reply(seq, op, exc)
        if isinstance(result, PendingExec):
            return result
        return {"seq": seq, "ok": result}

    def _error_reply(self, seq: Any, op: str, exc: BaseException) -> dict[str, Any]:
        """The reply for ``op`` failing with ``exc``: runc's and berth's errors by code."""
        if isinstance(exc, RuncError):
            return _error(seq, "FAILED_PRECONDITION", exc.message)
        if isinstance(exc, BerthError):
            return {"seq": seq, "error": to_wire(exc)}
        log.error("shim %s: %s failed", self.config.name, op, exc_info=exc)
        return _error(seq, "INTERNAL", f"internal error: {type(exc).__name__}")

    def _remove_task_dir(self) -> None:
        try:
            # Never remove a tree with a filesystem still mounted in it.
            unmount_all(self.task.rootfs)
        except Exception:
            log.exception("shim %s: rootfs still mounted; keeping task_dir", self.config.name)
            return
        shutil.rmtree(self.config.task_dir, ignore_errors=True)


def _error(seq: Any, code: str, message: str) -> dict[str, Any]:
    return {"seq": seq, "error": {"code": code, "message": message}}


def _seq_of(payload: bytes) -> Any:
    with contextlib.suppress(Exception):
        request = msgpack.unpackb(payload, raw=False)
        if isinstance(request, dict):
            return request.get("seq")
    return None


def _log_to(config: ShimConfig) -> None:
    """Send stderr, and so the shim's log lines, to ``task_dir/shim.log``.

    The zygote has configured logging already (see ``LOG_FORMAT``), so a
    forked shim only moves fd 2 and shares the zygote's handler objects.
    """
    fd = os.open(config.task_dir / "shim.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    if not logging.root.handlers:
        configure_logging()


def configure_logging() -> None:
    """Log INFO and up to stderr as ``LOG_FORMAT``; done once, before any fork."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.root.handlers[:] = [handler]
    logging.root.setLevel(logging.INFO)
