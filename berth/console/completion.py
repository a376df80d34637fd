"""Tab completion for the console: commands, flags, and live ids from the daemon.

What a word can be is read off the command table: the first word is a
group or a command, the second a group's verb, then a flag (when the word
starts with ``-``), a flag's value, or the positional argument at that
place, whose :attr:`~berth.console.commands.Arg.complete` kind says where
its values come from: ``container``, ``task``, ``image``, ``snapshot`` and
``digest`` are asked from the daemon when Tab is pressed (with a short
deadline, and nothing offered when it does not answer), ``signal`` and
``path`` are local.
"""

from __future__ import annotations

import shlex
import signal
from collections.abc import Callable, Iterable, Iterator

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from berth.console.commands import Arg, Command
from berth.console.context import Session
from berth.console.table import GROUPS, TOP_LEVEL
from wire.errors import BerthError

__all__ = ["BUILTINS", "CommandCompleter", "live_values"]

BUILTINS = ("help", "use", "exit", "quit")
# Seconds the daemon has to answer a completion's question.
_LIVE_TIMEOUT = 2.0
_SIGNALS = sorted(s.name.removeprefix("SIG") for s in signal.Signals if "_" not in s.name)


def live_values(session: Session, kind: str) -> list[str]:
    """The ids of ``kind`` the daemon has now in the session's namespace."""
    client = session.client
    t = _LIVE_TIMEOUT
    if kind == "container":
        reply = client.call("containerd.v1.Containers/List", {"filter": ""}, timeout=t)
        return [c["id"] for c in reply["containers"]]
    if kind == "task":
        reply = client.call("containerd.v1.services.execution.Tasks/List", {}, timeout=t)
        return [task["id"] for task in reply["tasks"]]
    if kind == "image":
        reply = client.call("containerd.v1.Images/List", {}, timeout=t)
        return [i["name"] for i in reply["images"]]
    if kind == "snapshot":
        stream = client.stream("containerd.v1.snapshot.Snapshot/List", {}, timeout=t)
        return [info["name"] for batch in stream for info in batch["info"]]
    if kind == "digest":
        stream = client.stream("containerd.v1.Content/List", {}, timeout=t)
        return [info["digest"] for batch in stream for info in batch["info"]]
    return []


class CommandCompleter(Completer):
    """Completes a console line from the command table and the daemon's ids."""

    def __init__(self, session: Session, live: Callable[[Session, str], list[str]] = live_values):
        self._session = session
        self._live = live
        self._paths = PathCompleter(expanduser=True)

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        text = document.text_before_cursor
        words = _split(text)
        current = "" if not text or text[-1].isspace() else (words.pop() if words else "")
        if self._is_path(words):
            yield from self._paths.get_completions(Document(current), complete_event)
            return
        for value in sorted(set(self._candidates(words, current))):
            if value.startswith(current):
                yield Completion(value, start_position=-len(current))

    def _is_path(self, words: list[str]) -> bool:
        command, rest = _command(words)
        return command is not None and _kind(command, rest) == "path"

    def _candidates(self, words: list[str], current: str) -> Iterable[str]:
        if words[:1] == ["help"]:
            words = words[1:]
            if len(words) >= 2 or (len(words) == 1 and words[0] not in GROUPS):
                return []
        elif words[:1] == ["use"] or words[:1] == ["exit"] or words[:1] == ["quit"]:
            return []
        if not words:
            return [*GROUPS, *TOP_LEVEL, *BUILTINS]
        # A word that is also a command (``events``) takes flags as well as verbs.
        flag_of_command = words[0] in TOP_LEVEL and current.startswith("-")
        if len(words) == 1 and words[0] in GROUPS and not flag_of_command:
            return GROUPS[words[0]]
        command, rest = _command(words)
        if command is None:
            return []
        if current.startswith("-"):
            return [n for a in command.args if a.is_flag for n in a.names] + ["--json", "--help"]
        kind = _kind(command, rest)
        if kind == "signal":
            return _SIGNALS
        if kind is None or kind == "path":
            return []
        try:
            return self._live(self._session, kind)
        except BerthError:
            return []  # a daemon that does not answer offers nothing, quietly


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:  # an open quote: complete the words as typed
        return text.split()


def _command(words: list[str]) -> tuple[Command | None, list[str]]:
    # A group's verb first: ``events info`` is not ``events`` given "info".
    if len(words) >= 2 and words[0] in GROUPS and words[1] in GROUPS[words[0]]:
        return GROUPS[words[0]][words[1]], words[2:]
    if words and words[0] in TOP_LEVEL:
        return TOP_LEVEL[words[0]], words[1:]
    return None, []


def _kind(command: Command, rest: list[str]) -> str | None:
    """What the next word of ``command`` is, after its words ``rest``."""
    if rest:
        flag = command.flag(rest[-1])
        if flag is not None and flag.takes_value:
            return flag.complete
    positionals = command.positionals()
    index = _positional_index(command, rest)
    if index < len(positionals):
        return positionals[index].complete
    last: Arg | None = positionals[-1] if positionals else None
    return last.complete if last is not None and last.repeats else None


def _positional_index(command: Command, rest: list[str]) -> int:
    """How many positional words ``rest`` holds (flags and their values skipped)."""
    count = 0
    skip = False
    for word in rest:
        if skip:
            skip = False
        elif word.startswith("-"):
            flag = command.flag(word)
            skip = flag is not None and flag.takes_value
        else:
            count += 1
    return count
