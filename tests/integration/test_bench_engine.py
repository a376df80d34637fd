"""The load engine in one process: open loop without coordinated omission, mixes, percentiles.

Pure and fast: the loop of :mod:`bench.load` runs an operation that
stalls on purpose, with no daemon and no worker process; and a pool of
the threads shape (one worker process, no daemon) runs a phase of a call
that only sleeps.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from bench import cli, ctrd
from bench.histogram import summarize
from bench.load import Load, LoopPlan, NamedFailure, run_loop, run_phase
from bench.stats import aggregate
from bench.workers import WorkerContext, WorkerFailed, WorkerPool


def _plan(make_op, *, interval_ms: float | None, ops: int) -> LoopPlan:
    start = time.monotonic_ns() + 10_000_000
    return LoopPlan(
        make_op,
        None,
        start,
        start,
        None,
        ops,
        phase="stall",
        interval_ns=None if interval_ms is None else int(interval_ms * 1e6),
    )


def _stalling_op(ctx: WorkerContext, params: object):
    calls = iter(range(1_000_000))

    def op() -> None:
        if next(calls) == 0:
            time.sleep(0.2)  # the daemon stalls once, for 200 ms

    return op


def test_open_loop_counts_the_calls_a_stall_held_back() -> None:
    ctx = WorkerContext(0, "ipc:///nonexistent", None)
    sample = run_loop(ctx, _plan(_stalling_op, interval_ms=10, ops=40))
    latencies = sorted(sample.latencies_ns)
    # Calls 2..20 were due during the stall: each waited for it, so about a tenth
    # of the calls took over 100 ms from when they were due ...
    assert sum(1 for v in latencies if v > 100_000_000) >= 8
    # ... while the service time (from sending) of all but the first stayed short.
    assert sum(1 for v in sample.service_ns if v > 100_000_000) == 1
    assert sample.max_lag_ns > 150_000_000


def test_closed_loop_sees_the_stall_once() -> None:
    ctx = WorkerContext(0, "ipc:///nonexistent", None)
    sample = run_loop(ctx, _plan(_stalling_op, interval_ms=None, ops=40))
    assert sum(1 for v in sample.latencies_ns if v > 100_000_000) == 1
    assert len(sample.service_ns) == 0


def test_a_mix_is_split_by_operation_with_errors_by_code() -> None:
    class Refused(Exception):
        code = "FAILED_PRECONDITION"

    def make(ctx: WorkerContext, params: object):
        calls = iter(range(1_000_000))

        def op() -> str:
            n = next(calls)
            if n % 4 == 3:
                raise NamedFailure("delete", Refused("busy"))
            return "get" if n % 2 else "create"

        return op

    ctx = WorkerContext(0, "ipc:///nonexistent", None)
    plan = _plan(make, interval_ms=None, ops=40)
    sample = run_loop(ctx, plan)
    stats = aggregate("mix", 1, plan.measure_ns, [sample])
    by_op = {op.name: op for op in stats.per_op}
    assert set(by_op) == {"create", "get", "delete"}
    assert by_op["delete"].errors == {"FAILED_PRECONDITION": 10} and by_op["delete"].ops == 0
    assert stats.errors == {"FAILED_PRECONDITION": 10} and stats.ops == 30


def test_percentiles_come_from_the_histogram_within_its_precision() -> None:
    values = [i * 1_000 for i in range(1, 100_001)]  # 1 µs .. 100 ms
    lat = summarize(values)
    assert lat.n == 100_000
    assert abs(lat.p50_ms - 50.0) / 50.0 < 0.001
    assert abs(lat.p999_ms - 99.9) / 99.9 < 0.001
    assert lat.max_ms == 100.0 and lat.p50_ms <= lat.p90_ms <= lat.p99_ms <= lat.p999_ms


def test_open_loop_counts_calls_never_sent_when_the_rate_is_not_kept() -> None:
    def slow(ctx: WorkerContext, params: object):
        def op() -> None:
            time.sleep(0.03)  # 30 ms a call, for a schedule of one every 10 ms

        return op

    ctx = WorkerContext(0, "ipc:///nonexistent", None)
    start = time.monotonic_ns() + 10_000_000
    plan = LoopPlan(slow, None, start, start, start + 300_000_000, None, phase="slow",
                    interval_ns=10_000_000)  # fmt: skip
    sample = run_loop(ctx, plan)
    sent = len(sample.latencies_ns)
    assert 5 <= sent <= 12
    # 30 calls were due in the 300 ms window: those not sent are failures, not silence.
    assert sample.errors["NOT_SENT"] + sent in (29, 30, 31)
    assert sample.op_errors["slow"]["NOT_SENT"] == sample.errors["NOT_SENT"]


def _whoami(ctx: WorkerContext, params: object) -> tuple[int, int, str, str]:
    return os.getpid(), threading.get_ident(), ctx.name, ctx.shape


def _fail_on_one(ctx: WorkerContext, params: object) -> int:
    if ctx.index == 1:
        raise ValueError("client 1 fails")
    return ctx.index


def _napping_op(ctx: WorkerContext, params: object):
    def op() -> None:
        time.sleep(0.002)

    return op


def test_a_threads_pool_is_one_process_whose_threads_are_the_clients() -> None:
    with WorkerPool(3, "ipc:///nonexistent", timeout=None, shape="threads") as pool:
        assert pool.size == 3
        seen = pool.run(_whoami, [None] * 3)
        assert len({pid for pid, _, _, _ in seen}) == 1 and seen[0][0] != os.getpid()
        assert len({thread for _, thread, _, _ in seen}) == 3
        assert [name for _, _, name, _ in seen] == ["t0", "t1", "t2"]
        assert {shape for _, _, _, shape in seen} == {"threads"}
        # Each client keeps its thread (and so its connections) from one job to the next.
        assert pool.run(_whoami, [None] * 2) == seen[:2]
        with pytest.raises(WorkerFailed, match="client thread 1"):
            pool.run(_fail_on_one, [None] * 3)
        stats = run_phase(pool, "nap", 3, _napping_op, [None] * 3, Load(duration=0.3, warmup=0.05))
    assert stats.shape == "threads" and stats.to_json()["shape"] == "threads"
    assert stats.ops > 100 and stats.errors == {} and stats.p50_ms >= 2.0


def test_tasks_without_churn_refuses_another_client_shape(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.main(["tasks", "--client-shape", "threads"])
    assert exit.value.code == 2
    assert "--client-shape threads applies to the --churn phases only" in capsys.readouterr().err


def test_a_comparison_without_its_client_packages_is_refused_with_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ctrd, "available", lambda: "No module named 'grpc'")
    with pytest.raises(SystemExit) as exit:
        cli.main(["exec", "--compare", "containerd", "--duration", "0.1"])
    assert exit.value.code == 2
    assert "needs grpcio and containerd: No module named 'grpc'" in capsys.readouterr().err
