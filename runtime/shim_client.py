"""The daemon's side of one shim: its request socket and its exits file.

A shim serves msgpack requests on a ROUTER at ``ipc://<task_dir>/shim.sock``
(see :mod:`runtime.shim.server` for the ops). :class:`ShimClient` holds one
DEALER to it. It is not thread-safe: create it and use it on one thread,
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
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

from wire.errors import Internal, Unavailable, from_wire

__all__ = ["ShimClient", "read_exits", "shim_running", "shim_socket"]

log = logging.getLogger(__name__)

# The longest path a unix socket address holds (sun_path, with its NUL).
_SUN_PATH_MAX = 107
_EXIT_FIELDS = ("pid", "exit_status", "exited_at_ns")
# While waiting for a reply, how often the client checks that the shim lives.
_LIVENESS_INTERVAL = 1.0


def shim_socket(task_dir: Path) -> Path:
    """The path of the shim's request socket in ``task_dir``."""
    return task_dir / "shim.sock"


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

    The DEALER socket is made on the thread of the first call (the daemon's
    actor for the task), not in the constructor.

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

    def __init__(
        self, task_dir: Path, *, timeout: float = 30.0, context: zmq.Context[Any] | None = None
    ) -> None:
        self.task_dir = task_dir
        self.timeout = timeout
        self.name = f"{task_dir.parent.name}/{task_dir.name}"
        self._context = context or zmq.Context.instance()
        self._seq = itertools.count(1)
        self._dir_fd: int | None = None
        # Made by the first call, on the calling thread, and made again
        # after a call that failed to get its reply.
        self._socket: zmq.Socket[Any] | None = None

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its reply (at most ``timeout`` seconds).

        ``Unavailable`` at once when no shim serves task_dir, and as soon as
        the shim is seen to die while the call waits.
        """
        if not shim_running(self.task_dir):
            raise Unavailable(f"shim {self.name}: not running")
        try:
            socket = self._socket or self._connect()
        except OSError as exc:  # task_dir removed since the check above
            raise Unavailable(f"shim {self.name}: not running ({exc.strerror})") from None
        seq = next(self._seq)
        request = msgpack.packb({**fields, "op": op, "seq": seq}, use_bin_type=True)
        socket.send_multipart([b"", request])
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._disconnect()
                raise Unavailable(f"shim {self.name}: not responding")
            if not socket.poll(int(min(remaining, _LIVENESS_INTERVAL) * 1000)):
                # A shim that replied and then exited (delete) has its reply
                # in our queue already; one that died has not.
                if not shim_running(self.task_dir) and not socket.poll(100):
                    self._disconnect()
                    raise Unavailable(f"shim {self.name}: exited during {op}")
                continue
            frames = socket.recv_multipart()
            try:
                reply = msgpack.unpackb(frames[-1], raw=False)
            except Exception as exc:
                raise Internal(f"shim {self.name}: malformed reply ({exc})") from None
            if not isinstance(reply, dict) or reply.get("seq") != seq:
                # A late reply to a call that timed out: not ours.
                continue
            if "error" in reply:
                raise from_wire(reply["error"])
            ok = reply.get("ok")
            return ok if isinstance(ok, dict) else {}

    def close(self) -> None:
        """Close the socket; the shim is unaffected."""
        self._disconnect()

    def __enter__(self) -> ShimClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _disconnect(self) -> None:
        # Closing with linger 0 drops a request still queued in the socket,
        # so it never reaches a shim started later at the same path.
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def _connect(self) -> zmq.Socket[Any]:
        path = str(shim_socket(self.task_dir))
        if len(os.fsencode(path)) > _SUN_PATH_MAX:
            # Too long for a unix address: reach the socket through a
            # descriptor of its directory, held while connected.
            self._dir_fd = os.open(self.task_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            path = f"/proc/self/fd/{self._dir_fd}/shim.sock"
        socket: zmq.Socket[Any] = self._context.socket(zmq.DEALER)
        socket.linger = 0
        socket.connect(f"ipc://{path}")
        self._socket = socket
        return socket
