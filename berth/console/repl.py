"""``berth console``: the interactive console, on prompt_toolkit.

The same commands as the one-shot CLI (:mod:`berth.console.table`), plus
``help [COMMAND]``, ``use NAMESPACE`` and ``exit``. Tab completes commands,
flags and the daemon's live ids; the history is kept in a file across
sessions (``$BERTH_HISTORY``, else ``$XDG_STATE_HOME/berth/history``, else
``~/.local/state/berth/history``).

Ctrl-C at the prompt clears the line; during a command it cancels the
command (a followed ``events`` ends, a stream is cancelled on the daemon)
and the prompt comes back. Ctrl-D leaves. Every error is one line.

Before each command the console asks the daemon for its version, briefly:
a daemon that went away is reported as a lost connection, and the console
connects afresh (a dropped connection's queued requests are discarded, so
nothing sent to the old daemon is replayed to a new one).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory

from berth.console.completion import CommandCompleter
from berth.console.context import Session, connection_lost
from berth.console.dispatch import EXIT_USAGE, execute
from berth.console.render import error_line
from wire.errors import BerthError

__all__ = ["Console", "history_path", "run_console"]

_BANNER = "berth console: berthd {version} at {address}, namespace {ns}. 'help' lists commands.\n"


def history_path() -> Path:
    """Where the console keeps its history."""
    if os.environ.get("BERTH_HISTORY"):
        return Path(os.environ["BERTH_HISTORY"])
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "berth" / "history"


class Console:
    """The read-eval-print loop over one :class:`Session`."""

    def __init__(self, session: Session, history: Path | None = None) -> None:
        self.session = session
        path = history or history_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._prompt: PromptSession[str] = PromptSession(
            history=FileHistory(str(path)),
            completer=CommandCompleter(session),
            complete_while_typing=False,  # Tab asks the daemon; typing should not
        )
        self._connected = False
        self._lost = False

    def run(self) -> int:
        """Read and run commands until Ctrl-D or ``exit``; the console's exit status."""
        self._greet()
        while True:
            try:
                line = self._prompt.prompt(f"berth:{self.session.namespace}> ")
            except KeyboardInterrupt:
                continue  # Ctrl-C at the prompt: a fresh line
            except EOFError:
                break
            if not self.one(line):
                break
        self.session.disconnect()
        return 0

    def one(self, line: str) -> bool:
        """Run one line; False when it asks to leave."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self._say(f"berth: usage: {exc}\n")
            return True
        if not words:
            return True
        if words[0] in ("exit", "quit"):
            return False
        if words[0] == "use":
            self._use(words[1:])
            return True
        if words[0] != "help" and not self._reachable():
            return True
        try:
            execute(self.session, words)
        except KeyboardInterrupt:
            self._say("berth: cancelled\n")
        return True

    def _use(self, words: list[str]) -> None:
        if len(words) != 1:
            self._say(f"berth: usage: use NAMESPACE (now {self.session.namespace})\n")
            return
        try:
            self.session.use(words[0])
        except BerthError as exc:
            self._say(error_line(exc))

    def _greet(self) -> None:
        try:
            version = self.session.client.call("containerd.v1.Version/Version", {}, timeout=3.0)[
                "version"
            ]
            self._connected = True
        except BerthError as exc:
            self.session.disconnect()
            self._say(error_line(exc))
            version = "(not connected)"
        self.session.out.write(
            _BANNER.format(version=version, address=self.session.address, ns=self.session.namespace)
        )
        self.session.out.flush()

    def _reachable(self) -> bool:
        """Whether the daemon answers; reports a lost connection and a reconnection."""
        try:
            self._probe()
        except BerthError as exc:
            if self._connected:
                self._say(
                    f"berth: UNAVAILABLE: lost the connection to berthd at {self.session.address} "
                    f"({exc.message}); reconnecting on the next command\n"
                )
                self._lost = True
            else:
                self._say(error_line(exc))
            self._connected = False
            return False
        if self._lost:
            self._say(f"berth: reconnected to berthd at {self.session.address}\n")
            self._lost = False
        self._connected = True
        return True

    def _probe(self) -> None:
        """Probe; after a failure, once more on a fresh connection (raising if that fails)."""
        try:
            self.session.probe()
            return
        except BerthError as exc:
            if not connection_lost(exc):
                return  # it answered; the command will report its own errors
        # A dead connection's queued requests must not reach a restarted daemon.
        self.session.disconnect()
        try:
            self.session.probe()
        except BerthError as exc:
            self.session.disconnect()
            if connection_lost(exc):
                raise

    def _say(self, line: str) -> None:
        self.session.out.flush()
        self.session.err.write(line)
        self.session.err.flush()


def run_console(session: Session) -> int:
    """Run the console on ``session``; its exit status."""
    try:
        return Console(session).run()
    except OSError as exc:  # the history file's directory, or no terminal
        session.err.write(f"berth: console: {exc.strerror or exc}\n")
        return EXIT_USAGE
