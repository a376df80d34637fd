"""The one command table both the one-shot CLI and the console use.

Grouped as the daemon's services are: ``containers``, ``tasks``, ``images``,
``snapshots``, ``content``; and ``run``, ``events``, ``supervision`` (alias
``sv``), ``gc``, ``version`` on their own. Each module of handlers exports
its ``COMMANDS``; this module only puts them together, in the order
``help`` lists them.

A word may be both a command and a group (``events`` follows the log,
``events info`` describes it): a group's verb wins when it follows.
"""

from __future__ import annotations

from collections.abc import Sequence

from berth.console import (
    cmd_containers,
    cmd_daemon,
    cmd_events,
    cmd_run,
    cmd_storage,
    cmd_supervision,
    cmd_tasks,
)
from berth.console.commands import Command, UsageError

__all__ = ["COMMANDS", "GROUPS", "TOP_LEVEL", "find", "overview"]

COMMANDS: tuple[Command, ...] = (
    *cmd_run.COMMANDS,
    *cmd_containers.COMMANDS,
    *cmd_tasks.COMMANDS,
    *cmd_storage.COMMANDS,
    *cmd_events.COMMANDS,
    *cmd_supervision.COMMANDS,
    *cmd_daemon.COMMANDS,
)

GROUPS: dict[str, dict[str, Command]] = {}
TOP_LEVEL: dict[str, Command] = {}
for _command in COMMANDS:
    for _verb in (_command.verb, *_command.aliases):
        if _command.group is None:
            TOP_LEVEL[_verb] = _command
        else:
            GROUPS.setdefault(_command.group, {})[_verb] = _command


def find(words: Sequence[str]) -> tuple[Command, list[str]]:
    """The command ``words`` name, and the words after its name; UsageError if none."""
    if not words:
        raise UsageError("no command given (try 'help')")
    first, rest = words[0], list(words[1:])
    if first in GROUPS and rest and rest[0] in GROUPS[first]:
        return GROUPS[first][rest[0]], rest[1:]
    if first in TOP_LEVEL:
        return TOP_LEVEL[first], rest
    if first not in GROUPS:
        raise UsageError(f"unknown command {first!r} (try 'help')")
    verbs = GROUPS[first]
    if not rest:
        raise UsageError(f"{first}: give one of {', '.join(verbs)} (try 'help {first}')")
    if rest[0] not in verbs:
        raise UsageError(f"{first}: unknown command {rest[0]!r} (try 'help {first}')")
    return verbs[rest[0]], rest[1:]


def overview(group: str | None = None) -> str:
    """Every command (or a group's) with its summary, for ``help``."""
    commands = [c for c in COMMANDS if group is None or c.group == group]
    width = max(len(c.listed_name) for c in commands)
    lines = [f"  {c.listed_name:<{width}}  {c.summary}" for c in commands]
    return "\n".join(lines) + "\n"
