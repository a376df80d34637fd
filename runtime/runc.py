"""The runc driver: one method per runc subcommand, errors carrying runc's own text.

Every call runs ``runc --root ROOT --log LOGFILE --log-format json <cmd> ...``
with a fresh log file, waits for that one runc process (never for any other
child: the caller may be a shim that reaps its containers itself) and, when
runc exits non-zero, raises :class:`RuncError` whose message is the last
error-level ``msg`` of the JSON log, e.g.::

    runc create failed: unable to start container process: exec: "/nope":
    stat /nope: no such file or directory

``create``, ``exec`` and ``restore`` hand the given stdio fds to runc, which
passes them on to the container's process; call them from the process that
should become the container's parent by subreaper (the shim), since runc
forks the process and exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wire.errors import Unavailable

__all__ = [
    "DEFAULT_ROOT",
    "NOT_FOUND_TEXT",
    "ContainerNotFound",
    "Runc",
    "RuncError",
    "runc_error_message",
]

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/run/berth/runc")
_ERROR_LEVELS = frozenset({"error", "fatal", "panic"})
# runc's wording when the id has no state directory under --root.
NOT_FOUND_TEXT = "container does not exist"


class RuncError(Exception):
    """runc exited non-zero; ``message`` is runc's own error text (also ``args[0]``)."""

    def __init__(
        self, message: str, *, command: Sequence[str] = (), exit_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.command = list(command)
        self.exit_status = exit_status


class ContainerNotFound(RuncError):
    """runc has no container of that id under its root."""


class Runc:
    """Runs runc subcommands for containers kept under ``root``."""

    def __init__(
        self,
        binary: str = "runc",
        root: Path = DEFAULT_ROOT,
        *,
        log_dir: Path | None = None,
        criu: str = "criu",
        timeout: float = 30.0,
    ) -> None:
        self.binary = binary
        self.root = Path(root)
        # None: the system's temporary directory; each call's log is removed
        # once read, its useful line having moved into RuncError.
        self.log_dir = log_dir
        self.criu = criu
        self.timeout = timeout

    # -- lifecycle -------------------------------------------------------

    def create(
        self,
        id: str,
        bundle: Path,
        *,
        pid_file: Path,
        stdin: int,
        stdout: int,
        stderr: int,
        console_socket: Path | None = None,
    ) -> int:
        """``runc create``; the init inherits the stdio fds; returns its pid."""
        args = ["create", "--bundle", str(bundle), "--pid-file", str(pid_file)]
        args += _console(console_socket)
        self._command([*args, id], stdio=(stdin, stdout, stderr))
        return _read_pid(pid_file)

    def start(self, id: str) -> None:
        """``runc start``: let the created init exec the user's process."""
        self._command(["start", id])

    def state(self, id: str) -> dict[str, Any]:
        """``runc state``, parsed; raises ContainerNotFound when runc has no such id."""
        value = json.loads(self._run(["state", id]))
        if not isinstance(value, dict):
            raise RuncError(f"runc state {id}: unexpected output {value!r}")
        return value

    def kill(self, id: str, signal: int, *, all: bool = False) -> None:
        """``runc kill``: signal the init, or every process with ``all``."""
        self._command(["kill", *(["--all"] if all else []), id, str(int(signal))])

    def delete(self, id: str, *, force: bool = False) -> None:
        """``runc delete``; with ``force`` a running container is killed first.

        runc 1.1 answers success for ``delete --force`` of an unknown id.
        """
        self._command(["delete", *(["--force"] if force else []), id])

    def exec(
        self,
        id: str,
        process: dict[str, Any],
        *,
        pid_file: Path,
        stdin: int,
        stdout: int,
        stderr: int,
        console_socket: Path | None = None,
    ) -> int:
        """Detached ``runc exec`` of an OCI process; returns the new process's pid."""
        # The process JSON goes next to the pid file: both belong to the
        # task's state directory and vanish with it.
        fd, name = tempfile.mkstemp(
            prefix=f".{pid_file.name}.", suffix=".process.json", dir=pid_file.parent
        )
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(process, f)
            args = ["exec", "--detach", "--pid-file", str(pid_file), "--process", name]
            args += _console(console_socket)
            self._run([*args, id], stdio=(stdin, stdout, stderr))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
        return _read_pid(pid_file)

    def ps(self, id: str) -> list[int]:
        """Host pids of the container's processes (``runc ps --format json``)."""
        value = json.loads(self._run(["ps", "--format", "json", id]))
        return [int(pid) for pid in value or []]

    def pause(self, id: str) -> None:
        """``runc pause``: freeze every process of the container."""
        self._command(["pause", id])

    def resume(self, id: str) -> None:
        """``runc resume``: thaw a paused container."""
        self._command(["resume", id])

    # -- checkpoint and restore ------------------------------------------

    def checkpoint(
        self,
        id: str,
        image_path: Path,
        work_path: Path,
        *,
        leave_running: bool = True,
        allow_tcp: bool = False,
        allow_unix_sockets: bool = False,
        allow_terminal: bool = False,
        file_locks: bool = False,
        empty_namespaces: Sequence[str] = (),
    ) -> None:
        """``runc checkpoint`` into ``image_path`` (CRIU's log in ``work_path``)."""
        args = ["checkpoint", "--image-path", str(image_path), "--work-path", str(work_path)]
        flags = {
            "--leave-running": leave_running,
            "--tcp-established": allow_tcp,
            "--ext-unix-sk": allow_unix_sockets,
            "--shell-job": allow_terminal,
            "--file-locks": file_locks,
        }
        args += [flag for flag, on in flags.items() if on]
        for ns in empty_namespaces:
            args += ["--empty-ns", ns]
        self._run([*args, id], criu_log=work_path / "dump.log")

    def restore(
        self,
        id: str,
        bundle: Path,
        image_path: Path,
        work_path: Path,
        *,
        pid_file: Path,
        stdin: int,
        stdout: int,
        stderr: int,
        console_socket: Path | None = None,
    ) -> int:
        """Detached ``runc restore`` from ``image_path``; returns the restored init's pid."""
        args = ["restore", "--detach", "--bundle", str(bundle), "--pid-file", str(pid_file)]
        args += ["--image-path", str(image_path), "--work-path", str(work_path)]
        args += _console(console_socket)
        self._run([*args, id], stdio=(stdin, stdout, stderr), criu_log=work_path / "restore.log")
        return _read_pid(pid_file)

    def criu_available(self) -> str | None:
        """None when CRIU can checkpoint on this host, else the reason in CRIU's words."""
        criu = shutil.which(self.criu)
        if criu is None:
            return f'criu not installed ("{self.criu}" not found)'
        try:
            done = subprocess.run(
                [criu, "check"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return "criu check timed out"
        if done.returncode == 0:
            return None
        text = (done.stderr + done.stdout).decode(errors="replace").strip()
        return text or f"criu check exited with status {done.returncode}"

    # -- the one place runc is run -----------------------------------------

    def _command(self, args: list[str], stdio: tuple[int, int, int] | None = None) -> None:
        """A command with no output to read (create, start, kill, delete, pause, resume)."""
        self._run(args, stdio=stdio)

    def _run(
        self,
        args: list[str],
        *,
        stdio: tuple[int, int, int] | None = None,
        criu_log: Path | None = None,
    ) -> bytes:
        """Run one runc command; its stdout, or RuncError with runc's message."""
        binary = shutil.which(self.binary)
        if binary is None:
            raise Unavailable(f'runtime binary "{self.binary}" not found')
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        fd, log_name = tempfile.mkstemp(prefix=f"runc-{args[0]}-", suffix=".json", dir=self.log_dir)
        os.close(fd)
        argv = [binary, "--root", str(self.root), "--log", log_name, "--log-format", "json"]
        if self.criu != "criu":
            argv += ["--criu", self.criu]
        argv += args
        log.debug("running %s", " ".join(argv))
        try:
            try:
                done = _execute(argv, stdio, self.timeout)
            except FileNotFoundError as exc:
                raise Unavailable(f'runtime binary "{self.binary}" not found') from exc
            except subprocess.TimeoutExpired as exc:
                raise RuncError(f"runc {args[0]} timed out", command=argv) from exc
            if done.returncode != 0:
                message = runc_error_message(Path(log_name), done.stderr, args[0], done.returncode)
                if criu_log is not None:
                    message = _with_criu_errors(message, criu_log)
                cls = ContainerNotFound if message == NOT_FOUND_TEXT else RuncError
                raise cls(message, command=argv, exit_status=done.returncode)
            return done.stdout or b""
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(log_name)

    # Last in the class: below it, "list" in an annotation would name this method.
    def list(self) -> list[dict[str, Any]]:
        """``runc list --format json``: each container's id, pid, status, bundle."""
        value = json.loads(self._run(["list", "--format", "json"]))
        # runc prints "null", not "[]", when it knows no container.
        return list(value or [])


def _execute(
    argv: list[str], stdio: tuple[int, int, int] | None, timeout: float
) -> subprocess.CompletedProcess[bytes]:
    """Run runc to its exit, noticing the exit at once.

    ``subprocess.run(timeout=...)`` polls for the exit with doubling sleeps
    (up to 50 ms), so a 32 ms ``runc create`` was seen after 63 ms; a pidfd
    wakes us the moment runc exits.
    """
    if stdio is None:
        with subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as proc:
            try:
                # Returns at EOF on both pipes, i.e. as runc exits.
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
            return subprocess.CompletedProcess(argv, proc.returncode, out, err)
    # The container's process inherits these as its 0, 1, 2; close_fds keeps
    # every other fd of ours out of it.
    proc = subprocess.Popen(argv, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2], close_fds=True)
    pidfd = os.pidfd_open(proc.pid)
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            proc.kill()
            proc.wait()
            raise subprocess.TimeoutExpired(argv, timeout)
    finally:
        os.close(pidfd)
    return subprocess.CompletedProcess(argv, proc.wait(), b"", b"")


def _console(console_socket: Path | None) -> list[str]:
    return [] if console_socket is None else ["--console-socket", str(console_socket)]


def _read_pid(pid_file: Path) -> int:
    # os-level: the shim runs this, and every module it touches costs it pages.
    fd = os.open(pid_file, os.O_RDONLY | os.O_CLOEXEC)
    try:
        text = os.read(fd, 64).decode(errors="replace").strip()
    finally:
        os.close(fd)
    try:
        return int(text)
    except ValueError:
        raise RuncError(f"runc wrote no pid to {pid_file}: {text!r}") from None


def runc_error_message(log_file: Path, stderr: bytes | None, command: str, status: int) -> str:
    """The last error-level ``msg`` of runc's JSON log, else its stderr, else the status."""
    message = ""
    with contextlib.suppress(OSError):
        for line in log_file.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in _ERROR_LEVELS:
                message = str(entry.get("msg", "")) or message
    if not message and stderr:
        message = stderr.decode(errors="replace").strip()
    return message or f"runc {command} exited with status {status}"


def _with_criu_errors(message: str, criu_log: Path) -> str:
    """Append CRIU's own error lines: runc only says "criu failed: type DUMP errno 0"."""
    try:
        lines = criu_log.read_text(errors="replace").splitlines()
    except OSError:
        return message
    errors = [line.strip() for line in lines if "Error" in line][-3:]
    return "; ".join([message, *errors]) if errors else message
