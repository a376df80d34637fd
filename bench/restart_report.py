"""The report of ``berth-bench restarts``: the table, the goals, and the JSON figures.

The headline of each backend is "crash -> replacement task running":

- berth and containerd: from the exit's ``exited_at`` (stamped by the
  shim when it reaped the init) to the receipt of the replacement's
  ``/tasks/start`` by an ``Events/Subscribe`` subscriber;
- Docker: from its ``die`` event to the container's next ``start`` event,
  by their ``timeNano`` (what the issue asks to compare with; ``die`` is
  stamped when dockerd handles the exit, after the shim reaped it, so
  Docker's figure starts later than the others').

Beside it, every backend's own two stamps (its exit event to its start
event), berth's restart path step by step, and the daemon CPU per
restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.histogram import summarize
from bench.restart_berth import CrashLoop, HealthPhase
from bench.restart_watch import RestartTiming, latency_json, steps_json

__all__ = ["GOAL_HEALTH_CORES", "RestartsOutcome", "format_report", "outcome_json"]

GOAL_SLACK_MS = 5.0  # restart p50 <= plain create + start p50 + this
GOAL_DOCKER_RATIO = 0.5  # restart p50 <= this x Docker's
GOAL_HEALTH_CORES = 0.3  # 100 containers checked every second cost less than this


@dataclass
class RestartsOutcome:
    """Everything a run measured, found and skipped."""

    loops: list[CrashLoop] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # backend -> why
    health: list[HealthPhase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)

    def loop(self, backend: str) -> CrashLoop | None:
        return next((loop for loop in self.loops if loop.backend == backend), None)


def _headline(loop: CrashLoop, timings: Sequence[RestartTiming]) -> list[int | None]:
    if loop.backend == "docker":
        return [t.stamp_to_stamp_ns() for t in timings]
    return [t.to_running_ns() for t in timings]


def _groups(loop: CrashLoop) -> list[tuple[str, Sequence[RestartTiming]]]:
    """The rows of a backend: Docker's by backoff step (its first restart is its minimum)."""
    if loop.backend != "docker":
        return [("", loop.timings)]
    steps = sorted({t.attempt or 0 for t in loop.timings})
    rows: list[tuple[str, Sequence[RestartTiming]]] = []
    for step in steps:
        name = f"restart #{step + 1} ({100 * 2**step} ms backoff)"
        rows.append((name, [t for t in loop.timings if (t.attempt or 0) == step]))
    return rows


def _cpu_per_restart(loop: CrashLoop) -> dict[str, float | None]:
    """Each CPU group's milliseconds per restart, and their sum as ``all``."""
    if not loop.restarts or not loop.window.cpu_s:
        return {}
    out: dict[str, float | None] = {
        name: round(seconds * 1000 / loop.restarts, 3)
        for name, seconds in loop.window.cpu_s.items()
    }
    out["all"] = round(sum(loop.window.cpu_s.values()) * 1000 / loop.restarts, 3)
    return out


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _row(label: str, values: Sequence[int | None], cpu: str) -> str:
    s = summarize(v for v in values if v is not None and v >= 0)
    if not s.n:
        return f"  {label:<52} {'-':>5}"
    return (
        f"  {label:<52} {s.n:>5}"
        f" {_ms(s.p50_ms):>8} {_ms(s.p90_ms):>8} {_ms(s.p99_ms):>8}"
        f" {_ms(s.max_ms):>8}   {cpu}"
    )


def _create_start(loop: CrashLoop, which: str) -> dict[str, Any]:
    times = loop.extra.get(which) or {}
    return {step: latency_json(values) for step, values in times.items()}


def _goal(ok: bool | None, text: str) -> str:
    status = "-" if ok is None else ("MET" if ok else "MISS")
    return f"  {status:<5} {text}"


def format_report(outcome: RestartsOutcome, containers: int) -> list[str]:
    """The human table: headline per backend, create + start, steps, goals, health."""
    lines = [
        f"restarts: {containers} containers of `sh -c 'sleep 0.5; exit 1'`, policy always,"
        " crash -> replacement task running (ms)",
        f"  {'backend':<52} {'n':>5} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}"
        "   CPU ms / restart",
    ]
    for loop in outcome.loops:
        cpu_text = " ".join(f"{k} {_ms(v)}" for k, v in _cpu_per_restart(loop).items())
        what = {
            "berth": "berth: exited_at -> /tasks/start received",
            "containerd": "containerd monitor: exited_at -> start recv",
            "docker": "docker: die -> start",
        }[loop.backend]
        for name, timings in _groups(loop):
            label = f"{what} {name}".strip()
            lines.append(_row(label, _headline(loop, timings), cpu_text))
            cpu_text = ""
        if loaded := loop.extra.get("timings_loaded"):
            lines.append(
                _row("  same, while create + start is probed", _headline(loop, loaded), "")
            )
    for backend, why in outcome.skipped.items():
        lines.append(f"  {backend}: not run: {why}")
    lines.append("  each daemon's own stamps, its exit event -> its start event:")
    for loop in outcome.loops:
        lines.append(_row(f"  {loop.backend}", [t.stamp_to_stamp_ns() for t in loop.timings], ""))
    berth = outcome.loop("berth")
    if berth is not None:
        lines += _berth_lines(outcome, berth)
    lines += _health_lines(outcome.health)
    return lines


def _berth_lines(outcome: RestartsOutcome, berth: CrashLoop) -> list[str]:
    lines = ["", "berth, plain Tasks/Create + Tasks/Start (no policy, same command), ms:"]
    for which, title in (
        ("create_start_alone", "alone, before the loop"),
        ("create_start_loaded", "while the crash loop runs"),
    ):
        for step, values in (berth.extra.get(which) or {}).items():
            lines.append(_row(f"{title}: {step}", values, ""))
    lines.append("berth restart path, step by step (daemon's log stamps), ms:")
    for name, figures in steps_json(berth.timings).items():
        lines.append(
            f"  {name:<50} p50 {_ms(figures['p50_ms']):>7}  p99 {_ms(figures['p99_ms']):>7}"
        )
    attempts = [t.attempt for t in berth.timings if t.attempt is not None]
    if attempts:
        first = sum(1 for a in attempts if a == 1)
        lines.append(f"  backoff step 1 (the base) in {first} of {len(attempts)} restarts")
    probed = berth.extra.get("timings_loaded") or []
    lines.append("goals:")
    for which, title, timings in (
        ("create_start_loaded", "while both run", probed),
        ("create_start_alone", "alone (restarts of the loop's window)", berth.timings),
    ):
        restart = summarize(v for v in _headline(berth, timings) if v is not None and v >= 0)
        plain = (berth.extra.get(which) or {}).get("create_start") or []
        base = summarize(plain)
        ok = None if not (restart.n and base.n) else restart.p50_ms <= base.p50_ms + GOAL_SLACK_MS
        lines.append(
            _goal(
                ok,
                f"restart p50 {_ms(restart.p50_ms)} <= create + start p50 {title}"
                f" {_ms(base.p50_ms)} + {GOAL_SLACK_MS:g} ms",
            )
        )
    restart = summarize(v for v in _headline(berth, berth.timings) if v is not None and v >= 0)
    docker = outcome.loop("docker")
    if docker is not None:
        first_docker = [t for t in docker.timings if (t.attempt or 0) == 0]
        d = summarize(v for v in _headline(docker, first_docker) if v is not None and v >= 0)
        ok = None if not (restart.n and d.n) else restart.p50_ms <= GOAL_DOCKER_RATIO * d.p50_ms
        lines.append(
            _goal(
                ok,
                f"restart p50 {_ms(restart.p50_ms)} <= {GOAL_DOCKER_RATIO:g} x Docker's first"
                f" restart p50 {_ms(d.p50_ms)}",
            )
        )
    return lines


def _health_extra(phases: Sequence[HealthPhase]) -> dict[str, float | None]:
    """Cores of each group with checks less without, and the machine's."""
    if len(phases) != 2:
        return {}
    without, with_ = phases[0].window, phases[1].window
    out: dict[str, float | None] = {}
    for name in with_.cpu_s:
        a, b = without.cores(name), with_.cores(name)
        out[name] = None if a is None or b is None else round(b - a, 4)
    if with_.cpu_s and all(out.get(name) is not None for name in with_.cpu_s):
        out["berth (berthd + zygote + shims)"] = round(
            sum(v for k, v in out.items() if v is not None), 4
        )
    if without.machine_cores is not None and with_.machine_cores is not None:
        out["machine (/proc/stat)"] = round(with_.machine_cores - without.machine_cores, 4)
    return out


def _health_lines(phases: Sequence[HealthPhase]) -> list[str]:
    if not phases:
        return []
    lines = ["", "health checks (`true` as /bin/sh -c), CPU in cores over each window:"]
    for phase in phases:
        cores = ", ".join(
            f"{k} {v:.3f}" for k in phase.window.cpu_s if (v := phase.window.cores(k)) is not None
        )
        machine = phase.window.machine_cores
        lines.append(
            f"  {phase.containers} containers {phase.name}: {cores};"
            f" machine {_ms(machine)} busy cores over {phase.window.wall_s:.1f} s"
        )
        if phase.checks:
            c = phase.checks
            every, took = c["interval_s"], c["check_ms"]
            lines.append(
                f"    checks: interval p50 {every['p50']} s p99 {every['p99']} s;"
                f" check p50 {took['p50']} ms p99 {took['p99']} ms;"
                f" statuses {c['statuses']}; failed in logs {c['failed_in_logs']}"
            )
    extra = _health_extra(phases)
    if extra:
        lines.append("  extra with checks: " + ", ".join(f"{k} {_ms(v)}" for k, v in extra.items()))
        berth = extra.get("berth (berthd + zygote + shims)")
        lines.append(
            _goal(
                None if berth is None else berth < GOAL_HEALTH_CORES,
                f"berth's extra cores {_ms(berth)} < {GOAL_HEALTH_CORES:g}",
            )
        )
    return lines


def _loop_json(loop: CrashLoop) -> dict[str, Any]:
    rows = {
        name or "all": latency_json(_headline(loop, timings)) for name, timings in _groups(loop)
    }
    out: dict[str, Any] = {
        "backend": loop.backend,
        "containers": loop.containers,
        "exits": loop.exits,
        "restarts_in_window": loop.restarts,
        "crash_to_running": rows,
        "exit_event_to_start_event": latency_json(t.stamp_to_stamp_ns() for t in loop.timings),
        "samples_ms": [
            round(v / 1e6, 3) for v in _headline(loop, loop.timings) if v is not None and v >= 0
        ],
        "cpu_window": loop.window.to_json(),
        "cpu_ms_per_restart": _cpu_per_restart(loop),
        "gave_up": loop.gave_up,
        "failure": loop.failure,
    }
    if loop.backend == "berth":
        out["steps"] = steps_json(loop.timings)
        out["create_start_alone"] = _create_start(loop, "create_start_alone")
        out["create_start_loaded"] = _create_start(loop, "create_start_loaded")
        out["exit_to_restarted_received"] = latency_json(
            None if t.restarted_received_ns is None else t.restarted_received_ns - t.exited_at_ns
            for t in loop.timings
        )
    if loaded := loop.extra.get("timings_loaded"):
        out["crash_to_running_while_probed"] = latency_json(_headline(loop, loaded))
    out.update(
        {k: v for k, v in loop.extra.items() if not k.startswith(("create_start", "timings"))}
    )
    return out


def outcome_json(outcome: RestartsOutcome) -> dict[str, Any]:
    """The figures of the run for the JSON report."""
    return {
        "loops": [_loop_json(loop) for loop in outcome.loops],
        "skipped": outcome.skipped,
        "health": [
            {
                "name": p.name,
                "containers": p.containers,
                "cpu": p.window.to_json(),
                "checks": p.checks,
            }
            for p in outcome.health
        ],
        "health_extra_cores": _health_extra(outcome.health),
        "goals": {
            "restart_p50_le_create_start_p50_plus_ms": GOAL_SLACK_MS,
            "restart_p50_le_docker_ratio": GOAL_DOCKER_RATIO,
            "health_extra_cores_lt": GOAL_HEALTH_CORES,
        },
    }
