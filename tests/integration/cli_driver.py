"""Drive the ``berth`` command: one-shot through subprocess, the console through a pty.

Shared by ``tests/integration/test_cli.py`` and ``tests/e2e/test_console.py``.
The command runs as ``python -m berth.cli`` from the repository, so the tests
do not depend on the installed script.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "berth:default>"
_ANSI = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-z]|[()][0-9A-Za-z]|[=>])")


@dataclass
class Result:
    """What one ``berth`` run gave: exit status, stdout, stderr."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def fields(self) -> dict[str, str]:
        """The ``key: value`` lines printed by an ``info`` command."""
        pairs = (line.split(":", 1) for line in self.out.splitlines() if ":" in line)
        return {key.strip(): value.strip() for key, value in pairs}

    def rows(self) -> list[list[str]]:
        """The table printed, split on runs of two or more spaces (header first)."""
        return [re.split(r"\s{2,}", line.strip()) for line in self.out.splitlines() if line]


def berth(address: str, *args: str, timeout: float = 60, stdin: str | None = None) -> Result:
    """Run ``berth -a ADDRESS ARGS...`` to completion."""
    proc = subprocess.run(
        [sys.executable, "-m", "berth.cli", "-a", address, *args],
        cwd=ROOT,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def console_env(address: str, history: Path) -> dict[str, str]:
    """The environment of a console under test: its daemon, its history file, a plain xterm."""
    env = dict(os.environ)
    env.update(
        BERTH_ADDRESS=address,
        BERTH_HISTORY=str(history),
        TERM="xterm",
        # pexpect's terminal does not answer cursor position requests.
        PROMPT_TOOLKIT_NO_CPR="1",
    )
    env.pop("BERTH_NAMESPACE", None)
    return env


def spawn_berth(address: str, *args: str, history: Path, rows: int = 24, cols: int = 120) -> Any:
    """``berth -a ADDRESS ARGS...`` on a fresh pty (pexpect)."""
    import pexpect

    return pexpect.spawn(
        sys.executable,
        ["-m", "berth.cli", "-a", address, *args],
        cwd=str(ROOT),
        env=console_env(address, history),
        encoding="utf-8",
        codec_errors="replace",
        dimensions=(rows, cols),
        timeout=20,
    )


def spawn_console(address: str, history: Path, *, rows: int = 24, cols: int = 120) -> Any:
    """``berth console`` on a fresh pty, once its first prompt is shown."""
    child = spawn_berth(address, "console", history=history, rows=rows, cols=cols)
    child.expect_exact(PROMPT)
    return child


def plain(text: str) -> str:
    """Terminal output without escape sequences and carriage returns."""
    return _ANSI.sub("", text).replace("\r", "")
