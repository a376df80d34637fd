"""Short runs of the load-engine scenarios of ``berth-bench`` against a berthd they spawn.

Not benchmarks: each checks that a scenario runs end to end in seconds,
that its JSON report carries every figure (throughput, p50 ... p99.9,
max, errors by code, timeline, resources) and that its correctness
counters are zero. The figures themselves are never asserted on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import SKIP_REASON

REPO = Path(__file__).resolve().parents[2]
needs_runc = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
LATENCY_KEYS = ("p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms")


def bench(tmp_path: Path, *argv: str) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """Run ``berth-bench`` with ``argv``; its JSON report and the process, which must exit 0."""
    out = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.cli", *argv, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    return json.loads(out.read_text()), run


def assert_phase_figures(phase: dict[str, Any]) -> None:
    assert phase["ops"] > 0 and phase["ops_per_s"] > 0, phase
    values = [phase[key] for key in LATENCY_KEYS]
    assert values[0] > 0 and values == sorted(values), phase
    assert phase["errors"] == {} and phase["error_count"] == 0, phase
    assert phase["timeline"] and all(row["ops_per_s"] >= 0 for row in phase["timeline"])
    resources = phase["resources"]
    assert resources["daemon_pid"] is not None and resources["daemon_rss_kib_max"] > 0


def assert_clean(report: dict[str, Any]) -> None:
    assert report["aborted"] is None
    assert report["correctness"]["breach_count"] == 0, report["correctness"]["breaches"]
    assert report["daemon"]["spawned"] is True and report["daemon"]["exit_code"] == 0


@needs_runc
def test_exec_storm_observes_every_exit(tmp_path: Path) -> None:
    report, run = bench(
        tmp_path, "exec", "--clients", "2", "--ops", "10", "--warmup", "0", "--tasks", "1",
        "--progress",
    )  # fmt: skip
    assert_clean(report)
    (phase,) = report["phases"]
    assert phase["phase"] == "exec" and phase["clients"] == 2 and phase["ops"] == 10
    assert_phase_figures(phase)
    (check,) = report["correctness"]["checks"]
    assert check["started"] == check["exits_observed"] == 10 and check["exits_lost"] == 0
    assert "exec @2" in run.stderr  # the progress line, forced with --progress
    assert "p99.9 ms" in run.stdout


@needs_runc
def test_events_fan_out_reaches_every_subscriber_without_gaps(tmp_path: Path) -> None:
    report, _ = bench(
        tmp_path, "events", "--clients", "2", "--ops", "6", "--warmup", "0",
        "--subscribers", "3",
    )  # fmt: skip
    assert_clean(report)
    assert_phase_figures(report["phases"][0])
    events = report["events"]["berth"]
    assert events["subscribers"] == 3 and events["exits_expected_each"] == 6
    assert events["exits_received"] == [6, 6, 6]
    assert events["seq_gaps"] == [0, 0, 0] and events["out_of_order"] == [0, 0, 0]
    assert events["publish_to_receipt"]["n"] > 0


@needs_runc
def test_mixed_load_checks_listing_and_exits(tmp_path: Path) -> None:
    report, _ = bench(
        tmp_path, "mixed", "--clients", "2", "--duration", "1.5", "--warmup", "0.2",
        "--mix", "create=4,get=4,update=2,list=1,delete=3,lifecycle=1,exec=1,snapshot=2",
        "--tasks", "1",
    )  # fmt: skip
    assert_clean(report)
    (phase,) = report["phases"]
    assert_phase_figures(phase)
    ops = {op["op"] for op in phase["per_op"]}
    assert {"create", "get", "snapshot"} <= ops
    listing = next(c for c in report["correctness"]["checks"] if c["when"] == "after mix")
    assert listing["missing"] == 0 and listing["unexpected"] == 0
    assert listing["listed"] == listing["expected"]


def test_containers_open_loop_mix_reports_corrected_latency(tmp_path: Path) -> None:
    report, run = bench(
        tmp_path, "containers", "--clients", "2", "--ops", "60", "--warmup", "0",
        "--rate", "300", "--scale", "0", "--mix", "create=2,get=4,list=1,update=2,delete=1",
        "--plots", str(tmp_path / "plots"),
    )  # fmt: skip
    assert report["aborted"] is None and report["correctness"]["breach_count"] == 0
    phases = {p["phase"]: p for p in report["phases"]}
    assert set(phases) == {"create", "get", "update", "list-1000", "delete", "mix"}
    for phase in phases.values():
        assert phase["mode"] == "open" and phase["rate"] == 300
        assert phase["service_time"]["n"] == phase["ops"]
        # Timed from when each call was due, never less than from when it was sent.
        assert phase["p50_ms"] >= phase["service_time"]["p50_ms"] * 0.999
    assert {op["op"] for op in phases["mix"]["per_op"]} >= {"create", "get"}
    assert "p99.9 ms" in run.stdout
    # PNG plots with matplotlib (the plots extra), else a clean skip that says why.
    plots = report["plots"]
    if "files" in plots:
        assert all(Path(f).stat().st_size > 0 for f in plots["files"])
        assert any(f.endswith("containers-percentiles.png") for f in plots["files"])
    else:
        assert "matplotlib" in plots["skipped"] and "plots skipped" in run.stdout


@needs_runc
def test_tasks_churn_runs_after_the_lifecycle_figures(tmp_path: Path) -> None:
    report, _ = bench(
        tmp_path, "tasks", "--iterations", "1", "--tasks", "1", "--churn",
        "--clients", "2", "--ops", "6", "--warmup", "0",
    )  # fmt: skip
    assert report["aborted"] is None and report["correctness"]["breach_count"] == 0
    churn = report["churn"]
    (phase,) = churn["phases"]
    assert phase["phase"] == "lifecycle" and phase["ops"] == 6
    assert_phase_figures(phase)
    assert churn["checks"][0]["exits_observed"] == 6 and churn["breaches"] == []


def _by_shape(report: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The phases by (phase, shape, clients); each key once."""
    phases = {(p["phase"], p["shape"], p["clients"]): p for p in report["phases"]}
    assert len(phases) == len(report["phases"]), report["phases"]
    return phases


@needs_runc
def test_exec_storm_in_both_client_shapes(tmp_path: Path) -> None:
    report, run = bench(
        tmp_path, "exec", "--clients", "2", "--duration", "1", "--warmup", "0.2",
        "--tasks", "1", "--client-shape", "both",
    )  # fmt: skip
    assert_clean(report)
    assert report["config"]["shapes"] == ["processes", "threads"]
    phases = _by_shape(report)
    assert set(phases) == {("exec", "processes", 2), ("exec", "threads", 2)}
    for phase in phases.values():
        assert_phase_figures(phase)
    checks = {c["shape"]: c for c in report["correctness"]["checks"]}
    assert set(checks) == {"processes", "threads"}
    for check in checks.values():
        assert check["started"] == check["exits_observed"] > 0 and check["exits_lost"] == 0
    assert "threads" in run.stdout and "processes" in run.stdout


def test_containers_in_both_client_shapes(tmp_path: Path) -> None:
    report, run = bench(
        tmp_path, "containers", "--clients", "2", "--ops", "40", "--warmup", "0",
        "--scale", "0", "--client-shape", "both",
    )  # fmt: skip
    assert report["aborted"] is None and report["correctness"]["breach_count"] == 0
    phases = _by_shape(report)
    names = ("create", "get", "update", "list-1000", "delete")
    assert set(phases) == {(n, s, 2) for n in names for s in ("processes", "threads")}
    for phase in phases.values():
        assert phase["ops"] > 0 and phase["ops_per_s"] > 0, phase
        assert phase["error_count"] == 0, phase
    # Each shape writes its own namespace, checked against its own clients' ledgers.
    checks = report["correctness"]["checks"]
    assert {(c["shape"], c["ns"]) for c in checks} == {
        ("processes", "bench-c2"),
        ("threads", "bench-c2-threads"),
    }
    assert all(c["listed"] == c["expected"] for c in checks), checks
    assert "threads" in run.stdout
