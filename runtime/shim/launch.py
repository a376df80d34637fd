"""Start a task process (init or exec) with its stdio wired the shim's way.

``launch`` opens the wire's stdio targets, hands runc the fds the container
should get, and sets up the copies the shim's loop drives:

- no terminal, stdin a FIFO: the container reads the read end of a fresh
  pipe and the shim copies FIFO -> pipe, so ``close_stdin`` can end the
  container's input by closing the pipe (the FIFO itself stays open in the
  shim, read-write, so it never reads end of file on its own);
- no terminal, stdin ``""``/a file: the container gets the fd itself;
- terminal: runc sends the pty master over a console socket; the shim copies
  stdin FIFO -> master and master -> stdout; stderr is unused (the pty
  merges it), and ending stdin sends the terminal's end-of-file character.

Every fd the shim keeps is registered on the :class:`Process` (``closers``,
``copiers``) so one ``release()`` frees them all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.shim.process import Process
from runtime.shim.streams import ConsoleSocket, Copier
from runtime.stdio import StdioFds, open_stdio

__all__ = ["PlainStdio", "ProcessIO", "fd_closer", "launch", "socket_path"]

# The longest path a unix socket address holds (sun_path, with its NUL).
_SUN_PATH_MAX = 107
# How long close_stdin may spend delivering what the FIFO already holds.
_STDIN_FLUSH = 0.5
_EOF_CHARACTER = b"\x04"  # VEOF (^D): a canonical-mode reader sees end of file


@dataclass(frozen=True)
class ProcessIO:
    """What runc gets for the new process: its 0, 1, 2 and the console socket."""

    stdin: int
    stdout: int
    stderr: int
    console_socket: Path | None

    def as_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``Runc.create``/``exec``/``restore`` for them."""
        return {
            "stdin": self.stdin,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "console_socket": self.console_socket,
        }


def fd_closer(fd: int) -> Callable[[], None]:
    """A function closing ``fd`` the first time it is called, and doing nothing after."""
    closed = False

    def close() -> None:
        nonlocal closed
        if not closed:
            closed = True
            os.close(fd)

    return close


def socket_path(directory: Path, name: str, dir_fd: int) -> Path:
    """A path for socket ``name`` in ``directory`` that fits in a unix address.

    The plain path when it fits in 108 bytes; else the same file reached
    through ``/proc/<our pid>/fd/<dir_fd>``, an open descriptor of the
    directory, which runc (root, running while we live) can follow too.
    """
    path = directory / name
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return path
    return Path(f"/proc/{os.getpid()}/fd/{dir_fd}") / name


def launch(
    process: Process,
    run: Callable[[ProcessIO], int],
    stdin: str,
    stdout: str,
    stderr: str,
    terminal: bool,
    *,
    name: str,
    console_socket: Path,
) -> int:
    """Open the stdio, call ``run`` (a runc create/exec/restore), wire the copies -> pid.

    ``console_socket`` is where a terminal's console socket is made. On
    failure the caller releases ``process``, which closes what was opened.
    """
    if terminal:
        stdio = open_stdio(stdin, stdout, stderr, owner=name)
        process.closers.append(stdio.close)
        return _launch_terminal(process, run, stdio, name=name, console_socket=console_socket)
    wiring = PlainStdio(process, stdin, stdout, stderr, name=name)
    try:
        pid = run(wiring.io)
    finally:
        wiring.spawned()
    wiring.started()
    return pid


class PlainStdio:
    """A process's stdio without a terminal, in the steps an asynchronous start needs.

    Opening it (the constructor) gives :attr:`io` for runc; :meth:`spawned`
    closes the shim's copy of what runc's child inherited, once the child
    exists (or failed to); :meth:`started` sets up the stdin copy when the
    process runs. Everything kept is registered on ``process``.
    """

    def __init__(self, process: Process, stdin: str, stdout: str, stderr: str, *, name: str):
        self.process = process
        self.name = name
        stdio = open_stdio(stdin, stdout, stderr, owner=name)
        process.closers.append(stdio.close)
        self.stdio = stdio
        self._read_end: int | None = None
        self._write_end: int | None = None
        if not _is_fifo(stdio.stdin):
            self.io = ProcessIO(stdio.stdin, stdio.stdout, stdio.stderr, None)
            return
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        self._read_end, self._write_end = read_end, write_end
        self._close_pipe = fd_closer(write_end)
        process.closers.append(self._close_pipe)
        self.io = ProcessIO(read_end, stdio.stdout, stdio.stderr, None)

    def spawned(self) -> None:
        """runc has its copy of the pipe's read end (or failed): close ours."""
        if self._read_end is not None:
            os.close(self._read_end)
            self._read_end = None

    def started(self) -> None:
        """The process runs: copy the stdin FIFO into its pipe."""
        if self._write_end is None:
            return
        close_pipe = self._close_pipe
        copier = Copier(
            self.stdio.stdin, self._write_end, name=f"{self.name} stdin", on_eof=close_pipe
        )
        self.process.copiers.append(copier)

        def close_stdin() -> None:
            copier.drain(_STDIN_FLUSH)
            copier.stop()
            close_pipe()

        self.process.close_stdin = close_stdin


def _launch_terminal(
    process: Process,
    run: Callable[[ProcessIO], int],
    stdio: StdioFds,
    *,
    name: str,
    console_socket: Path,
) -> int:
    with ConsoleSocket(console_socket) as console:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            pid = run(ProcessIO(null, null, null, console_socket))
        finally:
            os.close(null)
        try:
            master = console.receive()
        except BaseException:
            # runc said it started the process but sent no terminal: do not
            # leave it running unseen (an init is also killed by runc delete).
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            raise
    process.pty_master = master
    process.closers.append(fd_closer(master))
    process.copiers.append(Copier(master, stdio.stdout, name=f"{name} pty output"))
    if not _is_fifo(stdio.stdin):
        return pid
    copier = Copier(stdio.stdin, master, name=f"{name} pty input")
    process.copiers.append(copier)

    def close_stdin() -> None:
        copier.drain(_STDIN_FLUSH)
        copier.stop()
        with contextlib.suppress(OSError):
            os.write(master, _EOF_CHARACTER)

    process.close_stdin = close_stdin
    return pid


def _is_fifo(fd: int) -> bool:
    return stat.S_ISFIFO(os.fstat(fd).st_mode)
