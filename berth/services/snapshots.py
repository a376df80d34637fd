"""containerd.v1.snapshot.Snapshot, and berth.v1.Images/PrepareRootfs.

Prepare, View, Commit, Remove and Usage touch the snapshotter's
directories and go to the snapshot actor; Mounts, Stat and List read
records and are answered here. PrepareRootfs is Prepare on an image's top
layer: the parent is found here (from the image's manifest and config in
the content store), the rest is a Prepare.
"""

from __future__ import annotations

from typing import Any

from actors.image_records import check_image_name, get_image
from actors.snapshot_records import (
    check_key,
    get_snapshot,
    info_of,
    list_snapshots,
    snapshot_mounts,
)
from actors.snapshots import (
    CommitSnapshot,
    PrepareSnapshot,
    RemoveSnapshot,
    SnapshotUsage,
)
from actors.store import Store
from actors.supervision import Directory
from runtime.content import ContentStore
from runtime.image_refs import top_chain_id
from runtime.snapshot_base import Snapshotter
from wire.codec import pack
from wire.frontend import Request, Route
from wire.identifiers import check_labels
from wire.reply import feed
from wire.snapshot_messages import (
    COMMIT_SNAPSHOT,
    MOUNTS_SNAPSHOT,
    PREPARE_ROOTFS,
    PREPARE_SNAPSHOT,
    REMOVE_SNAPSHOT,
    SNAPSHOT_KEY,
    SNAPSHOT_LIST,
)

__all__ = ["SnapshotsService"]

_SERVICE = "containerd.v1.snapshot.Snapshot"
_LIST_BATCH = 100


class SnapshotsService:
    """Handlers of the Snapshot service; they hold no state of their own."""

    def __init__(
        self,
        store: Store,
        directory: Directory,
        snapshotter: Snapshotter,
        content: ContentStore,
    ) -> None:
        self.store = store
        self.directory = directory
        self.snapshotter = snapshotter
        self.content = content

    def routes(self) -> dict[str, Route]:
        """This service's entries of the method table."""
        return {
            f"{_SERVICE}/Prepare": Route(self.prepare),
            f"{_SERVICE}/View": Route(self.view),
            f"{_SERVICE}/Mounts": Route(self.mounts),
            f"{_SERVICE}/Commit": Route(self.commit),
            f"{_SERVICE}/Remove": Route(self.remove),
            f"{_SERVICE}/Stat": Route(self.stat),
            f"{_SERVICE}/List": Route(self.list, stream=True),
            f"{_SERVICE}/Usage": Route(self.usage),
            "berth.v1.Images/PrepareRootfs": Route(self.prepare_rootfs),
        }

    def _prepare(self, request: Request, readonly: bool) -> None:
        body = PREPARE_SNAPSHOT.decode(request.body)
        key = check_key("key", body["key"])
        parent = check_key("parent", body["parent"], required=False)
        labels = check_labels(f'snapshot "{key}"', body["labels"])
        self.directory.tell(
            "snapshots", PrepareSnapshot(request.ns, key, parent, labels, readonly, request.reply)
        )

    def prepare(self, request: Request) -> None:
        """Prepare {key, parent, labels} -> {mounts}: a writable snapshot."""
        self._prepare(request, readonly=False)

    def view(self, request: Request) -> None:
        """View {key, parent, labels} -> {mounts}: a read-only snapshot."""
        self._prepare(request, readonly=True)

    def mounts(self, request: Request) -> None:
        """Mounts {key} -> {mounts}."""
        key = check_key("key", MOUNTS_SNAPSHOT.decode(request.body)["key"])
        with self.store.read() as txn:
            mounts = snapshot_mounts(txn, self.store, self.snapshotter, request.ns, key)
        request.reply.ok({"mounts": mounts})

    def commit(self, request: Request) -> None:
        """Commit {name, key} -> {}."""
        body = COMMIT_SNAPSHOT.decode(request.body)
        name = check_key("name", body["name"])
        key = check_key("key", body["key"])
        self.directory.tell("snapshots", CommitSnapshot(request.ns, name, key, request.reply))

    def remove(self, request: Request) -> None:
        """Remove {key} -> {}."""
        key = check_key("key", REMOVE_SNAPSHOT.decode(request.body)["key"])
        self.directory.tell("snapshots", RemoveSnapshot(request.ns, key, request.reply))

    def stat(self, request: Request) -> None:
        """Stat {key} -> {info}."""
        key = check_key("key", SNAPSHOT_KEY.decode(request.body)["key"])
        with self.store.read() as txn:
            record = get_snapshot(txn, self.store, request.ns, key)
        request.reply.ok({"info": info_of(record)})

    def list(self, request: Request) -> None:
        """List {} -> stream of {info: [Info]}."""
        SNAPSHOT_LIST.decode(request.body)
        with self.store.read() as txn:
            infos = [info_of(r) for r in list_snapshots(txn, self.store, request.ns)]
        request.reply.ready()
        frames = (
            pack({"info": infos[start : start + _LIST_BATCH]})
            for start in range(0, len(infos), _LIST_BATCH)
        )
        # In memory already: the next frames go out from the front end's
        # thread as the client's window opens.
        feed(request.reply, frames, lambda step: step())

    def usage(self, request: Request) -> None:
        """Usage {key} -> {size, inodes}."""
        key = check_key("key", SNAPSHOT_KEY.decode(request.body)["key"])
        self.directory.tell("snapshots", SnapshotUsage(request.ns, key, request.reply))

    def prepare_rootfs(self, request: Request) -> None:
        """PrepareRootfs {name, key, labels} -> {mounts}: Prepare on image ``name``'s top layer."""
        body = PREPARE_ROOTFS.decode(request.body)
        name = check_image_name(body["name"])
        key = check_key("key", body["key"])
        labels = check_labels(f'snapshot "{key}"', body["labels"])
        with self.store.read() as txn:
            image = get_image(txn, self.store, request.ns, name)
        target: dict[str, Any] = image["target"]
        parent = top_chain_id(self.content, name, target["digest"], target["media_type"])
        self.directory.tell(
            "snapshots", PrepareSnapshot(request.ns, key, parent, labels, False, request.reply)
        )
