"""Short runs of ``berth-bench events-replay``, ``containers-ab`` and ``restarts``.

Not benchmarks: each spawns its own berthd(s), runs in seconds, and
checks that the JSON report carries every figure and that the scenario's
correctness checks passed. The figures themselves are never asserted on.
``restarts`` runs with no Docker and no containerd (CI has neither): the
report must still give berth's figures and say why Docker was not run.
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


def assert_daemon_stopped_cleanly(daemon: dict[str, Any]) -> None:
    assert daemon["spawned"] is True and daemon["exit_code"] == 0, daemon


def test_events_replay_delivers_every_seq_in_order(tmp_path: Path) -> None:
    events, names = 2000, 10
    report, run = bench(tmp_path, "events-replay", "--events", str(events), "--names", str(names))
    assert report["scenario"] == "events-replay"
    assert report["aborted"] is None and report["breaches"] == []
    assert "correctness: every replay delivered exactly the seqs it should" in run.stdout
    fill, log = report["fill"], report["log"]
    assert fill["puts"] == events + 1  # the fill and its last put of img-0
    assert log["latest_seq"] >= log["oldest_seq"] + fill["puts"] - 1
    replays = {r["name"]: r for r in report["replays"]}
    assert set(replays) == {"all, credit 8/8", "all, auto-credit", "1/K, credit 8/8"}
    for replay in replays.values():
        assert replay["breaches"] == [], replay
        assert replay["latest_seq"] == log["latest_seq"], replay
        assert replay["events_scanned"] == replay["latest_seq"] - replay["after_seq"], replay
        assert replay["frames"] > 0 and replay["seconds"] > 0, replay
        assert replay["events_per_s"] > 0, replay
    for name in ("all, credit 8/8", "all, auto-credit"):
        assert replays[name]["filter"] == ""
        assert replays[name]["events_delivered"] == replays[name]["events_scanned"]
    filtered = replays["1/K, credit 8/8"]
    assert filtered["filter"] == "id==img-0"
    # The puts cycle over the names: img-0 got every names-th put, and the last one.
    assert filtered["events_delivered"] == events // names + 1
    assert_daemon_stopped_cleanly(report["daemon"])


def test_containers_ab_reports_both_sides_and_their_ratios(tmp_path: Path) -> None:
    # Side B is this same tree: a smoke test of the A/B machinery, not a comparison.
    report, run = bench(
        tmp_path, "containers-ab", "--berthd-tree", str(REPO), "--clients", "2",
        "--rounds", "1", "--ops", "40", "--warmup", "0",
    )  # fmt: skip
    assert report["scenario"] == "containers-ab"
    assert report["aborted"] is None and report["breaches"] == []
    assert "correctness: every listing matched" in run.stdout
    assert set(report["sides"]) == {"A", "B"}
    assert report["config"]["berthd_tree"] == str(REPO)
    phases = ("create", "update", "delete")
    rows = {(r["side"], r["phase"]): r for r in report["rows"]}
    assert set(rows) == {(side, phase) for side in ("A", "B") for phase in phases}
    for row in rows.values():
        assert row["clients"] == 2 and row["round"] == 0, row
        assert row["ops"] == 40 and row["ops_per_s"] > 0 and row["errors"] == {}, row
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["p99_9_ms"], row
    summary = {s["phase"]: s for s in report["summary"]}
    assert set(summary) == set(phases)
    for s in summary.values():
        for side in ("A", "B"):
            assert s[side]["ops_per_s"] > 0 and s[side]["p50_ms"] > 0, s
            assert s[side]["p99_ms"] > 0, s
        for key in ("ops_per_s_ratio", "p50_ratio", "p99_ratio"):
            assert s[key] is not None and s[key] > 0, (key, s)
        assert isinstance(s["met"], bool)
    checks = {(c["side"], c["when"]): c for c in report["checks"]}
    assert set(checks) == {(side, when) for side in ("A", "B") for when in ("create", "delete")}
    for check in checks.values():
        assert check["listed"] == check["expected"], check
        assert check["missing"] == 0 and check["unexpected"] == 0, check
    for side in ("A", "B"):
        assert checks[(side, "create")]["expected"] == 40
        assert checks[(side, "delete")]["expected"] == 0


@needs_runc
def test_restarts_without_docker_or_containerd(tmp_path: Path) -> None:
    # A Docker address nobody serves: skipped whether or not the docker CLI is
    # installed ("no docker CLI on PATH" in CI), and never a dockerd started.
    # No --compare: containerd is not touched at all.
    docker = f"unix://{tmp_path}/no-docker.sock"
    containers, iterations = 2, 2
    report, run = bench(
        tmp_path, "restarts", "--containers", str(containers), "--duration", "2",
        "--iterations", str(iterations), "--health-containers", "0", "--docker", docker,
    )  # fmt: skip
    assert report["scenario"] == "restarts"
    assert report["aborted"] is None
    assert report["correctness"] == {"breaches": [], "breach_count": 0}
    assert "correctness: no give-up" in run.stdout
    # Docker and containerd: skipped with why, absent.
    assert set(report["skipped"]) == {"docker"}
    why = report["skipped"]["docker"]
    assert why in {"no docker CLI on PATH", f"no Docker daemon answers at {docker}"}, why
    assert f"docker: not run: {why}" in run.stdout
    assert report["config"]["containerd_address"] is None
    assert report["health"] == [] and report["health_extra_cores"] == {}
    # berth's restart figures.
    (loop,) = report["loops"]
    assert loop["backend"] == "berth" and loop["containers"] == containers
    assert loop["gave_up"] == 0 and loop["failure"] is None
    assert loop["exits"] > 0 and loop["restarts_in_window"] > 0
    headline = loop["crash_to_running"]["all"]
    assert headline["n"] > 0 and len(loop["samples_ms"]) == headline["n"]
    assert 0 < headline["p50_ms"] <= headline["p99_ms"] <= headline["max_ms"], headline
    assert loop["exit_event_to_start_event"]["n"] > 0
    assert loop["steps"] and all(step["n"] > 0 for step in loop["steps"].values())
    assert {"berthd", "all"} <= set(loop["cpu_ms_per_restart"])
    for which in ("create_start_alone", "create_start_loaded"):
        assert loop[which]["create_start"]["n"] == iterations, (which, loop[which])
    supervision = loop["supervision"]
    assert len(supervision["restart_counts"]) == containers
    assert all(count > 0 for count in supervision["restart_counts"]), supervision
    assert "not_removed" not in loop
    assert_daemon_stopped_cleanly(report["daemon"])
