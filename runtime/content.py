"""The content store: blobs addressed by their sha256 digest, and the ingests that make them.

Layout under the daemon's root::

    <root>/content/
      blobs/sha256/<hex>              a committed blob: whole or absent, mode 0444
      ingest/<sha256(ref) hex>/       one in-progress ingest per ref
        data                          the bytes received so far
        status.json                   {"ref", "expected", "total", "started_at_ns"}

An ingest streams its source into ``data`` while hashing it, checks the
digest and size it was promised, fsyncs, stamps the commit time as the
file's mtime and renames it into ``blobs/`` (the same filesystem, so the
rename is atomic), then removes its directory. A blob that exists is
therefore whole, and its name is its digest. The ingest directory is named
by a hash of the ref so refs may hold any character.

This module knows files only: which namespace lists which blob is the
metadata store's business, and the garbage collector sweeps with
:meth:`ContentStore.digests` and :meth:`ContentStore.delete`.

One daemon owns a root (checked at start-up), so the lock that keeps two
ingests of one ref apart is in-process.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol, TypedDict

import re2

from runtime.durable import fsync_dir
from wire.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable

__all__ = ["ContentInfo", "ContentStore", "IngestStatus", "Readable"]

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
_STATUS = "status.json"
_LEGACY_TEMP = ".ingest-"  # temporaries the first write() left in blobs/ on a crash

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # RE2 would print every rejected pattern to stderr
_RE2_OPTIONS.never_capture = True


class Readable(Protocol):
    """What an ingest reads from: a binary file, a tar member, a gzip stream."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end."""
        ...


class ContentInfo(TypedDict):
    """A committed blob: ``Content.Info``'s ``info``."""

    digest: str
    size: int
    committed_at_ns: int


class IngestStatus(TypedDict):
    """An ingest in progress (or left by a crash): ``Content.Status``'s entries.

    ``total`` is the expected size (0 when not given), ``expected`` the
    expected digest ("" when not given), ``offset`` the bytes received.
    """

    ref: str
    offset: int
    total: int
    expected: str
    started_at_ns: int
    updated_at_ns: int


# Ingest directories claimed by a running ingest, abort or clean, across every
# ContentStore of the process (tests open several on one root); the event
# tells a running ingest that abort() was called.
_ACTIVE: dict[str, threading.Event] = {}
_ACTIVE_LOCK = threading.Lock()


class ContentStore:
    """Blobs and ingests under ``<root>/content``."""

    def __init__(self, root: Path) -> None:
        self.blobs = root / "content" / "blobs" / "sha256"
        self.ingests = root / "content" / "ingest"

    # -- committed blobs ------------------------------------------------------

    def path_of(self, digest: str) -> Path:
        """Where the blob ``digest`` lives; NotFound when it is not stored."""
        path = self._blob(digest)
        if not path.is_file():
            raise NotFound(f'content "{digest}": not found')
        return path

    def exists(self, digest: str) -> bool:
        """Whether the blob ``digest`` is stored (InvalidArgument for a malformed digest)."""
        return self._blob(digest).is_file()

    def info(self, digest: str) -> ContentInfo:
        """Digest, size and commit time of the blob ``digest``.

        ``committed_at_ns`` is the blob file's mtime, which the ingest stamps
        just before the rename that commits it; nothing writes the file
        afterwards (it is read-only), so the mtime stays the commit time,
        while the ctime would move on any chmod or link.
        """
        try:
            st = self._blob(digest).stat()
        except FileNotFoundError:
            raise NotFound(f'content "{digest}": not found') from None
        return {"digest": digest, "size": st.st_size, "committed_at_ns": st.st_mtime_ns}

    def list(self) -> Iterator[ContentInfo]:
        """Every committed blob, in no particular order."""
        for digest in self.digests():
            try:
                yield self.info(digest)
            except NotFound:
                continue  # deleted while listing

    def digests(self) -> set[str]:
        """The digests of every committed blob, for the garbage collector's sweep."""
        try:
            names = os.listdir(self.blobs)
        except FileNotFoundError:
            return set()
        return {f"sha256:{name}" for name in names if _HEX.fullmatch(name)}

    def delete(self, digest: str) -> None:
        """Remove the blob ``digest``; NotFound when it is not stored."""
        try:
            self._blob(digest).unlink()
        except FileNotFoundError:
            raise NotFound(f'content "{digest}": not found') from None

    def read(
        self, digest: str, offset: int = 0, size: int = 0, chunk_size: int = _CHUNK
    ) -> Iterator[tuple[int, bytes]]:
        """The bytes ``[offset, offset + size)`` of the blob as ``(offset, data)`` chunks.

        ``size`` 0 reads to the end; a range past the end is cut at the end.
        The digest, offset and size are checked now, before the first chunk
        is asked for; a blob deleted in between raises NotFound from the
        iterator.
        """
        path = self._blob(digest)
        if offset < 0 or size < 0 or chunk_size <= 0:
            raise InvalidArgument(
                f'content "{digest}": offset {offset} and size {size} must not be negative'
                f" (chunk size {chunk_size}: positive)"
            )
        try:
            length = path.stat().st_size
        except FileNotFoundError:
            raise NotFound(f'content "{digest}": not found') from None
        if offset > length:
            raise InvalidArgument(
                f'content "{digest}": offset {offset} is beyond its size {length}'
            )
        end = length if size == 0 else min(length, offset + size)
        return self._chunks(digest, path, offset, end, chunk_size)

    @staticmethod
    def _chunks(
        digest: str, path: Path, offset: int, end: int, chunk_size: int
    ) -> Iterator[tuple[int, bytes]]:
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise NotFound(f'content "{digest}": not found') from None
        with f:
            f.seek(offset)
            while offset < end:
                data = f.read(min(chunk_size, end - offset))
                if not data:
                    return  # cannot happen to a committed blob; do not spin if it does
                yield offset, data
                offset += len(data)

    # -- ingests --------------------------------------------------------------

    def write(self, source: Readable) -> tuple[str, int]:
        """Store what ``source`` holds under a fresh ref; returns its digest and size."""
        return self.ingest(f"write-{uuid.uuid4().hex}", source)

    def ingest(
        self,
        ref: str,
        source: Readable,
        expected_digest: str | None = None,
        expected_size: int | None = None,
    ) -> tuple[str, int]:
        """Stream ``source`` into the blob store under ``ref``; returns digest and size.

        With ``expected_digest`` and/or ``expected_size`` the data must match
        them, else InvalidArgument names the ref and both values and nothing
        is kept. A blob already stored is a success without a second copy:
        when ``expected_digest`` names a stored blob, ``source`` is not read.
        An ingest of a ref that is being ingested raises Unavailable: it is
        containerd's answer to a locked ref, and the condition is transient
        (retry once the other ingest ends), where FailedPrecondition would
        tell the client to change something first. An ingest left by a
        crash under the same ref is started over.
        """
        if not isinstance(ref, str) or not ref:
            raise InvalidArgument("ingest ref must be a non-empty string")
        if expected_size is not None and expected_size < 0:
            raise InvalidArgument(f'ingest "{ref}": expected size {expected_size} is negative')
        if expected_digest is not None:
            with suppress(NotFound):
                stored = self.info(expected_digest)["size"]
                _check_size(ref, stored, expected_size)
                return expected_digest, stored
        where = self._ingest_dir(ref)
        with _claim(ref, where) as aborted:
            try:
                return self._ingest(ref, source, where, aborted, expected_digest, expected_size)
            finally:
                shutil.rmtree(where, ignore_errors=True)

    def _ingest(
        self,
        ref: str,
        source: Readable,
        where: Path,
        aborted: threading.Event,
        expected_digest: str | None,
        expected_size: int | None,
    ) -> tuple[str, int]:
        shutil.rmtree(where, ignore_errors=True)  # what a crash left under this ref
        where.mkdir(mode=0o700, parents=True)
        status = {
            "ref": ref,
            "expected": expected_digest or "",
            "total": expected_size or 0,
            "started_at_ns": time.time_ns(),
        }
        (where / _STATUS).write_text(json.dumps(status))
        hasher = hashlib.sha256()
        size = 0
        data = where / "data"
        with data.open("wb") as out:
            while chunk := source.read(_CHUNK):
                if aborted.is_set():
                    raise FailedPrecondition(f'ingest "{ref}": aborted')
                hasher.update(chunk)
                out.write(chunk)
                out.flush()  # so statuses() sees the offset as it grows
                size += len(chunk)
                if expected_size is not None and size > expected_size:
                    _check_size(ref, size, expected_size, at_least=True)
            _check_size(ref, size, expected_size)
            digest = f"sha256:{hasher.hexdigest()}"
            if expected_digest is not None and digest != expected_digest:
                raise InvalidArgument(
                    f'ingest "{ref}": content has digest {digest}, expected {expected_digest}'
                )
            out.flush()
            os.fsync(out.fileno())
            os.fchmod(out.fileno(), 0o444)  # a committed blob is never written again
            now = time.time_ns()
            os.utime(out.fileno(), ns=(now, now))  # the commit time info() reports
        if aborted.is_set():
            raise FailedPrecondition(f'ingest "{ref}": aborted')
        self.blobs.mkdir(mode=0o700, parents=True, exist_ok=True)
        blob = self.blobs / digest.removeprefix("sha256:")
        # Two refs racing with the same bytes both rename: the later replaces
        # an identical file, which readers holding the first do not notice.
        if not blob.exists():
            os.rename(data, blob)
            fsync_dir(self.blobs)
        return digest, size

    def statuses(self, regexp: str | None = None) -> builtins.list[IngestStatus]:
        """The ingests on disk whose ref matches ``regexp`` (RE2, unanchored), by ref.

        RE2 because the pattern comes from a client: it runs in linear time,
        and it is the syntax containerd's Go regexp accepted. ``offset`` and
        ``updated_at_ns`` are the data file's size and mtime.
        """
        pattern: Any = None
        if regexp:
            try:
                pattern = re2.compile(regexp, _RE2_OPTIONS)
            except (re2.error, UnicodeEncodeError) as exc:
                raise InvalidArgument(f"status regexp {regexp!r}: invalid: {exc}") from None
        found: builtins.list[IngestStatus] = []
        for where in self._ingest_dirs():
            status = _read_status(where)
            if status is None or (pattern is not None and not pattern.search(status["ref"])):
                continue
            found.append(status)
        return sorted(found, key=lambda s: s["ref"])

    def abort(self, ref: str) -> None:
        """Cancel the ingest of ``ref``; NotFound when there is none.

        An ingest running in this process is told to stop: it raises
        FailedPrecondition at its next chunk and removes its data itself.
        One left on disk (by a crash) is removed now.
        """
        where = self._ingest_dir(ref)
        with _ACTIVE_LOCK:
            running = _ACTIVE.get(str(where))
        if running is not None:
            running.set()
            return
        try:
            with _claim(ref, where):
                if not where.is_dir():
                    raise NotFound(f'ingest "{ref}": not found')
                shutil.rmtree(where, ignore_errors=True)
        except Unavailable:
            self.abort(ref)  # an ingest started meanwhile: stop that one

    def clean_ingests(self, older_than_s: float) -> builtins.list[str]:
        """Remove ingests not updated for ``older_than_s`` seconds that no ingest is running.

        For start-up and the garbage collector: a crash leaves ingest
        directories (and, from an older version, ``.ingest-*`` files in
        ``blobs/``) behind. Returns the refs removed (the directory name when
        the ref cannot be read).
        """
        cutoff = time.time_ns() - int(older_than_s * 1e9)
        removed: builtins.list[str] = []
        for where in self._ingest_dirs():
            if _updated_ns(where) > cutoff:
                continue
            status = _read_status(where)
            ref = status["ref"] if status else where.name
            try:
                with _claim(ref, where):
                    shutil.rmtree(where, ignore_errors=True)
            except Unavailable:
                continue  # running: not stale
            removed.append(ref)
        try:
            leftovers = [e for e in os.scandir(self.blobs) if e.name.startswith(_LEGACY_TEMP)]
        except FileNotFoundError:
            leftovers = []
        for entry in leftovers:
            try:
                if entry.stat(follow_symlinks=False).st_mtime_ns <= cutoff:
                    os.unlink(entry.path)
                    removed.append(entry.name)
            except FileNotFoundError:
                continue
        return removed

    # -- paths ----------------------------------------------------------------

    def _blob(self, digest: str) -> Path:
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise InvalidArgument(
                f'digest "{digest}": not a sha256 digest (sha256:<64 lowercase hex>)'
            )
        return self.blobs / digest.removeprefix("sha256:")

    def _ingest_dir(self, ref: str) -> Path:
        return self.ingests / hashlib.sha256(ref.encode("utf-8", "surrogatepass")).hexdigest()

    def _ingest_dirs(self) -> builtins.list[Path]:
        try:
            return [Path(e.path) for e in os.scandir(self.ingests) if e.is_dir()]
        except FileNotFoundError:
            return []


@contextmanager
def _claim(ref: str, where: Path) -> Iterator[threading.Event]:
    """Hold the ingest directory ``where`` for this thread; Unavailable when held."""
    key = str(where)
    ingest = threading.Event()
    with _ACTIVE_LOCK:
        if key in _ACTIVE:
            raise Unavailable(f'ingest "{ref}": locked by an ingest in progress')
        _ACTIVE[key] = ingest
    try:
        yield ingest
    finally:
        with _ACTIVE_LOCK:
            del _ACTIVE[key]


def _check_size(ref: str, size: int, expected: int | None, at_least: bool = False) -> None:
    if expected is not None and size != expected:
        got = f"at least {size}" if at_least else str(size)
        raise InvalidArgument(f'ingest "{ref}": content has size {got}, expected {expected}')


def _read_status(where: Path) -> IngestStatus | None:
    """The status of the ingest at ``where``; None when a crash left it unreadable."""
    try:
        raw = json.loads((where / _STATUS).read_text())
        ref, expected, total = str(raw["ref"]), str(raw["expected"]), int(raw["total"])
        started = int(raw["started_at_ns"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        st = (where / "data").stat()
        offset, updated = st.st_size, st.st_mtime_ns
    except FileNotFoundError:
        offset, updated = 0, started
    return {
        "ref": ref,
        "offset": offset,
        "total": total,
        "expected": expected,
        "started_at_ns": started,
        "updated_at_ns": updated,
    }


def _updated_ns(where: Path) -> int:
    """The last time anything was written to the ingest at ``where``."""
    newest = 0
    for path in (where, where / _STATUS, where / "data"):
        try:
            newest = max(newest, path.stat().st_mtime_ns)
        except FileNotFoundError:
            continue
    return newest
