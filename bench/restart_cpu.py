"""CPU time of the processes a supervision benchmark loads, from ``/proc``, over a window.

:class:`CpuWindow` reads, at :meth:`~CpuWindow.begin` and
:meth:`~CpuWindow.end`, a set of named groups of processes (each given as
a function returning pids) and the whole machine (``/proc/stat``), and
gives each group's CPU in seconds and in cores over the window.

A group may count its processes' reaped children too (``children=True``:
``cutime + cstime``). That is how a berth run's short-lived processes are
counted: every shim is a child of the zygote, which reaps it, and every
``runc`` and health-check process is reaped by its task's shim (a child
subreaper), so "zygote with children" plus the live shims with theirs
covers all of them. A process that is alive at ``begin`` and reaped
before ``end`` moves from the shims' sum into its reaper's children:
the difference of the two sums stays right.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CpuGroup", "CpuWindow", "host_busy_ticks", "process_cpu_s"]

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int, *, children: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (and of its reaped children); 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state is fields[0]
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def host_busy_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, from ``/proc/stat``."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass(frozen=True)
class CpuGroup:
    """A named set of processes: ``pids()`` is read at each end of the window."""

    name: str
    pids: Callable[[], list[int]]
    children: bool = False

    def cpu_s(self) -> float:
        return sum(process_cpu_s(pid, children=self.children) for pid in self.pids())


class CpuWindow:
    """Each group's CPU seconds and cores over a window, and the machine's busy cores."""

    def __init__(self, groups: list[CpuGroup]) -> None:
        self.groups = groups
        self._start: tuple[float, dict[str, float], tuple[int, int]] | None = None
        self.wall_s = 0.0
        self.cpu_s: dict[str, float] = {}
        self.machine_cores: float | None = None

    def begin(self) -> CpuWindow:
        self._start = (
            time.monotonic(),
            {g.name: g.cpu_s() for g in self.groups},
            host_busy_ticks(),
        )
        return self

    def end(self) -> CpuWindow:
        if self._start is None:
            return self
        began, before, (busy0, total0) = self._start
        self.wall_s = time.monotonic() - began
        self.cpu_s = {g.name: g.cpu_s() - before[g.name] for g in self.groups}
        busy1, total1 = host_busy_ticks()
        if total1 > total0:
            cpus = os.cpu_count() or 1
            self.machine_cores = (busy1 - busy0) / (total1 - total0) * cpus
        return self

    @classmethod
    def summed(cls, groups: list[CpuGroup], windows: list[CpuWindow]) -> CpuWindow:
        """One window standing for several: their walls and CPU added up."""
        total = cls(groups)
        total.wall_s = sum(w.wall_s for w in windows)
        for w in windows:
            for name, value in w.cpu_s.items():
                total.cpu_s[name] = total.cpu_s.get(name, 0.0) + value
        busy = [(w.machine_cores, w.wall_s) for w in windows if w.machine_cores is not None]
        if busy and total.wall_s > 0:
            total.machine_cores = sum(c * s for c, s in busy) / sum(s for _, s in busy)
        return total

    def cores(self, name: str) -> float | None:
        """Group ``name``'s CPU over the window, in cores."""
        if name not in self.cpu_s or self.wall_s <= 0:
            return None
        return self.cpu_s[name] / self.wall_s

    def to_json(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": {k: round(v, 3) for k, v in self.cpu_s.items()},
            "cores": {k: _round(self.cores(k)) for k in self.cpu_s},
            "machine_busy_cores": _round(self.machine_cores),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
