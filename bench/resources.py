"""Resource figures sampled while a phase runs: daemon CPU per call, daemon and shim memory.

A :class:`ResourceSampler` is a :class:`~bench.load.WindowMeter`: begun
when a phase's measured window opens and ended when it closes, it reads,
every :data:`SAMPLE_S` on a thread of the parent:

- the daemon's CPU time (user + system, all threads, ``/proc/<pid>/stat``),
  of which the window's share divided by the calls made gives CPU per call;
- the daemon's RSS and PSS (``/proc/<pid>/smaps_rollup``);
- every shim of the run's namespaces: berth's are titled
  ``berth-shim <ns>/<id>``, containerd's are ``containerd-shim-runc-v2
  -namespace <ns> ... -address <socket>``; how many, their PSS summed and
  per shim, their largest RSS.

The daemon is the process that listens on the target's socket
(:func:`listener_pid`), so a daemon given by ``--address`` is measured too
when it runs on this host and we may read its ``/proc``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.task_host import process_memory

__all__ = ["SAMPLE_S", "ResourceSampler", "listener_pid", "listener_pids"]

SAMPLE_S = 0.5


def _socket_path(address: str) -> str | None:
    for scheme in ("ipc://", "unix://"):
        if address.startswith(scheme):
            return address[len(scheme) :]
    return address if address.startswith("/") else None


def _same_path(listed: str, path: str, real: str) -> bool:
    """Whether the path a socket was bound to (``/proc/net/unix``) names ``path``."""
    if listed == path:
        return True
    if listed.startswith("@") or os.path.basename(listed) != os.path.basename(real):
        return False  # abstract, or surely another file: spare the realpath
    return os.path.realpath(listed) == real


def listener_pids(address: str) -> list[int]:
    """Every process holding the listening unix socket of ``address`` (this network namespace).

    The socket's inode comes from ``/proc/net/unix`` (the entry bound to
    that path, relative or through a symlink too, with ``__SO_ACCEPTCON``
    set: listening), its holders from the ``socket:[inode]`` links of
    ``/proc/*/fd``. Usually one process; a child that inherited the fd
    holds it too.
    """
    path = _socket_path(address)
    if path is None:
        return []
    real = os.path.realpath(path)
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return []
    # Columns: Num RefCount Protocol Flags Type St Inode Path; flag 0x10000 is __SO_ACCEPTCON.
    inodes = {
        f"socket:[{cols[6]}]"
        for cols in (line.split() for line in lines)
        if len(cols) >= 8 and int(cols[3], 16) & 0x10000 and _same_path(cols[7], path, real)
    }
    if not inodes:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in inodes:
                    found.append(int(entry))
                    break
            except OSError:
                continue
    return sorted(found)


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after ``pid (comm)``; ``[]`` if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def listener_pid(address: str) -> int | None:
    """The pid of the process listening on the unix socket of ``address``, if on this host.

    Of several holders (a child inherited the fd), the one whose parent
    holds it not, then the oldest.
    """
    pids = listener_pids(address)
    if len(pids) <= 1:
        return pids[0] if pids else None
    holders = set(pids)

    def rank(pid: int) -> tuple[int, int]:
        fields = _stat_fields(pid)
        parent = int(fields[1]) if len(fields) > 1 else 0
        started = int(fields[19]) if len(fields) > 19 else 0  # starttime, field 22
        return (1 if parent in holders else 0, started)

    return min(pids, key=rank)


def _cpu_s(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _argv(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def shim_pids(backend: str, namespaces: tuple[str, ...], socket: str | None) -> list[int]:
    """The shims of ``namespaces``: berth's by title, containerd's by arguments."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = _argv(entry)
        if not argv:
            continue
        if backend == "berth":
            title = argv[0]
            if any(title.startswith(f"berth-shim {ns}/") for ns in namespaces):
                found.append(int(entry))
        elif "containerd-shim" in argv[0] and "-namespace" in argv:
            ns = (
                argv[argv.index("-namespace") + 1]
                if argv.index("-namespace") + 1 < len(argv)
                else ""
            )
            if ns in namespaces and (socket is None or socket in argv):
                found.append(int(entry))
    return found


@dataclass
class _Samples:
    daemon_rss: list[int] = field(default_factory=list)
    daemon_pss: list[int] = field(default_factory=list)
    shim_count: list[int] = field(default_factory=list)
    shim_pss_total: list[int] = field(default_factory=list)
    shim_rss_max: int = 0


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


class ResourceSampler:
    """Samples a daemon's CPU and memory, and its shims' memory, over a measured window."""

    def __init__(
        self,
        pid: int | None,
        backend: str,
        namespaces: tuple[str, ...],
        socket: str | None = None,
        *,
        shims: bool = True,
    ) -> None:
        self.pid, self.backend, self.namespaces = pid, backend, namespaces
        self.socket, self.shims = socket, shims
        self._samples = _Samples()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpu: tuple[float, float] | None = None  # (cpu seconds, wall) at begin
        self.cpu_s: float | None = None
        self.wall_s: float | None = None

    def begin(self) -> None:
        """Open the window: note the CPU time, start sampling."""
        cpu = None if self.pid is None else _cpu_s(self.pid)
        self._cpu = None if cpu is None else (cpu, time.monotonic())
        self._thread = threading.Thread(target=self._run, name="bench-resources", daemon=True)
        self._thread.start()

    def end(self) -> None:
        """Close the window."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._cpu is not None and self.pid is not None:
            now = _cpu_s(self.pid)
            if now is not None:
                self.cpu_s = now - self._cpu[0]
                self.wall_s = time.monotonic() - self._cpu[1]

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(SAMPLE_S):
                return

    def _sample(self) -> None:
        s = self._samples
        if self.pid is not None and (mem := process_memory(self.pid)) is not None:
            s.daemon_rss.append(mem.rss_kib)
            s.daemon_pss.append(mem.pss_kib)
        if not self.shims:
            return
        readings = [
            m
            for pid in shim_pids(self.backend, self.namespaces, self.socket)
            if (m := process_memory(pid)) is not None
        ]
        s.shim_count.append(len(readings))
        s.shim_pss_total.append(sum(m.pss_kib for m in readings))
        s.shim_rss_max = max([s.shim_rss_max, *(m.rss_kib for m in readings)])

    def figures(self, calls: int) -> dict[str, Any]:
        """The window's figures; CPU per call over ``calls`` successful calls."""
        s = self._samples
        shims = [c for c in s.shim_count if c]
        per_shim = [t / c for t, c in zip(s.shim_pss_total, s.shim_count, strict=True) if c]
        cpu_per_op_us = None
        if self.cpu_s is not None and calls:
            cpu_per_op_us = round(self.cpu_s * 1e6 / calls, 1)
        return {
            "daemon_pid": self.pid,
            "daemon_cpu_s": None if self.cpu_s is None else round(self.cpu_s, 3),
            "daemon_cores": (
                None
                if self.cpu_s is None or not self.wall_s
                else round(self.cpu_s / self.wall_s, 3)
            ),
            "daemon_cpu_per_op_us": cpu_per_op_us,
            "daemon_rss_kib_max": max(s.daemon_rss, default=None),
            "daemon_pss_kib_mean": _round(_mean(s.daemon_pss)),
            "daemon_pss_kib_max": max(s.daemon_pss, default=None),
            "shims_max": max(s.shim_count, default=0),
            "shims_mean": _round(_mean(shims)),
            "shim_pss_kib_total_max": max(s.shim_pss_total, default=0),
            "shim_pss_kib_mean": _round(sum(per_shim) / len(per_shim) if per_shim else None),
            "shim_rss_kib_max": s.shim_rss_max or None,
            "samples": len(s.daemon_rss) or len(s.shim_count),
            "sample_interval_s": SAMPLE_S,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
