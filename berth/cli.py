"""``berth``: the command line of berthd, one-shot or as an interactive console.

::

    berth [-a ADDRESS] [-n NAMESPACE] [--json] [--timeout S] GROUP VERB [ARG...]
    berth [-a ADDRESS] [-n NAMESPACE] console
    berth                                   (on a terminal: the console)

The commands, their help and their handlers live in :mod:`berth.console`;
this module only reads the global options and picks the mode.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from berth.console.commands import CommandParser, HelpShown, UsageError
from berth.console.context import DEFAULT_TIMEOUT, Session
from berth.console.dispatch import EXIT_USAGE, execute, usage_text

__all__ = ["main"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


def _parser() -> CommandParser:
    p = CommandParser(prog="berth", add_help=False, allow_abbrev=False)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("-a", "--address")
    p.add_argument("-n", "--namespace")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    p.add_argument("words", nargs=argparse.REMAINDER)
    return p


def run(argv: Sequence[str]) -> int:
    """The exit status of ``berth ARGV``."""
    try:
        options = _parser().parse_args(argv)
    except (UsageError, HelpShown) as exc:
        sys.stderr.write(f"berth: usage: {exc}\n")
        return EXIT_USAGE
    if options.help:
        sys.stdout.write(usage_text())
        return 0
    timeout = options.timeout if options.timeout > 0 else None
    session = Session.from_options(options.address, options.namespace, options.json, timeout)
    words: list[str] = options.words
    if not words or words == ["console"]:
        if not words and not sys.stdin.isatty():
            sys.stderr.write(usage_text())
            return EXIT_USAGE
        # Imported here: prompt_toolkit costs a one-shot command time it never uses.
        from berth.console.repl import run_console

        return run_console(session)
    try:
        return execute(session, words)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        session.disconnect()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``berth`` script."""
    sys.exit(run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
