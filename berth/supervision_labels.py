"""Restart-policy and health-check labels from keyword arguments (docs/protocol.md §6.7).

A container's supervision is configured by its labels; these helpers spell
them, so a caller writes::

    labels = {
        **berth.restart_labels("on-failure:3", backoff_base="200ms", intensity=(5, "1m")),
        **berth.health_labels("wget -q -O- localhost:8080/ok", interval="10s", retries=3),
    }
    client.containers.create("web", spec=spec, labels=labels)

or changes them later with ``containers.update(..., labels=...,
update_mask=[f"labels.{k}" for k in labels])``.

Durations are Go's strings (``"100ms"``, ``"1.5s"``, ``"1m"``), or seconds
as an int or float, or a :class:`datetime.timedelta`. Every value is
checked as the daemon checks it at Create and Update, so a bad one raises
:class:`~wire.errors.InvalidArgument` here, naming the label. An argument
left as None leaves its label out (the daemon's default applies); an empty
string is refused: as a label value it would silently mean the default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import timedelta

from actors.health_config import (
    CMD_LABEL,
    INTERVAL_LABEL,
    ON_FAILURE_LABEL,
    RETRIES_LABEL,
    START_INTERVAL_LABEL,
    START_PERIOD_LABEL,
    TIMEOUT_LABEL,
    format_duration,
)
from actors.restart_policy import (
    BACKOFF_BASE_LABEL,
    BACKOFF_MAX_LABEL,
    INTENSITY_LABEL,
    NEVER_ON_EXIT_LABEL,
    POLICY_LABEL,
    RESET_AFTER_LABEL,
    check_labels,
)
from wire.errors import InvalidArgument

__all__ = ["Duration", "health_labels", "restart_labels"]

Duration = str | int | float | timedelta


def _text(label: str, value: str) -> str:
    if value == "":
        raise InvalidArgument(f'label "{label}": empty (leave it out for the default)')
    return value


def _duration(label: str, value: Duration) -> str:
    """A Go duration string for ``value``: kept as written if a string, else from seconds."""
    if isinstance(value, str):
        return _text(label, value)
    if isinstance(value, timedelta):
        return format_duration(value.total_seconds())
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f'label "{label}": {value!r} is not a duration (like "100ms", 2.5)')
    if not math.isfinite(value):
        raise InvalidArgument(f'label "{label}": {value!r} is not a finite duration')
    return format_duration(value)


def _integer(label: str, value: int | str) -> str:
    if isinstance(value, str):
        return _text(label, value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f'label "{label}": {value!r} is not an integer')
    return str(value)


def _intensity(value: str | tuple[int, Duration]) -> str:
    if isinstance(value, str):
        return _text(INTENSITY_LABEL, value)
    if not isinstance(value, tuple) or len(value) != 2:
        raise InvalidArgument(f'label "{INTENSITY_LABEL}": {value!r} is not "N/T" or (N, T)')
    count, window = value
    return f"{_integer(INTENSITY_LABEL, count)}/{_duration(INTENSITY_LABEL, window)}"


def _exit_codes(value: str | Iterable[int]) -> str | None:
    if isinstance(value, str):
        return _text(NEVER_ON_EXIT_LABEL, value)
    codes = [_integer(NEVER_ON_EXIT_LABEL, code) for code in value]
    return ",".join(codes) or None  # no codes: no label


def restart_labels(
    policy: str,
    *,
    backoff_base: Duration | None = None,
    backoff_max: Duration | None = None,
    reset_after: Duration | None = None,
    intensity: str | tuple[int, Duration] | None = None,
    never_on_exit: str | Iterable[int] | None = None,
) -> dict[str, str]:
    """The labels of a restart policy.

    ``policy``: ``"no"``, ``"always"``, ``"on-failure"``, ``"on-failure:N"``
    (at most N restarts) or ``"unless-stopped"``. ``backoff_base`` (default
    100ms) doubles each restart up to ``backoff_max`` (default max(60s,
    base)); a run of ``reset_after`` (default 10s) starts it again.
    ``intensity`` ``(N, T)`` or ``"N/T"``: more than N restarts within T
    gives up. ``never_on_exit``: exit codes that never restart.
    Raises InvalidArgument naming the label of a bad value.
    """
    labels = {POLICY_LABEL: _text(POLICY_LABEL, policy)}
    durations = {
        BACKOFF_BASE_LABEL: backoff_base,
        BACKOFF_MAX_LABEL: backoff_max,
        RESET_AFTER_LABEL: reset_after,
    }
    for label, value in durations.items():
        if value is not None:
            labels[label] = _duration(label, value)
    if intensity is not None:
        labels[INTENSITY_LABEL] = _intensity(intensity)
    if never_on_exit is not None and (codes := _exit_codes(never_on_exit)) is not None:
        labels[NEVER_ON_EXIT_LABEL] = codes
    check_labels(labels)
    return labels


def health_labels(
    cmd: str | Sequence[str],
    *,
    interval: Duration | None = None,
    timeout: Duration | None = None,
    retries: int | str | None = None,
    start_period: Duration | None = None,
    start_interval: Duration | None = None,
    on_failure: str | None = None,
) -> dict[str, str]:
    """The labels of a health check, with Docker's semantics.

    ``cmd``: a string run by ``/bin/sh -c``, or a list of strings run as
    it is (exec form). Checks run every ``interval`` (default 30s), each
    killed after ``timeout`` (30s); ``retries`` (3) failures in a row make
    the task unhealthy; failures in the ``start_period`` (0s) do not count
    while it is starting, and checks then run every ``start_interval``
    (5s). ``on_failure``: ``"none"``, ``"kill"`` or ``"restart"``.
    Raises InvalidArgument naming the label of a bad value.
    """
    if isinstance(cmd, str):
        command = _text(CMD_LABEL, cmd)
    else:
        argv = list(cmd)
        if not all(isinstance(word, str) for word in argv):
            raise InvalidArgument(f'label "{CMD_LABEL}": the command must be strings')
        command = json.dumps(argv)
    labels = {CMD_LABEL: command}
    durations = {
        INTERVAL_LABEL: interval,
        TIMEOUT_LABEL: timeout,
        START_PERIOD_LABEL: start_period,
        START_INTERVAL_LABEL: start_interval,
    }
    for label, value in durations.items():
        if value is not None:
            labels[label] = _duration(label, value)
    if retries is not None:
        labels[RETRIES_LABEL] = _integer(RETRIES_LABEL, retries)
    if on_failure is not None:
        labels[ON_FAILURE_LABEL] = _text(ON_FAILURE_LABEL, on_failure)
    check_labels(labels)
    return labels
