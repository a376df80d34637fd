"""Remove a stopped runc container's state the way ``runc delete`` does, without running runc.

For a container whose init has exited, ``runc delete`` (runc 1.0 and 1.1,
``libcontainer``'s ``destroy``) does three things: kill what is left in its
cgroup (only when it shares a pid namespace: in its own, the kernel killed
everything when the init died), remove its cgroup directories, remove its
state directory ``<runc root>/<id>``, then run the spec's poststop hooks.
Starting the Go binary for that costs 6-7 ms here, an eighth of a short
task's lifecycle, so the shim does it itself for the plain case and leaves
everything else to ``runc delete``: a container sharing a pid namespace,
with poststop hooks, under systemd's cgroup driver, with Intel RDT, or whose
``state.json`` is not what we expect.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

__all__ = ["STATE_FILE", "remove_stopped"]

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
# A cgroup stays busy until its last zombie is reaped; runc retries as long.
_RMDIR_TRIES = 50
_RMDIR_PAUSE = 0.002


def remove_stopped(runc_root: Path, id: str) -> bool:
    """Remove the stopped container ``id``'s cgroups and runc state; False: use ``runc delete``.

    Call only once the container's init has been reaped. Returns False,
    having changed nothing or only removed empty cgroups, when the case is
    not the plain one (see the module docstring).
    """
    state_dir = runc_root / id
    try:
        state = json.loads((state_dir / STATE_FILE).read_bytes())
    except (OSError, ValueError):
        return False
    paths = _cgroup_paths(state)
    if paths is None or _init_alive(state):
        return False
    for path in paths:
        if not _remove_cgroup(Path(path)):
            log.info("container %s: cgroup %s still busy; leaving it to runc delete", id, path)
            return False
    shutil.rmtree(state_dir, ignore_errors=True)
    return True


def _cgroup_paths(state: Any) -> list[str] | None:
    """The cgroup directories to remove; None when this is not the plain case."""
    if not isinstance(state, dict) or state.get("rootless") or state.get("intel_rdt_path"):
        return None
    config = state.get("config")
    if not isinstance(config, dict):
        return None
    namespaces = config.get("namespaces") or []
    own_pid_ns = any(
        isinstance(ns, dict) and ns.get("type") == "NEWPID" and not ns.get("path")
        for ns in namespaces
    )
    hooks = config.get("Hooks") or {}
    cgroups = config.get("cgroups") or {}
    if not own_pid_ns or not isinstance(hooks, dict) or hooks.get("poststop"):
        return None
    if not isinstance(cgroups, dict) or cgroups.get("Systemd"):
        return None
    paths = state.get("cgroup_paths") or {}
    if not isinstance(paths, dict) or not all(isinstance(p, str) for p in paths.values()):
        return None
    # Controllers mounted together (cpu,cpuacct) name one directory twice.
    return sorted({p for p in paths.values() if p.startswith("/sys/fs/cgroup/")})


def _init_alive(state: dict[str, Any]) -> bool:
    """Whether the init runc recorded still runs (same pid, same start time)."""
    pid, start = state.get("init_process_pid"), state.get("init_process_start")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return False
    # Field 22, starttime; the split above starts at field 3.
    return len(fields) > 19 and fields[19].decode() == str(start)


def _remove_cgroup(path: Path) -> bool:
    """rmdir ``path`` and the cgroups below it, deepest first; False if one stays busy."""
    if not path.is_dir():
        return True
    children = []
    with contextlib.suppress(OSError):
        children = [entry.path for entry in os.scandir(path) if entry.is_dir(follow_symlinks=False)]
    if not all(_remove_cgroup(Path(child)) for child in children):
        return False
    for _ in range(_RMDIR_TRIES):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                log.warning("cgroup %s: %s", path, exc)
                return False
        time.sleep(_RMDIR_PAUSE)
    return False
