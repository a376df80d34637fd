"""Start a created runc container the way ``runc start`` does, without running runc.

``runc create`` leaves the container's init blocked opening
``<runc root>/<id>/exec.fifo`` for writing; ``runc start`` is nothing but
opening that FIFO for reading, reading the byte the init writes, and
removing the FIFO (runc 1.0 and 1.1: ``libcontainer``'s ``exec()``;
poststart hooks already ran at create). A Go binary start costs 6-7 ms
here, a third of a short task's lifecycle, so the shim does those three
steps itself when the runtime is runc and the FIFO is where runc keeps it,
and falls back to ``runc start`` otherwise. ``runc state`` tells created
from running by the FIFO's existence, so removing it is what makes the
container "running" to runc as well.
"""

from __future__ import annotations

import contextlib
import os
import select
from pathlib import Path

from wire.errors import FailedPrecondition

__all__ = ["EXEC_FIFO", "start_through_fifo"]

EXEC_FIFO = "exec.fifo"


def start_through_fifo(runc_root: Path, id: str, init_pid: int, timeout: float) -> bool:
    """Let the created init of ``id`` exec its process; False when runc must do it.

    False (nothing done) when the FIFO is not there, so ``runc start`` can
    say what is wrong. :class:`FailedPrecondition` when the init dies or
    does not answer within ``timeout`` seconds.
    """
    path = runc_root / id / EXEC_FIFO
    try:
        # Non-blocking: opening the read end must not wait for a writer.
        fifo = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            pidfd = os.pidfd_open(init_pid)
        except ProcessLookupError:
            raise FailedPrecondition(f'task "{id}": its init exited before start') from None
        try:
            data = _read_start_byte(fifo, pidfd, timeout)
        finally:
            os.close(pidfd)
    finally:
        os.close(fifo)
    if not data:
        raise FailedPrecondition(f'task "{id}": its init exited before start')
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True


def _read_start_byte(fifo: int, pidfd: int, timeout: float) -> bytes:
    """What the init writes to the FIFO: one byte; b"" if it died first."""
    poller = select.poll()
    poller.register(fifo, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    ready = dict(poller.poll(int(timeout * 1000)))
    if fifo in ready:
        with contextlib.suppress(BlockingIOError):
            return os.read(fifo, 16)
    if pidfd in ready:
        return b""
    raise FailedPrecondition(f"init {_pid_of(pidfd)}: did not open its exec FIFO in {timeout}s")


def _pid_of(pidfd: int) -> str:
    with contextlib.suppress(OSError), open(f"/proc/self/fdinfo/{pidfd}") as info:
        for line in info:
            if line.startswith("Pid:"):
                return line.split()[1]
    return "?"
