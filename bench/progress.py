"""The live progress line: what the running phase has done so far, on stderr.

Shown when stderr is a terminal, or always with ``--progress``
(:func:`configure`); never on stdout, which carries the final table. The
workers count their calls in shared memory (:class:`bench.workers.Counters`),
so the display costs them nothing but an increment per call; a thread of
the parent redraws one line twice a second::

    create @16  warm-up   1.2 s     1,893 calls  1,602/s   errors 0
    create @16  measured  2.5 s     7,504 calls  2,987/s   errors 0   ETA 0.5 s
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from bench.workers import Counters

__all__ = ["configure", "enabled", "watch"]

_REFRESH_S = 0.5
_state = {"enabled": False}


def configure(force: bool, stream: TextIO | None = None) -> None:
    """Show progress when ``force``, else when ``stream`` (stderr) is a terminal."""
    out = stream or sys.stderr
    _state["enabled"] = force or out.isatty()


def enabled() -> bool:
    """Whether the progress line is shown."""
    return _state["enabled"]


def _line(
    label: str,
    clients: int,
    counters: Counters,
    started: tuple[float, int, int],
    measure_ns: int,
    end_ns: int | None,
    ops: int | None,
) -> str:
    now = time.monotonic_ns()
    ok, failed = counters.totals(clients)
    began, ok0, failed0 = started
    elapsed = max(time.monotonic() - began, 1e-9)
    rate = (ok + failed - ok0 - failed0) / elapsed
    stage = "warm-up " if now < measure_ns else "measured"
    since = abs(now - measure_ns) / 1e9
    eta = ""
    if end_ns is not None and now < end_ns:
        eta = f"   ETA {(end_ns - now) / 1e9:.1f} s"
    elif ops is not None:
        eta = f"   of {ops:,} measured"
    calls, errors = ok + failed - ok0 - failed0, failed - failed0
    return (
        f"{label} @{clients}  {stage} {since:5.1f} s  {calls:>9,} calls"
        f"  {rate:>8,.0f}/s   errors {errors:,}{eta}"
    )


@contextlib.contextmanager
def watch(
    label: str,
    clients: int,
    counters: Counters,
    measure_ns: int,
    end_ns: int | None,
    ops: int | None,
    stream: TextIO | None = None,
) -> Iterator[None]:
    """Redraw the progress line of one phase while the block runs (when enabled)."""
    if not enabled():
        yield
        return
    out = stream or sys.stderr
    ok, failed = counters.totals(clients)
    started = (time.monotonic(), ok, failed)
    stop = threading.Event()

    def draw() -> None:
        while not stop.wait(_REFRESH_S):
            line = _line(label, clients, counters, started, measure_ns, end_ns, ops)
            out.write("\r\033[K" + line)
            out.flush()

    thread = threading.Thread(target=draw, name="bench-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        line = _line(label, clients, counters, started, measure_ns, end_ns, ops)
        out.write("\r\033[K" + line + "\n")
        out.flush()
