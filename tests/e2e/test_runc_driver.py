"""The runc driver and rootfs mounts against real runc and busybox containers.

The test process stands in for the shim: it is the subreaper of the inits
runc forks (runc create exits, its init is re-parented to us) and reaps them.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path

import pytest

from runtime.mounts import is_mounted, mount_all, unmount_all
from runtime.runc import Runc, RuncError
from runtime.stdio import open_stdio
from tests.e2e.conftest import (
    make_bundle,
    requires_root_and_runc,
    unique_id,
    wait_exit,
    wait_status,
)
from wire.errors import FailedPrecondition

pytestmark = [requires_root_and_runc, pytest.mark.usefixtures("subreaper")]


def create(runc: Runc, id: str, bundle: Path, stdout: str = "", stderr: str = "") -> int:
    fds = open_stdio("", stdout, stderr)
    try:
        return runc.create(
            id,
            bundle,
            pid_file=bundle / "init.pid",
            stdin=fds.stdin,
            stdout=fds.stdout,
            stderr=fds.stderr,
        )
    finally:
        # runc handed them to the init; our copies are not needed.
        fds.close()


def listed(runc: Runc, id: str) -> bool:
    return any(c["id"] == id for c in runc.list())


def cleanup(runc: Runc, id: str, pid: int | None = None) -> None:
    with contextlib.suppress(RuncError):
        runc.delete(id, force=True)
    if pid is not None:
        with contextlib.suppress(ChildProcessError, TimeoutError):
            wait_exit(pid, timeout=5)


def test_a_started_container_writes_its_stdout_and_exits_with_its_status(
    runc, busybox_rootfs, tmp_path
):
    id = unique_id("echo")
    bundle = make_bundle(tmp_path / id, ["sh", "-c", "echo hi; exit 7"], busybox_rootfs)
    log = tmp_path / "out.log"
    pid = None
    try:
        pid = create(runc, id, bundle, stdout=f"file://{log}")
        assert runc.state(id)["status"] == "created"
        assert runc.state(id)["pid"] == pid
        runc.start(id)
        assert wait_exit(pid) == 7
        pid = None
        assert log.read_text() == "hi\n"
        assert wait_status(runc, id, "stopped")["status"] == "stopped"
    finally:
        cleanup(runc, id, pid)
    assert not listed(runc, id)


def test_a_running_container_pauses_resumes_lists_processes_and_dies_of_sigterm(
    runc, busybox_rootfs, tmp_path
):
    id = unique_id("sleep")
    # A pid namespace's init ignores signals it has no handler for: trap TERM.
    script = "trap 'exit 143' TERM; sleep 30 & wait"
    bundle = make_bundle(tmp_path / id, ["sh", "-c", script], busybox_rootfs)
    pid = None
    try:
        pid = create(runc, id, bundle)
        runc.start(id)
        assert runc.state(id)["status"] == "running"
        deadline = time.monotonic() + 5
        while len(runc.ps(id)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        processes = runc.ps(id)
        assert pid in processes and len(processes) == 2
        runc.pause(id)
        assert runc.state(id)["status"] == "paused"
        runc.resume(id)
        assert runc.state(id)["status"] == "running"
        runc.kill(id, signal.SIGTERM)
        assert wait_exit(pid) == 143
        pid = None
        wait_status(runc, id, "stopped")
    finally:
        cleanup(runc, id, pid)


def test_exec_into_a_running_container_returns_the_pid_of_the_process(
    runc, busybox_rootfs, tmp_path
):
    id = unique_id("exec")
    bundle = make_bundle(tmp_path / id, ["sleep", "30"], busybox_rootfs)
    pid = None
    try:
        pid = create(runc, id, bundle)
        runc.start(id)
        process = {
            "args": ["sh", "-c", "exit 3"],
            "cwd": "/",
            "env": ["PATH=/bin"],
            "user": {"uid": 0, "gid": 0},
        }
        fds = open_stdio("", "", "")
        try:
            exec_pid = runc.exec(
                id,
                process,
                pid_file=tmp_path / "exec.pid",
                stdin=fds.stdin,
                stdout=fds.stdout,
                stderr=fds.stderr,
            )
        finally:
            fds.close()
        assert exec_pid > 0 and exec_pid != pid
        assert wait_exit(exec_pid) == 3
        runc.delete(id, force=True)
        assert wait_exit(pid) == 128 + signal.SIGKILL
        pid = None
        assert not listed(runc, id)
    finally:
        cleanup(runc, id, pid)


def test_exec_of_a_missing_binary_fails_with_runc_text(runc, busybox_rootfs, tmp_path):
    id = unique_id("execmiss")
    bundle = make_bundle(tmp_path / id, ["sleep", "30"], busybox_rootfs)
    pid = None
    try:
        pid = create(runc, id, bundle)
        runc.start(id)
        fds = open_stdio("", "", "")
        with pytest.raises(RuncError, match=r'exec failed: .*"/nope"') as info:
            runc.exec(
                id,
                {"args": ["/nope"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
                pid_file=tmp_path / "exec.pid",
                stdin=fds.stdin,
                stdout=fds.stdout,
                stderr=fds.stderr,
            )
        fds.close()
        assert info.value.exit_status == 255
        assert runc.state(id)["status"] == "running"
    finally:
        cleanup(runc, id, pid)


def test_a_missing_binary_fails_at_create_and_leaves_nothing_after_delete(
    runc, busybox_rootfs, tmp_path
):
    id = unique_id("nope")
    bundle = make_bundle(tmp_path / id, ["/nope"], busybox_rootfs)
    try:
        with pytest.raises(RuncError) as info:
            create(runc, id, bundle)
        assert "/nope" in info.value.message
        assert info.value.message.startswith("runc create failed: ")
        runc.delete(id, force=True)  # runc 1.1: success for an id it does not know
        assert not listed(runc, id)
    finally:
        cleanup(runc, id)


def test_a_deleted_created_container_is_gone(runc, busybox_rootfs, tmp_path):
    id = unique_id("created")
    bundle = make_bundle(tmp_path / id, ["true"], busybox_rootfs)
    pid = None
    try:
        pid = create(runc, id, bundle)
        assert listed(runc, id)
        runc.delete(id, force=True)
        assert wait_exit(pid) == 128 + signal.SIGKILL
        pid = None
        assert not listed(runc, id)
        with pytest.raises(RuncError, match="container does not exist"):
            runc.state(id)
    finally:
        cleanup(runc, id, pid)


def test_criu_available_gives_a_reason_or_none(runc):
    reason = runc.criu_available()
    assert reason is None or (isinstance(reason, str) and reason)


def test_a_container_runs_on_a_rootfs_mounted_by_mount_all(runc, busybox_rootfs, tmp_path):
    id = unique_id("mounted")
    bundle = tmp_path / id
    rootfs = bundle / "rootfs"
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    overlay = {
        "type": "overlay",
        "source": "overlay",
        "options": [f"lowerdir={busybox_rootfs}", f"upperdir={upper}", f"workdir={work}"],
    }
    rootfs.mkdir(parents=True)
    mount_all([overlay], rootfs)
    pid = None
    try:
        assert is_mounted(rootfs)
        make_bundle(bundle, ["sh", "-c", "echo written > /tmp/note"], rootfs)
        pid = create(runc, id, bundle)
        runc.start(id)
        assert wait_exit(pid) == 0
        pid = None
        runc.delete(id)
    finally:
        cleanup(runc, id, pid)
        unmount_all(rootfs)
    assert not is_mounted(rootfs)
    assert (upper / "tmp" / "note").read_text() == "written\n"
    assert not (busybox_rootfs / "tmp" / "note").exists()
    unmount_all(rootfs)  # idempotent


def test_a_failed_mount_leaves_nothing_mounted(busybox_rootfs, tmp_path):
    target = tmp_path / "rootfs"
    target.mkdir()
    mounts = [
        {"type": "bind", "source": str(busybox_rootfs), "options": ["rbind", "ro"]},
        {"type": "tmpfs", "source": "tmpfs", "target": "/tmp", "options": ["size=1m"]},
        {"type": "bind", "source": str(tmp_path / "missing"), "target": "/tmp/x", "options": []},
    ]
    with pytest.raises(FailedPrecondition, match="No such file or directory") as info:
        mount_all(mounts, target)
    assert str(tmp_path / "missing") in info.value.message
    assert not is_mounted(target)
    assert not is_mounted(target / "tmp")
