"""What the image and GC e2e tests look at on disk, and the archives they import.

A daemon keeps its snapshots under ``<root>/snapshots/<name>/snapshots/<id>/``
(``<name>`` is ``overlayfs`` or ``native``), its blobs under
``<root>/content/blobs/sha256/<hex>``, ingests in flight under
``<root>/content/ingest/`` and the mount points of layers being unpacked
under ``<state>/unpack/``. These helpers read those places (and
``/proc/self/mountinfo``) so a test can say what a daemon left behind.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

from tests.image_archives import Layer, file_entry, layer

BIG_LAYER_BYTES = 80 << 20  # an import of it takes long enough to be killed midway

_OCTAL = re.compile(r"\\([0-7]{3})")


def chain_ids(layers: Iterable[Layer]) -> list[str]:
    """The OCI chain ids of ``layers`` (bottom first): the keys of their snapshots."""
    out: list[str] = []
    for lay in layers:
        if not out:
            out.append(lay.diff_id)
        else:
            text = f"{out[-1]} {lay.diff_id}".encode()
            out.append(f"sha256:{hashlib.sha256(text).hexdigest()}")
    return out


@functools.cache
def big_layer() -> Layer:
    """One plain layer holding a file of BIG_LAYER_BYTES random bytes."""
    return layer([file_entry("big.bin", os.urandom(BIG_LAYER_BYTES))])


def snapshot_dirs(root: Path) -> list[Path]:
    """Every snapshot directory of every snapshotter under ``root``."""
    return sorted(p for p in (root / "snapshots").glob("*/snapshots/*"))


def blob_files(root: Path) -> list[str]:
    """The digests (``sha256:<hex>``) of the blobs stored under ``root``."""
    where = root / "content" / "blobs" / "sha256"
    return sorted(f"sha256:{p.name}" for p in where.glob("*")) if where.is_dir() else []


def ingest_entries(root: Path) -> list[str]:
    """What is under ``<root>/content/ingest`` (ingests in flight or left by a crash)."""
    where = root / "content" / "ingest"
    return sorted(os.listdir(where)) if where.is_dir() else []


def unpack_leftovers(state: Path) -> list[str]:
    """What is under ``<state>/unpack`` (scratch mount points of layers being unpacked)."""
    where = state / "unpack"
    return sorted(os.listdir(where)) if where.is_dir() else []


def mounts_under(*paths: Path) -> list[str]:
    """Mount points (from /proc/self/mountinfo) at or below any of ``paths``."""
    prefixes = [os.path.realpath(p) for p in paths]
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if any(point == p or point.startswith(p + "/") for p in prefixes):
                found.append(point)
    return found


def unmount_below(*paths: Path) -> None:
    """Lazily unmount whatever a failed test left mounted below ``paths`` (deepest first)."""
    for point in sorted(mounts_under(*paths), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def tree(*tops: Path) -> list[str]:
    """Every path (directories included) below ``tops``, with its kind and size for files."""
    out = []
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames:
                out.append(f"d {os.path.join(dirpath, name)}")
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    size = os.lstat(path).st_size
                except FileNotFoundError:
                    continue
                out.append(f"f {path} {size}")
    return sorted(out)
