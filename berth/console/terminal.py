"""The local terminal during an interactive task: raw mode, its size, and resizes.

:func:`raw_terminal` puts the terminal in raw mode, so every key (Ctrl-C,
Ctrl-D, arrows) goes to the task's pty, whose line discipline gives them
their meaning, and restores it on the way out. With
:func:`exit_on_termination` that way out includes SIGTERM and SIGHUP,
which would otherwise end the process without running ``finally`` blocks
and leave the shell unusable (and the task running).

:func:`resize_events` turns SIGWINCH into a readable pipe, so the attach
loop learns of a resize from the same ``select`` that moves the bytes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import termios
import tty
from collections.abc import Iterator
from types import FrameType

__all__ = ["exit_on_termination", "raw_terminal", "resize_events", "window_size"]


def window_size(fd: int) -> tuple[int, int] | None:
    """``(columns, lines)`` of the terminal on ``fd``; None if it is not one."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return size.columns, size.lines


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Raw mode on ``fd`` if it is a terminal (else nothing), restored on the way out."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def exit_on_termination() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``SystemExit(128 + N)`` meanwhile.

    Their default action ends the process on the spot; raised instead, the
    ``finally`` blocks run: the terminal is restored, the task killed and
    deleted as on any other way out, and the exit status is the shell's
    for a process killed by that signal.
    """

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def resize_events() -> Iterator[int]:
    """A fd that becomes readable when the terminal is resized (SIGWINCH)."""
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def resized(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(write_fd, b"w")

    previous = signal.signal(signal.SIGWINCH, resized)
    try:
        yield read_fd
    finally:
        signal.signal(signal.SIGWINCH, previous)
        os.close(read_fd)
        os.close(write_fd)
