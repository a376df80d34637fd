"""Leases: snapshot directories and blobs that an operation in flight holds.

An import writes blobs and snapshot directories before the one
transaction that records them; a Prepare makes its directory before its
record. Until then nothing on record names them, and the sweep (which
removes files no record names) must leave them alone. An operation holds a
lease on each id or digest *before* it makes the file and releases it
*after* the record is committed (or after it removed the file itself on
failure).

The sweep looks at the leases, the records and the files while holding
:attr:`Leases.lock`, and a lease is taken under the same lock, so a file
is either made after the sweep looked (and not seen) or held, or recorded.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Lease", "Leases"]


class Lease:
    """What one operation holds; add to it as the operation makes files."""

    def __init__(self, leases: Leases) -> None:
        self._leases = leases
        self.snapshots: list[str] = []
        self.blobs: list[str] = []

    def snapshot(self, id: str) -> None:
        """Hold snapshot directory ``id`` (call before making it)."""
        with self._leases.lock:
            self._leases._snapshots[id] += 1
        self.snapshots.append(id)

    def blob(self, digest: str) -> None:
        """Hold blob ``digest`` (call before writing it)."""
        with self._leases.lock:
            self._leases._blobs[digest] += 1
        self.blobs.append(digest)

    def release(self) -> None:
        """Let the sweep see everything this lease held."""
        with self._leases.lock:
            for id in self.snapshots:
                self._leases._drop(self._leases._snapshots, id)
            for digest in self.blobs:
                self._leases._drop(self._leases._blobs, digest)
        self.snapshots, self.blobs = [], []


class Leases:
    """Every lease of the daemon."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._snapshots: Counter[str] = Counter()
        self._blobs: Counter[str] = Counter()

    @contextmanager
    def hold(self) -> Iterator[Lease]:
        """A lease released when the block ends, however it ends."""
        lease = Lease(self)
        try:
            yield lease
        finally:
            lease.release()

    def held(self) -> tuple[set[str], set[str]]:
        """Snapshot ids and blob digests held now (call with :attr:`lock` held)."""
        return set(self._snapshots), set(self._blobs)

    @staticmethod
    def _drop(counter: Counter[str], key: str) -> None:
        counter[key] -= 1
        if counter[key] <= 0:
            del counter[key]
