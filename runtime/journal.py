"""An append-only file of framed records, written without fsync.

For facts that are already durable elsewhere and only need to survive a
crash of this process (the page cache outlives it): each record is one
``write(2)`` of ``<length: 4 bytes BE> <crc32: 4 bytes BE> <data>``, so a
record is either whole or, at the tail after a crash mid-write, detected
by its length or checksum and ignored. Nothing here survives a power
loss that comes before the kernel writes the file back.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

__all__ = ["Journal"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
_KEEP_BYTES = 1 << 20  # past this, a clear truncates; below, cleared records are skipped on read


class Journal:
    """Appends records to ``path`` and reads back the ones not cleared."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._start = 0  # records before this offset are cleared
        self._size = os.fstat(self._fd).st_size

    def append(self, data: bytes) -> None:
        """Add one record (one write; not synced)."""
        frame = _HEADER.pack(len(data), zlib.crc32(data)) + data
        written = os.write(self._fd, frame)
        if written != len(frame):  # a regular file takes the whole write or raises
            raise OSError(f"journal {self.path}: short write ({written} of {len(frame)})")
        self._size += written

    def clear(self, *, truncate: bool = False) -> None:
        """Every record so far is no longer needed (the file shrinks past 1 MiB, or now)."""
        if truncate or self._size >= _KEEP_BYTES:
            os.ftruncate(self._fd, 0)
            self._size = 0
        self._start = self._size

    def records(self) -> list[bytes]:
        """The records appended and not cleared, oldest first; a torn tail is left out."""
        with open(self._fd, "rb", closefd=False) as f:
            f.seek(self._start)
            raw = f.read()
        records: list[bytes] = []
        offset = 0
        while offset + _HEADER.size <= len(raw):
            length, crc = _HEADER.unpack_from(raw, offset)
            data = raw[offset + _HEADER.size : offset + _HEADER.size + length]
            if len(data) < length or zlib.crc32(data) != crc:
                log.warning("journal %s: torn record at %d ignored", self.path, offset)
                break
            records.append(data)
            offset += _HEADER.size + length
        return records

    def close(self) -> None:
        """Close the file (its records stay for the next open)."""
        os.close(self._fd)
