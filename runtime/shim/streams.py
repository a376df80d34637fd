"""Byte copies the shim drives from its poll loop, and the pty plumbing.

The shim is single-threaded, so nothing here blocks: a :class:`Copier` moves
bytes from one fd to another through a bounded buffer, reading only when the
loop saw its source readable and the buffer has room, writing only when the
loop saw its destination writable. A full buffer stops reading, which pushes
back on the writer (the container, or the client feeding a stdin FIFO)
instead of growing the shim.

Two uses:

- stdin: client FIFO -> the write end of a pipe whose read end is the
  container's stdin (so ``close_stdin`` can close it), or -> the pty master;
- terminal output: pty master -> the task's stdout (FIFO or log file).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import socket
import struct
import termios
import time
from collections.abc import Callable
from pathlib import Path

from runtime.shim import lines

__all__ = ["BUFFER_LIMIT", "ConsoleSocket", "Copier", "set_nonblocking", "set_winsize"]

log = logging.getLogger(__name__)

# Bytes a copy holds before it stops reading its source: one pipe's capacity.
BUFFER_LIMIT = 64 * 1024
_READ_SIZE = 16 * 1024


def set_nonblocking(fd: int) -> None:
    """Make reads and writes on ``fd`` return EAGAIN instead of blocking the loop."""
    os.set_blocking(fd, False)


def set_winsize(fd: int, height: int, width: int) -> None:
    """Set the window size of the pty whose master is ``fd`` (TIOCSWINSZ)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


class Copier:
    """Copy ``src`` to ``dst`` from poll events, through a bounded buffer.

    Both fds must be the shim's alone (not shared with a container), as they
    are made non-blocking. The copier never closes either fd (their owners
    do); when the source
    reaches end of file and the buffer is flushed it calls ``on_eof`` once,
    which is where the stdin copy closes the container's pipe. A destination
    that is gone (EPIPE, EIO) ends the copy and drops what was buffered.
    """

    def __init__(
        self, src: int, dst: int, *, name: str, on_eof: Callable[[], None] | None = None
    ) -> None:
        self.src = src
        self.dst = dst
        set_nonblocking(src)
        set_nonblocking(dst)
        self.name = name
        self._on_eof = on_eof
        self._buffer = bytearray()
        self._src_open = True
        self.done = False

    def interest(self) -> list[tuple[int, bool]]:
        """What this copy waits for now: ``(fd, False)`` to read, ``(fd, True)`` to write."""
        if self.done:
            return []
        wanted: list[tuple[int, bool]] = []
        if self._src_open and len(self._buffer) < BUFFER_LIMIT:
            wanted.append((self.src, False))
        if self._buffer:
            wanted.append((self.dst, True))
        return wanted

    def on_ready(self, fd: int) -> None:
        """The loop saw ``fd`` ready (or in error, or hung up): try the I/O it waits for.

        Any event leads to an attempt, whose outcome (data, EAGAIN, end of
        file, EPIPE) tells what happened; flags would only say it twice.
        """
        if self.done:
            return
        if fd == self.src and self._src_open:
            self._read()
        if fd == self.dst and self._buffer:
            self._write()
        self._maybe_finish()

    def drain(self, timeout: float) -> None:
        """Move whatever the source holds now to the destination, for at most ``timeout`` s.

        Used when a process exits, so its last output reaches the log before
        its exit is reported, and by ``close_stdin``, so bytes the client
        wrote before asking are delivered before the end of file.
        """
        deadline = time.monotonic() + timeout
        while not self.done:
            progressed = False
            if self._src_open and len(self._buffer) < BUFFER_LIMIT:
                progressed = self._read()
            if self._buffer:
                pending = len(self._buffer)
                self._write()
                progressed = progressed or len(self._buffer) < pending
            self._maybe_finish()
            remaining = deadline - time.monotonic()
            if self.done or (not self._buffer and not progressed) or remaining <= 0:
                return
            if not progressed:
                select.select([], [self.dst], [], remaining)

    def stop(self) -> None:
        """Stop copying, dropping anything buffered; ``on_eof`` is not called."""
        self.done = True
        self._buffer.clear()

    def _read(self) -> bool:
        """Read once; False when nothing was available."""
        try:
            data = os.read(self.src, min(_READ_SIZE, BUFFER_LIMIT - len(self._buffer)))
        except BlockingIOError:
            return False
        except OSError as exc:
            # EIO: the pty's last slave fd closed (every process using it exited).
            if exc.errno not in (errno.EIO, errno.EBADF):
                log.warning("%s: read failed: %s", self.name, exc)
            data = b""
        if not data:
            self._src_open = False
            return False
        self._buffer += data
        return True

    def _write(self) -> None:
        try:
            written = os.write(self.dst, self._buffer)
        except BlockingIOError:
            return
        except OSError as exc:
            # The reader is gone (the container closed stdin, the log FIFO's
            # reader left): nothing more can be delivered.
            lines.info(__name__, f"{self.name}: destination closed: {exc}")
            self.stop()
            return
        del self._buffer[:written]

    def _maybe_finish(self) -> None:
        if not self.done and not self._src_open and not self._buffer:
            self.done = True
            if self._on_eof is not None:
                self._on_eof()


class ConsoleSocket:
    """A listening unix socket for ``runc --console-socket``; yields the pty master.

    ``runc create``/``exec`` connect to it and send the master with
    SCM_RIGHTS before they return; the connection waits in the backlog, so
    the single-threaded shim accepts it after runc has exited.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.unlink(missing_ok=True)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            self._listener.bind(str(path))
            os.chmod(path, 0o600)
        finally:
            os.umask(old_umask)
        self._listener.listen(1)

    def receive(self, timeout: float = 10.0) -> int:
        """The pty master fd runc sent; ``TimeoutError`` if none arrives in time."""
        self._listener.settimeout(timeout)
        conn, _ = self._listener.accept()
        with conn:
            conn.settimeout(timeout)
            _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        if not fds:
            raise OSError(f"{self.path}: runc sent no pty master")
        os.set_inheritable(fds[0], False)
        return fds[0]

    def close(self) -> None:
        """Stop listening and remove the socket file."""
        self._listener.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ConsoleSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
