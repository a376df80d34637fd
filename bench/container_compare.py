"""The containerd side of ``berth-bench containers --compare containerd``.

The load phases run against containerd through the same worker
operations (:mod:`bench.container_ops` through :class:`bench.api.ContainersApi`),
right after berth's at each client count; this module does the parent's
part there: empty the namespaces, fill ``bench-list`` with exactly 1,000
containers, list a namespace for the correctness check, clean up.
"""

from __future__ import annotations

import contextlib

from bench import container_ops as ops
from bench.ctrd import LEASE, Containerd

__all__ = ["ContainerdSide"]


class ContainerdSide:
    """The parent's containerd clients, one per namespace the run uses."""

    def __init__(self, address: str, timeout: float) -> None:
        self.address, self.timeout = address, timeout
        self._clients: dict[str, Containerd] = {}

    def client(self, ns: str) -> Containerd:
        client = self._clients.get(ns)
        if client is None:
            client = self._clients[ns] = Containerd(
                self.address, ns, timeout=self.timeout, lease=LEASE
            )
            client.create_lease(LEASE)
        return client

    def listed_ids(self, ns: str) -> set[str]:
        """The ids List returns for namespace ``ns``."""
        return {c.id for c in self.client(ns).containers.list()}

    def empty(self, ns: str) -> int:
        """Delete every container of ``ns``; how many there were."""
        client = self.client(ns)
        ids = self.listed_ids(ns)
        for cid in ids:
            with contextlib.suppress(Exception):
                client.containers.delete(cid)
        return len(ids)

    def fill(self, ns: str, prefix: str, count: int) -> None:
        """Create ``<prefix><0..count-1>`` in ``ns``, one at a time."""
        containers = self.client(ns).containers
        for i in range(count):
            containers.create(f"{prefix}{i}", spec=ops.BENCH_SPEC, labels=ops.BENCH_LABELS)

    def close(self) -> None:
        for ns, client in self._clients.items():
            with contextlib.suppress(Exception):
                self.empty(ns)
            client.delete_lease(LEASE)
            client.close()
