"""An archive file's members, found by exact name and read in place.

An image archive is a regular file, so its members are indexed once (headers
only) and each is read later through a handle of its own, as the window of
the file that holds its data: a 100 MB layer is never held in memory, and
readers do not share a file position. Links inside the archive are followed
only to other members, and a name that would climb out of the archive is
refused; nothing here touches any other file.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import tarfile
from collections.abc import Callable
from typing import IO, Any

from runtime.tar_stream import GZIP_MAGIC, StrictTarInfo
from wire.errors import InvalidArgument, NotFound

__all__ = ["JSON_LIMIT", "ArchiveMembers", "member_name"]

JSON_LIMIT = 16 << 20  # manifests, indexes and configs are small; refuse a hostile giant
_CHUNK = 1 << 20
_MAX_LINKS = 8


class _Window(io.RawIOBase):
    """``size`` bytes of ``path`` from ``offset``, through a handle of its own."""

    def __init__(self, path: str, offset: int, size: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115  # closed by close()
        self._file.seek(offset)
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._file.read(min(len(buffer), self._left))
        if not data and self._left:
            raise InvalidArgument(f"image archive {self._file.name}: cut short")
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def close(self) -> None:
        self._file.close()
        super().close()


class ArchiveMembers:
    """An archive's members by exact name, each readable as a window of the file."""

    def __init__(self, path: str) -> None:
        self.path, self.label = path, f'image archive "{path}"'
        try:
            with open(path, "rb") as f:
                if f.read(len(GZIP_MAGIC)) == GZIP_MAGIC:
                    raise InvalidArgument(f"{self.label}: compressed; give the plain tar")
            with tarfile.open(path, mode="r:", tarinfo=StrictTarInfo) as tf:
                members = tf.getmembers()
        except FileNotFoundError:
            raise NotFound(f"{self.label}: not found") from None
        except IsADirectoryError:
            raise InvalidArgument(f"{self.label}: not a file") from None
        except (tarfile.TarError, EOFError) as exc:
            raise InvalidArgument(f"{self.label}: not a whole tar archive: {exc}") from None
        self._by_name = {posixpath.normpath(m.name): m for m in members}

    def has(self, name: str) -> bool:
        """Whether the archive holds a member ``name`` (of any type)."""
        return name in self._by_name

    def member(self, name: str, what: str) -> tarfile.TarInfo:
        """The regular member ``name``, following links that stay in the archive."""
        for _ in range(_MAX_LINKS):
            m = self._by_name.get(name)
            if m is None:
                raise InvalidArgument(f'{what}: "{name}" is missing from the archive')
            if m.isreg() and not m.issparse():
                return m
            if not (m.issym() or m.islnk()):
                raise InvalidArgument(f'{what}: "{name}" is not a regular file')
            base = posixpath.dirname(name) if m.issym() else ""
            name = member_name(posixpath.join(base, m.linkname), what)
        raise InvalidArgument(f'{what}: "{name}": too many links')

    def opener(self, m: tarfile.TarInfo) -> Callable[[], IO[bytes]]:
        """A callable giving a fresh reader of member ``m``'s data."""
        path, offset, size = self.path, m.offset_data, m.size
        return lambda: io.BufferedReader(_Window(path, offset, size), _CHUNK)

    def read(self, name: str, what: str) -> bytes:
        """The whole of the small member ``name`` (JSON): at most JSON_LIMIT bytes."""
        m = self.member(name, what)
        if m.size > JSON_LIMIT:
            raise InvalidArgument(f"{what}: {m.size} bytes is too large")
        with self.opener(m)() as f:
            return f.read()

    def digest(self, m: tarfile.TarInfo) -> tuple[str, bytes]:
        """The sha256 of member ``m`` and its first bytes."""
        sha, head = hashlib.sha256(), b""
        with self.opener(m)() as f:
            while chunk := f.read(_CHUNK):
                head = head or chunk[: len(GZIP_MAGIC)]
                sha.update(chunk)
        return f"sha256:{sha.hexdigest()}", head


def member_name(name: Any, what: str) -> str:
    """``name`` as a member name, refused when it is not a path inside the archive."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{what}: {name!r} is not a member name")
    norm = posixpath.normpath(name)
    if name.startswith("/") or norm == ".." or norm.startswith("../"):
        raise InvalidArgument(f'{what}: "{name}" points outside the archive')
    return norm
