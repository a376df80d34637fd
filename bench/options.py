"""Pieces every scenario shares: option types and the busy-machine warning."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from bench.target import CpuMeter, Target, host_busy

__all__ = ["at_least_one", "busy_warning", "measure_busy", "run_footer", "usage_error"]

# Host CPU busy before a run above which its figures are flagged.
_BUSY_WARNING = 0.15


def usage_error(message: str) -> NoReturn:
    """Refuse options that cannot be honoured: ``message`` on stderr, exit 2 (as argparse)."""
    print(f"berth-bench: {message}", file=sys.stderr)
    raise SystemExit(2)


def at_least_one(text: str) -> int:
    """An ``argparse`` type: an int of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def measure_busy() -> float | None:
    """How busy the host is over one second, before a run."""
    return host_busy(1.0)


def busy_warning(busy: float | None) -> str | None:
    """The warning to print when the host was busy before the run, else None."""
    if busy is not None and busy > _BUSY_WARNING:
        return f"warning: the machine was {busy:.0%} busy before the run; the figures are not clean"
    return None


def run_footer(
    idle: float | None, meter: CpuMeter, aborted: str | None, target: Target | None
) -> list[str]:
    """The lines every one-at-a-time scenario ends with: how busy, aborted, daemon exit."""
    lines = []
    if (warning := busy_warning(idle)) is not None:
        lines.append(warning)
    if meter.host_busy is not None:
        cores = "" if meter.daemon_cores is None else f", berthd {meter.daemon_cores:.2f} cores"
        lines.append(f"during the run: host {meter.host_busy:.0%} busy{cores}")
    if aborted:
        lines.append(f"ABORTED: {aborted}")
    if target is not None and target.spawned and target.exit_code != 0:
        lines.append(
            f"note: berthd exited {target.exit_code} on SIGTERM; log tail in the JSON report"
        )
    return lines
