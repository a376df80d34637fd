"""Apply an OCI image layer (a tar stream, plain or gzip) onto a directory.

The directory is the merged view of a snapshot, which the caller mounts. The
layer is read once, in two passes:

1. *validate*: the layer is read, gunzipped when it is gzip, and parsed;
   every entry is checked against a model of the target (this layer's entries
   over what the directory already holds) and the sha256 of the uncompressed
   tar, the diff_id, is computed. Meanwhile the uncompressed tar is spooled
   to an unnamed temporary file and each entry's data offset recorded. Any
   refusal here raises :class:`~wire.errors.InvalidArgument` before a single
   byte is written, so a hostile layer leaves the target as it was.
2. *apply*: the entries recorded are written (:mod:`runtime.layer_writer`),
   their data read back from the spool by offset: nothing is decompressed or
   parsed twice. Ownership, modes and mtimes follow, directory metadata last.
   The spool is this process's own file, unnamed, written in pass 1 and never
   reachable by anyone else, so what pass 2 writes is exactly what pass 1
   validated and hashed: no "changed between the two reads" check is needed,
   and the layer source is opened only once.

Paths resolve as in a chroot (:func:`resolve_in_root`, containerd's
``fs.RootPath``, securejoin): a symlink already in the target that points to
``/etc`` means ``<root>/etc``, and ``..`` stops at the root, so nothing is ever
written outside it. Refused outright: absolute names and names whose ``..``
climb out, hard links whose target does that or is missing or a directory,
entries below a symlink *of this same layer* whose target points outside the
root (a tar of a real tree never has entries below one of its symlinks, so
such an entry is crafted), device nodes unless ``allow_devices``, unknown
entry types, and data that is not a whole tar (gzip) stream.

Whiteouts follow the OCI layer spec: ``dir/.wh.name`` removes ``dir/name``
and ``dir/.wh..wh..opq`` empties ``dir``, both only of what lower layers put
there; entries of this layer are kept whatever the order. Whiteout files are
never written.
"""

from __future__ import annotations

import errno
import os
import tarfile
import tempfile
from dataclasses import dataclass
from typing import IO

from runtime.layer_writer import OPAQUE, WHITEOUT, LayerWriter
from runtime.root_path import (
    DIR,
    FILE,
    Node,
    Refused,
    entry_parts,
    escapes,
    host_lookup,
    resolve_in_root,
    walk,
)
from runtime.tar_stream import LayerSource, SpooledTar, layer_opener, uncompressed_digest
from wire.errors import FailedPrecondition, InvalidArgument, NotFound

__all__ = [
    "AppliedLayer",
    "LayerSource",
    "apply_layer",
    "layer_diff_id",
    "resolve_in_root",
]

# Errors that come from what the layer holds, not from the host.
_CONTENT_ERRNOS = {errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT, errno.ELOOP,
                   errno.EINVAL, errno.ENAMETOOLONG, errno.EMLINK}  # fmt: skip


@dataclass(frozen=True)
class AppliedLayer:
    """What :func:`apply_layer` did: the layer's diff_id and what it wrote."""

    diff_id: str
    size: int  # bytes of the uncompressed tar
    entries: int  # files, directories, links and nodes written
    whiteouts: int  # whiteout and opaque markers applied


class _Validator:
    """Pass 1: this layer's entries so far, over the target as it is."""

    def __init__(self, root: str, allow_devices: bool) -> None:
        self.allow_devices = allow_devices
        self.layer: dict[str, Node] = {}
        self.removed: set[str] = set()  # whited out: the lower layers' copy is gone
        self.opaque: set[str] = set()  # the lower layers' children are gone
        self._real = host_lookup(root)
        self._cache: dict[str, Node | None] = {}
        # Parent directories resolved through directories only, which only a
        # directory being replaced or removed can change.
        self._dirs: dict[str, list[str]] = {}
        self._linked = False

    def _lower(self, key: str) -> Node | None:
        if key not in self._cache:
            parent = key.rpartition("/")[0]
            # Never lstat through a symlink or file of the target.
            self._cache[key] = (
                None if parent and self._lower(parent) != DIR else self._real(key.split("/"))
            )
        return self._cache[key]

    def lookup(self, parts: list[str]) -> Node | None:
        key = "/".join(parts)
        if key in self.layer:
            return self.layer[key]
        prefix = ""
        for i, part in enumerate(parts):
            if prefix in self.opaque or (i and self.layer.get(prefix, DIR) != DIR):
                return None  # below an opaque directory, or a non-directory of this layer
            prefix = f"{prefix}/{part}" if i else part
            if prefix in self.removed:
                return None
        return self._lower(key)

    def _on_link(self, link: list[str], target: str) -> None:
        self._linked = True
        key = "/".join(link)
        if key in self.layer and escapes(link, target):
            raise Refused(f'path traverses symlink "{key}" of this layer, which points outside')

    def directory(self, parts: list[str]) -> list[str]:
        key = "/".join(parts)
        if key in self._dirs:
            return self._dirs[key]
        self._linked = False
        resolved = walk(key, self.lookup, self._on_link)
        kinds = [self.lookup(resolved[:i]) for i in range(1, len(resolved) + 1)]
        for i, kind in enumerate(kinds):
            if kind not in (None, DIR):
                raise Refused(f'parent "{"/".join(resolved[: i + 1])}" is not a directory')
            if kind is None:
                self.layer["/".join(resolved[: i + 1])] = DIR  # apply will create it
        if not self._linked:
            self._dirs[key] = resolved
        return resolved

    def _record(self, key: str, node: Node) -> None:
        if node != DIR and self.lookup(key.split("/")) == DIR:
            self._dirs.clear()
        self.layer[key] = node

    def check(self, m: tarfile.TarInfo) -> None:
        parts = entry_parts(m.name)
        if not parts:
            return  # the root itself: its metadata belongs to the snapshot, as in containerd
        parent, base = self.directory(parts[:-1]), parts[-1]
        if base.startswith(WHITEOUT):
            self._dirs.clear()
            if base == OPAQUE:
                self.opaque.add("/".join(parent))
            elif not base.startswith(WHITEOUT + WHITEOUT):  # aufs metadata: skipped
                if base[len(WHITEOUT) :] in ("", ".", ".."):
                    raise Refused("malformed whiteout")
                self.removed.add("/".join([*parent, base[len(WHITEOUT) :]]))
            return
        node: Node | None
        if m.isdir():
            node = DIR
        elif m.issym():
            node = ("l", m.linkname)  # points anywhere: it is read inside the container
        elif m.islnk():
            try:
                link = entry_parts(m.linkname)
            except Refused as exc:
                raise Refused(f'hard link to "{m.linkname}": {exc}') from None
            node = self.lookup([*self.directory(link[:-1]), *link[-1:]]) if link else DIR
            if node is None:
                raise Refused(f'hard link to "{m.linkname}", which does not exist')
            if node == DIR:
                raise Refused(f'hard link to "{m.linkname}", which is a directory')
        elif m.ischr() or m.isblk():
            if not self.allow_devices:
                raise Refused("device nodes are not allowed")
            node = FILE
        elif m.isreg() or m.isfifo():
            node = FILE
        else:
            raise Refused(f"unsupported entry type {m.type!r}")
        self._record("/".join([*parent, base]), node)


def _spool(spool_dir: str | os.PathLike[str] | None, what: str) -> IO[bytes]:
    """An unnamed file for :class:`SpooledTar`: no name to remove, none to find."""
    try:
        return tempfile.TemporaryFile(buffering=0, dir=spool_dir)
    except OSError as exc:
        where = tempfile.gettempdir() if spool_dir is None else os.fspath(spool_dir)
        raise FailedPrecondition(f'{what}: no spool in "{where}": {exc.strerror or exc}') from exc


def apply_layer(
    root: str | os.PathLike[str],
    layer: LayerSource,
    *,
    label: str | None = None,
    expected_diff_id: str | None = None,
    allow_devices: bool = False,
    spool_dir: str | os.PathLike[str] | None = None,
) -> AppliedLayer:
    """Apply ``layer`` (a path, or a callable opening it) onto ``root``.

    ``label`` names the layer in errors (its digest, say). With
    ``expected_diff_id`` a mismatch is refused before anything is written.

    The uncompressed tar is spooled, up to the end of the archive, to an
    unnamed file (``O_TMPFILE``, or made and unlinked at once) in
    ``spool_dir``; by default :func:`tempfile.gettempdir`, which may be a
    tmpfs: pass a directory on a disk with room for the largest uncompressed
    layer. The spool has no name, so it is gone once closed, which it is on
    every way out of here, and even if the process dies.
    """
    top = os.path.abspath(root)
    if not os.path.isdir(top):
        raise NotFound(f'layer target "{top}": not a directory')
    what = "layer" if label is None else f"layer {label}"
    with _spool(spool_dir, what) as spool:
        validator = _Validator(top, allow_devices)
        with layer_opener(layer)() as raw:
            tar = SpooledTar(raw, what, spool.fileno())
            try:
                for _, m in tar:
                    try:
                        validator.check(m)
                    except Refused as exc:
                        raise InvalidArgument(f'{what}: entry "{m.name}": {exc}') from None
            except OSError as exc:  # reading the layer, or writing the spool (full?)
                raise FailedPrecondition(f"{what}: {exc.strerror or exc}") from exc
        if expected_diff_id is not None and tar.digest != expected_diff_id:
            raise InvalidArgument(
                f"{what}: diff_id {tar.digest} does not match the expected {expected_diff_id}"
            )
        writer = LayerWriter(top, tar.copy_data)
        try:
            for m in tar.members:
                try:
                    writer.apply(m)
                except (Refused, tarfile.TarError) as exc:  # no TarError: the spool is whole
                    raise InvalidArgument(f'{what}: entry "{m.name}": {exc}') from None
                except OSError as exc:
                    cls = InvalidArgument if exc.errno in _CONTENT_ERRNOS else FailedPrecondition
                    raise cls(f'{what}: entry "{m.name}": {exc.strerror or exc}') from exc
            writer.finish()
        finally:
            writer.close()
    return AppliedLayer(tar.digest, tar.size, writer.entries, writer.whiteouts)


def layer_diff_id(layer: LayerSource) -> str:
    """The sha256 of the uncompressed layer (its diff_id), gunzipping when needed."""
    return uncompressed_digest(layer)[0]
