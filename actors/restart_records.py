"""Supervision records: a supervised container's restart state, in the metadata store.

A record, at ``restarts: <ns> 0x00 <id>``, exists once a container with a
restart policy has had a task (or a Kill through the API)::

    {"desired": "running" | "stopped",   # what the user asked for last
     "explicit": bool,                   # stopped by a Kill through the API
     "state": "RUNNING" | "BACKOFF" | "FAILED" | "STOPPED",
     "restart_count": int,               # restarts so far (never reset)
     "retries": int,                     # restarts since the last start by request (on-failure:N)
     "attempt": int,                     # the backoff step (reset after a stable run)
     "next_restart_at_ns": int,          # wall clock; 0 unless BACKOFF
     "started_at_ns": int,               # when the current or last run started
     "restarts_ns": [int],               # recent restart times, for the intensity limit
     "last_exits": [{"exit_status", "exited_at_ns", "oom"}],  # newest last, at most 10
     "reason": str,                      # why it is not running, when it is not
     "options": {...}}                   # the exited task's create options, for its replacement

Written by the restart monitor (:mod:`actors.restart_monitor`) and by a
task's Kill (desired ``stopped``, before the signal), each in the metadata
actor's transaction; deleted with its container.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lmdb

from actors.restart_policy import desired_state
from actors.store import Store, ns_key
from wire.codec import pack, unpack
from wire.errors import InvalidArgument

__all__ = [
    "LAST_EXITS",
    "delete_restart",
    "desired_of",
    "get_restart",
    "list_restarts",
    "new_restart",
    "put_restart",
]

LAST_EXITS = 10
_RECENT_RESTARTS = 1000  # enough for any intensity limit the labels allow over a day


def desired_of(labels: dict[str, str], record: dict[str, Any] | None) -> str:
    """The desired state: ``stopped`` if a Kill asked for it (the record) or the labels say so."""
    if record is not None and record["desired"] == "stopped":
        return "stopped"
    try:
        return desired_state(labels)
    except InvalidArgument:
        return "running"  # stored before labels were checked; ignored as the monitor does


def new_restart() -> dict[str, Any]:
    """The record of a supervised container that has never exited."""
    return {
        "desired": "running",
        "explicit": False,
        "state": "RUNNING",
        "restart_count": 0,
        "retries": 0,
        "attempt": 0,
        "next_restart_at_ns": 0,
        "started_at_ns": 0,
        "restarts_ns": [],
        "last_exits": [],
        "reason": "",
        "options": {},
    }


def get_restart(txn: lmdb.Transaction, store: Store, ns: str, cid: str) -> dict[str, Any] | None:
    """The container's record, or None if it has none."""
    raw = txn.get(ns_key(ns, cid), db=store.restarts)
    if raw is None:
        return None
    record: dict[str, Any] = {**new_restart(), **unpack(bytes(raw))}
    return record


def put_restart(
    txn: lmdb.Transaction, store: Store, ns: str, cid: str, record: dict[str, Any]
) -> None:
    """Store the container's record (its lists bounded)."""
    record["last_exits"] = record["last_exits"][-LAST_EXITS:]
    record["restarts_ns"] = record["restarts_ns"][-_RECENT_RESTARTS:]
    txn.put(ns_key(ns, cid), pack(record), db=store.restarts)


def delete_restart(txn: lmdb.Transaction, store: Store, ns: str, cid: str) -> None:
    """Forget the container's record (its container is deleted)."""
    txn.delete(ns_key(ns, cid), db=store.restarts)


def list_restarts(
    txn: lmdb.Transaction, store: Store, prefix: bytes = b""
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(ns, id, record)`` of every record whose key starts with ``prefix``."""
    for key, raw in store.scan(txn, store.restarts, prefix):
        ns, _, cid = key.decode().partition("\x00")
        yield ns, cid, {**new_restart(), **unpack(raw)}
