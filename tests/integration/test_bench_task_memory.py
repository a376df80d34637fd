"""The memory step's pieces of ``berth-bench tasks``, in this process, without a daemon.

When the settle readings are taken, the growth per task and the total
of a runtime's processes, and how containerd's daemon pid is found: by
``--containerd-pid``, by the socket's listener, or not at all.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from bench.resources import listener_pid, listener_pids
from bench.task_host import ProcessMemory, process_memory
from bench.task_memory import (
    Growth,
    MemorySummary,
    containerd_shim_pids,
    find_containerd_pid,
    settle,
    settle_times,
    total_per_task,
)


def test_settle_reads_at_half_a_second_then_each_second() -> None:
    assert settle_times(5) == [0.5, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert settle_times(2.5) == [0.5, 1.0, 2.0, 2.5]
    assert settle_times(0.2) == [0.2]
    assert settle_times(0) == [0.0]


def test_settle_reads_a_live_process_and_skips_a_gone_one() -> None:
    series = settle({"me": os.getpid(), "gone": 2**22 + 1}, 0.1)
    assert series["gone"] == []
    ((at, mem),) = series["me"]
    assert at >= 0.1 and mem.pid == os.getpid()
    assert 0 < mem.uss_kib <= mem.rss_kib and 0 < mem.pss_kib <= mem.rss_kib


def test_process_memory_has_uss() -> None:
    mem = process_memory(os.getpid())
    assert mem is not None and 0 < mem.uss_kib <= mem.rss_kib


def _mem(pss: int, uss: int = 0, rss: int = 0) -> ProcessMemory:
    return ProcessMemory(1, rss, pss, uss)


def test_growth_is_the_last_readings_difference_per_task() -> None:
    before = [(0.5, _mem(900)), (1.0, _mem(1000, 800, 2000))]
    after = [(0.5, _mem(1500)), (1.0, _mem(1400, 1000, 2600))]
    growth = Growth.of("d", before, after, 4)
    assert growth is not None
    assert growth.pss_per_task_kib == 100.0
    assert growth.uss_per_task_kib == 50.0 and growth.rss_per_task_kib == 150.0
    doc = growth.to_json()
    assert doc["pss_per_task_kib"] == 100.0
    assert doc["after_pss_series_kib"] == [[0.5, 1500], [1.0, 1400]]
    assert Growth.of("d", [], after, 4) is None and Growth.of("d", before, after, 0) is None


def test_the_total_counts_the_shims_and_the_zygotes_loss() -> None:
    daemon = Growth.of("d", [(1.0, _mem(1000))], [(1.0, _mem(1400))], 4)
    zygote = Growth.of("z", [(1.0, _mem(2000))], [(1.0, _mem(1200))], 4)
    assert daemon is not None and zygote is not None
    shims = MemorySummary.of([_mem(3000), _mem(3000), _mem(3000), _mem(3000)])
    assert total_per_task([daemon, zygote], shims, 4) == (400 - 800 + 12000) / 4
    assert total_per_task([daemon], None, 4) is None


def test_containerd_pid_given_by_option() -> None:
    assert find_containerd_pid("/nonexistent.sock", os.getpid()) == (
        os.getpid(),
        "--containerd-pid",
    )
    pid, how = find_containerd_pid("/nonexistent.sock", 2**22 + 1)
    assert pid is None and "no such process" in how


def test_containerd_pid_by_the_listening_socket(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        assert listener_pids(f"unix://{path}") == []  # bound, not listening
        server.listen()
        assert listener_pids(f"unix://{path}") == [os.getpid()]
        # through another spelling of the same path
        other = f"unix://{tmp_path}/../{tmp_path.name}/c.sock"
        assert listener_pid(other) == os.getpid()
        pid, how = find_containerd_pid(f"unix://{path}")
        assert pid == os.getpid() and how.startswith(f"listener of {path}")


def test_containerd_pid_not_found(tmp_path: Path) -> None:
    pid, how = find_containerd_pid(str(tmp_path / "none.sock"))
    assert pid is None and "--containerd-pid" in how


@pytest.mark.parametrize("ids", [set(), {"no-such-task"}])
def test_no_containerd_shim_of_unknown_ids(ids: set[str]) -> None:
    assert containerd_shim_pids("bench-tasks-none", ids) == []
