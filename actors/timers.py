"""One thread for many timers: each message is told to an actor at its time."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka

__all__ = ["Timers"]


class Timers:
    """Tells ``tell(message)`` at each added wall-clock time (ns); one daemon thread.

    A timer cannot be cancelled: the receiver ignores a message it no
    longer expects (each carries what schedule it belongs to).
    """

    def __init__(self, tell: Callable[[Any], None], name: str) -> None:
        self._tell = tell
        self._heap: list[tuple[int, int, Any]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, at_ns: int, message: Any) -> None:
        """Tell ``message`` at ``at_ns`` (time.time_ns); at once if that has passed."""
        with self._wake:
            heapq.heappush(self._heap, (at_ns, next(self._order), message))
            self._wake.notify()

    def stop(self) -> None:
        """Tell nothing more."""
        with self._wake:
            self._stopped = True
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._stopped:
                    return
                if not self._heap:
                    self._wake.wait()
                    continue
                wait_s = (self._heap[0][0] - time.time_ns()) / 1e9
                if wait_s > 0:
                    self._wake.wait(wait_s)
                    continue
                _, _, message = heapq.heappop(self._heap)
            try:
                self._tell(message)
            except pykka.ActorDeadError:
                return
