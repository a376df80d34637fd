"""``berth-bench events-replay``: how fast a subscriber replays the event log.

1. **Fill.** A fresh spawned berthd (retention raised above ``--events``)
   gets ``--events`` N ``Images/Put`` calls in namespace
   ``bench-replay``, by ``--fill-workers`` processes each pipelining its
   share of ``--fill-in-flight`` calls on one :class:`berth.AsyncClient`.
   The puts cycle over ``--names`` K image names (``img-0`` ...), all with
   one tiny target descriptor: a put goes from the front end straight to
   the metadata actor, one ``/images/create`` or ``/images/update`` record
   each, the cheapest event the public API makes. One last put of
   ``img-0`` ends the fill, so the newest event matches the filter below.
2. **Replay.** ``Events/Info`` gives ``oldest_seq`` and ``latest_seq``; a
   subscriber (:class:`bench.log_stream.LogStream`, in this process)
   subscribes at ``after_seq = oldest_seq - 1`` and reads until a frame's
   position reaches ``latest_seq``. ``after_seq`` 0 means "from now on",
   so while the log still holds seq 1 (a fresh daemon: its namespace's
   ``/namespaces/create``) the replay starts after it, at ``after_seq`` 1.
   Three replays: everything, granting credit 8 frames per 8 read;
   everything on auto-credit (no credit frame sent); and filtered on
   ``id==img-0`` (a fraction 1/K of the log) with credit. Each is timed
   from the request to the last frame; events/s counts the log's events
   the stream went past (delivered or skipped by the filter).

Correctness: an unfiltered replay delivers every seq from ``oldest_seq``
to ``latest_seq`` once, in order; the filtered one exactly the puts of
``img-0``. The target (≥ 100,000 events/s) is informational.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import berth
from bench.load import RunOptions, error_code
from bench.log_stream import LogStream, events_info
from bench.options import at_least_one, busy_warning, measure_busy, usage_error
from bench.report import machine_json, write_json
from bench.target import CpuMeter, Target, TargetError, open_target
from bench.task_events import SubscriberError
from bench.workers import WorkerContext, WorkerFailed, WorkerPool

__all__ = ["NAMESPACE", "TARGET_EVENTS_PER_S", "add_arguments", "run"]

NAMESPACE = "bench-replay"
TARGET_EVENTS_PER_S = 100_000
_DIGEST = "sha256:" + "0" * 64  # one descriptor for every image: nothing is read
_TARGET = {"media_type": "application/vnd.oci.image.manifest.v1+json", "digest": _DIGEST, "size": 1}
_CHUNK = 100_000  # puts per fill round, so progress can be shown between rounds
_REPLAY_TIMEOUT_S = 600.0
_RETENTION_SLACK = 100_000  # events retained beyond the fill, so nothing is trimmed mid-run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this scenario only (bench.cli adds the common ones)."""
    parser.add_argument(
        "--events",
        type=at_least_one,
        default=1_000_000,
        metavar="N",
        help="events to fill the log with, one Images/Put each (default 1,000,000)",
    )
    parser.add_argument(
        "--names",
        type=at_least_one,
        default=1_000,
        metavar="K",
        help="image names the puts cycle over; the filtered replay matches 1/K (default 1,000)",
    )
    parser.add_argument(
        "--fill-workers",
        type=at_least_one,
        default=2,
        metavar="N",
        help="processes that fill the log (default 2)",
    )
    parser.add_argument(
        "--fill-in-flight",
        type=at_least_one,
        default=128,
        metavar="N",
        help="puts in flight across them (default 128)",
    )


@dataclass(frozen=True)
class FillShare:
    """One worker's share of a fill round: calls ``start + i * step`` below ``stop``."""

    start: int
    stop: int
    step: int
    names: int
    window: int


@dataclass
class FillResult:
    """Acknowledged puts, puts per name index 0, failures by code."""

    acked: int = 0
    first_name: int = 0  # acknowledged puts of img-0
    errors: dict[str, int] = field(default_factory=dict)


def _image(name: str) -> dict[str, Any]:
    return {"name": name, "labels": {}, "target": _TARGET}


async def _fill(ctx: WorkerContext, share: FillShare) -> FillResult:
    client = berth.AsyncClient(ctx.address, namespace=NAMESPACE, timeout=None)
    calls = iter(range(share.start, share.stop, share.step))
    result = FillResult()
    errors: Counter[str] = Counter()

    async def lane() -> None:
        for call in calls:  # lanes share the iterator: each call is made once
            name = call % share.names
            try:
                await client.images.put(_image(f"img-{name}"))
            except Exception as exc:
                errors[error_code(exc)] += 1
            else:
                result.acked += 1
                result.first_name += name == 0

    try:
        await asyncio.gather(*(lane() for _ in range(share.window)))
    finally:
        await client.aclose()
    result.errors = dict(errors)
    return result


def fill_images(ctx: WorkerContext, share: FillShare) -> FillResult:
    """Job: this worker's puts of one fill round, pipelined."""
    return asyncio.run(_fill(ctx, share))


@dataclass
class Replay:
    """One timed replay from the oldest retained event to the latest."""

    name: str
    filter: str
    credit: bool
    after_seq: int
    latest_seq: int
    events: int = 0
    frames: int = 0
    seconds: float = 0.0
    first_frame_s: float | None = None
    client_cpu_s: float = 0.0
    daemon_cores: float | None = None
    breaches: list[str] = field(default_factory=list)

    @property
    def scanned(self) -> int:
        """Events of the log the stream went past: delivered, or skipped by the filter."""
        return self.latest_seq - self.after_seq

    @property
    def per_s(self) -> float:
        return self.scanned / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "filter": self.filter,
            "credit": "8 per 8 frames" if self.credit else "auto-credit (none sent)",
            "after_seq": self.after_seq,
            "latest_seq": self.latest_seq,
            "events_scanned": self.scanned,
            "events_delivered": self.events,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.per_s),
            "delivered_per_s": round(self.events / self.seconds) if self.seconds else 0,
            "first_frame_s": None if self.first_frame_s is None else round(self.first_frame_s, 4),
            "client_cpu_s": round(self.client_cpu_s, 3),
            "daemon_cores": None if self.daemon_cores is None else round(self.daemon_cores, 2),
            "target_events_per_s": TARGET_EVENTS_PER_S,
            "met": self.per_s >= TARGET_EVENTS_PER_S,
            "breaches": self.breaches,
        }


def _replay(target: Target, replay: Replay, expected: int | None, match_id: str | None) -> None:
    """Read ``replay`` to its latest seq, timing it and checking what it delivered."""
    meter = CpuMeter(target.pid)
    stream = LogStream(
        target.address, after_seq=replay.after_seq, filter=replay.filter, credit=replay.credit
    )
    last = replay.after_seq
    wrong = gaps = 0
    meter.begin()
    cpu0, began = time.process_time(), time.perf_counter_ns()
    stop = threading.Event()
    timer = threading.Timer(_REPLAY_TIMEOUT_S, stop.set)
    timer.start()
    try:
        stream.open()
        for frame in stream.frames(stop):
            if replay.first_frame_s is None:
                replay.first_frame_s = (frame.received_ns - began) / 1e9
            replay.frames += 1
            replay.events += len(frame.events)
            for event in frame.events:
                seq = event["seq"]
                if seq <= last or (match_id is None and seq != last + 1):
                    gaps += 1
                if match_id is not None and event["id"] != match_id:
                    wrong += 1
                last = seq
            if frame.seq >= replay.latest_seq:
                replay.seconds = (frame.received_ns - began) / 1e9
                break
    finally:
        timer.cancel()
        replay.client_cpu_s = time.process_time() - cpu0
        meter.end()
        stream.close()
    replay.daemon_cores = meter.daemon_cores
    if not replay.seconds:
        replay.breaches.append(f"{replay.name}: not at the latest seq in {_REPLAY_TIMEOUT_S:g} s")
    if gaps:
        replay.breaches.append(f"{replay.name}: {gaps} event(s) out of seq order or skipped")
    if wrong:
        replay.breaches.append(f"{replay.name}: {wrong} event(s) that do not match the filter")
    if expected is not None and replay.events != expected:
        replay.breaches.append(
            f"{replay.name}: {replay.events:,} events delivered, {expected:,} expected"
        )


def _fill_log(target: Target, args: argparse.Namespace, report: dict[str, Any]) -> int:
    """Fill the log; the acknowledged puts of ``img-0`` (the marker included)."""
    total: int = args.events
    workers: int = min(args.fill_workers, total)
    window = max(1, args.fill_in_flight // workers)
    first_name = acked = 0
    began = time.monotonic()
    with WorkerPool(workers, target.address, timeout=None) as pool:
        spawned = time.monotonic() - began
        began = time.monotonic()
        for start in range(0, total, _CHUNK):
            stop = min(start + _CHUNK, total)
            shares = [
                FillShare(start + w, stop, workers, args.names, window) for w in range(workers)
            ]
            results: list[FillResult] = pool.run(fill_images, shares)
            errors = Counter[str]()
            for result in results:
                acked += result.acked
                first_name += result.first_name
                errors.update(result.errors)
            if errors:
                raise WorkerFailed(f"fill puts failed: {dict(errors)}")
            seconds = time.monotonic() - began
            print(
                f"  fill: {acked:,} / {total:,} puts, {acked / seconds:,.0f}/s",
                file=sys.stderr,
                flush=True,
            )
    seconds = time.monotonic() - began
    with berth.Client(target.address, namespace=NAMESPACE, timeout=30.0) as client:
        client.images.put(_image("img-0"))  # the newest event matches the filter
    report["fill"] = {
        "method": "Images/Put",
        "puts": acked + 1,
        "names": args.names,
        "workers": workers,
        "in_flight": workers * window,
        "seconds": round(seconds, 2),
        "puts_per_s": round(acked / seconds),
        "workers_start_s": round(spawned, 2),
    }
    return first_name + 1


def _print(report: dict[str, Any]) -> None:
    fill, info = report["fill"], report["log"]
    print(
        f"fill: {fill['puts']:,} Images/Put in {fill['seconds']:.1f} s"
        f" ({fill['puts_per_s']:,}/s, {fill['workers']} workers, {fill['in_flight']} in flight);"
        f" log: seqs {info['oldest_seq']:,}..{info['latest_seq']:,}, {info['count']:,} events,"
        f" {info['bytes'] / 2**20:,.1f} MiB"
    )
    header = (
        f"{'replay':<22}{'filter':<12}{'scanned':>11}{'delivered':>11}{'frames':>8}"
        f"{'seconds':>9}{'events/s':>11}{'1st frame ms':>13}{'client CPU s':>13}"
        f"{'daemon cores':>13}  target"
    )
    print(header)
    print("-" * len(header))
    for r in report["replays"]:
        first = "-" if r["first_frame_s"] is None else f"{r['first_frame_s'] * 1000:.1f}"
        cores = "-" if r["daemon_cores"] is None else f"{r['daemon_cores']:.2f}"
        verdict = "MET" if r["met"] else "MISS"
        print(
            f"{r['name']:<22}{r['filter'] or '-':<12}{r['events_scanned']:>11,}"
            f"{r['events_delivered']:>11,}{r['frames']:>8,}{r['seconds']:>9.2f}"
            f"{r['events_per_s']:>11,}{first:>13}{r['client_cpu_s']:>13.2f}{cores:>13}"
            f"  >= {TARGET_EVENTS_PER_S:,}/s {verdict}"
        )


def run(options: RunOptions, args: argparse.Namespace) -> int:
    """Run the scenario; 0, or 1 on a correctness breach or an aborted run."""
    if options.address is not None:
        usage_error("events-replay needs a fresh daemon of its own: leave out --address")
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    idle = measure_busy()
    report: dict[str, Any] = {
        "scenario": "events-replay",
        "started_at": started,
        "machine": {**machine_json(), "host_busy_before": idle},
        "config": {
            "events": args.events,
            "names": args.names,
            "fill_workers": args.fill_workers,
            "fill_in_flight": args.fill_in_flight,
            "namespace": NAMESPACE,
        },
        "replays": [],
    }
    breaches: list[str] = []
    aborted: str | None = None
    retention = {"event_retention_count": max(1_000_000, args.events + _RETENTION_SLACK)}
    try:
        with open_target(None, workdir=options.workdir, config=retention) as target:
            try:
                matching = _fill_log(target, args, report)
                info = report["log"] = events_info(target.address)
                # after_seq 0 means "from now on" (protocol.md §6.5.1), so on a log
                # that still holds seq 1 the replay can only start after it.
                after, latest = max(info["oldest_seq"] - 1, 1), info["latest_seq"]
                runs = [
                    ("all, credit 8/8", "", True, latest - after, None),
                    ("all, auto-credit", "", False, latest - after, None),
                    ("1/K, credit 8/8", "id==img-0", True, matching, "img-0"),
                ]
                for name, filter, credit, expected, match_id in runs:
                    replay = Replay(name, filter, credit, after, latest)
                    print(f"  replay: {name} ...", file=sys.stderr, flush=True)
                    _replay(target, replay, expected, match_id)
                    breaches += replay.breaches
                    report["replays"].append(replay.to_json())
                target.check_alive()
            except (WorkerFailed, SubscriberError, berth.BerthError, OSError) as exc:
                aborted = f"{type(exc).__name__}: {exc}"
            target.stop()
            report["daemon"] = target.to_json()
    except TargetError as exc:
        aborted = f"{type(exc).__name__}: {exc}"
    if "log" in report:
        _print(report)
    for breach in breaches:
        print(f"BREACH: {breach}")
    if not breaches and not aborted:
        print("correctness: every replay delivered exactly the seqs it should, in order")
    if (warning := busy_warning(idle)) is not None:
        print(warning)
    if aborted:
        print(f"ABORTED: {aborted}")
    report["breaches"] = breaches
    report["aborted"] = aborted
    write_json(options.json_path, report)
    print(f"report: {options.json_path}")
    return 1 if breaches or aborted else 0
