"""The shim's process table, its reaping, and the exits file.

The shim is the child subreaper of its task: when ``runc create``/``runc exec``
exit, the container's init and every exec'd process are re-parented to the
shim, which reaps them with ``waitpid(-1, WNOHANG)``. A reaped pid that is
not in the table (one of runc's own helpers, an orphan of a container that
shares the host's pid namespace) is dropped.

Each exit is first appended to ``<task_dir>/exits`` and fsync'ed, and only
then reported: the file is the ground truth a restarted daemon reads when an
event was lost. One JSON object per line::

    {"pid": 4242, "exit_status": 7, "exited_at_ns": 1732860000123456789}

``exit_status`` follows the wire: the exit code, or ``128 + N`` for a process
killed by signal ``N``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.shim import lines
from runtime.shim.streams import Copier

__all__ = ["DRAIN_AT_EXIT", "Event", "ExitLog", "Process", "ProcessTable", "exit_status_of"]

log = logging.getLogger(__name__)

Event = dict[str, Any]
# How long a process's last pty output may take to reach its log at exit.
DRAIN_AT_EXIT = 1.0


def exit_status_of(wait_status: int) -> int:
    """The wire exit status for a ``waitpid`` status: the code, or 128 + signal."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def reap_children() -> list[tuple[int, int, int]]:
    """Reap every child that has exited: ``(pid, exit_status, exited_at_ns)`` each.

    Called only from the shim's loop (``Task.reap``), between requests, so it
    never takes the exit of a ``runc`` subprocess that a request waits for.
    """
    reaped: list[tuple[int, int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        reaped.append((pid, exit_status_of(status), time.time_ns()))
    return reaped


@dataclass
class Process:
    """One process of the task: its init (``exec_id`` 0) or an exec.

    ``copiers`` are the byte copies the loop drives for it (stdin, pty
    output); ``closers`` release the fds the shim holds for it (stdio, the
    pty master, the stdin pipe) once it has exited and its output is drained.
    """

    pid: int
    exec_id: int
    copiers: list[Copier] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)
    exit_status: int = 0
    exited_at_ns: int = 0
    pty_master: int | None = None
    close_stdin: Callable[[], None] | None = None

    @property
    def exited(self) -> bool:
        """Whether the shim has reaped this process."""
        return self.exited_at_ns != 0

    def release(self) -> None:
        """Close everything the shim holds for this process; idempotent."""
        for copier in self.copiers:
            copier.stop()
        self.copiers = []
        closers, self.closers = self.closers, []
        self.close_stdin = None
        self.pty_master = None
        for close in reversed(closers):
            try:
                close()
            except OSError as exc:
                log.warning("closing stdio of pid %d: %s", self.pid, exc)

    def describe(self) -> dict[str, int | bool]:
        """The ``execs`` entry of a ``state`` reply."""
        return {
            "pid": self.pid,
            "exited": self.exited,
            "exit_status": self.exit_status,
            "exited_at_ns": self.exited_at_ns,
        }


class ExitLog:
    """``<task_dir>/exits``: one fsync'ed JSON line per exit, appended before reporting.

    The file is opened on the first exit and kept open: an exit is on the
    way to the ``EXIT`` event, and opening the file each time cost more
    than the write.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def append(self, pid: int, exit_status: int, exited_at_ns: int) -> None:
        """Append one exit and make it durable before returning."""
        # Ints only, so the JSON is written by hand (json.dumps costs more).
        line = f'{{"pid": {pid}, "exit_status": {exit_status}, "exited_at_ns": {exited_at_ns}}}\n'
        if self._fd is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o600)
        # One write of the whole line: O_APPEND keeps it contiguous, and a
        # crash can tear only the last line, which readers tolerate.
        os.write(self._fd, line.encode())
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file (the shim is exiting)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ProcessTable:
    """The task's init and execs, and what happens when one of them exits.

    ``publish`` sends one event to the daemon; it is called only after the
    exit is durable in the exits file.
    """

    def __init__(
        self, exits: ExitLog, publish: Callable[[Event], None], namespace: str, id: str
    ) -> None:
        self.exits = exits
        self._publish = publish
        self.namespace = namespace
        self.id = id
        self.init: Process | None = None
        self.execs: dict[int, Process] = {}

    def all(self) -> list[Process]:
        """The init (once created) and every exec, exited or not."""
        return ([] if self.init is None else [self.init]) + list(self.execs.values())

    def find_live(self, pid: int) -> Process | None:
        """The live init (``pid`` 0 or its pid) or exec ``pid``; None if none or exited."""
        init = self.init
        process = init if init is not None and pid in (0, init.pid) else self.execs.get(pid)
        return None if process is None or process.exited else process

    def on_exit(self, pid: int, exit_status: int, exited_at_ns: int) -> None:
        """One reaped child: file and fsync (the init's), then event; unknown pids are dropped."""
        process = self.execs.get(pid)
        if process is None and self.init is not None and self.init.pid == pid:
            process = self.init
        if process is None or process.exited:
            log.debug("task %s/%s: reaped pid %d, not a task process", self.namespace, self.id, pid)
            return
        for copier in process.copiers:
            copier.drain(DRAIN_AT_EXIT)
        process.exit_status, process.exited_at_ns = exit_status, exited_at_ns
        if process is self.init:
            # The file first: a daemon that misses the event finds the exit
            # here. Only the init's: a restarted daemon replays no exec's
            # exit (docs/protocol.md), and an exec storm would grow the file
            # (in /run, memory) and pay an fsync per exec.
            self.exits.append(pid, exit_status, exited_at_ns)
        self._publish(
            {
                "namespace": self.namespace,
                "id": self.id,
                "type": "EXIT",
                "pid": pid,
                "exit_status": exit_status,
                "exited_at_ns": exited_at_ns,
            }
        )
        name = f"{self.namespace}/{self.id}"
        lines.info(__name__, f"task {name}: pid {pid} exited, status {exit_status}")
        process.release()
