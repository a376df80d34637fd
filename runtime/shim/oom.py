"""Noticing OOM kills in a task's memory cgroup, for the ``OOM`` event.

cgroup v1: an eventfd registered on ``memory.oom_control`` through
``cgroup.event_control``; the kernel adds to its counter at each OOM in
the cgroup. cgroup v2: ``memory.events`` signals POLLPRI when it changes,
and its ``oom_kill`` count says how many processes were killed. Both give
the shim's poll loop one fd to watch; :meth:`OomWatch.check` answers how
many OOMs happened since the last look.
"""

from __future__ import annotations

import os
import select

__all__ = ["OomWatch"]

_V1 = "/sys/fs/cgroup/memory"
_V2 = "/sys/fs/cgroup"


def _read(path: str) -> bytes:
    # os-level reads: the shim is a fork of the zygote, and every Python
    # module it runs (io, codecs, ...) copies shared pages into it.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def _cgroup_paths(pid: int) -> tuple[str | None, str | None]:
    v1 = v2 = None
    for line in _read(f"/proc/{pid}/cgroup").decode().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            v1 = path
        elif controllers == "":
            v2 = path
    return v1, v2


class OomWatch:
    """The OOM notifications of the memory cgroup that ``pid`` is in."""

    def __init__(self, pid: int) -> None:
        self.fd = -1
        self.flags = select.POLLIN
        self._v2_events: str | None = None
        self._kills = 0
        v1, v2 = _cgroup_paths(pid)
        if v1 is not None and os.path.isdir(_V1 + v1):
            self._open_v1(_V1 + v1)
        elif v2 is not None and os.path.exists(f"{_V2}{v2}/memory.events"):
            self._open_v2(f"{_V2}{v2}/memory.events")
        else:
            raise OSError(f"no memory cgroup found for pid {pid}")

    def _open_v1(self, directory: str) -> None:
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        control = os.open(f"{directory}/memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        try:
            event_control = os.open(f"{directory}/cgroup.event_control", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(event_control, f"{efd} {control}".encode())
            finally:
                os.close(event_control)
        except OSError:
            os.close(efd)
            raise
        finally:
            os.close(control)
        self.fd = efd

    def _open_v2(self, path: str) -> None:
        self._v2_events = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.flags = select.POLLPRI
        self._kills = self._read_v2()

    def _read_v2(self) -> int:
        os.lseek(self.fd, 0, os.SEEK_SET)
        for line in os.read(self.fd, 4096).decode().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def check(self) -> int:
        """How many OOMs happened since the last check (0 if none)."""
        if self._v2_events is None:
            try:
                return os.eventfd_read(self.fd)
            except BlockingIOError:
                return 0
        kills = self._read_v2()
        new, self._kills = max(0, kills - self._kills), kills
        return new

    def close(self) -> None:
        """Stop watching."""
        if self.fd >= 0:
            try:  # noqa: SIM105 - contextlib would copy its pages into the shim
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
