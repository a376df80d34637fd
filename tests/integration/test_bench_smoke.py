"""A short run of ``berth-bench containers`` against a berthd it spawns.

Not a benchmark: it only checks that the scenario runs end to end, that
its JSON report carries every figure, and that no correctness breach was
found. The figures themselves are never asserted on.
"""

from __future__ import annotations

import json
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
            "--duration",
            "0.3",
            "--warmup",
            "0.1",
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
