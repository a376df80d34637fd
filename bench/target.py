"""The daemon under test: one given by address, or a berthd this run spawns.

A spawned daemon gets a fresh temporary directory holding its root, its
state and its ipc socket (a short path: ipc paths are limited to ~107
bytes), logs at ``warning`` level into ``berthd.log`` there, and is stopped
with SIGTERM at the end. Only a spawned daemon's memory can be read
(``RssAnon`` of ``/proc/<pid>/status``).

``tree`` spawns the berthd of another source tree (e.g. a ``git worktree``
of an older commit): the same interpreter, run in that directory with it
first on ``PYTHONPATH``, so ``python -m berth.daemon`` and everything it
imports (and the zygote and shims it starts, which inherit the
environment) come from there. ``config`` is written as the daemon's TOML
file (``--config``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CpuMeter", "Target", "TargetError", "host_busy", "open_target", "read_status_kib"]

_BIND_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 60.0


class TargetError(RuntimeError):
    """The daemon could not be started, or died."""


def read_status_kib(pid: int, field_name: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (e.g. ``RssAnon``), or None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == field_name:
            return int(value.split()[0])
    return None


def _process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far, or None if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state is fields[0]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _host_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, from ``/proc/stat``."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


class CpuMeter:
    """CPU use over a window: the daemon's (in cores, when its pid is known) and the host's.

    Call :meth:`begin` and :meth:`end` around the window, from any thread.
    """

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.daemon_cores: float | None = None
        self.host_busy: float | None = None  # fraction of all the machine's CPUs
        self._start: tuple[float, float | None, tuple[int, int]] | None = None

    def begin(self) -> None:
        """Start the window."""
        cpu = None if self.pid is None else _process_cpu_s(self.pid)
        self._start = (time.monotonic(), cpu, _host_ticks())

    def end(self) -> None:
        """End the window and compute the figures."""
        if self._start is None:
            return
        began, cpu_before, (busy_before, total_before) = self._start
        wall = time.monotonic() - began
        busy, total = _host_ticks()
        if total > total_before:
            self.host_busy = (busy - busy_before) / (total - total_before)
        cpu_after = None if self.pid is None else _process_cpu_s(self.pid)
        if cpu_before is not None and cpu_after is not None and wall > 0:
            self.daemon_cores = (cpu_after - cpu_before) / wall


def host_busy(seconds: float) -> float | None:
    """The fraction of the machine's CPU busy over the next ``seconds``."""
    meter = CpuMeter(None)
    meter.begin()
    time.sleep(seconds)
    meter.end()
    return meter.host_busy


@dataclass
class Target:
    """Where the daemon is, and the process when this run spawned it."""

    address: str
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    state_dir: Path | None = None
    exit_code: int | None = None
    killed: bool = False  # it ignored SIGTERM for _STOP_TIMEOUT_S and was killed

    @property
    def spawned(self) -> bool:
        """Whether this run started the daemon (and so can read its memory)."""
        return self.proc is not None

    @property
    def pid(self) -> int | None:
        """The spawned daemon's pid."""
        return None if self.proc is None else self.proc.pid

    @property
    def log_path(self) -> Path | None:
        """The spawned daemon's log file."""
        return None if self.workdir is None else self.workdir / "berthd.log"

    def rss_anon_kib(self) -> int | None:
        """The spawned daemon's anonymous resident memory in KiB, else None."""
        return None if self.proc is None else read_status_kib(self.proc.pid, "RssAnon")

    def check_alive(self) -> None:
        """Raise :class:`TargetError` if the spawned daemon has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise TargetError(f"berthd exited {self.proc.returncode}: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> list[str]:
        """The last lines the spawned daemon logged."""
        path = self.log_path
        if path is None or not path.exists():
            return []
        return path.read_text(errors="replace").splitlines()[-lines:]

    def to_json(self, pid: int | None = None) -> dict[str, Any]:
        """The daemon's part of a JSON report (``pid`` overrides the spawned one's)."""
        return {
            "spawned": self.spawned,
            "pid": self.pid if pid is None else pid,
            "exit_code": self.exit_code,
            "killed_after_sigterm": self.killed,
            "log_tail": self.log_tail(),
        }

    def stop(self) -> int | None:
        """SIGTERM the spawned daemon and wait for it; its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait()
        self.exit_code = self.proc.returncode
        return self.exit_code


def _state_parent() -> str | None:
    # berthd's default state dir, /run/berth, is a tmpfs on a normal host;
    # where this machine's /run is not, take /dev/shm so the shims' exit
    # files cost what they cost in production (the root stays on disk).
    try:
        with open("/proc/self/mounts") as mounts:
            tmpfs = {line.split()[1] for line in mounts if line.split()[2] == "tmpfs"}
    except OSError:
        return None
    for candidate in ("/run", "/dev/shm"):
        if candidate in tmpfs:
            return candidate
    return None


def _toml(config: dict[str, int | float | str]) -> str:
    """``config`` as TOML: flat keys of ints, floats and strings."""
    lines = []
    for key, value in config.items():
        text = f'"{value}"' if isinstance(value, str) else repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def _spawn(
    parent_dir: str | None,
    log_level: str,
    tree: Path | None = None,
    config: dict[str, int | float | str] | None = None,
) -> Target:
    workdir = Path(tempfile.mkdtemp(prefix="bb-", dir=parent_dir or "/tmp"))
    sock = workdir / "b.sock"
    state_parent = _state_parent()
    state = (
        Path(tempfile.mkdtemp(prefix="bb-state-", dir=state_parent))
        if state_parent
        else workdir / "state"
    )
    target = Target(address=f"ipc://{sock}", workdir=workdir, state_dir=state)
    extra: list[str] = []
    if config:
        (workdir / "berthd.toml").write_text(_toml(config))
        extra = ["--config", str(workdir / "berthd.toml")]
    env = None
    if tree is not None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(tree), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    log = open(workdir / "berthd.log", "ab")  # noqa: SIM115 - the child owns it
    target.proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "berth.daemon",
            "--root",
            str(workdir / "root"),
            "--state",
            str(state),
            "--address",
            target.address,
            "--log-level",
            log_level,
            *extra,
        ],
        cwd=tree,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    deadline = time.monotonic() + _BIND_TIMEOUT_S
    while not sock.exists():
        target.check_alive()
        if time.monotonic() > deadline:
            target.stop()
            raise TargetError(f"berthd did not bind {target.address}: {target.log_tail()}")
        time.sleep(0.02)
    return target


@contextmanager
def open_target(
    address: str | None,
    *,
    workdir: str | None = None,
    log_level: str = "warning",
    tree: Path | None = None,
    config: dict[str, int | float | str] | None = None,
) -> Iterator[Target]:
    """The daemon at ``address``, or a spawned one (stopped and removed on exit).

    A spawned one runs from source ``tree`` when given, with ``config`` as its TOML file.
    """
    if address is not None:
        yield Target(address=address)
        return
    target = _spawn(workdir, log_level, tree, config)
    try:
        yield target
    finally:
        target.stop()
        if target.workdir is not None:
            shutil.rmtree(target.workdir, ignore_errors=True)
        if target.state_dir is not None:
            shutil.rmtree(target.state_dir, ignore_errors=True)
