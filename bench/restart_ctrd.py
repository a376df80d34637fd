"""containerd's side of ``berth-bench restarts``: its restart monitor plugin, by labels.

With ``--compare containerd``, ``--containers`` containers are made
through containerd's API (:mod:`bench.ctrd`) in namespace
``bench-restarts`` on the same spec as berth's (the busybox directory as
the absolute, read-only ``root.path``) with the labels its restart
monitor (``io.containerd.internal.v1.restart``) reads:
``containerd.io/restart.policy=always`` and
``containerd.io/restart.status=running`` (set by Update once each task
is started, so that no tick of the monitor falls between the bench's
task create and start), then left to crash for
``--containerd-seconds``. The monitor polls every 10 s (its default
``interval``) and then deletes each stopped task and creates and starts
a new one, so a crash waits 0-10 s.
Each restart is timed from ``TaskExit.exited_at`` to the receipt of the
replacement's ``/tasks/start`` on an ``Events/Subscribe`` of the
namespace (:class:`bench.restart_watch.CtrdRestartWatch`); containerd's
CPU over the window is divided by the restarts in it.

Whether the plugin is loaded is asked with ``ctr plugins ls``; without
it the side is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

import berth
from bench import ctrd as ctrd_mod
from bench.resources import listener_pid
from bench.restart_berth import CRASH_ARGS, NAMESPACE, CrashLoop
from bench.restart_cpu import CpuGroup, CpuWindow
from bench.restart_watch import CtrdRestartWatch
from bench.task_host import task_spec

__all__ = ["RESTART_LABELS", "ctrd_crash_loop", "restart_plugin"]

RESTART_LABELS = {
    "containerd.io/restart.policy": "always",
    "containerd.io/restart.status": "running",
}
_PLUGIN = ("io.containerd.internal.v1", "restart")
_REMOVE_TIMEOUT_S = 30.0


def restart_plugin(address: str) -> str | None:
    """None when containerd's restart monitor is loaded, else why it cannot be used.

    Asked with ``ctr plugins ls`` (the API's Introspection stubs need
    googleapis' ``google.rpc``, which the compare extra does not bring).
    """
    if shutil.which("ctr") is None:
        return "no ctr on PATH to ask containerd for its restart plugin"
    argv = ["ctr", "-a", address.removeprefix("unix://"), "plugins", "ls"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ctr plugins ls: {exc}"
    if done.returncode != 0:
        return f"ctr plugins ls: {done.stderr.strip()}"
    for line in done.stdout.splitlines():
        words = line.split()
        if len(words) >= 4 and (words[0], words[1]) == _PLUGIN:
            return None if words[-1] == "ok" else f"its restart plugin is {words[-1]}"
    return "its restart plugin (io.containerd.internal.v1.restart) is not loaded"


def _remove(ctrd: ctrd_mod.Containerd, ids: list[str]) -> list[str]:
    """Stop the monitor restarting each container (label stopped), then remove it; ids left."""
    for cid in ids:
        with contextlib.suppress(ctrd_mod.CtrdError):
            ctrd.containers.update(
                cid,
                labels={"containerd.io/restart.status": "stopped"},
                update_mask=["labels.containerd.io/restart.status"],
            )
    left = list(ids)
    deadline = time.monotonic() + _REMOVE_TIMEOUT_S
    while left and time.monotonic() < deadline:
        for cid in list(left):
            with contextlib.suppress(ctrd_mod.CtrdError):
                ctrd.tasks.kill(cid, signal.SIGKILL, all=True)
                ctrd.tasks.wait(cid, timeout=5.0)
            with contextlib.suppress(ctrd_mod.CtrdError):
                ctrd.tasks.delete(cid)
            try:
                ctrd.containers.delete(cid)
                left.remove(cid)
            except ctrd_mod.CtrdError as exc:
                if exc.code == "NOT_FOUND":
                    left.remove(cid)
        if left:
            time.sleep(0.2)
    return left


def ctrd_crash_loop(
    address: str, rootfs: Path, *, containers: int, seconds: float, prefix: str
) -> CrashLoop:
    """The crash loop on containerd's restart monitor."""
    spec = berth.oci_spec_any(task_spec(CRASH_ARGS, rootfs))
    ctrd = ctrd_mod.Containerd(address, NAMESPACE, timeout=60.0, lease=ctrd_mod.LEASE)
    ctrd.create_lease(ctrd_mod.LEASE)
    pid = listener_pid(address)
    window = CpuWindow([CpuGroup("containerd", lambda: [pid] if pid else [])])
    ids = [f"{prefix}c{i}" for i in range(containers)]
    watch: CtrdRestartWatch | None = None
    extra: dict[str, object] = {"labels": RESTART_LABELS, "containerd_pid": pid}
    try:
        _remove(ctrd, [c.id for c in ctrd.containers.list()])  # a rerun's leftovers
        watch = CtrdRestartWatch(address, NAMESPACE).start()
        for cid in ids:
            # Labelled once running: a monitor tick between a labelled container's task
            # create and start would replace the task and fail the bench's start.
            ctrd.containers.create(cid, spec=spec)
            ctrd.tasks.create(cid)
            ctrd.tasks.start(cid)
            ctrd.containers.update(
                cid,
                labels=RESTART_LABELS,
                update_mask=[f"labels.{label}" for label in RESTART_LABELS],
            )
        window.begin()
        begin_ns = time.time_ns()
        time.sleep(seconds)
        end_ns = time.time_ns()
        window.end()
    finally:
        if left := _remove(ctrd, ids):
            extra["not_removed"] = left
        if watch is not None:
            watch.close()
        ctrd.delete_lease(ctrd_mod.LEASE)
        ctrd.close()
    books = watch.restarts
    return CrashLoop(
        "containerd",
        containers,
        books.within(begin_ns, end_ns),
        books.restarted_between(begin_ns, end_ns),
        window,
        exits=books.exits,
        failure=watch.failure,
        extra=extra,
    )
