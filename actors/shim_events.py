"""The shim event listener: exits from shims, and shims that die.

Shims push their events (``EXIT`` with pid, status and time) to one PULL
socket the daemon binds; a shim's PUSH queues them while the daemon is
down, so a restarted daemon still receives them. The listener also holds a
pidfd per shim: when one becomes readable the shim is gone, and its task
is told so it can be torn down. Both are routed to the container's actor,
which passes them to its task actor, in order with the task's operations.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any

import msgpack
import zmq

from actors.containers import ContainerActors
from actors.tasks import ProcessExited, ShimDied

__all__ = ["ShimEvents"]

log = logging.getLogger(__name__)


class ShimEvents:
    """Binds the shim event socket and routes what arrives; one thread."""

    def __init__(self, ctx: zmq.Context[Any], address: str, actors: ContainerActors) -> None:
        self.address = address
        self.actors = actors
        self._sock = ctx.socket(zmq.PULL)
        path = address.removeprefix("ipc://")
        old = os.umask(0o177)
        try:
            self._sock.bind(address)
        finally:
            os.umask(old)
        del path
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._pidfds: dict[int, tuple[str, str]] = {}
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
        """Stop the thread and close the socket."""
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"s")
        self._thread.join(5)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self._stopping:
                try:
                    self._turn(poller)
                except Exception:
                    log.exception("shim event listener: unexpected error; continuing")
        finally:
            self._sock.close(linger=0)
            for fd in self._pidfds:
                os.close(fd)
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _turn(self, poller: zmq.Poller) -> None:
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
                    self._route(ns, cid, ShimDied())
                    continue
                self._pidfds[fd] = (ns, cid)
                poller.register(fd, zmq.POLLIN)
        if self._sock in events:
            while True:
                try:
                    raw = self._sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._event(raw)
        for fd in [fd for fd in self._pidfds if fd in events]:
            ns, cid = self._pidfds.pop(fd)
            poller.unregister(fd)
            os.close(fd)
            # Exits it pushed before dying are already read above.
            self._route(ns, cid, ShimDied())

    def _event(self, raw: bytes) -> None:
        try:
            event = msgpack.unpackb(raw)
            ns, cid = event["namespace"], event["id"]
            if event.get("type") != "EXIT":
                log.debug("shim event %r ignored", event)
                return
            message = ProcessExited(
                int(event["pid"]), int(event["exit_status"]), int(event["exited_at_ns"])
            )
        except Exception:
            log.exception("malformed shim event %r", raw[:200])
            return
        self._route(ns, cid, message)

    def _route(self, ns: str, cid: str, message: Any) -> None:
        if not self.actors.tell(ns, cid, message, start=False):
            log.warning(
                "task %s/%s: %s for a container with no actor", ns, cid, type(message).__name__
            )
