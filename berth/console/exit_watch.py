"""Wait for one process of a task to exit, on a thread and a connection of its own.

The attach loop waits on file descriptors (the terminal, the FIFOs) with
``select``; the exit comes as an ``EXIT`` event on a ZeroMQ stream, which a
blocking client cannot share with that loop. So an :class:`ExitWatcher`
reads ``Tasks.Events`` on its own :class:`~berth.client.Client` in a thread
and, when the process it watches has exited, writes a byte to a pipe the
loop selects on.

The subscription is live when :meth:`ExitWatcher.start` returns, so start
the watcher before the process can exit (before ``Start`` or ``Exec``); an
exec's pid is known only when ``Exec`` replies, so exits are remembered by
pid until :meth:`ExitWatcher.watch` names one.

The thread must end when the loop gives up early (an error, Ctrl-C), but a
client cannot be closed from another thread while it waits. So the thread
reads streams with a deadline of :data:`WINDOW` seconds, opening the next one
before reading the current one: each event reaches at least one of them
(duplicates are dropped by ``seq``), and a stop is noticed within a window.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

from berth.console.context import Session
from wire.errors import DeadlineExceeded

__all__ = ["WINDOW", "ExitWatcher"]

WINDOW = 1.0  # seconds; the longest a stopped watcher keeps its thread


class ExitWatcher:
    """The exit status of one process of ``container_id``, once it has exited."""

    def __init__(self, session: Session, container_id: str) -> None:
        self.container_id = container_id
        self._client = session.new_client(timeout=None)
        self._name = f"exit-watch:{session.namespace}/{container_id}"
        self._lock = threading.Lock()
        self._exits: dict[int, int] = {}  # pid -> exit status, as events tell
        self._pid: int | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._signalled = False
        self._last_seq = -1
        self._read_fd, self._write_fd = os.pipe()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)

    @property
    def fd(self) -> int:
        """Readable once the watched process exited (or the watcher failed)."""
        return self._read_fd

    def start(self) -> None:
        """Subscribe; returns when no later event can be missed."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def watch(self, pid: int) -> None:
        """Watch process ``pid`` (the init's or an exec's)."""
        with self._lock:
            self._pid = pid
            self._signal_if_done()

    def status(self) -> int | None:
        """The watched process's exit status; raises the watcher's own failure."""
        with self._lock:
            if self._error is not None:
                raise self._error
            return self._exits.get(self._pid) if self._pid is not None else None

    def close(self) -> None:
        """Stop the thread (within one window) and free the pipe."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(WINDOW + 2)
        if self._thread.is_alive():
            return  # its fds stay: closing them under it could hit reused numbers
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    # the thread

    def _run(self) -> None:
        try:
            current = self._client.tasks.events(timeout=WINDOW)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            self._client.close()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                following = self._client.tasks.events(timeout=WINDOW)
                try:
                    for event in current:
                        if self._seen(event) or self._stop.is_set():
                            break
                except DeadlineExceeded:
                    pass  # the window closed; `following` was open before it did
                finally:
                    current.close()
                current = following
        except BaseException as exc:  # a lost daemon: the loop reports it
            with self._lock:
                self._error = exc
                self._signal()
        finally:
            current.close()
            self._client.close()

    def _seen(self, event: dict[str, Any]) -> bool:
        """File an event; whether the watched process has exited."""
        seq = event.get("seq")
        if seq is not None:
            if seq <= self._last_seq:
                return False  # also read on the stream that overlapped this one
            self._last_seq = seq
        if event["id"] != self.container_id or event["type"] not in ("EXIT", "DELETE"):
            return False
        with self._lock:
            # DELETE carries the init's status too, for a task deleted unstarted.
            self._exits.setdefault(int(event["pid"]), int(event["exit_status"]))
            self._signal_if_done()
            if self._signalled:
                self._stop.set()
            return self._signalled

    def _signal_if_done(self) -> None:
        if self._pid is not None and self._pid in self._exits:
            self._signal()

    def _signal(self) -> None:
        if not self._signalled:
            self._signalled = True
            with contextlib.suppress(OSError):
                os.write(self._write_fd, b"x")
