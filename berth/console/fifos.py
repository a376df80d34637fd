"""The FIFOs through which a task's stdio reaches this process.

``berth run`` (and ``tasks start``, ``tasks exec``) make one directory per
container under :meth:`~berth.console.context.Session.fifo_dir`, holding
``stdin``, ``stdout`` and, without a terminal, ``stderr``. The daemon's shim
opens them read-write, so they stay usable while nobody is attached: that
is what lets ``tasks attach`` of another process reconnect to a task
started with ``run -d -t``. The directory goes when the task is deleted by
berth (``tasks rm``, ``run`` at its end).

Our ends are opened read-write, before ``Tasks.Create`` or ``Exec``: a
FIFO's buffer lives only while some process holds it open, and a quick
process can write its output and exit, and its shim close the FIFO, before
``Exec`` has even replied. Held read-write, our ends keep that output, never
read a false end of file before the shim opens its side, and never fail to
open for want of a reader. So the end of a process is not seen as end of
file: the attach loop learns it from the process's ``EXIT`` event.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from runtime.stdio import StdioFds
from wire.errors import FailedPrecondition

__all__ = ["Ends", "FifoSet", "remove_fifo_dir"]


@dataclass(frozen=True)
class FifoSet:
    """The stdio FIFO paths of one task process (``stderr`` is None with a terminal)."""

    directory: Path
    stdin: Path
    stdout: Path
    stderr: Path | None

    @classmethod
    def create(cls, directory: Path, *, terminal: bool, prefix: str = "") -> FifoSet:
        """Fresh FIFOs in ``directory`` (made 0700), replacing any left from before."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        names = ["stdin", "stdout"] if terminal else ["stdin", "stdout", "stderr"]
        paths = {}
        for name in names:
            path = directory / f"{prefix}{name}"
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.mkfifo(path, 0o600)
            paths[name] = path
        return cls(directory, paths["stdin"], paths["stdout"], paths.get("stderr"))

    @classmethod
    def existing(cls, directory: Path) -> FifoSet | None:
        """The FIFOs a ``run -d -t`` left for ``tasks attach``, if there are any."""
        stdin, stdout = directory / "stdin", directory / "stdout"
        if not (stdin.exists() and stdout.exists()):
            return None
        stderr = directory / "stderr"
        return cls(directory, stdin, stdout, stderr if stderr.exists() else None)

    @property
    def stderr_target(self) -> str:
        """The ``stderr`` argument of ``Tasks.Create`` or ``Exec``: none with a terminal."""
        return str(self.stderr) if self.stderr is not None else ""

    def remove(self) -> None:
        """Remove these FIFOs (an exec's; a task's go with its directory)."""
        for path in (self.stdin, self.stdout, self.stderr):
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()

    def open(self, owner: str) -> Ends:
        """Our ends (we write stdin, read stdout and stderr), read-write and non-blocking."""
        fds: list[int] = []
        try:
            for path in (self.stdin, self.stdout, self.stderr):
                if path is not None:
                    fds.append(_open(path, owner))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return Ends(fds[0], fds[1], fds[2] if len(fds) > 2 else -1)


def _open(path: Path, owner: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FailedPrecondition(f"{owner}: cannot open {path}: {exc.strerror}") from None


@dataclass
class Ends(StdioFds):
    """Our fds on a task's FIFOs; -1 once closed (or, for stderr, absent)."""

    stderr: int = -1

    def close_stdin(self) -> None:
        if self.stdin >= 0:
            os.close(self.stdin)
            self.stdin = -1


def remove_fifo_dir(directory: Path) -> None:
    """Remove a container's FIFO directory, and its namespace's when that is left empty."""
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):
        directory.parent.rmdir()
