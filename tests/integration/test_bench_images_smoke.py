"""A short run of ``berth-bench images`` against a berthd it spawns, and its archive builder.

Not a benchmark: it only checks that the scenario runs end to end on a
tiny archive, that its JSON report carries every figure, and that no
correctness breach was found. The figures themselves are never asserted on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bench.image_archive import bench_archive, image_name
from runtime.rootfs import BUSYBOX

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT_LATENCIES = {"prepare_rootfs", "remove", "prepare", "remove_prepared"}

needs_busybox = pytest.mark.skipif(not BUSYBOX.is_file(), reason=f"needs {BUSYBOX}")


@needs_busybox
def test_the_archive_is_deterministic_and_cached(tmp_path: Path) -> None:
    first = bench_archive(tmp_path / "a", 1)
    again = bench_archive(tmp_path / "a", 1)
    elsewhere = bench_archive(tmp_path / "b", 1)
    assert first.build_s is not None and again.build_s is None  # the second came from the cache
    assert first.layers == again.layers == elsewhere.layers
    assert first.path.read_bytes() == elsewhere.path.read_bytes()
    assert [layer.kind for layer in first.layers] == ["base", "small", "medium", "large"]
    assert first.name == image_name(1)
    with tarfile.open(first.path) as tar:
        names = set(tar.getnames())
    assert {"oci-layout", "index.json"} <= names
    assert {f"blobs/sha256/{layer.digest[7:]}" for layer in first.layers} <= names


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the scenario once: a 2 MB archive, one import, 5 Prepare + Remove rounds."""
    if os.geteuid() != 0:
        pytest.skip("unpacking mounts the snapshots: needs root")
    if not BUSYBOX.is_file():
        pytest.skip(f"needs {BUSYBOX}")
    work = tmp_path_factory.mktemp("bench-images")
    out = work / "i.json"
    argv = ["images", "--archive-mb", "2", "--imports", "1", "--iterations", "5"]
    run = subprocess.run(
        [sys.executable, "-m", "bench.cli", *argv, "--workdir", str(work), "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "import + unpack" in run.stdout and "targets" in run.stdout
    return json.loads(out.read_text())


def test_images_runs_clean(report: dict) -> None:
    assert report["scenario"] == "images"
    assert report["aborted"] is None
    assert report["correctness"] == {"breaches": [], "breach_count": 0}
    assert report["daemon"]["spawned"] is True and report["daemon"]["exit_code"] == 0
    assert report["config"]["imports"] == 1 and report["config"]["iterations"] == 5


def test_images_reports_the_archive_and_the_import(report: dict) -> None:
    archive = report["archive"]
    assert archive["mb"] == 2 and archive["name"] == image_name(2)
    assert len(archive["layers"]) == 4 and archive["files"] > 0
    assert 0 < archive["layer_bytes"] <= archive["archive_bytes"]
    imported = report["import"]
    assert len(imported["berth_s"]) == 1 and imported["berth_fresh"] == [True]
    assert imported["berth_median_s"] == imported["berth_s"][0] > 0
    assert imported["containerd_s"] == []
    assert report["containerd"] == {"skipped": "no --containerd-address"}


def test_images_reports_snapshot_latencies_and_targets(report: dict) -> None:
    snapshots = report["snapshots"]
    assert snapshots["mount_type"] in {"overlay", "bind"}
    assert set(snapshots["latency_ms"]) == SNAPSHOT_LATENCIES
    for key, lat in snapshots["latency_ms"].items():
        assert lat["n"] == 5 and len(snapshots["samples_ns"][key]) == 5, key
        assert 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"], (key, lat)
    statuses = {t["name"]: t["status"] for t in report["targets"]}
    assert len(statuses) == 3 and set(statuses.values()) <= {"PASS", "MISS", "SKIP"}
    # No containerd here, and the reference figure is for the 100 MB archive only.
    assert statuses["import + unpack, median"] == "SKIP"
