"""What the load operations need of a daemon's client, whichever daemon it is.

berth's :class:`berth.Client` groups satisfy these protocols as they are;
:mod:`bench.ctrd` adapts containerd's gRPC API to them, so one operation
(:mod:`bench.container_ops`, :mod:`bench.snapshot_ops`) loads either
daemon and a ``--compare`` run measures both with the same code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["ContainersApi", "SnapshotsApi"]


class ContainersApi(Protocol):
    """The Containers service: create, get, list, update, delete."""

    def create(
        self, id: str, *, spec: dict[str, Any], labels: dict[str, str] | None = None
    ) -> Any: ...

    def get(self, id: str) -> Any: ...

    def list(self, filter: str = "") -> Any: ...

    def update(
        self,
        id: str,
        *,
        labels: dict[str, str] | None = None,
        update_mask: Iterable[str] | None = None,
    ) -> Any: ...

    def delete(self, id: str) -> Any: ...


class SnapshotsApi(Protocol):
    """The Snapshots service: prepare, commit, remove."""

    def prepare(
        self, key: str, parent: str = "", *, labels: dict[str, str] | None = None
    ) -> Any: ...

    def commit(self, name: str, key: str) -> Any: ...

    def remove(self, key: str) -> Any: ...
