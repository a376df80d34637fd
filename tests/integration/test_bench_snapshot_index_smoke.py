"""A short run of ``python -m bench.snapshot_index --daemon`` (berthd processes it spawns).

Not a benchmark: it checks that the run ends and reports the Remove RPC's
figures. The figures themselves are never asserted on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_snapshot_index_bench_times_remove_through_a_daemon(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    options = ["--records", "5,50", "--samples", "3", "--daemon", "--workdir", str(tmp_path)]
    run = subprocess.run(
        [sys.executable, "-m", "bench.snapshot_index", *options, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    for count in ("5", "50"):
        assert set(report["records"][count]["Snapshot/Remove RPC"]) >= {"p50_us", "p99_us"}
