"""The client's groups for images, snapshots and content (see :mod:`berth.client`)."""

from __future__ import annotations

from operator import itemgetter
from typing import Any, cast

from berth.client_base import Body, Done, Group, Map, MapIter, MapList, Rpc, nothing

__all__ = ["Content", "Images", "Snapshots"]

_IMAGES = "containerd.v1.Images/"
_SNAPSHOTS = "containerd.v1.snapshot.Snapshot/"
_CONTENT = "containerd.v1.Content/"


class Images(Group[Map, MapList, Done, MapIter]):
    """``containerd.v1.Images`` and berth's ``Import`` and ``PrepareRootfs``."""

    def import_archive(self, path: str, *, name: str = "") -> MapList:
        """``berth.v1.Images/Import``: import the archive at ``path`` (on the daemon's host)."""
        body = {"path": path, "name": name}
        rpc = Rpc("berth.v1.Images/Import", body, itemgetter("images"), timeout=None)
        return cast(MapList, self._unary(rpc))

    def prepare_rootfs(
        self, name: str, key: str, *, labels: dict[str, str] | None = None
    ) -> MapList:
        """``berth.v1.Images/PrepareRootfs``: snapshot ``key`` on image ``name``; its mounts."""
        body = {"name": name, "key": key, "labels": dict(labels or {})}
        return cast(
            MapList, self._unary(Rpc("berth.v1.Images/PrepareRootfs", body, itemgetter("mounts")))
        )

    def get(self, name: str) -> Map:
        """``Get``: the image ``name``."""
        return cast(Map, self._unary(Rpc(_IMAGES + "Get", {"name": name}, itemgetter("image"))))

    def list(self) -> MapList:
        """``List``: the namespace's images."""
        return cast(MapList, self._unary(Rpc(_IMAGES + "List", {}, itemgetter("images"))))

    def put(self, image: dict[str, Any]) -> Done:
        """``Put``: create or replace an image record."""
        return cast(Done, self._unary(Rpc(_IMAGES + "Put", {"image": image}, nothing)))

    def delete(self, name: str) -> Done:
        """``Delete``: forget the image; what only it used is collected."""
        return cast(Done, self._unary(Rpc(_IMAGES + "Delete", {"name": name}, nothing)))


class Snapshots(Group[Map, MapList, Done, MapIter]):
    """``containerd.v1.snapshot.Snapshot``."""

    def _keyed(self, method: str, body: Body, pick: Any = None) -> Any:
        return self._unary(Rpc(_SNAPSHOTS + method, body, pick or (lambda reply: reply)))

    def prepare(
        self, key: str, parent: str = "", *, labels: dict[str, str] | None = None
    ) -> MapList:
        """``Prepare``: a writable snapshot on ``parent``; its mounts."""
        body = {"key": key, "parent": parent, "labels": dict(labels or {})}
        return cast(MapList, self._keyed("Prepare", body, itemgetter("mounts")))

    def view(self, key: str, parent: str = "", *, labels: dict[str, str] | None = None) -> MapList:
        """``View``: a read-only snapshot on ``parent``; its mounts."""
        body = {"key": key, "parent": parent, "labels": dict(labels or {})}
        return cast(MapList, self._keyed("View", body, itemgetter("mounts")))

    def mounts(self, key: str) -> MapList:
        """``Mounts``: how to mount ``key``."""
        return cast(MapList, self._keyed("Mounts", {"key": key}, itemgetter("mounts")))

    def commit(self, name: str, key: str) -> Done:
        """``Commit``: active ``key`` becomes committed ``name``."""
        return cast(Done, self._keyed("Commit", {"name": name, "key": key}, nothing))

    def remove(self, key: str) -> Done:
        """``Remove``: FailedPrecondition while it has children or a container uses it."""
        return cast(Done, self._keyed("Remove", {"key": key}, nothing))

    def stat(self, key: str) -> Map:
        """``Stat``: ``{name, parent, kind, readonly, labels}``."""
        return cast(Map, self._keyed("Stat", {"key": key}, itemgetter("info")))

    def usage(self, key: str) -> Map:
        """``Usage``: ``{size, inodes}`` of the snapshot's own tree."""
        return cast(Map, self._keyed("Usage", {"key": key}))

    def list(self) -> MapIter:
        """``List``: a stream of ``{"info": [Info, ...]}`` batches."""
        return cast(MapIter, self._stream(Rpc(_SNAPSHOTS + "List", {})))


class Content(Group[Map, MapList, Done, MapIter]):
    """``containerd.v1.Content``."""

    def info(self, digest: str) -> Map:
        """``Info``: ``{digest, size, committed_at}``."""
        rpc = Rpc(_CONTENT + "Info", {"digest": digest}, itemgetter("info"))
        return cast(Map, self._unary(rpc))

    def list(self) -> MapIter:
        """``List``: a stream of ``{"info": [Info, ...]}`` batches."""
        return cast(MapIter, self._stream(Rpc(_CONTENT + "List", {})))

    def read(self, digest: str, offset: int = 0, size: int = 0) -> MapIter:
        """``Read``: a stream of ``{offset, data}`` chunks (``size`` 0: to the end)."""
        body = {"digest": digest, "offset": offset, "size": size}
        return cast(MapIter, self._stream(Rpc(_CONTENT + "Read", body)))

    def delete(self, digest: str) -> Done:
        """``Delete``: the namespace stops holding the blob."""
        return cast(Done, self._unary(Rpc(_CONTENT + "Delete", {"digest": digest}, nothing)))

    def status(self, regexp: str = "") -> MapList:
        """``Status``: ingests in progress whose ref matches ``regexp``."""
        rpc = Rpc(_CONTENT + "Status", {"regexp": regexp}, itemgetter("statuses"))
        return cast(MapList, self._unary(rpc))
