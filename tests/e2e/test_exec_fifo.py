"""Starting a created runc container through its exec FIFO, without ``runc start``."""

from __future__ import annotations

import os
import signal

import pytest

from runtime.exec_fifo import EXEC_FIFO, start_through_fifo
from tests.e2e.conftest import make_bundle, requires_root_and_runc, unique_id, wait_exit
from tests.e2e.test_runc_driver import cleanup, create
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
