"""Execs that run while the shim's loop goes on: ``runc exec`` spawned, finished when reaped.

``runc exec --detach`` takes 15-20 ms, most of it runc's own start-up and
``runc init`` joining the container. A shim that waited for it could
neither answer another request nor report an exit in the meantime, so one
task's execs ran one after another and each exit waited behind the next
exec. Instead the shim spawns runc (``posix_spawn``, no helper fork: the
few writes here touch little of the shim's shared memory) and returns a
:class:`PendingExec`; the loop reaps runc like any child, and
:meth:`PendingExec.finish` then reads the pid file and registers the new
process *before* the loop handles any other exit of the same reaping, so
an exec's process (re-parented to the shim only once runc has exited) is
always known by the time its own exit is seen.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.runc import RuncError
from runtime.shim.helper import ForkingRunc
from runtime.shim.launch import PlainStdio
from runtime.shim.process import Process

__all__ = ["PendingExec", "spawn_exec"]


@dataclass
class PendingExec:
    """One ``runc exec`` under way: what it was given and what to clean after it."""

    record: Process
    wiring: PlainStdio
    runc: ForkingRunc
    runc_pid: int
    argv: list[str]
    log: str
    process_file: Path
    pid_file: Path
    deadline: float
    timed_out: bool = False

    def expire(self, now: float) -> None:
        """Kill runc if it has run past its deadline; the loop then reaps it."""
        if not self.timed_out and now >= self.deadline:
            self.timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.runc_pid, signal.SIGKILL)

    def finish(self, status: int) -> int:
        """runc exited ``status``: the new process's pid, or runc's error raised.

        On an error everything opened for the process is closed.
        """
        try:
            if self.timed_out:
                raise RuncError("runc exec timed out", command=self.argv)
            self.runc.check_exit(self.argv, self.log, status)
            pid = int(self.pid_file.read_bytes().strip() or b"0")
            if pid <= 0:
                raise RuncError("runc exec wrote no pid", command=self.argv)
        except BaseException:
            self.record.release()
            raise
        finally:
            for path in (self.process_file, self.pid_file):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.log)
        self.record.pid = pid
        self.wiring.started()
        return pid


def spawn_exec(
    runc: ForkingRunc,
    container_id: str,
    spec: dict[str, Any],
    record: Process,
    wiring: PlainStdio,
    task_dir: Path,
) -> PendingExec:
    """Write the process's JSON and spawn ``runc exec --detach`` for it."""
    exec_id = record.exec_id
    process_file = task_dir / f"exec-{exec_id}.json"
    pid_file = task_dir / f"exec-{exec_id}.pid"
    # Each exec its own log: several may run at once.
    log = str(task_dir / f"runc-exec-{exec_id}.log")
    fd = os.open(process_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(spec).encode())
    finally:
        os.close(fd)
    args = ["exec", "--detach", "--pid-file", str(pid_file), "--process", str(process_file)]
    io = wiring.io
    try:
        runc_pid, argv = runc.spawn([*args, container_id], log, (io.stdin, io.stdout, io.stderr))
    except BaseException:
        process_file.unlink(missing_ok=True)
        raise
    finally:
        wiring.spawned()
    return PendingExec(
        record=record,
        wiring=wiring,
        runc=runc,
        runc_pid=runc_pid,
        argv=argv,
        log=log,
        process_file=process_file,
        pid_file=pid_file,
        deadline=time.monotonic() + runc.timeout,
    )
