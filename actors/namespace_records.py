"""Namespace records: a namespace exists from the first write into it.

berth has no Namespaces service: a namespace is created by the first
container, image, snapshot or blob written into it, in that write's
transaction, and that transaction logs ``/namespaces/create`` with it.
"""

from __future__ import annotations

from typing import Any

import lmdb

from actors.store import Store
from wire.codec import pack

__all__ = ["NAMESPACE_CREATE", "note_namespace"]

NAMESPACE_CREATE = "/namespaces/create"


def note_namespace(txn: lmdb.Transaction, store: Store, ns: str, stamp: Any) -> None:
    """Record namespace ``ns`` if this is its first write, logging its creation."""
    if txn.put(ns.encode(), pack({"created_at": stamp}), db=store.namespaces, overwrite=False):
        store.log.append(txn, ns, NAMESPACE_CREATE, ns, {"name": ns})
