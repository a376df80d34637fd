"""The shim event listener: exits from shims, and shims that die.

Shims send their events (``EXIT`` with pid, status and time) as msgpack
datagrams to one unix ``SOCK_DGRAM`` socket the daemon binds (mode 0600)
at the ``ipc://`` path it is given (see :mod:`runtime.shim.protocol`). A
shim keeps the events the daemon cannot take (it is down, or this socket's
queue is full) and sends them again later, so a restarted daemon still
receives them; the exits file a shim writes first is the ground truth, read
at start-up. The listener also holds a pidfd per shim: when one becomes
readable the shim is gone, and its task is told so it can be torn down.
Both are routed to the task's actor (started from its handle if it has
none now; to the container's actor while the task's create is in flight).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
from typing import Any

import msgpack

from actors.containers import ContainerActors
from actors.tasks import OomKilled, ProcessExited, ShimDied

__all__ = ["ShimEvents"]

log = logging.getLogger(__name__)

# Room for a burst of exits before shims have to wait and resend.
_RECEIVE_BUFFER = 4 << 20
_DATAGRAM_MAX = 64 * 1024


class ShimEvents:
    """Binds the shim event socket and routes what arrives; one thread.

    ``ctx`` is unused (shims speak plain unix sockets); it stays for the
    daemon's call. ``address`` is ``ipc://<path>`` (or a bare path).
    """

    def __init__(self, ctx: Any, address: str, actors: ContainerActors) -> None:
        self.address = address
        self.actors = actors
        self.path = address.removeprefix("ipc://")
        self._sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )
        with contextlib.suppress(OSError):
            # Root may go past rmem_max; anyone else gets what the limit allows.
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
            self._sock.setsockopt(socket.SOL_SOCKET, 33, _RECEIVE_BUFFER)  # SO_RCVBUFFORCE
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # left by a daemon that stopped or died
        old = os.umask(0o177)
        try:
            self._sock.bind(self.path)
        except BaseException:
            self._sock.close()
            raise
        finally:
            os.umask(old)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._pidfds: dict[int, tuple[str, str, int]] = {}
        self._pending: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="shim-events", daemon=True)

    def start(self) -> None:
        """Start routing."""
        self._thread.start()

    def watch(self, ns: str, cid: str, pid: int) -> None:
        """Notice when shim ``pid`` of task ns/cid exits (any thread)."""
        with self._lock:
            self._pending.append((ns, cid, pid))
        os.write(self._wake_w, b"w")

    def stop(self) -> None:
        """Stop the thread, close the socket and remove its file."""
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"s")
        if self._thread.is_alive():
            self._thread.join(5)
        else:
            self._close()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        try:
            while not self._stopping:
                try:
                    self._turn(poller)
                except Exception:
                    log.exception("shim event listener: unexpected error; continuing")
        finally:
            self._close()

    def _close(self) -> None:
        if self._sock.fileno() == -1:
            return
        self._sock.close()
        # Shims see ECONNREFUSED/ENOENT from here on and keep their events.
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        for fd in self._pidfds:
            os.close(fd)
        self._pidfds.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _turn(self, poller: select.poll) -> None:
        events = dict(poller.poll(1000))
        if self._wake_r in events:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
            with self._lock:
                pending, self._pending = self._pending, []
            for ns, cid, pid in pending:
                try:
                    fd = os.pidfd_open(pid)
                except ProcessLookupError:
                    self._route(ns, cid, ShimDied(pid))
                    continue
                self._pidfds[fd] = (ns, cid, pid)
                poller.register(fd, select.POLLIN)
        if self._sock.fileno() in events:
            while True:
                try:
                    raw = self._sock.recv(_DATAGRAM_MAX)
                except (BlockingIOError, InterruptedError):
                    break
                self._event(raw)
        for fd in [fd for fd in self._pidfds if fd in events]:
            ns, cid, pid = self._pidfds.pop(fd)
            poller.unregister(fd)
            os.close(fd)
            # Exits it sent before dying are already read above.
            self._route(ns, cid, ShimDied(pid))

    def _event(self, raw: bytes) -> None:
        try:
            event = msgpack.unpackb(raw)
            ns, cid = event["namespace"], event["id"]
            kind = event.get("type")
            message: ProcessExited | OomKilled
            if kind == "EXIT":
                message = ProcessExited(
                    int(event["pid"]), int(event["exit_status"]), int(event["exited_at_ns"])
                )
            elif kind == "OOM":
                message = OomKilled(int(event["pid"]))
            else:
                log.debug("shim event %r ignored", event)
                return
        except Exception:
            log.exception("malformed shim event %r", raw[:200])
            return
        self._route(ns, cid, message)

    def _route(self, ns: str, cid: str, message: Any) -> None:
        if not self.actors.tell(ns, cid, message, start=False):
            log.warning(
                "task %s/%s: %s for a container with no actor", ns, cid, type(message).__name__
            )
