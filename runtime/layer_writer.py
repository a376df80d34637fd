"""Write a layer's entries below a directory: pass 2 of :func:`runtime.layers.apply_layer`.

Entries arrive already validated (pass 1); the checks that guard writes are
kept here all the same where they are cheap. Paths resolve as in a chroot
(:func:`~runtime.root_path.walk`); every entry is made relative to a
descriptor of its parent directory and never through a symlink. A path that
is new is made without looking first (``O_CREAT | O_EXCL``, ``mkdir``,
``symlink``...); only when that finds something in the way is it examined
and replaced, as an overlay upper layer replaces a lower one. A regular
file's data, owner, mode and times are set through its descriptor.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tarfile
from collections.abc import Callable

from runtime.root_path import Refused, entry_parts, escapes, host_lookup, walk

__all__ = ["OPAQUE", "WHITEOUT", "LayerWriter"]

log = logging.getLogger(__name__)

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_MAX_NS = 2**63 - 1
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class LayerWriter:
    """Pass 2: write entries below ``root``; directory metadata at the end.

    ``copy_data(member, fd)`` writes a regular file's data to ``fd``. Call
    :meth:`close` in the end, whatever happened: it closes the parent
    directory kept open between entries.
    """

    def __init__(self, root: str, copy_data: Callable[[tarfile.TarInfo, int], None]) -> None:
        self.root = root
        self.copy_data = copy_data
        self.lookup = host_lookup(root)
        self.chown = os.geteuid() == 0
        self.unpacked: set[str] = set()  # paths this layer wrote
        self.kept: set[str] = set()  # their ancestors
        self.dirs: dict[str, tuple[int, int]] = {}  # path -> (mode, mtime ns)
        # As in the validator: parents resolved through real directories only.
        self._parents: dict[str, str] = {}
        self._linked = False
        # The parent directory of the last entry, open: entries of a directory
        # come together. Only a whiteout removes anything but a child of it.
        self._dir: tuple[str, int] | None = None
        self.entries = 0
        self.whiteouts = 0

    def close(self) -> None:
        if self._dir is not None:
            fd, self._dir = self._dir[1], None
            os.close(fd)

    def _open_dir(self, path: str) -> int:
        if self._dir is not None and self._dir[0] == path:
            return self._dir[1]
        self.close()
        fd = os.open(path, _DIR_FLAGS)
        self._dir = (path, fd)
        return fd

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

    def apply(self, m: tarfile.TarInfo) -> None:
        parts = entry_parts(m.name)
        if not parts:
            return
        base = parts[-1]
        if base.startswith(WHITEOUT):
            self._whiteout(parts[:-1], base)
            return
        parent = self._directory(parts[:-1], create=True)
        assert parent is not None
        path = os.path.join(parent, base)
        self._write(m, self._open_dir(parent), base, path)
        self._mark(path)
        self.entries += 1

    def _whiteout(self, parent_parts: list[str], base: str) -> None:
        if base != OPAQUE and base.startswith(WHITEOUT + WHITEOUT):
            return
        self.whiteouts += 1
        self._parents.clear()
        self.close()  # what it removes may be the open directory
        parent = self._directory(parent_parts, create=False)
        if parent is None:
            return
        path = parent if base == OPAQUE else os.path.join(parent, base[len(WHITEOUT) :])
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if base == OPAQUE or path in self.unpacked or path in self.kept:
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

    def _replace(self, base: str, fd: int) -> None:
        """Remove what is at ``base`` (below the open directory ``fd``), for a new entry."""
        existing = os.lstat(base, dir_fd=fd)
        if stat.S_ISDIR(existing.st_mode):
            self._parents.clear()
        _remove(base, existing, fd)

    def _write(self, m: tarfile.TarInfo, fd: int, base: str, path: str) -> None:
        mtime = min(max(int(m.mtime * 1_000_000_000), 0), _MAX_NS)
        if m.isreg():
            try:
                out = os.open(base, _NEW_FILE, 0o600, dir_fd=fd)
            except FileExistsError:  # never opened, let alone written through
                self._replace(base, fd)
                out = os.open(base, _NEW_FILE, 0o600, dir_fd=fd)
            try:
                if m.size:
                    self.copy_data(m, out)
                if self.chown:
                    os.fchown(out, m.uid, m.gid)
                _set_xattrs(m, out)
                os.fchmod(out, m.mode & 0o7777)  # after chown, which clears setuid bits
                os.utime(out, ns=(mtime, mtime))
            finally:
                os.close(out)
            return
        if m.isdir():
            try:
                os.mkdir(base, 0o700, dir_fd=fd)
            except FileExistsError:
                existing = os.lstat(base, dir_fd=fd)
                if not stat.S_ISDIR(existing.st_mode):
                    _remove(base, existing, fd)  # not a directory: no cached parent below
                    os.mkdir(base, 0o700, dir_fd=fd)
            self._owner_and_xattrs(m, path)
            self.dirs[path] = (m.mode & 0o7777, mtime)  # after the contents are written
            return
        if m.islnk():
            source = self._link_source(m)
            try:
                os.link(source, base, dst_dir_fd=fd, follow_symlinks=False)
            except FileExistsError:
                if os.path.samestat(os.lstat(base, dir_fd=fd), os.lstat(source)):
                    return
                self._replace(base, fd)
                os.link(source, base, dst_dir_fd=fd, follow_symlinks=False)
            return  # the inode and its metadata are the source's
        try:
            self._make_node(m, fd, base)
        except FileExistsError:
            self._replace(base, fd)
            self._make_node(m, fd, base)
        self._owner_and_xattrs(m, path)
        if not m.issym():
            os.chmod(base, m.mode & 0o7777, dir_fd=fd)  # just made: not a symlink
        os.utime(base, ns=(mtime, mtime), dir_fd=fd, follow_symlinks=False)

    @staticmethod
    def _make_node(m: tarfile.TarInfo, fd: int, base: str) -> None:
        if m.issym():
            os.symlink(m.linkname, base, dir_fd=fd)
        elif m.isfifo():
            os.mkfifo(base, 0o600, dir_fd=fd)
        else:
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=fd)

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
        self.close()
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
