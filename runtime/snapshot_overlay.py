"""The overlayfs snapshotter: each snapshot is an upper layer over its parents' trees.

A snapshot is ``snapshots/<id>/fs`` (its upper layer, later a lower one
for its children) and ``snapshots/<id>/work`` (overlayfs's workdir, on the
same filesystem as ``fs`` as the kernel requires). Nothing is copied:

- no parents: a bind of ``fs``, read-write, or read-only for a view;
- active on parents: ``overlay`` with ``lowerdir=<parents' fs, nearest
  first>``, ``upperdir=<fs>``, ``workdir=<work>``;
- a view on one parent: a read-only bind of that parent's ``fs``;
- a view on several: ``overlay`` with only ``lowerdir`` (read-only by
  construction, as overlayfs has no upper to write to).

The mounts name every layer by its absolute path, as containerd's do: the
kernel takes a mount's options in one page (4096 bytes here, including the
terminating NUL), which with ids of a few digits under ``/var/lib/berth``
holds about 80 layers, so :func:`runtime.mounts.mount_all` mounts a deeper
chain with its lowers relative to ``snapshots/`` (``lowerdir=123/fs:...``,
:mod:`runtime.overlay_lowerdir`). A chain too long even so (or deeper than
overlayfs's 500 lower layers) is refused at prepare (and at mounts) with
FailedPrecondition naming the lengths, rather than at mount time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from runtime.mounts import mount_all, unmount_all
from runtime.overlay_lowerdir import MAX_MOUNT_DATA, compact_lowerdir, data_size
from runtime.snapshot_base import Mount, SnapshotDirs, SnapshotId, bind_mount, temp_dir
from wire.errors import FailedPrecondition, Unavailable

__all__ = ["OverlaySnapshotter", "check_overlay", "overlay_supported"]

MAX_LOWER_LAYERS = 500  # overlayfs's OVL_MAX_STACK
_UNSAFE = frozenset(",:\n")  # would split the options or the lowerdir list


class OverlaySnapshotter(SnapshotDirs):
    """Snapshots as overlayfs layers under ``<root>/snapshots/overlayfs``."""

    name = "overlayfs"

    def mounts(
        self, id: SnapshotId, parent_ids: Sequence[SnapshotId], readonly: bool
    ) -> list[Mount]:
        """The mounts showing snapshot ``id`` over ``parent_ids`` (nearest first).

        NotFound when the snapshot or a parent is not on disk;
        FailedPrecondition when the options do not fit the kernel's page.
        """
        path = self.existing(id)
        lowers = [self.existing(p) / "fs" for p in parent_ids]
        if not lowers:
            return [bind_mount(path / "fs", readonly)]
        if readonly and len(lowers) == 1:
            return [bind_mount(lowers[0], True)]
        options = _overlay_options(path.name, path, lowers, readonly)
        return [{"type": "overlay", "source": "overlay", "target": "", "options": options}]

    def check(self) -> None:
        """Unavailable, with the kernel's reason, unless overlayfs mounts on this root."""
        check_overlay(self.root)

    @classmethod
    def supported(cls, root: Path) -> bool:
        """Whether overlayfs mounts on the filesystem of ``root`` (by mounting one)."""
        try:
            check_overlay(root)
        except Unavailable:
            return False
        return True

    def _check_prepare(self, sid: str, parents: list[Path], readonly: bool) -> None:
        if parents and not (readonly and len(parents) == 1):
            target = self.snapshots / sid
            _overlay_options(sid, target, [p / "fs" for p in parents], readonly)

    def _populate(self, sid: str, tmp: Path, parents: list[Path]) -> None:
        (tmp / "fs").mkdir(mode=0o755)
        (tmp / "work").mkdir(mode=0o711)


def _overlay_options(sid: str, path: Path, lowers: list[Path], readonly: bool) -> list[str]:
    """The overlay options for ``path`` on ``lowers``; FailedPrecondition when they cannot work."""
    if len(lowers) > MAX_LOWER_LAYERS:
        raise FailedPrecondition(
            f'snapshot id "{sid}": {len(lowers)} parent layers, overlayfs stacks at most '
            f"{MAX_LOWER_LAYERS}"
        )
    for layer in [*lowers, path]:
        bad = _UNSAFE & set(str(layer))
        if bad:
            raise FailedPrecondition(
                f'snapshot id "{sid}": layer path {str(layer)!r} holds {sorted(bad)[0]!r}, '
                "which overlayfs options cannot carry"
            )
    options = ["lowerdir=" + ":".join(str(p) for p in lowers)]
    if not readonly:
        options += [f"upperdir={path / 'fs'}", f"workdir={path / 'work'}"]
    # What mount_all will pass: the lowers relative to snapshots/ when the
    # absolute ones do not fit.
    size = data_size(compact_lowerdir(options)[1])
    if size > MAX_MOUNT_DATA:
        raise FailedPrecondition(
            f'snapshot id "{sid}": the overlay options for {len(lowers)} layers are '
            f"{size} bytes even with the layers relative to their directory, over the "
            f"kernel's limit of {MAX_MOUNT_DATA}; use fewer layers"
        )
    return options


def check_overlay(root: Path) -> None:
    """Mount a two-layer overlay in ``<root>/snapshots/overlayfs/tmp``; Unavailable if it fails.

    A real mount is the only reliable test: overlayfs may be missing, the
    root may be on a filesystem it refuses as an upper layer (overlayfs
    itself, some network filesystems), or the process may lack the right.
    The probe checks that a lower file shows and that a write lands in the
    upper layer, then unmounts and removes everything.
    """
    home = Path(os.path.abspath(root)) / "snapshots" / OverlaySnapshotter.name
    bad = _UNSAFE & set(str(home))
    if bad:
        raise Unavailable(f"overlayfs on {root}: its path holds {sorted(bad)[0]!r}")
    try:
        with temp_dir(home / "tmp", "check-") as probe:
            _probe(root, probe)
    except OSError as exc:
        raise Unavailable(f"overlayfs on {root}: {exc}") from None


def overlay_supported(root: Path) -> bool:
    """Whether overlayfs mounts on the filesystem of ``root``."""
    return OverlaySnapshotter.supported(root)


def _probe(root: Path, probe: Path) -> None:
    lower, upper, work, merged = (probe / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    (lower / "probe").write_bytes(b"lower")
    mount: Mount = {
        "type": "overlay",
        "source": "overlay",
        "target": "",
        "options": [f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}"],
    }
    try:
        mount_all([mount], merged)
    except FailedPrecondition as exc:
        raise Unavailable(f"overlayfs on {root}: cannot mount: {exc}") from None
    try:
        if (merged / "probe").read_bytes() != b"lower":
            raise Unavailable(f"overlayfs on {root}: the lower layer does not show")
        (merged / "written").write_bytes(b"upper")
        if not (upper / "written").is_file():
            raise Unavailable(f"overlayfs on {root}: a write does not reach the upper layer")
    finally:
        try:
            unmount_all(merged)
        except FailedPrecondition as exc:
            raise Unavailable(f"overlayfs on {root}: cannot unmount the probe: {exc}") from None
