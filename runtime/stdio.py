"""A task's stdio as the wire gives it: ``""``, a FIFO path, or ``file:///abs/path``.

- ``""``: ``/dev/null``.
- an absolute path of an existing FIFO: the client's end of a pipe it reads
  (stdout, stderr) or writes (stdin).
- ``file:///abs/path``: a log file, appended to and created (with its
  directory) when missing, as containerd's shim does.

Anything else is ``INVALID_ARGUMENT``, checked before anything is created.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from dataclasses import dataclass

from wire.errors import FailedPrecondition, InvalidArgument

__all__ = ["FILE_SCHEME", "StdioFds", "check_stdio", "open_stdio"]

FILE_SCHEME = "file://"


def check_stdio(value: str, *, field: str, owner: str) -> None:
    """Raise InvalidArgument naming ``field`` unless ``value`` is a valid stdio target."""
    if value == "":
        return
    if "\0" in value:
        raise InvalidArgument(f"{owner}: {field} must not contain a NUL character")
    if value.startswith(FILE_SCHEME):
        path = value[len(FILE_SCHEME) :]
        if not path.startswith("/"):
            raise InvalidArgument(
                f'{owner}: {field} "{value}": a file:// target needs an absolute path'
            )
        if os.path.isdir(path):
            raise InvalidArgument(f'{owner}: {field} "{value}": is a directory')
        return
    if "://" in value:
        raise InvalidArgument(
            f'{owner}: {field} "{value}": only FIFO paths and file:// targets are supported'
        )
    if not value.startswith("/"):
        raise InvalidArgument(f'{owner}: {field} "{value}": must be an absolute path')
    try:
        mode = os.stat(value).st_mode
    except OSError as exc:
        raise InvalidArgument(
            f'{owner}: {field} "{value}": no such FIFO ({exc.strerror})'
        ) from None
    if not stat.S_ISFIFO(mode):
        raise InvalidArgument(
            f'{owner}: {field} "{value}": not a FIFO (give a log file as file://{value})'
        )


@dataclass
class StdioFds:
    """The three fds a container's process gets as 0, 1 and 2; ours to close."""

    stdin: int
    stdout: int
    stderr: int

    def close(self) -> None:
        """Close the fds that are still open; safe to call twice."""
        for name in ("stdin", "stdout", "stderr"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)


def open_stdio(stdin: str, stdout: str, stderr: str, *, owner: str = "task") -> StdioFds:
    """Open the three targets for a container; FailedPrecondition when one cannot be.

    The fds are close-on-exec: runc receives them as its 0, 1, 2 (dup2 clears
    the flag there), and no other child of ours inherits them.
    """
    fds = StdioFds(-1, -1, -1)
    try:
        fds.stdin = _open_in(stdin, owner=owner)
        fds.stdout = _open_out(stdout, field="stdout", owner=owner)
        fds.stderr = _open_out(stderr, field="stderr", owner=owner)
    except BaseException:
        fds.close()
        raise
    return fds


def _open_in(value: str, *, owner: str) -> int:
    if value == "":
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    if value.startswith(FILE_SCHEME):
        return _open(value[len(FILE_SCHEME) :], os.O_RDONLY, field="stdin", owner=owner)
    # O_RDWR: an open for reading alone would block until the client opens
    # its writing end, and a read-only fd without a writer reads EOF at once.
    fd = _open(value, os.O_RDWR | os.O_NONBLOCK, field="stdin", owner=owner)
    # Non-blocking only to open; the container's reads should wait for input.
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    return fd


def _open_out(value: str, *, field: str, owner: str) -> int:
    if value == "":
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    if value.startswith(FILE_SCHEME):
        path = value[len(FILE_SCHEME) :]
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except OSError as exc:
            raise FailedPrecondition(
                f'{owner}: {field} "{value}": cannot create its directory: {exc.strerror}'
            ) from None
        return _open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, field=field, owner=owner)
    # O_RDWR so the open does not block while the client has no reader yet
    # (and the container's writes do not fail with EPIPE between readers).
    return _open(value, os.O_RDWR, field=field, owner=owner)


def _open(path: str, flags: int, *, field: str, owner: str) -> int:
    try:
        return os.open(path, flags | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise FailedPrecondition(
            f'{owner}: {field} "{path}": cannot open: {exc.strerror}'
        ) from None
