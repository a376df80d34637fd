"""Start, attach to and exec in tasks with this process's stdio: what ``run`` shares.

``start_task`` is ``ctr run``'s second half and ``ctr tasks start``: create
the task with FIFOs (:mod:`berth.console.fifos`), start it, copy stdio until
it exits (:mod:`berth.console.attach`), delete it, and return its exit
status. Detached (``-d``), it leaves the task running: with a terminal its
FIFOs stay for ``tasks attach``; without one, its output goes to a log file
beside them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

from berth.client import Client
from berth.console.attach import Attachment
from berth.console.context import Context
from berth.console.exit_watch import ExitWatcher
from berth.console.fifos import FifoSet, remove_fifo_dir
from wire.errors import BerthError, FailedPrecondition, NotFound

__all__ = [
    "attach_task",
    "container_process",
    "discard_task",
    "exec_process",
    "force_delete",
    "log_path",
    "start_task",
]

# How long a task killed on the way out may take to stop before its delete.
_STOP_WAIT = 5.0


def log_path(ctx: Context, container_id: str) -> str:
    """Where a task started detached without a terminal writes its output."""
    return str(ctx.session.fifo_dir(container_id) / "output.log")


def start_task(ctx: Context, container_id: str, *, terminal: bool, detach: bool) -> int:
    """Create and start ``container_id``'s task; attached, its exit status after deleting it."""
    client = ctx.client
    directory = ctx.session.fifo_dir(container_id)
    if detach and not terminal:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        log = f"file://{log_path(ctx, container_id)}"
        client.tasks.create(container_id, stdout=log, stderr=log)
        _start_or_discard(client, container_id)
        return 0
    fifos = FifoSet.create(directory, terminal=terminal)
    try:
        pid = client.tasks.create(
            container_id,
            terminal=terminal,
            stdin=str(fifos.stdin),
            stdout=str(fifos.stdout),
            stderr=fifos.stderr_target,
        )["pid"]
    except BaseException:
        remove_fifo_dir(directory)
        raise
    if detach:
        try:
            _start_or_discard(client, container_id)
        except BaseException:
            remove_fifo_dir(directory)
            raise
        return 0
    status: int | None = None
    try:
        with _attached(ctx, container_id, fifos, terminal, pid) as attachment:
            client.tasks.start(container_id)
            status = attachment.run()
    finally:
        if status is None:  # Failed or interrupted: do not leave it running.
            discard_task(client, container_id)
        else:
            with contextlib.suppress(NotFound):
                client.tasks.delete(container_id)
        remove_fifo_dir(directory)
    return status or 0


def attach_task(ctx: Context, container_id: str) -> int | None:
    """Attach to a task started with ``run -d -t``; its exit status, None on detach."""
    directory = ctx.session.fifo_dir(container_id)
    fifos = FifoSet.existing(directory)
    if fifos is None:
        ctx.client.tasks.info(container_id)  # NotFound when there is no task at all
        raise FailedPrecondition(
            f'task "{container_id}": no FIFOs to attach to in {directory} '
            '(start it with "berth run -d -t")'
        )
    watcher = ExitWatcher(ctx.session, container_id)
    try:
        # Subscribed first: an exit between the Info and the loop is not missed.
        watcher.start()
        task = ctx.client.tasks.info(container_id)
        if task["status"] == "STOPPED":
            return int(task["exit_status"])
        watcher.watch(task["pid"])
        ends = fifos.open(f'task "{container_id}"')
        try:
            attachment = Attachment(
                ctx.client, container_id, ends, watcher, fifos.stderr is None, detach_key=b"\x1d"
            )
            return attachment.run()
        finally:
            ends.close()
    finally:
        watcher.close()


def exec_process(
    ctx: Context, container_id: str, process: dict[str, Any], *, terminal: bool, detach: bool
) -> int:
    """Run ``process`` in the task; attached, its exit status."""
    client = ctx.client
    directory = ctx.session.fifo_dir(container_id)
    if detach:
        client.tasks.exec(container_id, spec=process, terminal=terminal)
        return 0
    prefix = f"exec-{os.getpid()}-{time.monotonic_ns()}-"
    with contextlib.ExitStack() as stack:
        fifos = FifoSet.create(directory, terminal=terminal, prefix=prefix)
        stack.callback(fifos.remove)
        # Held before the Exec: a quick process's output must find us there.
        ends = fifos.open(f'task "{container_id}" exec')
        stack.callback(ends.close)
        watcher = ExitWatcher(ctx.session, container_id)
        stack.callback(watcher.close)
        watcher.start()
        pid = client.tasks.exec(
            container_id,
            spec=process,
            terminal=terminal,
            stdin=str(fifos.stdin),
            stdout=str(fifos.stdout),
            stderr=fifos.stderr_target,
        )["pid"]
        watcher.watch(pid)
        _flush()
        return Attachment(client, container_id, ends, watcher, terminal, pid=pid).run() or 0


def container_process(client: Client, container_id: str) -> dict[str, Any]:
    """The process of the container's spec: the base of an exec, as ``ctr`` takes it."""
    spec_any = client.containers.get(container_id).get("spec") or {}
    try:
        spec = json.loads(spec_any.get("value") or b"{}")
    except ValueError:
        spec = {}
    process = spec.get("process") if isinstance(spec, dict) else None
    return dict(process) if isinstance(process, dict) else {}


def discard_task(client: Client, container_id: str) -> None:
    """Kill (if need be) and delete the task; errors are dropped: this is a way out."""
    with contextlib.suppress(BerthError):
        force_delete(client, container_id)


def force_delete(client: Client, container_id: str) -> dict[str, Any]:
    """Delete the task, killing it (SIGKILL, every process) first if it runs."""
    try:
        return client.tasks.delete(container_id)
    except FailedPrecondition:
        pass  # still running (or paused)
    client.tasks.kill(container_id, int(signal.SIGKILL), all=True)
    deadline = time.monotonic() + _STOP_WAIT
    while client.tasks.info(container_id)["status"] != "STOPPED":
        if time.monotonic() > deadline:
            raise FailedPrecondition(
                f'task "{container_id}": still running {_STOP_WAIT:.0f}s after SIGKILL'
            )
        time.sleep(0.05)
    return client.tasks.delete(container_id)


@contextlib.contextmanager
def _attached(
    ctx: Context, container_id: str, fifos: FifoSet, terminal: bool, pid: int
) -> Iterator[Attachment]:
    """An Attachment to the init ``pid``, its watcher subscribed before the task starts."""
    with contextlib.ExitStack() as stack:
        ends = fifos.open(f'task "{container_id}"')
        stack.callback(ends.close)
        watcher = ExitWatcher(ctx.session, container_id)
        stack.callback(watcher.close)
        watcher.start()
        watcher.watch(pid)
        _flush()
        yield Attachment(ctx.client, container_id, ends, watcher, terminal)


def _start_or_discard(client: Client, container_id: str) -> None:
    try:
        client.tasks.start(container_id)
    except BaseException:
        discard_task(client, container_id)
        raise


def _flush() -> None:
    # Our own output so far goes before the task's, which is written to fd 1 directly.
    sys.stdout.flush()
    sys.stderr.flush()
