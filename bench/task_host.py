"""The host side of the Tasks benchmark: rootfs, spec, raw ``runc run``, process memory.

Everything here works on the machine directly, not through berthd: the
busybox rootfs the containers run on, the spec both berth and raw runc are
given, the floor measurement (``runc run`` of the same bundle), reading a
process's memory from ``/proc/<pid>/smaps_rollup``, finding berth's shims
by their process title, and removing whatever a failed run left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.spec import default_spec

__all__ = [
    "ProcessMemory",
    "RawRunc",
    "find_processes",
    "kill_shims",
    "process_memory",
    "runc_delete_all",
    "shim_pids",
    "task_spec",
]

_RUNC_TIMEOUT_S = 30.0


def task_spec(args: list[str], rootfs: Path) -> dict[str, Any]:
    """The spec every container of the bench gets: ``runc spec``'s, read-only ``rootfs``.

    There are no snapshots yet, so the root is the spec's absolute
    ``root.path`` (shared by all containers, hence read-only).
    """
    spec = default_spec(args, str(rootfs))
    spec["root"]["readonly"] = True
    return spec


def runc_delete_all(root: Path) -> list[str]:
    """``runc delete --force`` every container under runc root ``root``; the ids removed."""
    if not root.is_dir():
        return []
    listed = subprocess.run(
        ["runc", "--root", str(root), "list", "-q"],
        capture_output=True,
        text=True,
        timeout=_RUNC_TIMEOUT_S,
        check=False,
    )
    ids = listed.stdout.split()
    for cid in ids:
        subprocess.run(
            ["runc", "--root", str(root), "delete", "--force", cid],
            capture_output=True,
            timeout=_RUNC_TIMEOUT_S,
            check=False,
        )
    return ids


class RawRunc:
    """``runc run`` of one bundle under a private runc root: the floor berth is compared to."""

    def __init__(self, workdir: Path, args: list[str], rootfs: Path) -> None:
        self.root = workdir / "runc"
        self.bundle = workdir / "bundle"
        self.root.mkdir(parents=True, exist_ok=True)
        self.bundle.mkdir(parents=True, exist_ok=True)
        (self.bundle / "config.json").write_text(json.dumps(task_spec(args, rootfs)))

    def run(self, cid: str) -> tuple[int, int]:
        """Run container ``cid`` in the foreground to its end: (nanoseconds, exit status)."""
        argv = ["runc", "--root", str(self.root), "run", "--bundle", str(self.bundle), cid]
        began = time.perf_counter_ns()
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=_RUNC_TIMEOUT_S,
            check=False,
        )
        elapsed = time.perf_counter_ns() - began
        if done.returncode != 0:
            raise RuntimeError(
                f"runc run {cid} exited {done.returncode}: {done.stderr.decode(errors='replace')}"
            )
        return elapsed, done.returncode

    def cleanup(self) -> list[str]:
        """Remove any container ``runc run`` left behind (a failed or interrupted run)."""
        return runc_delete_all(self.root)


@dataclass(frozen=True)
class ProcessMemory:
    """A process's resident (RSS), proportional (PSS) and private (USS) memory, in KiB.

    USS is ``Private_Clean + Private_Dirty``: the pages no other process
    maps. Unlike PSS it does not shrink when more processes come to share
    a library's pages.
    """

    pid: int
    rss_kib: int
    pss_kib: int
    uss_kib: int = 0


def process_memory(pid: int) -> ProcessMemory | None:
    """RSS, PSS and USS of ``pid`` from ``/proc/<pid>/smaps_rollup``; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            fields[name.strip()] = int(parts[0])
    if "Rss" not in fields or "Pss" not in fields:
        return None
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return ProcessMemory(pid, fields["Rss"], fields["Pss"], uss)


def _title(pid: str) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # setproctitle leaves the title in the first argument, NUL-padded.
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def find_processes(prefix: str, *, parent: int | None = None) -> list[int]:
    """Pids whose process title starts with ``prefix`` (and whose parent is ``parent``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        title = _title(entry)
        if title is None or not title.startswith(prefix):
            continue
        if parent is not None and _parent(entry) != parent:
            continue
        found.append(int(entry))
    return sorted(found)


def _parent(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def shim_pids(namespace: str, id_prefix: str = "") -> list[int]:
    """The pids of the shims titled ``berth-shim <namespace>/<id_prefix>...``."""
    return find_processes(f"berth-shim {namespace}/{id_prefix}")


def kill_shims(namespace: str, id_prefix: str) -> list[int]:
    """SIGKILL the shims of ``namespace`` whose ids start with ``id_prefix``; their pids."""
    pids = shim_pids(namespace, id_prefix)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids
