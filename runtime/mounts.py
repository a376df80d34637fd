"""Mount a task's rootfs mounts on its bundle, and take them down again.

Mounts are containerd's ``Mount {type, source, target, options[]}``. As in
containerd, a mount without ``target`` is mounted *at* the given directory
(the bundle's ``rootfs/``), so the first (usually only) mount becomes the
container's root; a mount with a ``target`` goes at that path below it.

Options are split as mount(8) does: the ones naming a flag (``ro``, ``bind``,
``rbind``, ``nosuid``, ...) become ``MS_*`` flags, the rest (``lowerdir=...``,
``size=...``) the data string. Everything goes through libc's ``mount`` and
``umount2`` (no helper processes), and a failure undoes what was done.

The data string must fit in a page. An overlay whose ``lowerdir`` does not
(an image of more than about 80 layers) is mounted with its layers relative
to their common directory (:mod:`runtime.overlay_lowerdir`), from a thread
that changes to that directory: see :func:`_mount_from`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime.overlay_lowerdir import MAX_MOUNT_DATA, compact_lowerdir, data_size
from wire.errors import FailedPrecondition

__all__ = ["is_mounted", "mount_all", "unmount_all"]

log = logging.getLogger(__name__)

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 0x2
CLONE_FS = 0x200
_PROPAGATION = MS_UNBINDABLE | MS_PRIVATE | MS_SLAVE | MS_SHARED
_OCTAL = re.compile(r"\\([0-7]{3})")

# option -> (clear the flag?, flag), as in containerd's mount_linux.go.
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),
    "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME),
    "exec": (True, MS_NOEXEC),
    "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC),
    "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID),
    "private": (False, MS_PRIVATE),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rprivate": (False, MS_PRIVATE | MS_REC),
    "rshared": (False, MS_SHARED | MS_REC),
    "rslave": (False, MS_SLAVE | MS_REC),
    "runbindable": (False, MS_UNBINDABLE | MS_REC),
    "rw": (True, MS_RDONLY),
    "shared": (False, MS_SHARED),
    "slave": (False, MS_SLAVE),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
    "unbindable": (False, MS_UNBINDABLE),
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]


def mount_all(mounts: list[dict[str, Any]], target: Path) -> None:
    """Mount each of ``mounts`` at ``target`` (or its ``target`` below it), in order.

    On a failure, everything this call mounted is unmounted again and
    FailedPrecondition names the mount and the kernel's reason.
    """
    done: list[Path] = []
    try:
        for m in mounts:
            where = _destination(target, str(m.get("target") or ""))
            try:
                where.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FailedPrecondition(
                    f"mount {m.get('type')} {m.get('source')} on {where}: "
                    f"cannot create the mount point: {exc.strerror}"
                ) from None
            _mount_one(m, where)
            done.append(where)
    except BaseException:
        for where in reversed(done):
            with contextlib.suppress(FailedPrecondition):
                _unmount(where)
        raise


def unmount_all(target: Path) -> None:
    """Unmount ``target`` and every mount below it, deepest first; no-op if none."""
    root = os.path.realpath(target)
    # A path can hold stacked mounts: go round until none is left, bounded in
    # case a lazily detached one keeps showing.
    for _ in range(64):
        points = [p for p in _mount_points() if p == root or p.startswith(root.rstrip("/") + "/")]
        if not points:
            return
        # Deepest first; mountinfo lists newer (upper) mounts later.
        for point in sorted(reversed(points), key=lambda p: p.count("/"), reverse=True):
            _unmount(Path(point))
    raise FailedPrecondition(f"unmount {target}: mounts keep reappearing below it")


def is_mounted(path: Path) -> bool:
    """Whether ``path`` is itself a mount point."""
    return os.path.realpath(path) in set(_mount_points())


def _destination(target: Path, sub: str) -> Path:
    if not sub or sub == "/":
        return target
    parts = Path(sub.lstrip("/")).parts
    if ".." in parts:
        raise FailedPrecondition(f"mount target {sub!r} escapes {target}")
    return target.joinpath(*parts)


def _parse_options(options: list[str]) -> tuple[int, list[str]]:
    flags = 0
    data: list[str] = []
    for option in options:
        known = _FLAGS.get(option)
        if known is None:
            data.append(option)
        elif known[0]:
            flags &= ~known[1]
        else:
            flags |= known[1]
    return flags, data


def _mount_one(m: dict[str, Any], where: Path) -> None:
    fstype = str(m.get("type") or "")
    source = str(m.get("source") or "")
    options = [str(o) for o in m.get("options") or []]
    flags, data_options = _parse_options(options)
    if fstype in ("bind", "rbind") and not flags & MS_BIND:
        flags |= MS_BIND | (MS_REC if fstype == "rbind" else 0)
    described = f"mount {fstype or 'none'} {source} on {where} ({','.join(options)})"
    chdir = ""
    if fstype == "overlay":
        chdir, data_options = compact_lowerdir(data_options)
    size = data_size(data_options)
    if size > MAX_MOUNT_DATA:
        # The kernel would cut the data at the page and mount what is left.
        relative = f" with its lower layers relative to {chdir}" if chdir else ""
        raise FailedPrecondition(
            f"{described}: the options are {size} bytes{relative}, over the kernel's "
            f"limit of {MAX_MOUNT_DATA}"
        )
    data = ",".join(data_options)
    if chdir:  # what is passed, not the pages of absolute paths given
        described = f"mount overlay from {chdir} on {where} ({data})"
    log.debug("%s", described)
    propagation = flags & _PROPAGATION
    first = flags & ~_PROPAGATION
    # A bind ignores every flag but MS_REC; read-only and the like need a
    # remount of the bind, and propagation a call of its own.
    if chdir:
        # overlayfs only displays the source: naming the directory there
        # tells mountinfo's readers (snapshot_base.mounted_from, people
        # reading `mount`) what the relative layers are relative to.
        _mount_from(chdir, chdir, where, fstype, first, data, described)
    else:
        _mount(source, where, fstype, first, data, described)
    try:
        if first & MS_BIND and first & ~(MS_BIND | MS_REC | MS_REMOUNT):
            remount = (first & ~MS_REC) | MS_REMOUNT
            _mount("", where, "", remount, "", described)
        if propagation:
            _mount("", where, "", propagation | (first & MS_REC), "", described)
    except FailedPrecondition:
        with contextlib.suppress(FailedPrecondition):
            _unmount(where)
        raise


def _mount(source: str, where: Path, fstype: str, flags: int, data: str, described: str) -> None:
    rc = _libc.mount(
        os.fsencode(source) if source else None,
        os.fsencode(where),
        os.fsencode(fstype) if fstype else None,
        flags,
        os.fsencode(data) if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise FailedPrecondition(f"{described}: {os.strerror(err)}")


def _mount_from(
    directory: str, source: str, where: Path, fstype: str, flags: int, data: str, described: str
) -> None:
    """mount(2) with the relative paths in ``data`` taken from ``directory``.

    The working directory belongs to the process, so a chdir in berthd
    (threaded: actors, the importer) would move every other thread's
    relative paths with it. A new thread that unshares ``CLONE_FS`` has a
    working directory of its own: it changes that, mounts and exits, and
    its working directory goes with it (containerd's ``mountAt`` does the
    same on a locked OS thread). This keeps the call in-process, with no
    fork of a threaded parent and no helper to find, and works on every
    kernel with multi-lower overlayfs; ``/proc/self/fd/N/...`` paths of a
    directory fd would cost 16 more bytes a layer (about 170 layers, not
    overlayfs's 500).
    """
    target = Path(os.path.abspath(where))  # resolved here, not from ``directory``
    failed: list[BaseException] = []

    def run() -> None:
        try:
            if _libc.unshare(CLONE_FS) != 0:
                err = ctypes.get_errno()
                raise FailedPrecondition(f"{described}: unshare(CLONE_FS): {os.strerror(err)}")
            try:
                os.chdir(directory)
            except OSError as exc:
                raise FailedPrecondition(f"{described}: cd {directory}: {exc.strerror}") from None
            _mount(source, target, fstype, flags, data, described)
        except BaseException as exc:
            failed.append(exc)

    # Never a pooled thread: this one's working directory is not the process's.
    thread = threading.Thread(target=run, name=f"mount:{target}", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def _unmount(where: Path) -> None:
    path = os.fsencode(where)
    if _libc.umount2(path, 0) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return  # not a mount point (any more): already done
    # Busy: detach it now, the kernel finishes when the last user lets go.
    if _libc.umount2(path, MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise FailedPrecondition(f"unmount {where}: {os.strerror(err)}")
    log.debug("unmount %s: busy, detached", where)


def _mount_points() -> Iterator[str]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4:
                yield _unescape(fields[4])


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as ``\\ooo`` octal."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)
