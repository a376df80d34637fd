"""Tasks across failures: a SIGKILLed daemon, exits while it is down, a dead shim, load.

Each test runs its own berthd (the failures are the daemon's or a shim's) on
fresh directories, and tears down in ``finally`` whatever a failure could
leave: the daemon, the shims of the test's ids, runc containers, mounts.
Helpers are those of :mod:`tests.e2e.test_tasks_service`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import berth
from tests.e2e.conftest import requires_root_and_runc, unique_id
from tests.e2e.test_tasks_service import (
    NS,
    EventStream,
    alive,
    bind_rootfs,
    make_spec,
    mounts_under,
    process,
    remove,
    runc_ids,
    shim_pids,
    wait_status,
)
from tests.integration.conftest import make_daemon

pytestmark = requires_root_and_runc

CALL_TIMEOUT = 30.0
FD_MARGIN = 5  # fds the daemon may hold above its baseline after the load test
THREAD_MARGIN = 5  # threads likewise


class Berthd:
    """A test's own daemon, and the ids whose shims it may have to clean up."""

    def __init__(
        self,
        tmp_path: Path,
        idle_seconds: float | None = None,
        task_idle_seconds: float | None = None,
    ) -> None:
        args: list[str] = []
        lines = []
        if idle_seconds is not None:
            lines.append(f"container_idle_seconds = {idle_seconds}\n")
        if task_idle_seconds is not None:
            lines.append(f"task_idle_seconds = {task_idle_seconds}\n")
        if lines:
            config = tmp_path / "berthd.toml"
            config.write_text("".join(lines))
            args = ["--config", str(config)]
        self.d = make_daemon(tmp_path, *args)
        self.ids: list[str] = []

    def new_id(self, prefix: str) -> str:
        cid = unique_id(prefix)
        self.ids.append(cid)
        return cid

    def client(self) -> berth.Client:
        return berth.Client(self.d.address, timeout=CALL_TIMEOUT)

    def teardown(self) -> None:
        d = self.d
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        for cid in self.ids:
            for pid in shim_pids(NS, cid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        runc_root = d.state / "runc" / NS
        for cid in runc_ids(d.state):
            subprocess.run(
                ["runc", "--root", str(runc_root), "delete", "--force", cid],
                capture_output=True,
                check=False,
                timeout=30,
            )
        for point in reversed(mounts_under(d.state)):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", str(d.state)], check=False)


@pytest.fixture
def berthd(tmp_path: Path) -> Iterator[Berthd]:
    b = Berthd(tmp_path)
    b.d.start()
    try:
        yield b
    finally:
        b.teardown()


def run_task(client: berth.Client, cid: str, root: Path, args: list[str], **create) -> int:
    """Create container and task ``cid`` running ``args`` on ``root``, start it; the pid."""
    client.containers.create(cid, spec=make_spec(root, args))
    pid: int = client.tasks.create(cid, **create)["pid"]
    client.tasks.start(cid)
    return pid


def test_running_tasks_survive_a_sigkilled_daemon_and_answer_after_its_restart(
    berthd: Berthd, busybox_rootfs: Path
) -> None:
    ids = [berthd.new_id("rel-survive") for _ in range(5)]
    pids: dict[str, int] = {}
    with berthd.client() as client, EventStream(berthd.d.address) as before:
        for cid in ids:
            pids[cid] = run_task(client, cid, busybox_rootfs, ["sleep", "600"])
        before.wait_for(type="START", id=ids[-1])
        last_seq = max(e["seq"] for e in before.seen)

    berthd.d.kill()
    assert all(alive(pid) for pid in pids.values()), "a task died with the daemon"
    berthd.d.start()

    with berthd.client() as client, EventStream(berthd.d.address) as events:
        for cid in ids:
            task = client.tasks.info(cid)
            assert task["status"] == "RUNNING", task
            assert task["pid"] == pids[cid]
        assert sorted(t["id"] for t in client.tasks.list()) == sorted(ids)

        client.tasks.kill(ids[0], signal.SIGKILL)
        exit_event = events.wait_for(type="EXIT", id=ids[0], pid=pids[ids[0]])
        assert exit_event["exit_status"] == 137
        assert exit_event["seq"] > last_seq, "seq went back after the restart"
        assert wait_status(client, ids[0], "STOPPED")["exit_status"] == 137

        exec_pid = client.tasks.exec(ids[1], spec=process(["sh", "-c", "exit 3"]))["pid"]
        events.wait_for(type="EXEC_ADDED", id=ids[1], pid=exec_pid)
        assert events.wait_for(type="EXIT", id=ids[1], pid=exec_pid)["exit_status"] == 3

        for cid in ids[1:]:
            client.tasks.kill(cid, signal.SIGKILL)
        for cid in ids:
            wait_status(client, cid, "STOPPED")
            assert client.tasks.delete(cid)["exit_status"] == 137
            client.containers.delete(cid)
        assert client.tasks.list() == []
    for cid in ids:
        assert shim_pids(NS, cid) == []
        assert not alive(pids[cid])
    assert runc_ids(berthd.d.state) == []


def test_a_task_that_exits_while_the_daemon_is_down_is_stopped_with_its_status_after_restart(
    berthd: Berthd, busybox_rootfs: Path
) -> None:
    cid = berthd.new_id("rel-down")
    with berthd.client() as client:
        pid = run_task(client, cid, busybox_rootfs, ["sh", "-c", "sleep 2; exit 5"])
        before = client.call("berth.v1.Events/Info", {})["latest_seq"]
    berthd.d.kill()
    time.sleep(3)
    assert not alive(pid)
    berthd.d.start()

    with berthd.client() as client:
        # Logged before the daemon answered anything: a resume from before
        # the kill finds it, whenever it subscribes.
        stream = client.stream(
            "berth.v1.Events/Subscribe",
            {"after_seq": before, "filter": f"id=={cid},topic==/tasks/exit"},
        )
        frame = next(f for f in stream if f["events"])
        stream.close()
        exit_event = frame["events"][0]
        assert exit_event["payload"]["exit_status"] == 5
        assert exit_event["payload"]["pid"] == pid
        assert exit_event["seq"] > before
        task = wait_status(client, cid, "STOPPED")
        assert task["exit_status"] == 5
        assert task["pid"] == pid
        deleted = client.tasks.delete(cid)
        assert deleted["exit_status"] == 5
        assert deleted["exited_at"] == task["exited_at"]
        client.containers.delete(cid)


def test_a_killed_shim_leaves_its_task_stopped_with_255_and_nothing_behind(
    berthd: Berthd, busybox_rootfs: Path
) -> None:
    cid = berthd.new_id("rel-shim")
    task_dir = berthd.d.state / "tasks" / NS / cid
    with berthd.client() as client, EventStream(berthd.d.address) as events:
        try:
            pid = run_task(
                client, cid, busybox_rootfs, ["sleep", "600"], rootfs=bind_rootfs(busybox_rootfs)
            )
            exec_pid = client.tasks.exec(cid, spec=process(["sleep", "600"]))["pid"]
            assert mounts_under(task_dir), "the task's rootfs is not mounted"
            shims = shim_pids(NS, cid)
            assert len(shims) == 1, shims

            os.kill(shims[0], signal.SIGKILL)

            exit_event = events.wait_for(type="EXIT", id=cid, pid=pid, timeout=15)
            assert exit_event["exit_status"] == 255
            task = wait_status(client, cid, "STOPPED")
            assert task["exit_status"] == 255
            deadline = time.monotonic() + 10
            while (alive(pid) or alive(exec_pid)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not alive(pid), "the task's init outlived its shim"
            assert not alive(exec_pid), "the task's exec outlived its shim"
            assert mounts_under(task_dir) == []
            assert cid not in runc_ids(berthd.d.state)
            assert shim_pids(NS, cid) == []
            with pytest.raises(berth.NotFound):
                client.tasks.kill(cid, signal.SIGKILL)
            assert client.tasks.delete(cid)["exit_status"] == 255
            client.containers.delete(cid)
            assert not task_dir.exists()
        finally:
            remove(client, cid)


def _counts(pid: int) -> tuple[int, int]:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(status.split("\nThreads:")[1].split()[0])
    return fds, threads


def test_fifty_tasks_from_eight_concurrent_clients_leave_nothing_behind_and_leak_nothing(
    tmp_path: Path, busybox_rootfs: Path
) -> None:
    # Idle container actors (a thread each) are reaped after a second, so the
    # thread count can settle within the test.
    b = Berthd(tmp_path, idle_seconds=1.0)
    b.d.start()
    try:
        assert b.d.proc is not None
        daemon_pid = b.d.proc.pid
        rootfs = bind_rootfs(busybox_rootfs)

        def cycle(client: berth.Client, cid: str) -> None:
            run_task(client, cid, busybox_rootfs, ["sleep", "600"], rootfs=rootfs)
            client.tasks.kill(cid, signal.SIGKILL)
            wait_status(client, cid, "STOPPED", timeout=30)
            assert client.tasks.delete(cid)["exit_status"] == 137
            client.containers.delete(cid)

        # Warm up whatever is made on first use, then let it settle.
        with b.client() as client:
            cycle(client, b.new_id("rel-warm"))
        time.sleep(3)
        base_fds, base_threads = _counts(daemon_pid)

        ids = [b.new_id("rel-load") for _ in range(50)]
        errors: list[str] = []

        def worker(mine: list[str]) -> None:
            with b.client() as client:
                for cid in mine:
                    try:
                        cycle(client, cid)
                    except Exception as exc:
                        errors.append(f"{cid}: {type(exc).__name__}: {exc}")
                        remove(client, cid)

        threads = [
            threading.Thread(target=worker, args=(ids[n::8],), name=f"client-{n}") for n in range(8)
        ]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "a client thread hung"
        elapsed = time.monotonic() - started
        assert errors == [], errors

        with b.client() as client:
            assert client.tasks.list() == []
            assert client.containers.list() == []
        assert runc_ids(b.d.state) == []
        assert mounts_under(b.d.state / "tasks") == []
        assert [cid for cid in ids if shim_pids(NS, cid)] == []
        tasks_dir = b.d.state / "tasks" / NS
        leftover = sorted(p.name for p in tasks_dir.iterdir()) if tasks_dir.exists() else []
        assert leftover == []

        deadline = time.monotonic() + 20
        while True:
            fds, nthreads = _counts(daemon_pid)
            if fds <= base_fds + FD_MARGIN and nthreads <= base_threads + THREAD_MARGIN:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"after 50 tasks ({elapsed:.1f}s): fds {base_fds} -> {fds}, "
                    f"threads {base_threads} -> {nthreads} (margin +{FD_MARGIN}/+{THREAD_MARGIN})"
                )
            time.sleep(0.5)
    finally:
        b.teardown()


def _settle_threads(pid: int, at_most: int, timeout: float = 15.0) -> int:
    """Wait until the daemon runs at most ``at_most`` threads; how many it runs."""
    deadline = time.monotonic() + timeout
    while (threads := _counts(pid)[1]) > at_most:
        if time.monotonic() > deadline:
            raise AssertionError(f"daemon still runs {threads} threads, wanted <= {at_most}")
        time.sleep(0.1)
    return threads


def test_a_running_tasks_actors_are_stopped_when_idle_and_it_still_answers_everything(
    tmp_path: Path, busybox_rootfs: Path
) -> None:
    b = Berthd(tmp_path, idle_seconds=1.0, task_idle_seconds=0.5)
    b.d.start()
    try:
        assert b.d.proc is not None
        daemon_pid = b.d.proc.pid
        cid = b.new_id("rel-idle")
        with b.client() as client, EventStream(b.d.address) as events:
            client.containers.create(cid, spec=make_spec(busybox_rootfs, ["sleep", "600"]))
            client.tasks.list()
            base = _settle_threads(daemon_pid, 10**6)
            init = client.tasks.create(cid)["pid"]
            client.tasks.start(cid)
            # Its container's actor and its task's run now (reaped after 0.5 s idle).
            assert _counts(daemon_pid)[1] > base
            _settle_threads(daemon_pid, base)
            assert client.tasks.info(cid)["status"] == "RUNNING"

            # A dormant task: its container's and its own actor start again.
            pid = client.tasks.exec(cid, spec=process(["sh", "-c", "exit 4"]))["pid"]
            events.wait_for(type="EXEC_ADDED", id=cid, pid=pid)
            assert events.wait_for(type="EXIT", id=cid, pid=pid)["exit_status"] == 4
            # The exec pool keeps its one thread; the actors go again.
            _settle_threads(daemon_pid, base + 1)

            # Its init's exit reaches the dormant task straight from the shim.
            client.tasks.kill(cid, signal.SIGKILL)
            exit_ = events.wait_for(type="EXIT", id=cid, pid=init)
            assert exit_["exit_status"] == 137
            wait_status(client, cid, "STOPPED")
            _settle_threads(daemon_pid, base + 1)
            assert client.tasks.delete(cid)["exit_status"] == 137
            events.wait_for(type="DELETE", id=cid)
            client.containers.delete(cid)
            assert client.tasks.list() == []
        assert shim_pids(NS, cid) == []
    finally:
        b.teardown()
