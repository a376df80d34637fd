"""Messages of ``containerd.v1.snapshot.Snapshot`` and of the image, import and GC additions.

Field names as in wire.md; berth adds ``labels`` to Prepare/View and Info.
"""

from __future__ import annotations

from wire.schema import STRING, STRING_MAP, Message

__all__ = [
    "COMMIT_SNAPSHOT",
    "GC_RUN",
    "IMPORT_IMAGES",
    "MOUNTS_SNAPSHOT",
    "PREPARE_ROOTFS",
    "PREPARE_SNAPSHOT",
    "REMOVE_SNAPSHOT",
    "SNAPSHOT_KEY",
    "SNAPSHOT_LIST",
]

PREPARE_SNAPSHOT = Message(
    "containerd.v1.snapshot.PrepareRequest",
    {"key": STRING, "parent": STRING, "labels": STRING_MAP},
)
MOUNTS_SNAPSHOT = Message("containerd.v1.snapshot.MountsRequest", {"key": STRING})
COMMIT_SNAPSHOT = Message("containerd.v1.snapshot.CommitRequest", {"name": STRING, "key": STRING})
REMOVE_SNAPSHOT = Message("containerd.v1.snapshot.RemoveRequest", {"key": STRING})
# Stat and Usage take the same {key}.
SNAPSHOT_KEY = Message("containerd.v1.snapshot.StatRequest", {"key": STRING})
SNAPSHOT_LIST = Message("containerd.v1.snapshot.ListRequest", {})

IMPORT_IMAGES = Message("berth.v1.Images.ImportRequest", {"path": STRING, "name": STRING})
PREPARE_ROOTFS = Message(
    "berth.v1.Images.PrepareRootfsRequest",
    {"name": STRING, "key": STRING, "labels": STRING_MAP},
)
GC_RUN = Message("berth.v1.GC.RunRequest", {})
