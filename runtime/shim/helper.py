"""Run the shim's heavy one-off work in a short-lived child, to keep the shim small.

A shim is a fork of the zygote: its memory is the zygote's, shared, until
Python writes to it, and Python writes to nearly everything it touches
(reference counts, the 3.11 interpreter's in-place specialization of the
bytecode it runs, free slots in half-used memory pools). Running runc
through :mod:`subprocess`, :mod:`tempfile`, :mod:`json` and :mod:`shutil`
once touches about 1 MB of such pages, which the shim would then keep
private for the task's whole life. So each runc command runs in a child
forked for it (:class:`ForkingRunc`): the child makes the call, writes its
result or error to a pipe as msgpack and exits, and the pages it dirtied go
with it. The shim waits for the child, as it used to wait for runc, so the
loop still never reaps while a runc command runs; processes runc leaves
behind (the container's init) are re-parented to the shim, the subreaper,
exactly as before, since the child is not one.

Errors cross back as the same classes: :class:`~runtime.runc.RuncError`
(and :class:`~runtime.runc.ContainerNotFound`) with their message, command
and status, any :class:`~wire.errors.BerthError` by its wire code,
``OSError`` by errno; anything else as an exception of the same name.
"""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from runtime.runc import (
    NOT_FOUND_TEXT,
    ContainerNotFound,
    Runc,
    RuncError,
    runc_error_message,
)
from wire.errors import BerthError, Unavailable, from_wire, to_wire

__all__ = ["ForkingRunc", "call_in_child", "fork"]

T = TypeVar("T")


# fork(2) itself, called with the GIL held (PyDLL), not os.fork(): see fork.
_libc_fork = ctypes.PyDLL(None, use_errno=True).fork
_libc_fork.restype = ctypes.c_int
_libc_fork.argtypes = []


def fork() -> int:
    """``fork(2)`` without the interpreter's at-fork hooks; the child's pid, or 0 in it.

    For single-threaded processes only: the zygote forking a shim, a shim
    forking a helper. ``os.fork()`` runs Python code on both sides: in the
    child threading's ``_after_fork``, logging's re-initialisation of its
    handlers' locks and random's reseeding; in the parent logging's lock
    release. For a shim that child's run is cold code, run once per shim:
    its code objects are quickened and every object it touches gets its
    count written, which copied about 300 KiB of the zygote's shared pages
    into each shim before it ran a line of its own. With one thread nothing
    those hooks reset is held by another: the child keeps the same thread
    (same ident, so ``threading`` and ``signal`` see their main thread), and
    a signal the parent had not handled yet runs its handler in the child,
    where the zygote's (``_reap_shims``) finds no child to reap. Not
    reseeding ``random`` is harmless: the shim does not use it, and
    ``tempfile`` makes a new generator when the pid changes.
    """
    pid = int(_libc_fork())
    if pid < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"fork: {os.strerror(errno)}")
    return pid


def call_in_child(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` run in a forked child; its result, or its error raised here.

    The result must be msgpack-able (None, numbers, strings, lists, maps).
    """
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = fork()
    except BaseException:
        os.close(read_end)
        os.close(write_end)
        raise
    if pid == 0:  # pragma: no cover - the child
        _child(write_end, fn, args, kwargs)
    os.close(write_end)
    chunks = []
    try:
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    try:
        reply = msgpack.unpackb(b"".join(chunks), raw=False)
    except Exception:
        reply = None
    if not isinstance(reply, dict) or not ("ok" in reply or "error" in reply):
        raise RuntimeError(f"helper process for {getattr(fn, '__name__', fn)} died")
    if "error" in reply:
        raise _decode(reply["error"])
    result: T = reply["ok"]
    return result


def _child(write_end: int, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
    status = 1
    try:
        try:
            reply = {"ok": fn(*args, **kwargs)}
        except BaseException as exc:
            reply = {"error": _encode(exc)}
        data = memoryview(msgpack.packb(reply, use_bin_type=True))
        while data:
            data = data[os.write(write_end, data) :]
        status = 0
    finally:
        os._exit(status)


def _encode(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, RuncError):
        return {
            "kind": "not_found" if isinstance(exc, ContainerNotFound) else "runc",
            "message": exc.message,
            "command": [str(part) for part in exc.command],
            "exit_status": exc.exit_status,
        }
    if isinstance(exc, BerthError):
        return {"kind": "berth", **to_wire(exc)}
    if isinstance(exc, OSError) and exc.errno is not None:
        filename = None if exc.filename is None else os.fsdecode(exc.filename)
        return {"kind": "os", "errno": exc.errno, "strerror": exc.strerror, "filename": filename}
    return {"kind": "other", "name": type(exc).__name__, "message": str(exc)}


def _decode(error: Any) -> BaseException:
    if not isinstance(error, dict):
        return RuntimeError(f"helper process: malformed error {error!r}")
    kind = error.get("kind")
    if kind in ("runc", "not_found"):
        cls = ContainerNotFound if kind == "not_found" else RuncError
        return cls(
            str(error.get("message")),
            command=list(error.get("command") or ()),
            exit_status=error.get("exit_status"),
        )
    if kind == "berth":
        return from_wire(error)
    if kind == "os":
        filename = error.get("filename")
        if filename is None:
            return OSError(error.get("errno"), error.get("strerror"))
        return OSError(error.get("errno"), error.get("strerror"), filename)
    name = str(error.get("name") or "Exception")
    same_name: type[Exception] = type(name, (Exception,), {})
    return same_name(error.get("message"))


def _unlink(path: str) -> None:
    # Not contextlib.suppress: each module the shim runs copies shared pages.
    try:  # noqa: SIM105
        os.unlink(path)
    except FileNotFoundError:
        pass


def _environ() -> Any:
    """The environment for posix_spawn, as the bytes dict behind ``os.environ``.

    posix_spawn reads a plain dict in C; given ``os.environ`` it iterates
    the mapping in Python, decoding and encoding every variable (100-odd
    calls of cold code per command, quickened in each shim). ``_data`` is
    what ``os.environ`` keeps in step with the process's environment.
    """
    return getattr(os.environ, "_data", os.environ)


def _raise_runc_error(log: str, command: list[str], subcommand: str, status: int) -> None:
    """Run in a helper child: the RuncError a failed lean command stands for."""
    message = runc_error_message(Path(log), None, subcommand, status)
    cls = ContainerNotFound if message == NOT_FOUND_TEXT else RuncError
    raise cls(message, command=command, exit_status=status)


class ForkingRunc(Runc):
    """A :class:`~runtime.runc.Runc` whose commands cost the shim little memory.

    Commands with real Python work around them (ps, state, checkpoint,
    restore, an exec with a terminal) run in a short-lived child; an exec
    without one is spawned and finished by the loop (:mod:`runtime.shim.execs`).
    The ones on the lifecycle's path
    (create, start, kill, delete, pause, resume) are spawned directly with
    ``posix_spawn`` and waited on with a pidfd: a few C calls, which touch
    almost none of the shim's shared pages, and no helper fork (about 3 ms
    per command). Only a failure pays for a child, to turn runc's JSON log
    into the error.
    """

    _resolved: str | None = None

    def _command(self, args: list[str], stdio: tuple[int, int, int] | None = None) -> None:
        log = f"{self.log_dir or '/tmp'}/runc-{os.getpid()}.log"
        pid, argv = self.spawn(args, log, stdio)
        pidfd = os.pidfd_open(pid)
        try:
            if not select.select([pidfd], [], [], self.timeout)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                _unlink(log)
                raise RuncError(f"runc {args[0]} timed out", command=argv)
        finally:
            os.close(pidfd)
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        self.check_exit(argv, log, status)

    def spawn(
        self, args: list[str], log: str, stdio: tuple[int, int, int] | None = None
    ) -> tuple[int, list[str]]:
        """Start ``runc <args>`` without waiting for it: ``(pid, argv)``.

        ``log`` is runc's JSON log, which :meth:`check_exit` reads and removes;
        the caller reaps the pid and passes its exit status there.
        """
        if self._resolved is None:
            # The daemon passes an absolute path (see TaskRuntime.shim_config);
            # a bare name is looked up in a child, away from shared pages.
            if os.path.isabs(self.binary):
                self._resolved = self.binary
            else:
                self._resolved = call_in_child(shutil.which, self.binary)
            if self._resolved is None or not os.access(self._resolved, os.X_OK):
                raise Unavailable(f'runtime binary "{self.binary}" not found')
        _unlink(log)  # runc appends to its log
        argv = [self._resolved, "--root", str(self.root), "--log", log, "--log-format", "json"]
        argv += args
        # The new process inherits stdio as its 0, 1, 2 (create, exec).
        actions = (
            [(os.POSIX_SPAWN_DUP2, fd, to) for to, fd in enumerate(stdio) if fd != to]
            if stdio
            else []
        )
        pid = os.posix_spawn(self._resolved, argv, _environ(), file_actions=actions)
        return pid, argv

    def check_exit(self, argv: list[str], log: str, status: int) -> None:
        """Raise runc's error for a command that exited ``status`` (if not 0); remove its log."""
        try:
            if status != 0:
                # argv is [runc, --root, R, --log, L, --log-format, json, subcommand, ...]
                call_in_child(_raise_runc_error, log, argv, argv[7], status)
        finally:
            _unlink(log)

    def state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return call_in_child(super().state, *args, **kwargs)

    def exec(self, *args: Any, **kwargs: Any) -> int:
        return call_in_child(super().exec, *args, **kwargs)

    def ps(self, *args: Any, **kwargs: Any) -> list[int]:
        return call_in_child(super().ps, *args, **kwargs)

    def checkpoint(self, *args: Any, **kwargs: Any) -> None:
        return call_in_child(super().checkpoint, *args, **kwargs)

    def restore(self, *args: Any, **kwargs: Any) -> int:
        return call_in_child(super().restore, *args, **kwargs)

    def criu_available(self) -> str | None:
        return call_in_child(super().criu_available)

    def list(self) -> list[dict[str, Any]]:
        return call_in_child(super().list)
