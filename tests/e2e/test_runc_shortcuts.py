"""What the shim does in runc's place: start through the exec FIFO, delete a stopped container."""

from __future__ import annotations

import json
import os
import signal

import pytest

from runtime.exec_fifo import EXEC_FIFO, start_through_fifo
from runtime.runc_cleanup import STATE_FILE, remove_stopped
from tests.e2e.conftest import make_bundle, requires_root_and_runc, unique_id, wait_exit
from tests.e2e.test_runc_driver import cleanup, create, listed
from wire.errors import FailedPrecondition

pytestmark = [requires_root_and_runc, pytest.mark.usefixtures("subreaper")]


def test_reading_the_fifo_starts_the_init_and_runc_then_reports_it_running(
    runc, runc_root, busybox_rootfs, tmp_path
):
    id = unique_id("fifo")
    bundle = make_bundle(tmp_path / id, ["sh", "-c", "echo hi; sleep 30"], busybox_rootfs)
    log = tmp_path / "out.log"
    pid = None
    try:
        pid = create(runc, id, bundle, stdout=f"file://{log}")
        assert (runc_root / id / EXEC_FIFO).exists()
        assert start_through_fifo(runc_root, id, pid, timeout=10) is True
        assert not (runc_root / id / EXEC_FIFO).exists()
        assert runc.state(id)["status"] == "running"
        os.kill(pid, signal.SIGKILL)
        assert wait_exit(pid) == 137
        pid = None
        assert log.read_text() == "hi\n"
    finally:
        cleanup(runc, id, pid)


def test_an_init_killed_before_start_is_a_failed_precondition(
    runc, runc_root, busybox_rootfs, tmp_path
):
    id = unique_id("fifo-dead")
    bundle = make_bundle(tmp_path / id, ["true"], busybox_rootfs)
    pid = None
    try:
        pid = create(runc, id, bundle)
        os.kill(pid, signal.SIGKILL)
        assert wait_exit(pid) == 137
        with pytest.raises(FailedPrecondition, match="exited before start"):
            start_through_fifo(runc_root, id, pid, timeout=10)
        pid = None
    finally:
        cleanup(runc, id, pid)


def test_no_fifo_leaves_the_start_to_runc(tmp_path):
    assert start_through_fifo(tmp_path, "absent", os.getpid(), timeout=1) is False


def _stopped_container(runc, busybox_rootfs, tmp_path, id, **spec_changes):
    bundle = make_bundle(tmp_path / id, ["true"], busybox_rootfs)
    if spec_changes:
        config = json.loads((bundle / "config.json").read_text())
        config.update(spec_changes)
        (bundle / "config.json").write_text(json.dumps(config))
    pid = create(runc, id, bundle)
    runc.start(id)
    assert wait_exit(pid) == 0
    return pid


def test_a_stopped_container_is_removed_with_its_cgroups_and_runc_forgets_it(
    runc, runc_root, busybox_rootfs, tmp_path
):
    id = unique_id("rm")
    try:
        _stopped_container(runc, busybox_rootfs, tmp_path, id)
        state = json.loads((runc_root / id / STATE_FILE).read_text())
        cgroups = {p for p in state["cgroup_paths"].values() if p}
        assert any(os.path.isdir(p) for p in cgroups)
        assert remove_stopped(runc_root, id) is True
        assert not (runc_root / id).exists()
        assert not any(os.path.exists(p) for p in cgroups)
        assert not listed(runc, id)
    finally:
        cleanup(runc, id)


def test_poststop_hooks_leave_the_delete_to_runc(runc, runc_root, busybox_rootfs, tmp_path):
    id = unique_id("rm-hook")
    marker = tmp_path / "poststop-ran"
    hook = {"path": "/bin/busybox", "args": ["busybox", "touch", str(marker)]}
    try:
        _stopped_container(runc, busybox_rootfs, tmp_path, id, hooks={"poststop": [hook]})
        assert remove_stopped(runc_root, id) is False
        assert (runc_root / id / STATE_FILE).exists()
        runc.delete(id)
        assert marker.exists()
    finally:
        cleanup(runc, id)


def test_a_running_container_is_left_to_runc(runc, runc_root, busybox_rootfs, tmp_path):
    id = unique_id("rm-live")
    bundle = make_bundle(tmp_path / id, ["sleep", "30"], busybox_rootfs)
    pid = None
    try:
        pid = create(runc, id, bundle)
        runc.start(id)
        assert remove_stopped(runc_root, id) is False
        assert runc.state(id)["status"] == "running"
    finally:
        cleanup(runc, id, pid)
