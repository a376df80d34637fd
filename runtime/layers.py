"""Apply an OCI image layer (a tar stream, plain or gzip) onto a directory.

The directory is the merged view of a snapshot, which the caller mounts. The
layer is read twice:

1. *validate*: every entry is checked against a model of the target (this
   layer's entries over what the directory already holds) and the sha256 of
   the uncompressed tar, the diff_id, is computed. Any refusal here raises
   :class:`~wire.errors.InvalidArgument` before a single byte is written, so a
   hostile layer leaves the target as it was.
2. *apply*: the same entries (checked to be the same, in the same order) are
   written; ownership, modes and mtimes follow, directory metadata last.

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
import logging
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass

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
from runtime.tar_stream import LayerSource, TarStream, layer_opener, uncompressed_digest
from wire.errors import FailedPrecondition, InvalidArgument, NotFound

__all__ = [
    "AppliedLayer",
    "LayerSource",
    "apply_layer",
    "layer_diff_id",
    "resolve_in_root",
]

log = logging.getLogger(__name__)

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_CHUNK = 1 << 20
_MAX_NS = 2**63 - 1
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
        if base.startswith(_WHITEOUT):
            self._dirs.clear()
            if base == _OPAQUE:
                self.opaque.add("/".join(parent))
            elif not base.startswith(_WHITEOUT + _WHITEOUT):  # aufs metadata: skipped
                if base[len(_WHITEOUT) :] in ("", ".", ".."):
                    raise Refused("malformed whiteout")
                self.removed.add("/".join([*parent, base[len(_WHITEOUT) :]]))
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


class _Writer:
    """Pass 2: write entries below ``root``; directory metadata at the end."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.lookup = host_lookup(root)
        self.chown = os.geteuid() == 0
        self.unpacked: set[str] = set()  # paths this layer wrote
        self.kept: set[str] = set()  # their ancestors
        self.dirs: dict[str, tuple[int, int]] = {}  # path -> (mode, mtime ns)
        # As in _Validator: parents resolved through real directories only.
        self._parents: dict[str, str] = {}
        self._linked = False
        self.entries = 0
        self.whiteouts = 0

    def _mark(self, path: str) -> None:
        self.unpacked.add(path)
        parent = os.path.dirname(path)
        while len(parent) > len(self.root) and parent not in self.kept:
            self.kept.add(parent)
            parent = os.path.dirname(parent)

    def _on_link(self, link: list[str], target: str) -> None:
        self._linked = True
        # Pass 1 refused this already; the check is cheap, so keep it where writes happen.
        if os.path.join(self.root, *link) in self.unpacked and escapes(link, target):
            raise Refused(f'path traverses symlink "{"/".join(link)}" of this layer')

    def _directory(self, parts: list[str], create: bool) -> str | None:
        key = "/".join(parts)
        if key in self._parents:
            return self._parents[key]
        path, self._linked = self.root, False
        for part in walk(key, self.lookup, self._on_link):
            path = os.path.join(path, part)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(path, 0o755)
                os.chmod(path, 0o755)  # whatever the umask
                self._mark(path)
                continue
            if not stat.S_ISDIR(st.st_mode):
                if not create:
                    return None
                raise Refused(f'parent "{path[len(self.root) + 1 :]}" is not a directory')
        if not self._linked:
            self._parents[key] = path
        return path

    def apply(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = entry_parts(m.name)
        if not parts:
            return
        base = parts[-1]
        if base.startswith(_WHITEOUT):
            self._whiteout(parts[:-1], base)
            return
        parent = self._directory(parts[:-1], create=True)
        assert parent is not None
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            self._write(tf, m, fd, base, os.path.join(parent, base))
        finally:
            os.close(fd)
        self._mark(os.path.join(parent, base))
        self.entries += 1

    def _whiteout(self, parent_parts: list[str], base: str) -> None:
        if base != _OPAQUE and base.startswith(_WHITEOUT + _WHITEOUT):
            return
        self.whiteouts += 1
        self._parents.clear()
        parent = self._directory(parent_parts, create=False)
        if parent is None:
            return
        path = parent if base == _OPAQUE else os.path.join(parent, base[len(_WHITEOUT) :])
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if base == _OPAQUE or path in self.unpacked or path in self.kept:
            if stat.S_ISDIR(st.st_mode):
                self._clear_lower(path)
        else:
            _remove(path, st)

    def _clear_lower(self, directory: str) -> None:
        """Remove what lower layers put below ``directory``, keeping this layer's."""
        with os.scandir(directory) as it:
            for entry in it:
                if entry.path in self.unpacked or entry.path in self.kept:
                    if entry.is_dir(follow_symlinks=False):
                        self._clear_lower(entry.path)
                else:
                    _remove(entry.path, entry.stat(follow_symlinks=False))

    def _write(
        self, tf: tarfile.TarFile, m: tarfile.TarInfo, fd: int, base: str, path: str
    ) -> None:
        try:
            existing: os.stat_result | None = os.lstat(base, dir_fd=fd)
        except FileNotFoundError:
            existing = None
        mtime = min(max(int(m.mtime * 1_000_000_000), 0), _MAX_NS)
        if m.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                if existing is not None:
                    _remove(base, existing, fd)  # not a directory: no cached parent below
                os.mkdir(base, 0o700, dir_fd=fd)
            self._owner_and_xattrs(m, path)
            self.dirs[path] = (m.mode & 0o7777, mtime)  # after the contents are written
            return
        source = self._link_source(m) if m.islnk() else None
        if existing is not None:
            if source is not None and os.path.samestat(existing, os.lstat(source)):
                return
            if stat.S_ISDIR(existing.st_mode):
                self._parents.clear()
            _remove(base, existing, fd)
        if m.isreg():
            out = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                          0o600, dir_fd=fd)  # fmt: skip
            with os.fdopen(out, "wb") as f:
                data = tf.extractfile(m)
                assert data is not None
                shutil.copyfileobj(data, f, _CHUNK)
                f.flush()
                if self.chown:
                    os.fchown(out, m.uid, m.gid)
                _set_xattrs(m, out)
                os.fchmod(out, m.mode & 0o7777)  # after chown, which clears setuid bits
                os.utime(out, ns=(mtime, mtime))
            return
        if source is not None:
            os.link(source, base, dst_dir_fd=fd, follow_symlinks=False)
            return  # the inode and its metadata are the source's
        if m.issym():
            os.symlink(m.linkname, base, dir_fd=fd)
        elif m.isfifo():
            os.mkfifo(base, 0o600, dir_fd=fd)
        else:
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=fd)
        self._owner_and_xattrs(m, path)
        if not m.issym():
            os.chmod(base, m.mode & 0o7777, dir_fd=fd)  # just made: not a symlink
        os.utime(base, ns=(mtime, mtime), dir_fd=fd, follow_symlinks=False)

    def _link_source(self, m: tarfile.TarInfo) -> str:
        link = entry_parts(m.linkname)
        parent = self._directory(link[:-1], create=False) if link else None
        source = os.path.join(parent, link[-1]) if parent is not None else ""
        try:
            is_dir = stat.S_ISDIR(os.lstat(source).st_mode) if source else True
        except FileNotFoundError:
            is_dir = True
        if is_dir:
            raise Refused(f'hard link to "{m.linkname}", which is missing or a directory')
        return source

    def _owner_and_xattrs(self, m: tarfile.TarInfo, path: str) -> None:
        if self.chown:
            os.chown(path, m.uid, m.gid, follow_symlinks=False)
        _set_xattrs(m, path)

    def finish(self) -> None:
        for path, (mode, mtime) in self.dirs.items():
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, mode)
                os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


def _remove(path: str, st: os.stat_result, dir_fd: int | None = None) -> None:
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, dir_fd=dir_fd)  # never follows symlinks
    else:
        os.unlink(path, dir_fd=dir_fd)


def _set_xattrs(m: tarfile.TarInfo, target: str | int) -> None:
    """The ``SCHILY.xattr.*`` PAX records of ``m``, best effort."""
    for key, value in m.pax_headers.items():
        name = key.removeprefix("SCHILY.xattr.")
        # overlayfs's own attributes would change how the snapshot is merged.
        if name == key or name.startswith("trusted.overlay."):
            continue
        raw = value.encode("utf-8", "surrogateescape")
        try:  # a descriptor is the file itself; a path must not be followed
            os.setxattr(target, name, raw, follow_symlinks=isinstance(target, int))
        except OSError as exc:
            log.debug("xattr %s on %s not set: %s", name, target, exc)


def _fingerprint(m: tarfile.TarInfo) -> tuple[object, ...]:
    return (m.name, m.type, m.linkname, m.size, m.mode, m.uid, m.gid, m.devmajor, m.devminor)


def apply_layer(
    root: str | os.PathLike[str],
    layer: LayerSource,
    *,
    label: str | None = None,
    expected_diff_id: str | None = None,
    allow_devices: bool = False,
) -> AppliedLayer:
    """Apply ``layer`` (a path, or a callable opening it afresh) onto ``root``.

    ``label`` names the layer in errors (its digest, say). With
    ``expected_diff_id`` a mismatch is refused before anything is written.
    """
    top, opener = os.path.abspath(root), layer_opener(layer)
    if not os.path.isdir(top):
        raise NotFound(f'layer target "{top}": not a directory')
    what = "layer" if label is None else f"layer {label}"
    validator, seen = _Validator(top, allow_devices), []
    with opener() as raw:
        first = TarStream(raw, what)
        for _, m in first:
            try:
                validator.check(m)
            except Refused as exc:
                raise InvalidArgument(f'{what}: entry "{m.name}": {exc}') from None
            seen.append(_fingerprint(m))
    if expected_diff_id is not None and first.digest != expected_diff_id:
        raise InvalidArgument(
            f"{what}: diff_id {first.digest} does not match the expected {expected_diff_id}"
        )
    writer = _Writer(top)
    with opener() as raw:
        second = TarStream(raw, what)
        applied = 0
        for tf, m in second:
            if applied >= len(seen) or _fingerprint(m) != seen[applied]:
                raise InvalidArgument(f"{what}: changed while it was applied")
            applied += 1
            try:
                with second.reading():
                    writer.apply(tf, m)
            except Refused as exc:
                raise InvalidArgument(f'{what}: entry "{m.name}": {exc}') from None
            except OSError as exc:
                cls = InvalidArgument if exc.errno in _CONTENT_ERRNOS else FailedPrecondition
                raise cls(f'{what}: entry "{m.name}": {exc.strerror or exc}') from exc
    if applied != len(seen) or second.digest != first.digest:
        raise InvalidArgument(f"{what}: changed while it was applied")
    writer.finish()
    return AppliedLayer(first.digest, first.size, writer.entries, writer.whiteouts)


def layer_diff_id(layer: LayerSource) -> str:
    """The sha256 of the uncompressed layer (its diff_id), gunzipping when needed."""
    return uncompressed_digest(layer)[0]
