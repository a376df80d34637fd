"""Snapshot Remove against the number of snapshot records: 100 beside 100,000.

Remove, Commit and a container's delete ask "has this snapshot children";
``snapchildren`` (schema 3) answers that from one index entry, where the
namespace used to be scanned. This measures Remove on stores that hold
``--records`` snapshot records each (a committed base and its active
children, filled in one transaction), in-process, without a daemon:

- ``remove``: one durable write transaction (``remove_snapshot`` and the
  commit, fsync included), what the metadata actor does for a Remove;
- ``remove, records only``: ``remove_snapshot`` in a transaction that is
  then aborted: the record work alone, without the fsync's noise;
- with ``--daemon``, ``Snapshot/Remove RPC``: a berthd per store (the filler
  records have no directories; they are labelled GC roots), each sample a
  real Prepare on a real committed base (untimed) and its Remove through
  :class:`berth.Client` (timed).

Samples alternate between the stores so drift hits them alike; a removed
record is added back, untimed, so every store keeps its count. Run::

    python -m bench.snapshot_index [--records 100,100000] [--samples 300] [--daemon]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from actors.image_records import GC_ROOT_LABEL
from actors.snapshot_records import ACTIVE, COMMITTED, add_snapshot, remove_snapshot
from actors.store import Store
from bench.stats import percentile
from berth.client import Client
from wire.codec import now

__all__ = ["build_parser", "main", "measure"]

_NS = "bench"
_MAP_SIZE = 2**32  # virtual: the file grows only as data is written
OPERATIONS = ("remove", "remove, records only")
RPC = "Snapshot/Remove RPC"
_FILLER_IDS = 10_000_000  # filler ids start here; the daemon allocates above them
_WARMUP = 20  # unmeasured RPCs per daemon (its start-up collection may still run)


def _record(key: str, id: str, kind: str, parent: str) -> dict[str, Any]:
    labels = {GC_ROOT_LABEL: "bench"}  # so a daemon's collection keeps the fillers
    return {
        "key": key,
        "id": id,
        "kind": kind,
        "readonly": False,
        "parent": parent,
        "labels": labels,
    }


def _child(i: int) -> dict[str, Any]:
    return _record(f"work-{i:07d}", str(_FILLER_IDS + i), ACTIVE, "base")


def _fill(store: Store, count: int) -> None:
    stamp = now()
    with store.env.begin(write=True) as txn:
        add_snapshot(txn, store, _NS, _record("base", str(_FILLER_IDS), COMMITTED, ""), stamp)
        for i in range(1, count):
            add_snapshot(txn, store, _NS, _child(i), stamp)


def _timed_remove(store: Store, key: str, durable: bool) -> int:
    """Nanoseconds to remove ``key``'s record (committed if ``durable``, else aborted)."""
    start = time.perf_counter_ns()
    txn = store.env.begin(write=True)
    try:
        remove_snapshot(txn, store, _NS, key)
        if durable:
            txn.commit()
        else:
            txn.abort()
    except BaseException:
        txn.abort()
        raise
    return time.perf_counter_ns() - start


def measure(
    counts: list[int], samples: int, workdir: Path, on_filled: Callable[[int], None] | None = None
) -> dict[int, dict[str, list[int]]]:
    """For each record count, the sorted latencies (ns) of each operation."""
    stores: dict[int, Store] = {}
    timings: dict[int, dict[str, list[int]]] = {c: {op: [] for op in OPERATIONS} for c in counts}
    try:
        for count in counts:
            stores[count] = Store(workdir / f"meta-{count}", map_size=_MAP_SIZE)
            _fill(stores[count], count)
            if on_filled is not None:
                on_filled(count)
        for n in range(samples):
            for count, store in stores.items():
                # Spread the victims over the key range, never the base.
                i = 1 + (n * 7919) % (count - 1)
                key = _child(i)["key"]
                timings[count]["remove, records only"].append(_timed_remove(store, key, False))
                timings[count]["remove"].append(_timed_remove(store, key, True))
                with store.env.begin(write=True) as txn:
                    add_snapshot(txn, store, _NS, _child(i), now())
    finally:
        for store in stores.values():
            store.close()
    for per_op in timings.values():
        for values in per_op.values():
            values.sort()
    return timings


@contextlib.contextmanager
def _daemon(root: Path) -> Iterator[str]:
    """A berthd on ``root``; its address."""
    state = Path(tempfile.mkdtemp(prefix="bsi-", dir="/tmp"))  # ipc paths are short
    address = f"ipc://{state}/berth.sock"
    log = root.parent / f"{root.name}.log"
    daemon = [sys.executable, "-m", "berth.daemon", "--root", str(root), "--state", str(state)]
    with log.open("ab") as stderr:
        proc = subprocess.Popen(
            [*daemon, "--address", address, "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 120
        while not (state / "berth.sock").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"berthd on {root} did not start:\n{tail}")
            time.sleep(0.05)
        yield address
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        subprocess.run(["rm", "-rf", str(state)], check=False)


def measure_rpc(
    counts: list[int], samples: int, workdir: Path, on_filled: Callable[[int], None] | None = None
) -> dict[int, list[int]]:
    """For each record count, the sorted latencies (ns) of Remove through a daemon."""
    timings: dict[int, list[int]] = {c: [] for c in counts}
    with contextlib.ExitStack() as stack:
        clients: dict[int, Client] = {}
        for count in counts:
            root = workdir / f"root-{count}"
            store = Store(root / "meta", map_size=_MAP_SIZE)
            try:
                _fill(store, count)
            finally:
                store.close()
            if on_filled is not None:
                on_filled(count)
            address = stack.enter_context(_daemon(root))
            client = stack.enter_context(Client(address, namespace=_NS, timeout=120))
            client.snapshots.prepare("real-base-active")
            client.snapshots.commit("real-base", "real-base-active")
            clients[count] = client
        for n in range(-_WARMUP, samples):
            for count, client in clients.items():
                key = f"victim-{n + _WARMUP}"
                client.snapshots.prepare(key, "real-base")
                start = time.perf_counter_ns()
                client.snapshots.remove(key)
                if n >= 0:
                    timings[count].append(time.perf_counter_ns() - start)
    for values in timings.values():
        values.sort()
    return timings


def _summary(values: list[int]) -> dict[str, float]:
    return {f"p{q}_us": round(percentile(values, q) / 1000, 1) for q in (50, 90, 99)}


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bench.snapshot_index``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.snapshot_index", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument(
        "--records",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[100, 100_000],
        help="snapshot record counts, comma separated; the first is the baseline",
    )
    parser.add_argument("--samples", type=int, default=300, help="removes per store")
    parser.add_argument("--workdir", type=Path, default=None, help="where the stores go")
    parser.add_argument(
        "--daemon", action="store_true", help="also time Remove through a berthd per store"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report here too")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the measurement, print a table; returns the report."""
    args = build_parser().parse_args(argv)
    if any(c < 2 for c in args.records) or args.samples < 1:
        raise SystemExit("--records must be at least 2 each, --samples at least 1")

    def filled(count: int) -> None:
        print(f"filled a store with {count:,} snapshot records", flush=True)

    with tempfile.TemporaryDirectory(prefix="berth-bench-snapidx-", dir=args.workdir) as tmp:
        timings = measure(args.records, args.samples, Path(tmp), on_filled=filled)
        by_op = {op: {c: timings[c][op] for c in args.records} for op in OPERATIONS}
        if args.daemon:
            by_op[RPC] = measure_rpc(args.records, args.samples, Path(tmp), on_filled=filled)
    base = args.records[0]
    report: dict[str, Any] = {"samples": args.samples, "records": {}}
    columns = ("records", "p50 us", "p90 us", "p99 us", "p50/base")
    print(f"\n{'operation':<22} " + " ".join(f"{c:>9}" for c in columns))
    for op, per_count in by_op.items():
        base_p50 = percentile(per_count[base], 50)
        for count in args.records:
            figures = _summary(per_count[count])
            ratio = percentile(per_count[count], 50) / base_p50 if base_p50 else 0.0
            figures["p50_ratio_to_base"] = round(ratio, 3)
            report["records"].setdefault(str(count), {})[op] = figures
            print(
                f"{op:<22} {count:>9,} {figures['p50_us']:>9} {figures['p90_us']:>9} "
                f"{figures['p99_us']:>9} {ratio:>9.2f}"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
