"""Run one command line against a session: what the one-shot CLI and the console share.

:func:`execute` finds the command in the table, parses its arguments, calls
its handler and turns every failure into one line on stderr and an exit
status: 0 success, 1 a daemon error (``berth: NOT_FOUND: container "web":
not found``) or a local failure, 2 a usage error; ``run``, ``tasks start``
and ``tasks exec`` return the process's own status. No traceback is ever
printed (set ``BERTH_DEBUG=1`` to see one).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from berth.console.commands import HelpShown, UsageError
from berth.console.context import Context, Session, connection_lost
from berth.console.render import error_line
from berth.console.table import GROUPS, TOP_LEVEL, find, overview
from wire.errors import BerthError, Internal

__all__ = ["EXIT_ERROR", "EXIT_USAGE", "execute", "help_text", "usage_text"]

EXIT_ERROR = 1
EXIT_USAGE = 2

log = logging.getLogger(__name__)

USAGE = """\
usage: berth [-a ADDRESS] [-n NAMESPACE] [--json] [--timeout SECONDS] COMMAND [ARG...]
       berth [-a ADDRESS] [-n NAMESPACE] console

berth drives berthd: one-shot commands for scripts, or an interactive
console (`berth console`, or plain `berth` on a terminal).

options:
  -a, --address ADDRESS  daemon address (default $BERTH_ADDRESS, else
                         ipc:///run/berth/berth.sock)
  -n, --namespace NS     namespace (default $BERTH_NAMESPACE, else default)
  --json                 print JSON for scripts
  --timeout SECONDS      how long a call may take (default 30; 0: no limit)

commands:
"""

FOOTER = """
`berth help COMMAND` or `berth COMMAND --help` shows a command's arguments.
Exit status: 0 success, 1 error (one line: code and message), 2 usage error;
run, tasks start and tasks exec exit with the process's status.
"""


def usage_text() -> str:
    """The whole help: options, then every command with its summary."""
    return USAGE + overview() + FOOTER


def help_text(words: Sequence[str]) -> str:
    """``help``, ``help GROUP`` or ``help GROUP VERB``: the same text as ``--help``."""
    if not words:
        return usage_text()
    if len(words) == 1 and words[0] in GROUPS and words[0] not in TOP_LEVEL:
        return f"{words[0]} commands:\n" + overview(words[0])
    command, rest = find(words)
    if rest:
        raise UsageError(f"help: {command.name} takes no sub-command {rest[0]!r}")
    return command.help_text()


def execute(session: Session, words: Sequence[str]) -> int:
    """Run the command ``words`` name; its exit status. Failures are printed, one line.

    KeyboardInterrupt is left to the caller: the console returns to its
    prompt, the one-shot CLI exits 130.
    """
    try:
        if words and words[0] == "help":
            session.out.write(help_text(words[1:]))
            session.out.flush()
            return 0
        command, rest = find(words)
        args = command.parser().parse_args(rest)
        status = command.handler(Context(session, json=session.json or args.json), args)
        return 0 if status is None else status
    except HelpShown:
        return 0
    except UsageError as exc:
        return _fail(session, f"berth: usage: {exc}\n", EXIT_USAGE)
    except BerthError as exc:
        if connection_lost(exc):
            # Requests queued on a dead connection would reach a restarted daemon.
            session.disconnect()
        return _fail(session, error_line(exc), EXIT_ERROR)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(session, f"berth: {exc.strerror or exc}{where}\n", EXIT_ERROR)
    except Exception as exc:
        # A bug of ours: one line, as promised; the traceback only on request.
        if os.environ.get("BERTH_DEBUG"):
            log.exception("unexpected error")
        message = f"{type(exc).__name__}: {exc}"
        return _fail(session, error_line(Internal(message)), EXIT_ERROR)


def _fail(session: Session, line: str, status: int) -> int:
    session.out.flush()
    session.err.write(line)
    session.err.flush()
    return status
