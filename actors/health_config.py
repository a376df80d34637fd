"""Health checks: their labels, and the state a task's checks move through (stdlib only).

Configured by labels, with Docker's semantics plus Podman's ``on_failure``:

- ``berth.io/health.cmd``: a JSON array of strings is exec form
  (``["/bin/sh","-c","test -f /ok"]``); anything else runs by ``/bin/sh -c``.
  No command, no health check.
- ``berth.io/health.interval``: duration 100ms..24h, default 30s.
- ``berth.io/health.timeout``: duration 1ms..24h, default 30s; a check
  still running then is killed and fails.
- ``berth.io/health.retries``: integer 1..10000, default 3.
- ``berth.io/health.start-period``: duration 0..24h, default 0s.
- ``berth.io/health.start-interval``: duration 100ms..24h, default 5s.
- ``berth.io/health.on-failure``: ``none`` | ``kill`` | ``restart``, default
  ``none``; what to do when the task becomes unhealthy.

Durations are Go's (``100ms``, ``1.5s``, ``1h30m``, plain ``0``). A bare
number other than ``0`` is refused: ``100`` could mean ms or s, and Docker's
and containerd's durations always spell the unit. A label with an
empty value is absent (the metadata drops empty labels).

The states, as Docker's::

    starting --success--> healthy <--success-- unhealthy
        |                    |                     ^
        +--failure x retries-+---------------------+

Inside the start period a failure while ``starting`` does not count toward
``retries``; a success makes the task healthy at once.

This module is the leaf of supervision: it also holds the label-value
parsers (:func:`parse_duration`, ...) that :mod:`actors.restart_policy`
uses, so the two modules import in one direction only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

from wire.errors import InvalidArgument

__all__ = [
    "CMD_LABEL",
    "HEALTH_LABELS",
    "HEALTH_PREFIX",
    "INTERVAL_LABEL",
    "MAX_LOG_ENTRIES",
    "MAX_OUTPUT_BYTES",
    "ON_FAILURE_LABEL",
    "RETRIES_LABEL",
    "START_INTERVAL_LABEL",
    "START_PERIOD_LABEL",
    "TIMEOUT_LABEL",
    "HealthConfig",
    "HealthResult",
    "HealthState",
    "format_duration",
    "health_from_labels",
    "label_value",
    "parse_duration",
    "parse_duration_ns",
    "parse_int",
    "quote",
    "truncate_output",
]

HEALTH_PREFIX = "berth.io/health."
CMD_LABEL = "berth.io/health.cmd"
INTERVAL_LABEL = "berth.io/health.interval"
TIMEOUT_LABEL = "berth.io/health.timeout"
RETRIES_LABEL = "berth.io/health.retries"
START_PERIOD_LABEL = "berth.io/health.start-period"
START_INTERVAL_LABEL = "berth.io/health.start-interval"
ON_FAILURE_LABEL = "berth.io/health.on-failure"
HEALTH_LABELS = frozenset(
    {
        CMD_LABEL,
        INTERVAL_LABEL,
        TIMEOUT_LABEL,
        RETRIES_LABEL,
        START_PERIOD_LABEL,
        START_INTERVAL_LABEL,
        ON_FAILURE_LABEL,
    }
)

MAX_LOG_ENTRIES = 5  # Docker keeps the last 5 results
MAX_OUTPUT_BYTES = 4096  # Docker's 4 KiB, counted in UTF-8 bytes
_TRUNCATED = "..."  # Docker's marker; counted inside the 4 KiB

OnFailure = Literal["none", "kill", "restart"]
HealthStatus = Literal["starting", "healthy", "unhealthy"]

_NS = 1_000_000_000

# --- label values -----------------------------------------------------------

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": _NS}
_UNITS |= {"m": 60 * _NS, "h": 3600 * _NS}
# One "<number><unit>" step; a number needs a digit on one side of its dot.
_STEP = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")


def quote(text: str, limit: int = 64) -> str:
    """``text`` in double quotes for a message, escaped, cut after ``limit`` characters."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    return json.dumps(cut, ensure_ascii=False)


def label_value(labels: dict[str, str], key: str) -> str | None:
    """The label's value, or None when it is absent or empty (empty = absent)."""
    value = labels.get(key)
    return value if value else None


def parse_duration_ns(label: str, text: str) -> int:
    """Go's ``time.ParseDuration`` (``100ms``, ``1.5s``, ``1h30m``, ``0``) in whole ns."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0
    pos, total = 0, Fraction(0)
    while body and pos < len(body):
        step = _STEP.match(body, pos)
        if step is None:
            break
        total += Fraction(step.group(1)) * _UNITS[step.group(2)]
        pos = step.end()
    if not body or pos != len(body):
        raise InvalidArgument(
            f'label "{label}": {quote(text)} is not a duration (like 100ms, 2s, 1m)'
        )
    ns = int(total)  # Go truncates below a nanosecond too
    return -ns if text.startswith("-") else ns


def parse_duration(label: str, text: str, *, low: tuple[int, str], high: tuple[int, str]) -> float:
    """Seconds for a duration label, within ``low..high`` (each ``(ns, "as written")``)."""
    ns = parse_duration_ns(label, text)
    if ns < low[0]:
        raise InvalidArgument(f'label "{label}": {quote(text)} is less than {low[1]}')
    if ns > high[0]:
        raise InvalidArgument(f'label "{label}": {quote(text)} is more than {high[1]}')
    return ns / _NS


def parse_int(label: str, text: str, *, low: int, high: int, what: str = "an integer") -> int:
    """A decimal integer label (digits only: no sign, space or ``_``) within ``low..high``."""
    # str.isdigit accepts "²" and other non-ASCII digits int() then refuses.
    if not (text.isascii() and text.isdigit()):
        raise InvalidArgument(f'label "{label}": {quote(text)} is not {what}')
    value = int(text)
    if not low <= value <= high:
        raise InvalidArgument(f'label "{label}": {value} is out of range ({low}..{high})')
    return value


def format_duration(seconds: float) -> str:
    """A duration for messages: ``100ms``, ``1.5s``, ``60s``, ``0s``."""
    ns = round(seconds * _NS)
    if ns == 0:
        return "0s"
    for unit, size in (("s", _NS), ("ms", 1_000_000), ("us", 1_000)):
        if abs(ns) >= size:
            return f"{format(Decimal(ns) / Decimal(size), 'f')}{unit}"
    return f"{ns}ns"


_MS = 1_000_000
_DAY = (24 * 3600 * _NS, "24h")

# --- configuration ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """A task's health check, from its container's labels; durations in seconds."""

    cmd: tuple[str, ...]  # argv; a shell-form label is ("/bin/sh", "-c", text)
    interval_s: float = 30.0
    timeout_s: float = 30.0
    retries: int = 3
    start_period_s: float = 0.0
    start_interval_s: float = 5.0
    on_failure: OnFailure = "none"


def _parse_cmd(text: str) -> tuple[str, ...]:
    # Only a JSON *array* is exec form: "[ -f /ok ]" is a shell test that is
    # not JSON, and "true" is JSON but meant for the shell.
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, list):
        if not parsed:
            raise InvalidArgument(f'label "{CMD_LABEL}": the command array is empty')
        if not all(isinstance(arg, str) for arg in parsed):
            raise InvalidArgument(
                f'label "{CMD_LABEL}": a JSON array must hold only strings (exec form)'
            )
        argv = tuple(parsed)
        if not argv[0]:
            raise InvalidArgument(f'label "{CMD_LABEL}": the program (first element) is empty')
    else:
        if not text.strip():
            raise InvalidArgument(f'label "{CMD_LABEL}": the command is blank')
        argv = ("/bin/sh", "-c", text)
    if any("\0" in arg for arg in argv):
        # execve cannot pass a NUL inside an argument.
        raise InvalidArgument(f'label "{CMD_LABEL}": the command contains a NUL character')
    return argv


def health_from_labels(labels: dict[str, str]) -> HealthConfig | None:
    """The health check the labels configure, None without ``berth.io/health.cmd``.

    Every health label is validated even when there is no command, so a
    malformed one is refused at Create/Update rather than when a command is
    added later. Raises InvalidArgument naming the label.
    """
    cfg: dict[str, Any] = {}
    durations = {
        INTERVAL_LABEL: ("interval_s", (100 * _MS, "100ms")),
        TIMEOUT_LABEL: ("timeout_s", (_MS, "1ms")),
        START_PERIOD_LABEL: ("start_period_s", (0, "0s")),
        # At least 100ms: an exec storm every millisecond starves the daemon.
        START_INTERVAL_LABEL: ("start_interval_s", (100 * _MS, "100ms")),
    }
    for label, (field, low) in durations.items():
        if (text := label_value(labels, label)) is not None:
            cfg[field] = parse_duration(label, text, low=low, high=_DAY)
    if (text := label_value(labels, RETRIES_LABEL)) is not None:
        cfg["retries"] = parse_int(RETRIES_LABEL, text, low=1, high=10_000)
    if (text := label_value(labels, ON_FAILURE_LABEL)) is not None:
        if text not in ("none", "kill", "restart"):
            raise InvalidArgument(
                f'label "{ON_FAILURE_LABEL}": {quote(text)} is not one of none, kill, restart'
            )
        cfg["on_failure"] = text
    cmd = label_value(labels, CMD_LABEL)
    if cmd is None:
        return None
    return HealthConfig(cmd=_parse_cmd(cmd), **cfg)


# --- state ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthResult:
    """One check's result; times are wall-clock ns, output at most 4 KiB of UTF-8."""

    start_ns: int
    end_ns: int
    exit_code: int  # -1 for a check killed at its timeout, as Docker
    output: str


def truncate_output(output: str, limit: int = MAX_OUTPUT_BYTES) -> str:
    """``output`` cut to at most ``limit`` UTF-8 bytes, ending in ``...`` when cut.

    The cut never splits a character; unencodable text (lone surrogates
    from a lossy decode) becomes ``?`` first.
    """
    data = output.encode("utf-8", "replace")
    if len(data) <= limit:
        return data.decode("utf-8")
    # "ignore" drops only the partial character the byte cut left at the end.
    head = data[: limit - len(_TRUNCATED)].decode("utf-8", "ignore")
    return head + _TRUNCATED


class HealthState:
    """A task's health: Docker's state machine, fed one check result at a time.

    Made afresh for each task (status ``starting``), with the time the task
    started: the start period is measured from it.
    """

    __slots__ = ("_became_unhealthy", "config", "failing_streak", "log", "started_ns", "status")

    def __init__(self, config: HealthConfig, task_started_ns: int) -> None:
        self.config = config
        self.started_ns = task_started_ns
        self.status: HealthStatus = "starting"
        self.failing_streak = 0
        self.log: list[HealthResult] = []  # oldest first, at most MAX_LOG_ENTRIES
        self._became_unhealthy = False

    def _in_start_period(self, since_start_ns: int) -> bool:
        return since_start_ns < round(self.config.start_period_s * _NS)

    def record(
        self,
        exit_code: int,
        output: str,
        started_ns: int,
        ended_ns: int,
        timed_out: bool = False,
    ) -> bool:
        """Take one check's result; True when the status changed.

        Exit code 0 is a success, anything else a failure. A timed-out check
        is a failure recorded with exit code -1 and Docker's message before
        whatever output it had produced.
        """
        if timed_out:
            note = f"health check exceeded timeout ({format_duration(self.config.timeout_s)})"
            output = f"{note}\n{output}" if output else note
            exit_code = -1
        self.log.append(HealthResult(started_ns, ended_ns, exit_code, truncate_output(output)))
        del self.log[:-MAX_LOG_ENTRIES]
        before = self.status
        if exit_code == 0:
            # any -> healthy: one success is enough, in or out of the start period
            self.failing_streak = 0
            self.status = "healthy"
        elif self.status == "starting" and self._in_start_period(started_ns - self.started_ns):
            pass  # starting, in the start period: the failure does not count (Docker)
        else:
            self.failing_streak += 1
            if self.failing_streak >= self.config.retries:
                # starting|healthy -> unhealthy (unhealthy stays unhealthy)
                self.status = "unhealthy"
        self._became_unhealthy = before != "unhealthy" and self.status == "unhealthy"
        return self.status != before

    def next_interval_s(self, since_start_s: float) -> float:
        """Seconds until the next check, ``since_start_s`` after the task started.

        ``start_interval`` while still ``starting`` inside the start period,
        else ``interval``.
        """
        if self.status == "starting" and since_start_s < self.config.start_period_s:
            return self.config.start_interval_s
        return self.config.interval_s

    def needs_action(self) -> OnFailure | None:
        """``"kill"`` or ``"restart"`` when the last result made the task unhealthy.

        None otherwise: for ``on_failure=none``, and for every further failure
        while already unhealthy (Podman acts on the transition only).
        """
        if self._became_unhealthy and self.config.on_failure != "none":
            return self.config.on_failure
        return None

    def to_wire(self) -> dict[str, Any]:
        """``{status, failing_streak, log: [{start, end, exit_code, output}]}``, times in ns."""
        return {
            "status": self.status,
            "failing_streak": self.failing_streak,
            "log": [
                {"start": r.start_ns, "end": r.end_ns, "exit_code": r.exit_code, "output": r.output}
                for r in self.log
            ],
        }
