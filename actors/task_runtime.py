"""What container actors need to run tasks: the zygote, paths, and cleanup.

Kept apart from the actors so the OS work is in one place: where a task's
state lives, how a shim is spawned, and how a task whose shim died is torn
down (its processes killed, its mounts and runc state removed).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from actors.leases import Leases
from runtime.content import ContentStore
from runtime.mounts import unmount_all
from runtime.runc import Runc, RuncError
from runtime.shim.config import ShimConfig
from runtime.zygote import ZygoteClient

__all__ = ["TaskRuntime"]

log = logging.getLogger(__name__)


@dataclass
class TaskRuntime:
    """Paths and processes shared by every task of the daemon."""

    state: Path
    zygote: ZygoteClient
    runtimes: dict[str, str]  # runtime name -> OCI runtime binary
    events_address: str
    content: ContentStore
    leases: Leases = field(default_factory=Leases)  # the daemon's: see actors.leases

    def task_dir(self, ns: str, cid: str) -> Path:
        """Where a task's bundle, shim socket and exit file live."""
        return self.state / "tasks" / ns / cid

    def runc_root(self, ns: str) -> Path:
        """runc's --root for a namespace (ids are unique per namespace only)."""
        return self.state / "runc" / ns

    def shim_config(self, ns: str, cid: str, binary: str) -> ShimConfig:
        """The configuration a new shim for this task starts with."""
        return ShimConfig(
            namespace=ns,
            id=cid,
            task_dir=self.task_dir(ns, cid),
            # Resolved here, so the shim need not search PATH (a fork) first.
            runc_binary=shutil.which(binary) or binary,
            runc_root=self.runc_root(ns),
            events_address=self.events_address,
        )

    def cleanup_dead(self, ns: str, cid: str, binary: str = "runc") -> None:
        """Tear down a task whose shim is gone: kill, runc delete, unmount."""
        runc = Runc(binary, self.runc_root(ns))
        with contextlib.suppress(RuncError, OSError):
            runc.kill(cid, 9, all=True)
        with contextlib.suppress(RuncError, OSError):
            runc.delete(cid, force=True)
        rootfs = self.task_dir(ns, cid) / "bundle" / "rootfs"
        try:
            unmount_all(rootfs)
        except Exception:
            log.exception("task %s/%s: unmounting %s failed", ns, cid, rootfs)
