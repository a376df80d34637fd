"""The native snapshotter: each snapshot is a full copy of its parent's tree.

It works on any filesystem (the fallback when overlayfs cannot mount on the
root): ``snapshots/<id>/fs`` starts as a copy of the nearest parent's
``fs`` (which already holds the whole chain), a snapshot is mounted as one
bind of its own ``fs`` (read-only for a view), and commit moves nothing.

The copy is GNU ``cp`` (``--no-dereference --recursive
--preserve=mode,ownership,timestamps,links,xattr --reflink=auto``), not a
routine of our own: it already keeps hard links within the tree, symlinks,
device nodes, fifos and sockets, sparse files and ACLs, restores file
capabilities after the chown that would clear them, sets a directory's
times after filling it, and shares blocks on filesystems that can
(btrfs, xfs) while using copy_file_range elsewhere; a Python walk would
redo each of those, more slowly. xattrs are asked for explicitly rather
than through ``-a``, which ignores a failure to copy them, so a lost file
capability fails the prepare instead of passing silently. The copy is
flushed with syncfs before the snapshot is renamed into place.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from runtime.snapshot_base import (
    Mount,
    SnapshotDirs,
    SnapshotId,
    bind_mount,
    syncfs,
    temp_dir,
)
from wire.errors import FailedPrecondition, Unavailable

__all__ = ["NativeSnapshotter", "copy_tree"]

_CP = (
    "cp",
    "--no-dereference",
    "--recursive",
    "--preserve=mode,ownership,timestamps,links,xattr",
    "--reflink=auto",
    "--no-target-directory",
    "--",
)


class NativeSnapshotter(SnapshotDirs):
    """Snapshots as full copies under ``<root>/snapshots/native``."""

    name = "native"

    def mounts(
        self, id: SnapshotId, parent_ids: Sequence[SnapshotId], readonly: bool
    ) -> list[Mount]:
        """One bind of snapshot ``id``'s ``fs``, read-only when ``readonly``."""
        for parent in parent_ids:
            self.existing(parent)  # NotFound, as the overlay snapshotter answers
        return [bind_mount(self.existing(id) / "fs", readonly)]

    def check(self) -> None:
        """Unavailable unless a tree can be copied under this root (``cp`` present)."""
        try:
            with temp_dir(self.temp, "check-") as probe:
                (probe / "src").mkdir()
                (probe / "src" / "file").write_bytes(b"probe")
                (probe / "src" / "link").symlink_to("file")
                copy_tree(probe / "src", probe / "dst", "check")
        except (OSError, FailedPrecondition) as exc:
            raise Unavailable(f"native snapshots on {self.root}: {exc}") from None

    @classmethod
    def supported(cls, root: Path) -> bool:
        """Whether trees can be copied under ``root``."""
        try:
            cls(root).check()
        except Unavailable:
            return False
        return True

    def _populate(self, sid: str, tmp: Path, parents: list[Path]) -> None:
        if not parents:
            (tmp / "fs").mkdir(mode=0o755)
            return
        copy_tree(parents[0] / "fs", tmp / "fs", sid)
        syncfs(tmp)


def copy_tree(source: Path, target: Path, sid: str) -> None:
    """Copy the tree ``source`` to ``target`` (which must not exist), keeping everything.

    Unavailable when ``cp`` is missing; FailedPrecondition with cp's own
    words when the copy fails (no space, an attribute that cannot be kept).
    """
    try:
        done = subprocess.run(
            [*_CP, str(source), str(target)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError:
        raise Unavailable(f'snapshot id "{sid}": cannot copy its parent: no cp on PATH') from None
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip() or f"exit {done.returncode}"
        raise FailedPrecondition(f'snapshot id "{sid}": copying its parent failed: {reason}')
