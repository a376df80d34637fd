"""What a console command is: a handler, its arguments, and the parser built from both.

A :class:`Command` pairs a handler function with the :class:`Arg` list of
its command line. The handler's docstring is the command's help: its first
line is the summary shown by ``help``, the rest the description shown by
``help GROUP VERB`` and by ``--help``, which are the same text because both
come from :meth:`Command.parser`.

Parsers never exit the process: a usage error raises :class:`UsageError`
(one line; exit status 2 in the one-shot CLI) and ``--help`` raises
:class:`HelpShown` after printing, so the console survives both.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from berth.console.context import Context

__all__ = ["Arg", "Command", "CommandParser", "Handler", "HelpShown", "UsageError", "arg"]

Handler = Callable[["Context", argparse.Namespace], "int | None"]


class UsageError(Exception):
    """The command line is wrong; the message is one line saying how."""


class HelpShown(Exception):
    """``--help`` printed the help; there is nothing else to do."""


@dataclass(frozen=True)
class Arg:
    """One argument as ``argparse.add_argument`` takes it, plus what completes it.

    ``complete`` names a kind of live value the console offers on Tab:
    ``container``, ``task``, ``image``, ``snapshot``, ``digest`` (from the
    daemon), or ``signal``.
    """

    names: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    complete: str | None = None

    @property
    def is_flag(self) -> bool:
        return self.names[0].startswith("-")

    @property
    def takes_value(self) -> bool:
        """Whether a flag consumes the next word (``--filter X``, not ``--rm``)."""
        action = self.options.get("action", "store")
        return self.is_flag and action in ("store", "append")

    @property
    def repeats(self) -> bool:
        """Whether a positional takes several words (``ID...``)."""
        return self.options.get("nargs") in ("*", "+", argparse.REMAINDER)


def arg(*names: str, complete: str | None = None, **options: Any) -> Arg:
    """An :class:`Arg`: ``arg("--filter", metavar="F", help=...)``."""
    return Arg(names, options, complete)


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog.removeprefix('berth ')}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        # Reached only from --help (errors go through error() above).
        raise HelpShown()


@dataclass(frozen=True)
class Command:
    """One entry of the command table: ``containers ls``, ``run``, ..."""

    group: str | None
    verb: str
    handler: Handler
    args: tuple[Arg, ...] = ()
    aliases: tuple[str, ...] = ()  # other verbs for it: ``sv`` for ``supervision``

    @property
    def name(self) -> str:
        """How the command is typed: ``"containers ls"`` or ``"run"``."""
        return f"{self.group} {self.verb}" if self.group else self.verb

    @property
    def listed_name(self) -> str:
        """The name as ``help`` lists it, with its aliases: ``"supervision (sv)"``."""
        return f"{self.name} ({', '.join(self.aliases)})" if self.aliases else self.name

    @property
    def summary(self) -> str:
        """The first line of the handler's docstring."""
        return self._doc().partition("\n")[0].strip()

    def _doc(self) -> str:
        return inspect.getdoc(self.handler) or self.name

    def parser(self) -> CommandParser:
        """The command's parser; its help is the handler's docstring."""
        parser = CommandParser(
            prog=f"berth {self.name}",
            description=self._doc(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        for a in self.args:
            parser.add_argument(*a.names, **a.options)
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")
        return parser

    def flag(self, word: str) -> Arg | None:
        """The flag argument spelled ``word``, if the command has one."""
        return next((a for a in self.args if a.is_flag and word in a.names), None)

    def positionals(self) -> list[Arg]:
        return [a for a in self.args if not a.is_flag]

    def help_text(self) -> str:
        return self.parser().format_help()
