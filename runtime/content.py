"""The content store's first piece: blobs addressed by their sha256 digest.

A blob lives at ``<root>/content/blobs/sha256/<hex>``. It is written to a
temporary file in the same directory, fsync'ed, and renamed into place, so
a blob that exists is whole; its name is its digest, checked on write.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import IO

from wire.errors import InvalidArgument, NotFound

__all__ = ["ContentStore"]

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_CHUNK = 1 << 20


class ContentStore:
    """Blobs under ``<root>/content``."""

    def __init__(self, root: Path) -> None:
        self.blobs = root / "content" / "blobs" / "sha256"

    def path_of(self, digest: str) -> Path:
        """Where the blob ``digest`` lives; NotFound when it is not stored."""
        if not _DIGEST.fullmatch(digest):
            raise InvalidArgument(f'digest "{digest}": not a sha256 digest')
        path = self.blobs / digest.removeprefix("sha256:")
        if not path.is_file():
            raise NotFound(f'content "{digest}": not found')
        return path

    def write(self, source: IO[bytes]) -> tuple[str, int]:
        """Store what ``source`` holds; returns its digest and size."""
        self.blobs.mkdir(mode=0o700, parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".ingest-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.rename(tmp, self.blobs / digest.hexdigest())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return f"sha256:{digest.hexdigest()}", size
