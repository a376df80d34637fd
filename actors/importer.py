"""The import actor: ``berth.v1.Images/Import``, one archive at a time.

An import is all or nothing. The archive is read and every blob checked
(:mod:`runtime.image_archive`); the blobs are stored (a blob already stored
is not written again); each layer not already unpacked in the namespace is
applied onto a new snapshot on its parent (mounted in a scratch directory)
and committed; then **one** transaction records the layer snapshots, the
namespace's hold on every blob, and the images. Until that commit the new
files are leased, so no sweep takes them; if anything fails they are
removed before the error is answered, and if the daemon dies instead,
nothing records them and the next collection removes them.

Images are recorded under normalised references (:mod:`runtime.reference`),
as ``ctr images import`` records a ``docker save`` archive's ``RepoTags``:
``busybox:1.36`` is ``docker.io/library/busybox:1.36``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import pykka

from actors.image_records import add_content, put_image
from actors.leases import Lease
from actors.metadata import transact
from actors.snapshot_records import COMMITTED, add_snapshot, list_snapshots
from actors.storage import Storage
from actors.store import Store
from actors.supervision import SupervisedActor
from runtime.image_archive import REF_NAME, ArchiveImage, ImageArchive, read_image_archive
from runtime.layers import apply_layer
from runtime.mounts import mount_all, unmount_all
from runtime.reference import normalize_reference
from wire.codec import pack
from wire.errors import InvalidArgument
from wire.reply import Reply

__all__ = ["ImportActor", "ImportImages", "clear_scratch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ImportImages:
    """Import the archive at ``path`` into ``ns``; reply ``{"images": [Image, ...]}``."""

    ns: str
    path: str
    name: str
    reply: Reply


@dataclass
class _Unpacked:
    """A layer snapshot this import made: recorded at the end, removed on failure."""

    key: str
    id: str
    parent: str


class ImportActor(SupervisedActor):
    """Reads archives, stores their blobs, unpacks their layers, records their images."""

    name = "importer"

    def __init__(
        self, supervisor: pykka.ActorRef[Any] | None, storage: Storage, scratch: Path
    ) -> None:
        super().__init__(supervisor)
        self.store = storage.store
        self.directory = storage.directory
        self.content = storage.content
        self.snapshotter = storage.snapshotter
        self.ids = storage.ids
        self.leases = storage.leases
        self.scratch = scratch
        self._current: Reply | None = None

    def pending_replies(self) -> list[Reply]:
        return [self._current] if self._current is not None else []

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, ImportImages):
            log.warning("importer: unexpected message %r", message)
            return None
        self._current = message.reply
        try:
            message.reply.ok({"images": self.run(message.ns, message.path, message.name)})
        except Exception as exc:
            log.info("import of %s into %s failed: %s", message.path, message.ns, exc)
            message.reply.fail(exc)
        finally:
            self._current = None
        return None

    def run(self, ns: str, path: str, name: str) -> list[dict[str, Any]]:
        """Import ``path`` into ``ns``: the stored images."""
        archive = read_image_archive(path)
        named = _named_images(archive, name, path)
        with self.leases.hold() as lease:
            new_blobs: list[str] = []
            unpacked: list[_Unpacked] = []
            try:
                self._store_blobs(archive, lease, new_blobs)
                for image, image_name in named:
                    self._unpack(ns, image, image_name, lease, unpacked)
                stored = self._record(ns, archive, named, unpacked)
            except BaseException:
                self._undo(unpacked, new_blobs)
                raise
        log.info("imported %s into %s: %s", path, ns, ", ".join(n for _, n in named) or "no images")
        return stored

    def _store_blobs(self, archive: ImageArchive, lease: Lease, new: list[str]) -> None:
        for blob in archive.blobs:
            lease.blob(blob.digest)
            if self.content.exists(blob.digest):
                continue
            with blob.open() as source:
                self.content.ingest(
                    f"import-{uuid.uuid4().hex}-{blob.digest}",
                    source,
                    expected_digest=blob.digest,
                    expected_size=blob.size,
                )
            new.append(blob.digest)

    def _unpack(
        self,
        ns: str,
        image: ArchiveImage,
        image_name: str,
        lease: Lease,
        unpacked: list[_Unpacked],
    ) -> None:
        with self.store.read() as txn:
            committed = {
                r["key"]: r["id"]
                for r in list_snapshots(txn, self.store, ns)
                if r["kind"] == COMMITTED
            }
        committed.update({u.key: u.id for u in unpacked})
        parents: list[str] = []  # ids, nearest first
        parent_key = ""
        for layer, chain_id in zip(image.layers, image.chain_ids, strict=True):
            if chain_id in committed:
                parents.insert(0, committed[chain_id])
                parent_key = chain_id
                continue
            id = self.ids.take()
            lease.snapshot(id)
            unpacked.append(_Unpacked(chain_id, id, parent_key))
            self.snapshotter.prepare(id, parents)
            self._apply(image_name, layer.descriptor.digest, layer.diff_id, id, parents)
            self.snapshotter.commit(id)
            committed[chain_id] = id
            parents.insert(0, id)
            parent_key = chain_id

    def _apply(self, image: str, digest: str, diff_id: str, id: str, parents: list[str]) -> None:
        self.scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        where = Path(tempfile.mkdtemp(prefix=f"unpack-{id}-", dir=self.scratch))
        try:
            mount_all(self.snapshotter.mounts(id, parents, False), where)
            try:
                # The uncompressed layer is spooled next to the ingests: on
                # the root's disk, not in the state directory's RAM.
                self.content.ingests.mkdir(mode=0o700, parents=True, exist_ok=True)
                apply_layer(
                    where,
                    self.content.path_of(digest),
                    label=f"{digest} of image {image!r}",
                    expected_diff_id=diff_id,
                    spool_dir=self.content.ingests,
                )
            finally:
                unmount_all(where)
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(where)

    def _record(
        self,
        ns: str,
        archive: ImageArchive,
        named: list[tuple[ArchiveImage, str]],
        unpacked: list[_Unpacked],
    ) -> list[dict[str, Any]]:
        stored: list[dict[str, Any]] = []

        def apply(txn: lmdb.Transaction, store: Store, stamp: Any) -> bytes:
            stored.clear()
            for u in unpacked:
                record = {
                    "key": u.key,
                    "id": u.id,
                    "kind": COMMITTED,
                    "readonly": False,
                    "parent": u.parent,
                    "labels": {},
                }
                add_snapshot(txn, store, ns, record, stamp)
            add_content(txn, store, ns, [b.digest for b in archive.blobs], stamp)
            for image, image_name in named:
                target = image.target
                wire_image = {
                    "name": image_name,
                    "labels": {},
                    "target": {
                        "media_type": target.media_type,
                        "digest": target.digest,
                        "size": target.size,
                    },
                }
                stored.append(put_image(txn, store, ns, wire_image, stamp))
            return pack({})

        transact(self.directory, apply)
        return list(stored)

    def _undo(self, unpacked: list[_Unpacked], new_blobs: list[str]) -> None:
        for u in reversed(unpacked):
            with contextlib.suppress(Exception):
                self.snapshotter.remove(u.id)
        for digest in new_blobs:
            with contextlib.suppress(Exception):
                self.content.delete(digest)


def clear_scratch(scratch: Path) -> None:
    """Unmount and remove what imports left in ``scratch`` (call when none runs)."""
    if not scratch.is_dir():
        return
    unmount_all(scratch)
    for leftover in scratch.iterdir():
        with contextlib.suppress(OSError):
            os.rmdir(leftover)  # empty once unmounted; never delete through a mount


def _named_images(archive: ImageArchive, name: str, path: str) -> list[tuple[ArchiveImage, str]]:
    """The archive's images with the names they are stored under, normalised.

    A name from the request or the archive is a reference, recorded in its
    full form (``busybox:1.36`` -> ``docker.io/library/busybox:1.36``), as
    ``ctr images import`` records ``RepoTags``; a name that is not a
    reference is InvalidArgument. A bare tag in an OCI ``ref.name``
    (``latest``) names no repository: that image is unnamed.
    """
    images = list(archive.images)
    if name:
        if len(images) != 1:
            raise InvalidArgument(
                f'import "{path}": name is for an archive of one image; this one has {len(images)}'
            )
        return [(images[0], _normalized(name, path, "name"))]
    named: dict[str, ArchiveImage] = {}  # a later image of the same name replaces it, as on disk
    for image in images:
        if image.name and not _bare_tag(image):
            named[_normalized(image.name, path, image.name_from)] = image
    if not named:
        raise InvalidArgument(f'import "{path}": the archive names no image; give a name')
    return [(image, image_name) for image_name, image in named.items()]


def _bare_tag(image: ArchiveImage) -> bool:
    """An OCI ``ref.name`` that is only a tag: no ``/``, ``:`` or ``@`` (containerd's test)."""
    return image.name_from == REF_NAME and not any(c in (image.name or "") for c in "/:@")


def _normalized(name: str, path: str, source: str) -> str:
    try:
        return normalize_reference(name)
    except InvalidArgument as exc:
        raise InvalidArgument(f'import "{path}": {source}: {exc}') from None
