"""The daemon's side of one shim: its request socket and its exits file.

A shim serves length-prefixed msgpack requests on a unix stream socket at
``<task_dir>/shim.sock`` (see :mod:`runtime.shim.protocol` for the framing
and :mod:`runtime.shim.server` for the ops). :class:`ShimClient` holds one
connection to it. It is not thread-safe: use it from one thread at a time,
the daemon's actor for that task. Errors come back as the classes of
:mod:`wire.errors`, so a shim's ``NOT_FOUND`` is :class:`wire.errors.NotFound`
in the daemon; a shim that is not running, dies during a call or does not
answer in time is :class:`wire.errors.Unavailable`. :func:`shim_running`
tells whether a shim serves a task_dir (its ``flock``), without a request.

:func:`read_exits` reads ``<task_dir>/exits``, the shim's durable record of
every exit, which a restarted daemon reads for a shim that is gone.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import select
import socket
import time
from pathlib import Path
from typing import Any

import msgpack

from runtime.shim.protocol import HEADER, MAX_FRAME, SHIM_SOCKET, FrameBuffer, frame
from wire.errors import Internal, InvalidArgument, Unavailable, from_wire

__all__ = ["ShimClient", "read_exits", "shim_running", "shim_socket"]

log = logging.getLogger(__name__)

# The longest path a unix socket address holds (sun_path, with its NUL).
_SUN_PATH_MAX = 107
_EXIT_FIELDS = ("pid", "exit_status", "exited_at_ns")
# While waiting for a reply, how often the client checks that the shim lives.
_LIVENESS_INTERVAL = 1.0
_READ_SIZE = 256 * 1024


def shim_socket(task_dir: Path) -> Path:
    """The path of the shim's request socket in ``task_dir``."""
    return task_dir / SHIM_SOCKET


def shim_running(task_dir: Path) -> bool:
    """Whether a shim serves ``task_dir`` now.

    A shim holds an exclusive ``flock`` on its task_dir for its whole life,
    and the kernel drops it when the shim dies however it dies; so a shared
    lock we can take means no shim. Cheap: three system calls.
    """
    try:
        fd = os.open(task_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the shared lock, if we got it
    return False


def read_exits(task_dir: Path) -> list[dict[str, int]]:
    """Every exit in ``<task_dir>/exits``, oldest first: ``{pid, exit_status, exited_at_ns}``.

    A missing file is no exits. A line that does not parse (the last one,
    torn by a crash mid-write) is skipped.
    """
    try:
        data = (task_dir / "exits").read_bytes()
    except FileNotFoundError:
        return []
    exits: list[dict[str, int]] = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            exits.append({name: int(entry[name]) for name in _EXIT_FIELDS})
        except (ValueError, TypeError, KeyError):
            log.warning("%s/exits: skipping unreadable line %r", task_dir, line[:200])
    return exits


class ShimClient:
    """Requests to the shim of ``task_dir``; use it from one thread only.

    The connection is made by the first call and kept for the next ones;
    a call that fails to get its reply closes it, so a late reply can never
    be taken for the answer to a later call.

    ``call(op, **fields)`` returns the reply's ``ok`` map. The ops, their
    fields and replies::

        create {bundle_spec: bin, rootfs: [Mount], stdin, stdout, stderr: str,
                terminal: bool, checkpoint: str}         -> {pid}
        start {}                                          -> {}
        state {}    -> {pid, status, exit_status, exited_at_ns,
                        execs: [{pid, exited, exit_status, exited_at_ns}]}
        kill {signal: int, all: bool, pid: int}           -> {}
        exec {process: bin, stdin, stdout, stderr: str, terminal: bool} -> {pid}
        pty {pid, width, height}                          -> {}
        close_stdin {pid}                                 -> {}
        pause {} / resume {}                              -> {}
        ps {}                                             -> {pids: [int]}
        checkpoint {image_path, work_path: str (optional), allow_tcp,
                    allow_unix_sockets, allow_terminal, file_locks: bool,
                    empty_namespaces: [str], exit: bool}  -> {image_path}
        delete {}                       -> {exit_status, exited_at_ns}; the shim exits
        shutdown {}                     -> {}; the shim exits, the task is left as is
    """

    def __init__(self, task_dir: Path, *, timeout: float = 30.0) -> None:
        self.task_dir = task_dir
        self.timeout = timeout
        self.name = f"{task_dir.parent.name}/{task_dir.name}"
        self._seq = itertools.count(1)
        self._socket: socket.socket | None = None
        self._buffer = FrameBuffer()

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its reply (at most ``timeout`` seconds).

        ``Unavailable`` at once when no shim serves task_dir, and as soon as
        the shim is seen to die while the call waits.
        """
        if not shim_running(self.task_dir):
            raise Unavailable(f"shim {self.name}: not running")
        deadline = time.monotonic() + self.timeout
        seq = next(self._seq)
        data = frame({**fields, "op": op, "seq": seq})
        if len(data) - HEADER.size > MAX_FRAME:
            raise InvalidArgument(
                f"shim {self.name}: {op} request of {len(data)} bytes is too large"
            )
        self._send(data, op, deadline)
        while True:
            reply = self._receive(op, deadline)
            if not isinstance(reply, dict) or reply.get("seq") != seq:
                continue  # not ours (cannot happen on a fresh connection; harmless)
            if "error" in reply:
                raise from_wire(reply["error"])
            ok = reply.get("ok")
            return ok if isinstance(ok, dict) else {}

    def close(self) -> None:
        """Close the connection; the shim is unaffected."""
        self._disconnect()

    def __enter__(self) -> ShimClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, data: bytes, op: str, deadline: float) -> None:
        # A kept connection may be to a shim that has exited since (and a
        # new one may serve task_dir now): then connect again, once.
        for fresh in (self._socket is None, True):
            socket_ = self._socket or self._connect(deadline)
            try:
                socket_.settimeout(max(deadline - time.monotonic(), 0.001))
                socket_.sendall(data, socket.MSG_NOSIGNAL)
                return
            except TimeoutError:
                self._disconnect()
                raise Unavailable(f"shim {self.name}: not responding") from None
            except OSError:
                self._disconnect()
                if fresh or not shim_running(self.task_dir):
                    raise self._gone(op) from None

    def _receive(self, op: str, deadline: float) -> Any:
        """The next reply on the connection, decoded."""
        assert self._socket is not None
        socket_ = self._socket
        poller = select.poll()
        poller.register(socket_.fileno(), select.POLLIN)
        while True:
            try:
                payload = self._buffer.next()
            except ValueError as exc:
                self._disconnect()
                raise Internal(f"shim {self.name}: malformed reply ({exc})") from None
            if payload is not None:
                try:
                    return msgpack.unpackb(payload, raw=False)
                except Exception as exc:
                    raise Internal(f"shim {self.name}: malformed reply ({exc})") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._disconnect()
                raise Unavailable(f"shim {self.name}: not responding")
            if not poller.poll(int(min(remaining, _LIVENESS_INTERVAL) * 1000) + 1):
                # A shim stopped (SIGSTOP) or wedged keeps its connection
                # open: its flock tells that it is gone all the same.
                if not shim_running(self.task_dir):
                    self._disconnect()
                    raise self._gone(op)
                continue
            try:
                data = socket_.recv(_READ_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                # The shim closed the connection: it exited (its last reply,
                # if any, came before the end of file and was read above).
                self._disconnect()
                raise self._gone(op)
            self._buffer.feed(data)

    def _gone(self, op: str) -> Unavailable:
        return Unavailable(f"shim {self.name}: exited during {op}")

    def _disconnect(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._buffer = FrameBuffer()

    def _connect(self, deadline: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        path = str(shim_socket(self.task_dir))
        dir_fd: int | None = None
        try:
            if len(os.fsencode(path)) > _SUN_PATH_MAX:
                # Too long for a unix address: reach the socket through a
                # descriptor of its directory (needed only while connecting).
                dir_fd = os.open(self.task_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                path = f"/proc/self/fd/{dir_fd}/{SHIM_SOCKET}"
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.connect(path)
        except (TimeoutError, BlockingIOError):
            # Its backlog is full: a shim that does not accept is not responding.
            sock.close()
            raise Unavailable(f"shim {self.name}: not responding") from None
        except OSError as exc:  # task_dir or socket removed since the check: it exited
            sock.close()
            raise Unavailable(f"shim {self.name}: not running ({exc.strerror})") from None
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        self._socket = sock
        return sock
