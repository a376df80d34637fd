"""The restart and health flags of ``run`` and ``containers create``, turned into labels.

Docker's flags (``--restart``, ``--health-cmd``, ``--health-interval``, ...)
become the container's supervision labels (docs/protocol.md §6.7) through
:func:`berth.restart_labels` and :func:`berth.health_labels`, which check
each value as the daemon would: a bad one is a usage error naming the
flag. The flags win over a ``--label`` of the same key.
"""

from __future__ import annotations

import argparse

from actors.health_config import (
    CMD_LABEL,
    INTERVAL_LABEL,
    ON_FAILURE_LABEL,
    RETRIES_LABEL,
    START_INTERVAL_LABEL,
    START_PERIOD_LABEL,
    TIMEOUT_LABEL,
)
from actors.restart_policy import BACKOFF_BASE_LABEL, BACKOFF_MAX_LABEL, POLICY_LABEL
from berth.console.commands import Arg, UsageError, arg
from berth.supervision_labels import health_labels, restart_labels
from wire.errors import InvalidArgument

__all__ = ["SUPERVISION_ARGS", "restarts_on_exit", "supervision_labels"]

SUPERVISION_ARGS: tuple[Arg, ...] = (
    arg(
        "--restart",
        metavar="POLICY",
        help="restart policy: no, always, on-failure[:N], unless-stopped",
    ),
    arg("--restart-backoff", metavar="D", help="first restart delay, doubling (default 100ms)"),
    arg("--restart-backoff-max", metavar="D", help="longest restart delay (default 60s)"),
    arg("--health-cmd", metavar="CMD", help="health check, run by /bin/sh -c in the task"),
    arg("--health-interval", metavar="D", help="time between checks (default 30s)"),
    arg("--health-timeout", metavar="D", help="a check running longer fails (default 30s)"),
    arg("--health-retries", metavar="N", help="failures in a row that are unhealthy (default 3)"),
    arg("--health-start-period", metavar="D", help="failures do not count in it (default 0s)"),
    arg("--health-start-interval", metavar="D", help="interval in the start period (default 5s)"),
    arg(
        "--health-on-failure",
        metavar="ACTION",
        choices=("none", "kill", "restart"),
        help="when unhealthy: none, kill or restart (default none)",
    ),
)

# The flag behind each label, for messages.
_FLAGS = {
    POLICY_LABEL: "--restart",
    BACKOFF_BASE_LABEL: "--restart-backoff",
    BACKOFF_MAX_LABEL: "--restart-backoff-max",
    CMD_LABEL: "--health-cmd",
    INTERVAL_LABEL: "--health-interval",
    TIMEOUT_LABEL: "--health-timeout",
    RETRIES_LABEL: "--health-retries",
    START_PERIOD_LABEL: "--health-start-period",
    START_INTERVAL_LABEL: "--health-start-interval",
    ON_FAILURE_LABEL: "--health-on-failure",
}
_HEALTH_OPTIONS = (
    "health_interval",
    "health_timeout",
    "health_retries",
    "health_start_period",
    "health_start_interval",
    "health_on_failure",
)


def _given(args: argparse.Namespace, *names: str) -> list[str]:
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is not None]


def supervision_labels(args: argparse.Namespace, prog: str) -> dict[str, str]:
    """The labels the flags give (none given: none); UsageError for a bad or lone flag."""
    labels: dict[str, str] = {}
    try:
        if args.restart is not None:
            labels |= restart_labels(
                args.restart,
                backoff_base=args.restart_backoff,
                backoff_max=args.restart_backoff_max,
            )
        elif given := _given(args, "restart_backoff", "restart_backoff_max"):
            raise UsageError(f"{prog}: {given[0]} needs --restart")
        if args.health_cmd is not None:
            labels |= health_labels(
                args.health_cmd,
                interval=args.health_interval,
                timeout=args.health_timeout,
                retries=args.health_retries,
                start_period=args.health_start_period,
                start_interval=args.health_start_interval,
                on_failure=args.health_on_failure,
            )
        elif given := _given(args, *_HEALTH_OPTIONS):
            raise UsageError(f"{prog}: {given[0]} needs --health-cmd")
    except InvalidArgument as exc:
        raise UsageError(f"{prog}: {_with_flag(exc.message)}") from None
    return labels


def restarts_on_exit(args: argparse.Namespace) -> bool:
    """Whether the flags ask the daemon to restart the task after it exits."""
    return args.restart not in (None, "no") or args.health_on_failure == "restart"


def _with_flag(message: str) -> str:
    """``label "K": text`` as ``--flag: text``; other messages as they are."""
    for label, flag in _FLAGS.items():
        head = f'label "{label}": '
        if message.startswith(head):
            return f"{flag}: {message[len(head) :]}"
    return message
