"""Connect this process's stdio to a task process until it exits: the attach loop.

One ``select`` loop, in the main thread, moves bytes between our stdin,
stdout and stderr and the task's FIFOs (:mod:`berth.console.fifos`), sends
the terminal's size to the task's pty on SIGWINCH
(:mod:`berth.console.terminal`), and stops when the
:class:`~berth.console.exit_watch.ExitWatcher` reports the process's exit.
Its result is the process's exit status.

- Our stdin reaching end of file closes the process's stdin (``CloseStdin``;
  with a terminal, the shim sends the end-of-file character).
- Without a terminal, Ctrl-C (SIGINT) is forwarded to the process as SIGINT;
  a second one sends SIGKILL, so the command always ends. With a terminal in
  raw mode Ctrl-C is a byte for the task's pty like any other.
- ``detach_key`` (``tasks attach``: Ctrl-]) leaves the process running.
- After the exit, what the FIFOs hold is read. A process without a terminal
  wrote its output into them itself, so it is all there; a terminal's is
  copied by the shim, so it is read until the FIFOs stay quiet for
  :data:`DRAIN_QUIET` seconds.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from berth.client import Client
from berth.console.exit_watch import ExitWatcher
from berth.console.fifos import Ends
from berth.console.terminal import (
    exit_on_termination,
    raw_terminal,
    resize_events,
    window_size,
)
from wire.errors import FailedPrecondition, NotFound

__all__ = ["DRAIN_QUIET", "Attachment"]

DRAIN_QUIET = 0.2
DRAIN_LIMIT = 2.0
_CHUNK = 64 * 1024


@dataclass
class Attachment:
    """One task process (``pid`` 0: the init) and the FIFO ends that reach it."""

    client: Client
    container_id: str
    ends: Ends
    watcher: ExitWatcher
    terminal: bool
    pid: int = 0
    stdin_fd: int = 0
    stdout_fd: int = 1
    stderr_fd: int = 2
    detach_key: bytes | None = None
    _detached: bool = False
    _pending: bytearray = field(default_factory=bytearray)
    _interrupts: int = 0

    def run(self) -> int | None:
        """Copy until the process exits: its exit status; None if the user detached.

        The terminal is restored on every way out.
        """
        raw = raw_terminal(self.stdin_fd) if self.terminal else contextlib.nullcontext()
        with exit_on_termination(), raw, self._resizes() as resize_fd:
            if self.terminal:
                self._send_size()
            status = self._loop(resize_fd)
        if status is not None:
            self._drain()
        return status

    @contextlib.contextmanager
    def _resizes(self) -> Iterator[int]:
        if self.terminal and window_size(self.stdin_fd) is not None:
            with resize_events() as fd:
                yield fd
        else:
            yield -1

    def _send_size(self) -> None:
        size = window_size(self.stdin_fd)
        if size is not None:
            with contextlib.suppress(NotFound, FailedPrecondition):  # it exited meanwhile
                self.client.tasks.pty(
                    self.container_id, width=size[0], height=size[1], pid=self.pid
                )

    def _loop(self, resize_fd: int) -> int | None:
        stdin_open = True
        while not self._detached:
            status = self.watcher.status()
            if status is not None:
                return status
            readers = [self.watcher.fd, *self._outputs()]
            if resize_fd >= 0:
                readers.append(resize_fd)
            # Read stdin only while what was read last has been passed on:
            # a task not reading its input pushes back on ours.
            if stdin_open and not self._pending:
                readers.append(self.stdin_fd)
            writers = [self.ends.stdin] if self._pending and self.ends.stdin >= 0 else []
            try:
                readable, writable, _ = select.select(readers, writers, [])
            except KeyboardInterrupt:
                self._interrupt()
                continue
            if resize_fd in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(resize_fd, 512)
                self._send_size()
            for fd in self._outputs():
                if fd in readable:
                    self._copy_out(fd)
            if self.stdin_fd in readable:
                stdin_open = self._read_stdin()
            if writable:
                self._write_stdin()
        return None

    def _outputs(self) -> list[int]:
        return [fd for fd in (self.ends.stdout, self.ends.stderr) if fd >= 0]

    def _copy_out(self, fd: int) -> bool:
        """Pass what ``fd`` holds to our stdout or stderr; False when it had nothing."""
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return False
        if not data:  # no writer left (not while we hold it read-write): stop watching it
            if fd == self.ends.stdout:
                self.ends.stdout = -1
            else:
                self.ends.stderr = -1
            os.close(fd)
            return False
        target = self.stdout_fd if fd == self.ends.stdout else self.stderr_fd
        view = memoryview(data)
        while view:
            view = view[os.write(target, view) :]
        return True

    def _read_stdin(self) -> bool:
        """Read our stdin; False at its end, which closes the process's stdin."""
        try:
            data = os.read(self.stdin_fd, _CHUNK)
        except BlockingIOError:
            return True
        if data and self.detach_key is not None and self.detach_key in data:
            data = data[: data.index(self.detach_key)]
            self._detached = True
        if data:
            self._pending += data
            self._write_stdin()
        if data or self._detached:
            return True
        self.ends.close_stdin()
        with contextlib.suppress(NotFound, FailedPrecondition):
            self.client.tasks.close_stdin(self.container_id, pid=self.pid)
        return False

    def _write_stdin(self) -> None:
        if self.ends.stdin < 0:
            self._pending.clear()
            return
        try:
            written = os.write(self.ends.stdin, self._pending)
        except BlockingIOError:
            return
        except BrokenPipeError:
            self._pending.clear()
            self.ends.close_stdin()
            return
        del self._pending[:written]

    def _interrupt(self) -> None:
        """Ctrl-C: SIGINT to the process, then SIGKILL if that did not end it."""
        self._interrupts += 1
        sig = signal.SIGINT if self._interrupts == 1 else signal.SIGKILL
        with contextlib.suppress(NotFound, FailedPrecondition):
            self.client.tasks.kill(self.container_id, int(sig), pid=self.pid)

    def _drain(self) -> None:
        """Read the output left after the exit (and, with a terminal, still on its way)."""
        quiet = DRAIN_QUIET if self.terminal else 0.0
        deadline = time.monotonic() + DRAIN_LIMIT
        while self._outputs() and time.monotonic() < deadline:
            readable, _, _ = select.select(self._outputs(), [], [], quiet)
            if not readable:
                return
            for fd in readable:
                self._copy_out(fd)
