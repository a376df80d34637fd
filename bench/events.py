"""``berth-bench events``: fan-out of task exits to M subscribers while tasks churn.

``--subscribers`` M (default 8) subscriptions are opened by the bench
process, each read by a thread of its own, before anything starts; then,
at each client count, the clients churn short task lifecycles in
namespace ``bench-events`` (create, start, exit, delete:
:func:`bench.task_ops.lifecycle_op`). berth's subscribers are
``berth.v1.Events/Subscribe`` filtered on
``topic=="/tasks/exit",namespace==bench-events`` (:class:`bench.log_stream.ExitFanout`),
or with ``--berth-stream tasks`` the namespace's ``Tasks/Events`` (every
task event, one a frame); containerd's are its ``Events/Subscribe`` with
the same filter. So both daemons send each subscriber the same exits.

Each subscriber stamps the arrival of every exit, by wall clock, same
host: **exit -> receipt** is from the exit's own time (berth: the
payload's ``exited_at``, stamped by the shim when it reaped the process;
containerd: ``TaskExit.exited_at``, stamped by its shim the same way) to
that stamp, the one figure both measure alike. **event stamp ->
receipt** is from the event's time stamp (berth: the record's
``timestamp``, taken when the exit is logged, after the daemon read it;
containerd: the envelope's, taken when it publishes).

Correctness, per subscriber and client count: it received the ``EXIT``
of every task the clients started (counted against the clients'
ledgers); on berth, ``seq`` never goes backwards and, on a daemon the
bench spawned, nothing is skipped: a ``Tasks/Events`` stream has no seq
gap; each stream carries exactly the seqs the log holds for it, read back
unfiltered after the run (``seq_gaps``, ``missing_seqs``): a filtered
Subscribe the namespace's ``/tasks/exit`` events, ``Tasks/Events`` all
its task events (seqs are the log's, global over every topic, so the
container events between them leave jumps, ``seq_jumps``, by design).
containerd's envelopes carry no sequence number.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import berth
from bench import ctrd as ctrd_mod
from bench.histogram import summarize
from bench.load import RunOptions
from bench.log_stream import ExitFanout, events_info, read_log
from bench.options import at_least_one
from bench.session import Session, run_load_scenario
from bench.task_events import EventSubscriber, SubscriberError
from bench.task_setup import clear_namespace, lifecycle_phases, scratch_rootfs
from wire.codec import timestamp_ns

__all__ = ["NAMESPACE", "add_arguments", "run"]

NAMESPACE = "bench-events"
_DRAIN_S = 10.0  # how long the subscribers get to catch up after a phase


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this scenario only (bench.cli adds the common ones)."""
    parser.add_argument(
        "--subscribers",
        type=at_least_one,
        default=8,
        metavar="M",
        help="event subscribers, each its own connection and thread (default 8)",
    )
    parser.add_argument(
        "--berth-stream",
        choices=("subscribe", "tasks"),
        default="subscribe",
        help="berth's subscribers: berth.v1.Events/Subscribe filtered on /tasks/exit and the"
        " namespace (default), or the namespace's Tasks/Events (every task event)",
    )


class _TasksFanout(EventSubscriber):
    """A berth ``Tasks/Events`` subscriber that stamps each EXIT's exit -> receipt delay."""

    def __init__(self, address: str, namespace: str) -> None:
        super().__init__(address, namespace)
        self.lags_ns: list[int] = []  # exited_at -> receipt
        self.logged_lags_ns: list[int] = []  # the event's timestamp -> receipt
        self.exits = 0
        self.seqs: list[int] = []  # of every event received, to check against the log
        self.gaps: int | None = None  # set by that check
        self.missing_seqs: int | None = None

    def _file(self, event: dict[str, Any], received_ns: int, received_wall_ns: int) -> None:
        super()._file(event, received_ns, received_wall_ns)
        if isinstance(seq := event.get("seq"), int):
            self.seqs.append(seq)
        if event.get("type") != "EXIT":
            return
        self.exits += 1
        if (exited_at := event.get("exited_at")) is not None:
            self.lags_ns.append(received_wall_ns - timestamp_ns(exited_at))
        if (stamp := event.get("timestamp")) is not None:
            self.logged_lags_ns.append(received_wall_ns - timestamp_ns(stamp))


class _CtrdFanout:
    """A containerd subscriber of ``/tasks/exit`` in one namespace, on a thread of its own."""

    def __init__(self, session: Session, namespace: str) -> None:
        self.client = ctrd_mod.Containerd(session.containerd_address or "", namespace, timeout=None)
        self.lags_ns: list[int] = []  # TaskExit.exited_at -> receipt
        self.logged_lags_ns: list[int] = []  # the envelope's timestamp -> receipt
        self.exits = 0
        self.failure: str | None = None
        self._stream = self.client.events([f'topic=="/tasks/exit",namespace=={namespace}'])
        self._thread = threading.Thread(target=self._run, name="bench-ctrd-events", daemon=True)

    def start(self) -> _CtrdFanout:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for envelope, event in ctrd_mod.exit_events(self._stream):
                received = time.time_ns()
                exited, stamp = event.exited_at, envelope.timestamp
                self.lags_ns.append(received - (exited.seconds * 1_000_000_000 + exited.nanos))
                self.logged_lags_ns.append(received - (stamp.seconds * 1_000_000_000 + stamp.nanos))
                self.exits += 1
        except Exception as exc:  # a cancelled stream ends here too
            if "CANCELLED" not in str(exc):
                self.failure = f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        self._stream.cancel()
        self._thread.join(5)
        self.client.close()


def _open(session: Session, backend: str, count: int, stream: str) -> list[Any]:
    if backend == "containerd":
        subs = [_CtrdFanout(session, NAMESPACE).start() for _ in range(count)]
        time.sleep(0.5)  # gRPC streams have no "ready" frame: give the subscriptions a moment
        return subs
    kind = _TasksFanout if stream == "tasks" else ExitFanout
    return [kind(session.target.address, NAMESPACE).start() for _ in range(count)]


def _wait_for(subs: list[Any], expected: int) -> None:
    deadline = time.monotonic() + _DRAIN_S
    while any(s.exits < expected for s in subs) and time.monotonic() < deadline:
        time.sleep(0.02)


def _check(session: Session, backend: str, subs: list[Any], expected: int, when: str) -> None:
    short = [(i, s.exits) for i, s in enumerate(subs) if s.exits < expected]
    if short:
        session.breach(
            f"{backend} events {when}: {len(short)} subscriber(s) missed EXITs of started tasks"
            f" (expected {expected}, got {[got for _, got in short][:5]})"
        )
    if backend != "berth":
        return
    for i, sub in enumerate(subs):
        if isinstance(sub, ExitFanout):
            if sub.out_of_order:
                session.breach(f"berth events {when}: subscriber {i} seq went backwards")
            if sub.failure:
                session.breach(f"berth events {when}: subscriber {i} failed: {sub.failure}")
            continue
        stats = sub.stats
        if stats.out_of_order:
            session.breach(f"berth events {when}: subscriber {i} seq went backwards")


@dataclass
class _LogCheck:
    """The seqs in the log a berth stream should have carried, to check it against."""

    after_seq: int  # the log's latest seq before the subscribers opened
    exits: list[int] = field(default_factory=list)


def _in_log(session: Session, after_seq: int, stream: str) -> list[int]:
    """The seqs a stream of ``stream`` should carry past ``after_seq``, from the whole log.

    ``subscribe``: the namespace's ``/tasks/exit`` events; ``tasks``: all its
    task events (seqs are the log's, so other topics leave jumps between them).
    """
    latest = events_info(session.target.address)["latest_seq"]
    # after_seq 0 means "from now on": start after seq 1 (never an EXIT: a create comes first).
    events = read_log(session.target.address, max(after_seq, 1), latest)
    wanted = (lambda t: t == "/tasks/exit") if stream == "subscribe" else _is_task_topic
    return [e["seq"] for e in events if e["namespace"] == NAMESPACE and wanted(e["topic"])]


# containerd's task topics: what Tasks/Events carries (not supervision's /tasks/restart-*).
_TASK_TOPICS = frozenset(
    f"/tasks/{name}"
    for name in ("create", "start", "exit", "oom", "exec-added", "paused", "resumed", "delete")
)


def _is_task_topic(topic: str) -> bool:
    return topic in _TASK_TOPICS


def _log_gaps(session: Session, subs: list[Any], check: _LogCheck, stream: str) -> None:
    """Each berth stream against the log: the seqs it skipped, and any extra.

    Breaches only on a daemon of the bench's own (elsewhere someone else may
    run tasks in the namespace while a subscriber is not yet open).
    """
    try:
        check.exits = _in_log(session, check.after_seq, stream)
    except (SubscriberError, berth.BerthError) as exc:
        session.outcome.notes.append(f"berth events: the log could not be read back: {exc}")
        return
    expected = set(check.exits)
    own = session.target.spawned
    for i, sub in enumerate(subs):
        got = set(sub.exit_seqs if isinstance(sub, ExitFanout) else sub.seqs)
        missing = sorted(expected - got)
        sub.missing_seqs = len(missing)
        sub.gaps = sum(1 for k, seq in enumerate(missing) if k == 0 or missing[k - 1] != seq - 1)
        if missing and own:
            session.breach(
                f"berth events: subscriber {i} skipped {len(missing)} event(s) the log holds"
                f" (seqs {missing[:5]})"
            )
        if (extra := sorted(got - expected)) and own:
            session.breach(
                f"berth events: subscriber {i} got {len(extra)} event(s) the log does not hold"
                f" as the namespace's (seqs {extra[:5]})"
            )


def _summary(backend: str, subs: list[Any], expected: int, stream: str) -> dict[str, Any]:
    exit_lags = summarize(lag for s in subs for lag in s.lags_ns if lag >= 0)
    logged_lags = summarize(lag for s in subs for lag in s.logged_lags_ns if lag >= 0)
    figures: dict[str, Any] = {
        "subscribers": len(subs),
        "stream": stream if backend == "berth" else "Events/Subscribe /tasks/exit",
        "exits_expected_each": expected,
        "exits_received": [s.exits for s in subs],
        "exit_to_receipt": exit_lags.to_json(),
        "exit_to_receipt_meaning": "exited_at (shim's reaping) -> the subscriber's receipt",
        "publish_to_receipt": logged_lags.to_json(),
        "publish_to_receipt_meaning": "the event's timestamp (berth: logged; containerd:"
        " published) -> receipt, EXITs only",
    }
    if backend == "berth" and stream == "subscribe":
        figures["frames_received"] = [s.frames for s in subs]
        figures["seq_gaps"] = [s.gaps for s in subs]
        figures["missing_seqs"] = [s.missing_seqs for s in subs]
        figures["seq_gaps_meaning"] = (
            "runs of the namespace's EXIT seqs in the log the stream skipped"
        )
        figures["out_of_order"] = [s.out_of_order for s in subs]
    elif backend == "berth":
        figures["events_received"] = [s.stats.received for s in subs]
        figures["seq_gaps"] = [s.gaps for s in subs]
        figures["missing_seqs"] = [s.missing_seqs for s in subs]
        figures["seq_gaps_meaning"] = "runs of the namespace's task event seqs in the log skipped"
        figures["seq_jumps"] = [s.stats.gaps for s in subs]  # other topics' seqs: expected
        figures["out_of_order"] = [len(s.stats.out_of_order) for s in subs]
    return figures


def _segment(
    session: Session,
    backend: str,
    subs: list[Any],
    clients: int,
    shape: str,
    marks: dict[str, list[tuple[int, int]]],
) -> None:
    """The exit -> receipt figures of the phase just run (the lags filed since the last one)."""
    before = marks.get(backend) or [(0, 0)] * len(subs)
    marks[backend] = [(len(s.lags_ns), len(s.logged_lags_ns)) for s in subs]
    exit_lags = summarize(
        lag for s, (i, _) in zip(subs, before, strict=True) for lag in s.lags_ns[i:] if lag >= 0
    )
    logged = summarize(
        lag
        for s, (_, j) in zip(subs, before, strict=True)
        for lag in s.logged_lags_ns[j:]
        if lag >= 0
    )
    session.outcome.extra.setdefault("events_by_phase", []).append(
        {
            "backend": backend,
            "clients": clients,
            "shape": shape,
            "exit_to_receipt": exit_lags.to_json(),
            "publish_to_receipt": logged.to_json(),
        }
    )
    lag, stamp = exit_lags.to_json(), logged.to_json()
    session.outcome.notes.append(
        f"events {backend} at {clients} clients ({shape}): exit -> receipt p50"
        f" {lag['p50_ms']:.3f}, p99 {lag['p99_ms']:.3f} ms over {lag['n']:,} receipts;"
        f" event stamp -> receipt p50 {stamp['p50_ms']:.3f}, p99 {stamp['p99_ms']:.3f} ms"
    )


def _measure(session: Session, count: int, stream: str) -> None:
    subs: dict[str, list[Any]] = {}
    expected = dict.fromkeys(session.backends, 0)
    marks: dict[str, list[tuple[int, int]]] = {}  # by backend: where each sub's lags stood
    log_check: _LogCheck | None = None
    try:
        with scratch_rootfs(session.options.workdir) as rootfs:
            for backend in session.backends:
                clear_namespace(session, backend, NAMESPACE)
                if backend == "berth":
                    log_check = _LogCheck(events_info(session.target.address)["latest_seq"])
                subs[backend] = _open(session, backend, count, stream)
            phases = lifecycle_phases(session, NAMESPACE, rootfs, "at {clients} clients")
            for clients, shape, backend, started in phases:
                expected[backend] += started
                _wait_for(subs[backend], expected[backend])
                when = session.tagged(f"at {clients} clients", shape)
                _check(session, backend, subs[backend], expected[backend], when)
                _segment(session, backend, subs[backend], clients, shape, marks)
    finally:
        for backend, group in subs.items():
            for sub in group:
                sub.close()
            if backend == "berth" and log_check is not None:
                _log_gaps(session, group, log_check, stream)
            figures = _summary(backend, group, expected[backend], stream)
            session.outcome.extra.setdefault("events", {})[backend] = figures
            lag, stamp = figures["exit_to_receipt"], figures["publish_to_receipt"]
            session.outcome.notes.append(
                f"events {backend} ({figures['stream']}): {len(group)} subscribers,"
                f" {expected[backend]:,} EXITs each expected, {min(figures['exits_received'])}"
                f" fewest received; exit -> receipt p50 {lag['p50_ms']:.3f}, p99"
                f" {lag['p99_ms']:.3f}, p99.9 {lag['p99_9_ms']:.3f}, max {lag['max_ms']:.3f} ms;"
                f" event stamp -> receipt p50 {stamp['p50_ms']:.3f}, p99 {stamp['p99_ms']:.3f} ms"
            )


def run(options: RunOptions, args: argparse.Namespace) -> int:
    """Run the scenario; 0, or 1 on a correctness breach or an aborted run."""
    count: int = args.subscribers
    stream: str = args.berth_stream
    return run_load_scenario(
        "events",
        options,
        lambda session: _measure(session, count, stream),
        namespaces=(NAMESPACE,),
        config={"subscribers": count, "process": "true", "berth_stream": stream},
        clean="every subscriber saw every started task's EXIT; seqs increasing; no event of"
        " the log skipped",
    )
