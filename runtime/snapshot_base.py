"""What every snapshotter shares: the ``Snapshotter`` protocol and the directory layout.

Layout under the daemon's root, for a snapshotter named ``<name>``::

    <root>/snapshots/<name>/
      snapshots/<id>/fs      the snapshot's own tree (overlayfs: its upper layer)
      snapshots/<id>/work    overlayfs only: the mount's workdir
      tmp/                   snapshots being made or removed, and mount checks

Snapshots are addressed by an ``id`` the caller (the metadata store)
assigns, never by the user's key, so keys may hold any character. The
metadata (keys, parents, kinds, labels, namespaces) lives elsewhere; this
layer creates, mounts, measures and removes directories.

A snapshot is made in ``tmp/`` and renamed into ``snapshots/``: a crash
before the rename leaves only a ``tmp/`` entry, which :meth:`clean_temp`
removes at start-up; after it, a whole snapshot that :meth:`ids` reports
and the garbage collector removes if the metadata never recorded it.
Removal renames the snapshot into ``tmp/`` first, so a crash mid-removal
leaves no half-removed snapshot in :meth:`ids` either.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeAlias

from runtime.durable import fsync_dir
from runtime.overlay_lowerdir import overlay_layers
from wire.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

__all__ = [
    "Mount",
    "SnapshotDirs",
    "SnapshotId",
    "Snapshotter",
    "bind_mount",
    "check_id",
    "disk_usage",
    "mounted_from",
    "syncfs",
    "temp_dir",
]

log = logging.getLogger(__name__)

SnapshotId: TypeAlias = str | int
"""A snapshot's id as the caller assigned it; stored as its decimal or string form."""

Mount: TypeAlias = dict[str, Any]
"""containerd's ``Mount {type, source, target, options}``, as ``runtime.mounts`` mounts it."""

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_OCTAL = re.compile(r"\\([0-7]{3})")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syncfs.argtypes = [ctypes.c_int]

# Entries of tmp/ that a prepare, remove or check of this process is using,
# so clean_temp() running beside them leaves them alone.
_BUSY: set[str] = set()
_BUSY_LOCK = threading.Lock()


class Snapshotter(Protocol):
    """One way of laying snapshots out on disk and mounting them."""

    name: ClassVar[str]

    def prepare(
        self, id: SnapshotId, parent_ids: Sequence[SnapshotId], *, readonly: bool = False
    ) -> None:
        """Create snapshot ``id`` on ``parent_ids`` (nearest first); ``readonly`` for a view."""
        ...

    def mounts(
        self, id: SnapshotId, parent_ids: Sequence[SnapshotId], readonly: bool
    ) -> list[Mount]:
        """The mounts that show snapshot ``id`` (rw when active, ro for a view)."""
        ...

    def commit(self, id: SnapshotId) -> None:
        """Make snapshot ``id`` fit to be a parent, durably."""
        ...

    def remove(self, id: SnapshotId) -> None:
        """Delete snapshot ``id``'s directory; FailedPrecondition while mounted."""
        ...

    def usage(self, id: SnapshotId) -> tuple[int, int]:
        """Bytes on disk and inodes of snapshot ``id``'s own tree."""
        ...

    def in_use(self, id: SnapshotId) -> str | None:
        """What mounts snapshot ``id`` (described), or None; None too when it is absent."""
        ...

    def exists(self, id: SnapshotId) -> bool:
        """Whether snapshot ``id`` is on disk."""
        ...

    def ids(self) -> set[str]:
        """The ids of every snapshot on disk, for the garbage collector's sweep."""
        ...

    def check(self) -> None:
        """Unavailable, with the reason, when this snapshotter cannot work on its root."""
        ...

    def clean_temp(self) -> list[str]:
        """Remove what crashed prepares and removals left in ``tmp/``; returns the names."""
        ...


class SnapshotDirs:
    """The directory work shared by the snapshotters; subclasses fill and mount a snapshot."""

    name: ClassVar[str] = ""

    def __init__(self, root: Path) -> None:
        # Absolute, so the tmp/ paths clean_temp() compares match temp_dir()'s.
        root = Path(os.path.abspath(root))
        self.root = root
        self.home = root / "snapshots" / self.name
        self.snapshots = self.home / "snapshots"
        self.temp = self.home / "tmp"

    def prepare(
        self, id: SnapshotId, parent_ids: Sequence[SnapshotId], *, readonly: bool = False
    ) -> None:
        """Create snapshot ``id`` on ``parent_ids`` (nearest first), all or nothing.

        AlreadyExists when ``id`` is on disk, NotFound when a parent is not.
        """
        sid = check_id(id)
        parents = [self.existing(p) for p in parent_ids]
        target = self.snapshots / sid
        if target.exists():
            raise AlreadyExists(f'snapshot id "{sid}": already exists')
        self._check_prepare(sid, parents, readonly)
        self.snapshots.mkdir(mode=0o700, parents=True, exist_ok=True)
        with temp_dir(self.temp, f"new-{sid}-") as tmp:
            self._populate(sid, tmp, parents)
            fsync_dir(tmp)
            try:
                os.rename(tmp, target)
            except OSError as exc:
                if target.exists():
                    raise AlreadyExists(f'snapshot id "{sid}": already exists') from None
                raise FailedPrecondition(f'snapshot id "{sid}": {exc.strerror}') from None
        fsync_dir(self.snapshots)

    def commit(self, id: SnapshotId) -> None:
        """Flush snapshot ``id``'s tree to disk; its tree stays where it is.

        The tree becomes a parent that the metadata store records durably,
        so its data must survive a power loss too: syncfs flushes the
        filesystem holding it (there is no cheaper call for a whole tree).
        """
        path = self.existing(id)
        syncfs(path)

    def remove(self, id: SnapshotId) -> None:
        """Delete snapshot ``id``, whole or half-made; NotFound if absent.

        FailedPrecondition while anything mounts it (a bind of its tree, an
        overlay using it as a layer, a mount below it): deleting then would
        pull files from under a running container.
        """
        path = self.existing(id)
        user = mounted_from(path)
        if user is not None:
            raise FailedPrecondition(f'snapshot id "{path.name}": in use by {user}')
        self.temp.mkdir(mode=0o700, parents=True, exist_ok=True)
        doomed = self.temp / f"rm-{path.name}-{uuid.uuid4().hex[:8]}"
        with _busy(doomed):
            os.rename(path, doomed)
            fsync_dir(self.snapshots)
            try:
                _remove_tree(doomed)
            except OSError as exc:
                # The snapshot is gone from ids(); clean_temp() retries the rest.
                log.warning("snapshot id %s: left %s behind: %s", path.name, doomed, exc)

    def in_use(self, id: SnapshotId) -> str | None:
        """What mounts snapshot ``id`` (described), or None; None too when it is absent."""
        if not self.exists(id):
            return None
        return mounted_from(self.existing(id))

    def usage(self, id: SnapshotId) -> tuple[int, int]:
        """Bytes on disk (blocks, as du counts) and inodes of snapshot ``id``'s ``fs``."""
        path = self.existing(id)
        try:
            return disk_usage(path / "fs")
        except FileNotFoundError:
            raise NotFound(f'snapshot id "{path.name}": its tree is missing') from None

    def exists(self, id: SnapshotId) -> bool:
        """Whether snapshot ``id`` is on disk."""
        return (self.snapshots / check_id(id)).is_dir()

    def ids(self) -> set[str]:
        """The ids of every snapshot on disk."""
        try:
            return {n for n in os.listdir(self.snapshots) if _ID.fullmatch(n)}
        except FileNotFoundError:
            return set()

    def clean_temp(self) -> list[str]:
        """Remove every ``tmp/`` entry no prepare, remove or check of this process holds."""
        try:
            entries = sorted(os.listdir(self.temp))
        except FileNotFoundError:
            return []
        removed = []
        for name in entries:
            path = self.temp / name
            with _BUSY_LOCK:
                if str(path) in _BUSY:
                    continue
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.lexists(path):
                removed.append(name)
        return removed

    def existing(self, id: SnapshotId) -> Path:
        """The directory of snapshot ``id``; NotFound when it is not on disk."""
        path = self.snapshots / check_id(id)
        if not path.is_dir():
            raise NotFound(f'snapshot id "{path.name}": not found')
        return path

    def _check_prepare(self, sid: str, parents: list[Path], readonly: bool) -> None:
        """Refuse, before anything is made, a snapshot that could not be mounted."""

    def _populate(self, sid: str, tmp: Path, parents: list[Path]) -> None:
        raise NotImplementedError


def check_id(id: SnapshotId) -> str:
    """``id`` as the name of its directory; InvalidArgument unless it is a safe name."""
    sid = str(id) if isinstance(id, int) and not isinstance(id, bool) else id
    if not isinstance(sid, str) or not _ID.fullmatch(sid):
        raise InvalidArgument(
            f"snapshot id {id!r}: not an integer or a name of letters, digits, '_', '.', '-'"
        )
    return sid


def bind_mount(source: Path, readonly: bool) -> Mount:
    """A recursive bind of ``source``, read-only or read-write."""
    return {
        "type": "bind",
        "source": str(source),
        "target": "",
        "options": ["rbind", "ro" if readonly else "rw"],
    }


def disk_usage(path: Path) -> tuple[int, int]:
    """Bytes on disk and inodes below ``path``, itself included.

    Symlinks are not followed, a hard-linked inode counts once, and other
    filesystems mounted below are not entered (as ``du -x``). Bytes are
    allocated blocks, as containerd's usage counts them, so a sparse file
    counts what it occupies.
    """
    top = os.lstat(path)
    size, inodes = top.st_blocks * 512, 1
    linked: set[tuple[int, int]] = set()
    pending = [str(path)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if st.st_nlink > 1 and not entry.is_dir(follow_symlinks=False):
                    if (st.st_dev, st.st_ino) in linked:
                        continue
                    linked.add((st.st_dev, st.st_ino))
                size += st.st_blocks * 512
                inodes += 1
                if entry.is_dir(follow_symlinks=False) and st.st_dev == top.st_dev:
                    pending.append(entry.path)
    return size, inodes


@contextlib.contextmanager
def temp_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh directory in ``parent`` that clean_temp() leaves alone; removed on error.

    On success the caller has usually renamed it away; what remains is removed.
    """
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    with _busy(path):
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


def mounted_from(path: Path) -> str | None:
    """A mount that uses the tree at ``path``, described, or None when none does.

    Read from this process's mountinfo: a mount point at or below ``path``,
    an overlay with a layer at or below it (relative lowers read from the
    directory ``runtime.mounts`` names as the source), or a bind whose root
    (the subtree it shows) is at or below it. Best effort on filesystems
    whose device numbers mountinfo does not show as stat does.
    """
    given = os.path.abspath(path)
    real = os.path.realpath(path)
    belows = {p.rstrip("/") + "/" for p in (given, real)}
    table = list(_mount_table())
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return None
    device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    below = real.rstrip("/") + "/"
    # The subtree of its filesystem that ``path`` is, from the mount holding it.
    holders = [m for m in table if m[0] == device and below.startswith(m[2].rstrip("/") + "/")]
    relative = None
    if holders:
        _, root, point, _, _, _ = max(holders, key=lambda m: len(m[2]))
        relative = root.rstrip("/") + real[len(point.rstrip("/")) :]
    for dev, root, point, fstype, source, options in table:
        if point == real or point.startswith(below):
            return f"the mount on {point}"
        if fstype == "overlay" and any(
            (layer + "/").startswith(b) for layer in overlay_layers(source, options) for b in belows
        ):
            return f"the overlay on {point}"
        if (
            relative is not None
            and dev == device
            and (root == relative or root.startswith(relative.rstrip("/") + "/"))
        ):
            return f"the bind mount on {point}"
    return None


def _remove_tree(path: Path) -> None:
    """rm -rf ``path``, opening up directories whose mode keeps a non-root owner out."""
    try:
        shutil.rmtree(path)
    except PermissionError:
        pending = [str(path)]
        while pending:
            d = pending.pop()
            os.chmod(d, 0o700)
            with os.scandir(d) as entries:
                pending.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        shutil.rmtree(path)


def _mount_table() -> Iterator[tuple[str, str, str, str, str, str]]:
    """(major:minor, root, mount point, fstype, source, super options) of each mount."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.rstrip("\n").split(" ")
            try:
                dash = fields.index("-", 6)
                device, root, point = fields[2], fields[3], fields[4]
                fstype, source, options = fields[dash + 1], fields[dash + 2], fields[dash + 3]
            except (ValueError, IndexError):
                continue
            yield (
                device,
                _unescape(root),
                _unescape(point),
                fstype,
                _unescape(source),
                _unescape(options),
            )


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as ``\\ooo`` octal."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


@contextlib.contextmanager
def _busy(path: Path) -> Iterator[None]:
    with _BUSY_LOCK:
        _BUSY.add(str(path))
    try:
        yield
    finally:
        with _BUSY_LOCK:
            _BUSY.discard(str(path))


def syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise FailedPrecondition(f"syncfs {path}: {os.strerror(err)}")
    finally:
        os.close(fd)
