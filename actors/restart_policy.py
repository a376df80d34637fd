"""Restart policies: their labels, whether an exit restarts, and the backoff (stdlib only).

A container's policy is in its labels, so Create and Update set it and it
lives as long as the container's metadata. containerd's labels are honoured:

=============================================  ==========================================
label                                          value
=============================================  ==========================================
``containerd.io/restart.policy``               ``no`` | ``always`` | ``on-failure[:N]`` |
                                               ``unless-stopped``; absent = ``no``
``containerd.io/restart.status``               desired state ``running`` | ``stopped``;
                                               absent = ``running``
``containerd.io/restart.explicitly-stopped``   Go bool (``true``, ``0``, ``F``, ...);
                                               true = desired ``stopped`` (nerdctl)
``containerd.io/restart.count``                non-negative integer (containerd's
                                               monitor writes it; berth's count is in
                                               LMDB)
``berth.io/restart.backoff-base``              duration 1ms..1h, default 100ms
``berth.io/restart.backoff-max``               duration base..24h, default
                                               max(60s, base)
``berth.io/restart.reset-after``               duration 0..24h, default 10s
``berth.io/restart.intensity``                 ``N/T``, N 1..10000, T 1s..24h: more than
                                               N restarts within T gives up (FAILED)
``berth.io/restart.never-on-exit``             exit codes 0..255, comma-separated
=============================================  ==========================================

Durations are Go's (see :mod:`actors.health_config`); an empty label value
is absent. ``on-failure`` and ``on-failure:0`` retry without limit, as in
Docker and containerd. A ``berth.io/restart.*`` or ``berth.io/health.*``
label berth does not know is refused: a misspelt ``backof-base`` would
otherwise be silently ignored.

The backoff is moby's restart manager made tunable: before restart number
``attempt`` (from 0) wait ``min(base * 2**attempt, max)``, with equal
jitter; a run of at least ``reset-after`` starts again from attempt 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from actors.health_config import (
    HEALTH_LABELS,
    HEALTH_PREFIX,
    format_duration,
    health_from_labels,
    label_value,
    parse_duration,
    parse_int,
    quote,
)
from wire.errors import InvalidArgument

__all__ = [
    "BACKOFF_BASE_LABEL",
    "BACKOFF_MAX_LABEL",
    "COUNT_LABEL",
    "EXPLICITLY_STOPPED_LABEL",
    "INTENSITY_LABEL",
    "NEVER_ON_EXIT_LABEL",
    "POLICY_LABEL",
    "RESET_AFTER_LABEL",
    "RESTART_LABELS",
    "RESTART_PREFIX",
    "STATUS_LABEL",
    "Decision",
    "RestartPolicy",
    "attempt_after_run",
    "check_labels",
    "decide",
    "delay_s",
    "desired_state",
    "format_duration",
    "parse_duration",
    "policy_from_labels",
]

POLICY_LABEL = "containerd.io/restart.policy"
STATUS_LABEL = "containerd.io/restart.status"
EXPLICITLY_STOPPED_LABEL = "containerd.io/restart.explicitly-stopped"
COUNT_LABEL = "containerd.io/restart.count"
RESTART_PREFIX = "berth.io/restart."
BACKOFF_BASE_LABEL = "berth.io/restart.backoff-base"
BACKOFF_MAX_LABEL = "berth.io/restart.backoff-max"
RESET_AFTER_LABEL = "berth.io/restart.reset-after"
INTENSITY_LABEL = "berth.io/restart.intensity"
NEVER_ON_EXIT_LABEL = "berth.io/restart.never-on-exit"
RESTART_LABELS = frozenset(
    {BACKOFF_BASE_LABEL, BACKOFF_MAX_LABEL, RESET_AFTER_LABEL, INTENSITY_LABEL, NEVER_ON_EXIT_LABEL}
)

Mode = Literal["no", "always", "on-failure", "unless-stopped"]
Desired = Literal["running", "stopped"]

_NS = 1_000_000_000
_MS = 1_000_000
_MAX_RETRIES = 2**31 - 1  # Docker's MaximumRetryCount is an int
_DEFAULT_MAX_S = 60.0
_PLAIN_MODES: dict[str, Mode] = {"no": "no", "always": "always", "unless-stopped": "unless-stopped"}
# Go's strconv.ParseBool, which containerd and nerdctl use for this label.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """What to do when a container's task exits; durations in seconds."""

    mode: Mode = "no"
    max_retries: int | None = None  # on-failure:N; None = no limit
    backoff_base_s: float = 0.1
    backoff_max_s: float = _DEFAULT_MAX_S
    reset_after_s: float = 10.0
    intensity: tuple[int, float] | None = None  # (N, T seconds)
    never_on_exit: frozenset[int] = frozenset()

    @property
    def name(self) -> str:
        """The policy as containerd's label spells it: ``on-failure:3``, ``always``."""
        if self.mode == "on-failure" and self.max_retries is not None:
            return f"on-failure:{self.max_retries}"
        return self.mode


def _parse_mode(text: str) -> tuple[Mode, int | None]:
    mode, sep, count = text.partition(":")
    if mode in _PLAIN_MODES and not sep:
        return _PLAIN_MODES[mode], None
    if mode == "on-failure":
        if not sep:
            return "on-failure", None
        n = parse_int(POLICY_LABEL, count, low=0, high=_MAX_RETRIES, what="a retry count")
        return "on-failure", n or None  # 0 = no limit (Docker, containerd)
    if mode in _PLAIN_MODES:
        raise InvalidArgument(f'label "{POLICY_LABEL}": "{mode}" takes no retry count')
    raise InvalidArgument(
        f'label "{POLICY_LABEL}": {quote(text)} is not one of no, always, '
        "on-failure[:N], unless-stopped"
    )


def _parse_intensity(text: str) -> tuple[int, float]:
    count, sep, window = text.partition("/")
    if not sep:
        raise InvalidArgument(f'label "{INTENSITY_LABEL}": {quote(text)} is not N/T (like 5/60s)')
    n = parse_int(INTENSITY_LABEL, count, low=1, high=10_000, what="a restart count (N of N/T)")
    t = parse_duration(INTENSITY_LABEL, window, low=(_NS, "1s"), high=(86400 * _NS, "24h"))
    return n, t


def _parse_exit_codes(text: str) -> frozenset[int]:
    codes = set()
    for item in text.split(","):
        item = item.strip()  # "0, 3" is as clear as "0,3"
        codes.add(parse_int(NEVER_ON_EXIT_LABEL, item, low=0, high=255, what="an exit code"))
    return frozenset(codes)


def policy_from_labels(labels: dict[str, str]) -> RestartPolicy:
    """The restart policy the labels give (mode ``no`` without a policy label).

    The berth.io/restart.* labels are validated even when the mode is
    ``no``. Raises InvalidArgument naming the malformed label.
    """
    mode: Mode = "no"
    retries = None
    if (text := label_value(labels, POLICY_LABEL)) is not None:
        mode, retries = _parse_mode(text)
    base = 0.1
    if (text := label_value(labels, BACKOFF_BASE_LABEL)) is not None:
        base = parse_duration(BACKOFF_BASE_LABEL, text, low=(_MS, "1ms"), high=(3600 * _NS, "1h"))
    # A base above the default cap raises the cap with it rather than
    # refusing a label the user did not write.
    cap = max(_DEFAULT_MAX_S, base)
    if (text := label_value(labels, BACKOFF_MAX_LABEL)) is not None:
        cap = parse_duration(
            BACKOFF_MAX_LABEL,
            text,
            low=(round(base * _NS), f"the backoff base ({format_duration(base)})"),
            high=(86400 * _NS, "24h"),
        )
    reset = 10.0
    if (text := label_value(labels, RESET_AFTER_LABEL)) is not None:
        reset = parse_duration(RESET_AFTER_LABEL, text, low=(0, "0s"), high=(86400 * _NS, "24h"))
    intensity = None
    if (text := label_value(labels, INTENSITY_LABEL)) is not None:
        intensity = _parse_intensity(text)
    never: frozenset[int] = frozenset()
    if (text := label_value(labels, NEVER_ON_EXIT_LABEL)) is not None:
        never = _parse_exit_codes(text)
    return RestartPolicy(mode, retries, base, cap, reset, intensity, never)


def desired_state(labels: dict[str, str]) -> Desired:
    """``stopped`` when the status label says so or explicitly-stopped is true, else ``running``.

    Either marker is a requested stop: containerd clients set the status,
    nerdctl sets explicitly-stopped. Raises InvalidArgument when malformed.
    """
    stopped = False
    if (text := label_value(labels, EXPLICITLY_STOPPED_LABEL)) is not None:
        if text not in _TRUE | _FALSE:
            raise InvalidArgument(
                f'label "{EXPLICITLY_STOPPED_LABEL}": {quote(text)} is not a boolean (true, false)'
            )
        stopped = text in _TRUE
    status = label_value(labels, STATUS_LABEL)
    if status not in (None, "running", "stopped"):
        raise InvalidArgument(
            f'label "{STATUS_LABEL}": {quote(status or "")} is not one of running, stopped'
        )
    return "stopped" if stopped or status == "stopped" else "running"


def check_labels(labels: dict[str, str]) -> None:
    """Refuse (InvalidArgument, naming the label) any malformed supervision or health label.

    For Containers/Create and Update, on the labels as they will be stored.
    """
    for key in sorted(labels):
        known = RESTART_LABELS if key.startswith(RESTART_PREFIX) else None
        if key.startswith(HEALTH_PREFIX):
            known = HEALTH_LABELS
        if known is not None and key not in known:
            raise InvalidArgument(f'label "{key}": unknown; berth knows {", ".join(sorted(known))}')
    policy_from_labels(labels)
    desired_state(labels)
    if (text := label_value(labels, COUNT_LABEL)) is not None:
        parse_int(COUNT_LABEL, text, low=0, high=2**63 - 1, what="a restart count")
    health_from_labels(labels)


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether an exit restarts, why, and if not whether supervision gave up."""

    restart: bool
    reason: str
    give_up: bool = False  # True: FAILED, left alone; False and no restart: STOPPED

    @property
    def state(self) -> Literal["BACKOFF", "STOPPED", "FAILED"]:
        """The supervision state this decision leads to."""
        if self.restart:
            return "BACKOFF"
        return "FAILED" if self.give_up else "STOPPED"


def decide(
    policy: RestartPolicy,
    *,
    exit_status: int,
    oom: bool,
    desired: str,
    restarts: int,
    recent_restarts_ns: list[int],
    now_ns: int,
    daemon_stopping: bool = False,
) -> Decision:
    """Whether a task that exited with ``exit_status`` is restarted.

    ``restarts`` counts the restarts since the task was last started by
    request (on-failure's N is checked against it); ``recent_restarts_ns``
    are the times of past restarts on the clock of ``now_ns`` (wall-clock,
    so they survive a daemon restart; times ahead of ``now_ns`` count as
    recent). The checks, in order: policy ``no``; a requested stop; the
    daemon stopping (not a requested stop, decide again after it restarts);
    never-on-exit codes; on-failure's clean exit (an OOM kill is a failure
    whatever its status); on-failure's retry limit (gives up); the intensity
    limit (gives up).
    """
    if desired not in ("running", "stopped"):
        raise ValueError(f"desired must be running or stopped, not {desired!r}")
    # The task (EXITED) -> container's next step: STOPPED | FAILED | BACKOFF.
    if policy.mode == "no":
        return Decision(False, "policy no")
    if desired == "stopped":
        return Decision(False, "stopped by request")
    if daemon_stopping:
        return Decision(False, "daemon stopping")
    if exit_status in policy.never_on_exit:
        return Decision(False, f"exit code {exit_status} never restarts")
    if policy.mode == "on-failure":
        if exit_status == 0 and not oom:
            return Decision(False, "on-failure: exited 0")
        if policy.max_retries is not None and restarts >= policy.max_retries:
            return Decision(False, f"on-failure: {policy.max_retries} restarts reached", True)
    if policy.intensity is not None:
        limit, window_s = policy.intensity
        window_ns = round(window_s * _NS)
        # This restart would be one more inside the window (OTP's rule).
        would_be = 1 + sum(1 for t in recent_restarts_ns if now_ns - t < window_ns)
        if would_be > limit:
            return Decision(
                False, f"intensity: {would_be} restarts within {format_duration(window_s)}", True
            )
    return Decision(True, f"{policy.mode}: exited {exit_status}" + (" (OOM)" if oom else ""))


def delay_s(policy: RestartPolicy, attempt: int, rand: float) -> float:
    """Seconds to wait before restart number ``attempt`` (0 = the first since a reset).

    ``min(base * 2**attempt, max)`` with equal jitter: uniform in
    ``[d/2, d)`` for ``rand`` uniform in ``[0, 1)``. Equal jitter keeps the
    cap a cap and half of the step a guaranteed wait, while spreading
    containers that crashed together (after a daemon restart, say).
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, not {attempt}")
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand must be in [0, 1), not {rand}")
    # 2**64 * 1ms is far past any cap; a larger exponent only risks overflow.
    step = min(policy.backoff_base_s * 2.0 ** min(attempt, 64), policy.backoff_max_s)
    return step * (0.5 + rand / 2)


def attempt_after_run(policy: RestartPolicy, attempt: int, ran_for_s: float) -> int:
    """The backoff attempt to use after a task ran ``ran_for_s`` seconds.

    A run of at least ``reset_after`` starts the backoff again (Docker:
    10 s); a shorter one keeps ``attempt``. The caller adds one after each
    restart it schedules. With ``reset-after`` 0 every run resets it, so
    every restart waits the base.
    """
    return 0 if ran_for_s >= policy.reset_after_s else attempt
