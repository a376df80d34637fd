"""A short run of ``berth-bench containers`` against a berthd it spawns.

Not a benchmark: it only checks that the scenario runs end to end, that
its JSON report carries every figure, and that no correctness breach was
found. The figures themselves are never asserted on.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PHASES = {"create", "get", "update", "list-1000", "delete"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the scenario once (1 and 2 clients, short phases, a small scale check)."""
    out = tmp_path_factory.mktemp("bench") / "r.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cli",
            "containers",
            "--clients",
            "1,2",
            # A fixed op count, no warm-up: on a loaded machine a 0.3 s window
            # could leave the delete phase nothing to delete.
            "--ops",
            "40",
            "--warmup",
            "0",
            "--scale",
            "2000",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "ops/s" in run.stdout and "targets" in run.stdout
    return json.loads(out.read_text())


def test_the_run_finds_no_correctness_breach(report: dict) -> None:
    assert report["aborted"] is None
    assert report["correctness"]["breach_count"] == 0
    assert report["correctness"]["breaches"] == []
    checks = report["correctness"]["checks"]
    assert checks, "no correctness check ran"
    for check in checks:
        assert check["listed"] == check["expected"], check


def test_every_phase_is_reported_at_every_client_count(report: dict) -> None:
    seen = {(p["phase"], p["clients"]) for p in report["phases"]}
    assert seen == {(phase, clients) for phase in PHASES for clients in (1, 2)}


def test_each_phase_has_throughput_and_percentiles(report: dict) -> None:
    for phase in report["phases"]:
        assert phase["ops"] > 0, phase
        assert phase["ops_per_s"] > 0, phase
        assert 0 < phase["p50_ms"] <= phase["p90_ms"] <= phase["p99_ms"] <= phase["max_ms"], phase
        assert phase["error_count"] == 0, phase


def test_scale_memory_and_targets_are_reported(report: dict) -> None:
    scale = report["scale"]
    assert scale["small_stored"] == 1000 and scale["large_stored"] == 2000
    assert scale["get_small"]["p50_ms"] > 0 and scale["get_large"]["p50_ms"] > 0
    assert scale["p50_ratio"] > 0
    memory = report["memory"]
    assert memory["containers"] == 1000
    assert memory["rss_anon_before_kib"] > 0 and memory["rss_anon_after_kib"] > 0
    statuses = {t["name"]: t["status"] for t in report["targets"]}
    assert set(statuses.values()) <= {"PASS", "MISS", "SKIP"}
    assert report["daemon"]["spawned"] is True


# --- berth-bench tasks -----------------------------------------------------------

TASK_LATENCIES = {
    "lifecycle",
    "container_create",
    "task_create",
    "task_start",
    "wait_exit",
    "task_delete",
    "container_delete",
    "runc_run",
    "exec_wait",
    "exec_call",
    "exit_event",
    "exit_stamp",
    "exit_daemon",
    "exit_deliver",
}


@pytest.fixture(scope="module")
def tasks_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run ``berth-bench tasks`` once, small: 3 iterations, 3 running tasks, 1 s to settle."""
    from tests.e2e.conftest import SKIP_REASON

    if SKIP_REASON is not None:
        pytest.skip(SKIP_REASON)
    out = tmp_path_factory.mktemp("bench-tasks") / "t.json"
    argv = ["tasks", "--iterations", "3", "--tasks", "3", "--settle", "1", "--json", str(out)]
    run = subprocess.run(
        [sys.executable, "-m", "bench.cli", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "targets" in run.stdout and "raw runc run of true" in run.stdout
    assert "daemon PSS growth per running task" in run.stdout
    return json.loads(out.read_text())


def test_tasks_runs_clean_and_reports_every_latency(tasks_report: dict) -> None:
    assert tasks_report["scenario"] == "tasks"
    assert tasks_report["aborted"] is None
    assert tasks_report["correctness"] == {"breaches": [], "breach_count": 0}
    assert set(tasks_report["latency_ms"]) == TASK_LATENCIES
    for key, lat in tasks_report["latency_ms"].items():
        assert lat["n"] == 3, (key, lat)
        assert len(tasks_report["samples_ns"][key]) == 3, key
        if not key.startswith("exit_") or key == "exit_event":  # others: wall-clock differences
            assert 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"], (key, lat)


def test_tasks_reports_memory_events_and_targets(tasks_report: dict) -> None:
    memory = tasks_report["memory"]
    assert memory["running_tasks"] == 3
    assert memory["shims"]["count"] == 3
    assert 0 < memory["shims"]["pss_mean_kib"] <= memory["shims"]["rss_mean_kib"]
    assert memory["daemon"]["rss_kib"] > 0 and memory["zygote"]["rss_kib"] > 0
    assert memory["settle_s"] == 1.0 and tasks_report["config"]["settle_s"] == 1.0
    for key in ("daemon_pss_per_task_kib", "zygote_pss_per_task_kib", "total_pss_per_task_kib"):
        value = memory[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value), (key, value)
    for name in ("berthd", "berth-zygote"):
        growth = memory["growth"][name]
        assert growth["tasks"] == 3 and growth["before"]["pss_kib"] > 0, growth
        assert growth["after"]["pss_kib"] > 0 and growth["after_pss_series_kib"], growth
        expected = (growth["after"]["pss_kib"] - growth["before"]["pss_kib"]) / 3
        assert growth["pss_per_task_kib"] == pytest.approx(expected, abs=0.01)
    assert memory["daemon_pss_per_task_kib"] == memory["growth"]["berthd"]["pss_per_task_kib"]
    assert memory["containerd"] is None and memory["ratios"] is None  # no --compare
    events = tasks_report["events"]
    # Seqs jump over the container events between task events: only order is checked.
    assert events["out_of_order"] == [] and events["duplicate_exits"] == 0
    # 6 lifecycles and 6 execs (3 warm-up rounds each), the exec task's init, 3 killed tasks
    assert events["by_type"]["EXIT"] == 6 + 6 + 1 + 3
    statuses = {t["name"]: t["status"] for t in tasks_report["targets"]}
    assert len(statuses) == 5 and set(statuses.values()) <= {"PASS", "MISS"}
    assert tasks_report["daemon"]["spawned"] is True and tasks_report["daemon"]["exit_code"] == 0
