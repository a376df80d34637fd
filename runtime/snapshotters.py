"""The snapshotters, by name, and the choice of one for a root.

Two snapshotters share the :class:`Snapshotter` protocol
(``runtime/snapshot_base.py``): ``overlayfs`` (layers stacked by the
kernel, nothing copied; ``runtime/snapshot_overlay.py``) and ``native``
(a full copy per snapshot, any filesystem; ``runtime/snapshot_native.py``).
The daemon takes overlayfs when a real overlay mounts on its root and
falls back to native otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path

from runtime.snapshot_base import Mount, SnapshotId, Snapshotter, disk_usage
from runtime.snapshot_native import NativeSnapshotter
from runtime.snapshot_overlay import OverlaySnapshotter, check_overlay, overlay_supported
from wire.errors import InvalidArgument, Unavailable

__all__ = [
    "SNAPSHOTTERS",
    "Mount",
    "NativeSnapshotter",
    "OverlaySnapshotter",
    "SnapshotId",
    "Snapshotter",
    "check_overlay",
    "choose_snapshotter",
    "disk_usage",
    "open_snapshotter",
    "overlay_supported",
    "pick_snapshotter",
]

log = logging.getLogger(__name__)

SNAPSHOTTERS: dict[str, type[OverlaySnapshotter] | type[NativeSnapshotter]] = {
    OverlaySnapshotter.name: OverlaySnapshotter,
    NativeSnapshotter.name: NativeSnapshotter,
}


def open_snapshotter(name: str, root: Path) -> Snapshotter:
    """The snapshotter ``name`` on ``root``; InvalidArgument for an unknown name."""
    try:
        kind = SNAPSHOTTERS[name]
    except KeyError:
        known = ", ".join(sorted(SNAPSHOTTERS))
        raise InvalidArgument(f'snapshotter "{name}": unknown (known: {known})') from None
    return kind(root)


def pick_snapshotter(name: str, root: Path) -> Snapshotter:
    """The configured snapshotter; overlayfs falls back to native where it cannot mount."""
    if name == "overlayfs":
        return choose_snapshotter(root)
    return open_snapshotter(name, root)


def choose_snapshotter(root: Path) -> Snapshotter:
    """overlayfs when it mounts on ``root``, else native (logging why)."""
    try:
        check_overlay(root)
    except Unavailable as exc:
        log.warning("snapshotter: falling back to native: %s", exc.message)
        return NativeSnapshotter(root)
    return OverlaySnapshotter(root)
