"""What the snapshot, import and garbage-collector actors share.

Records (the store, written through the metadata actor found in the
directory), files (the snapshotter's directories and the content store's
blobs), the leases on files not yet recorded, and the allocator of
snapshot directory ids.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from actors.leases import Leases
from actors.store import Store
from actors.supervision import Directory
from runtime.content import ContentStore
from runtime.snapshot_base import Snapshotter

__all__ = ["SnapshotIds", "Storage"]


class SnapshotIds:
    """Directory ids for new snapshots: never reused, also across restarts."""

    def __init__(self, existing: Iterable[str]) -> None:
        start = max((int(i) for i in existing if i.isdigit()), default=0) + 1
        self._next = itertools.count(start)
        self._lock = threading.Lock()

    def take(self) -> str:
        """A fresh id."""
        with self._lock:
            return str(next(self._next))


@dataclass(frozen=True)
class Storage:
    """The daemon's image storage: records, snapshot directories, blobs and leases."""

    store: Store
    directory: Directory
    snapshotter: Snapshotter
    content: ContentStore
    leases: Leases
    ids: SnapshotIds
