"""What Supervision/Get and List answer for a container: its policy, state and history."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lmdb

from actors.restart_policy import policy_from_labels
from actors.restart_records import desired_of, get_restart
from actors.store import Store, ns_key
from wire.codec import timestamp_or_nil, unpack
from wire.errors import InvalidArgument

__all__ = ["supervision_view"]

# A live task's state as its actor last showed it (ContainerActors.shown); a
# watched task's health (HealthMonitor.health_of, times in ns).
Shown = Callable[[str, str], dict[str, Any] | None]


def _health(view: dict[str, Any] | None) -> dict[str, Any] | None:
    if view is None:
        return None
    return {
        "status": view["status"],
        "failing_streak": view["failing_streak"],
        "log": [
            {
                "start": timestamp_or_nil(r["start"]),
                "end": timestamp_or_nil(r["end"]),
                "exit_code": r["exit_code"],
                "output": r["output"],
            }
            for r in view["log"]
        ],
    }


def _policy_name(labels: dict[str, str]) -> str:
    try:
        return policy_from_labels(labels).name
    except InvalidArgument:
        return "no"  # stored before labels were checked; the monitor ignores it too


def supervision_view(
    txn: lmdb.Transaction,
    store: Store,
    shown: Shown,
    ns: str,
    container: dict[str, Any],
    health: Shown | None = None,
) -> dict[str, Any]:
    """The wire Supervision of ``container`` (its stored record, decoded)."""
    cid = container["id"]
    labels = container["labels"] or {}
    record = get_restart(txn, store, ns, cid)
    task = shown(ns, cid)
    if task is None:
        raw = txn.get(ns_key(ns, cid), db=store.tasks)
        task = unpack(bytes(raw)) if raw is not None else None
    task_status = str(task["status"]) if task is not None else ""
    if record is not None and record["state"] in ("BACKOFF", "FAILED"):
        state = record["state"]
    elif task_status in ("CREATED", "RUNNING", "PAUSED", "PAUSING"):
        state = task_status
    else:
        state = "STOPPED"
    record = record or {}
    return {
        "container_id": cid,
        "policy": _policy_name(labels),
        "desired": desired_of(labels, record or None),
        "state": state,
        "reason": record.get("reason", ""),
        "restart_count": record.get("restart_count", 0),
        "next_restart_at": timestamp_or_nil(record.get("next_restart_at_ns", 0)),
        "last_exits": [
            {
                "exit_status": e["exit_status"],
                "exited_at": timestamp_or_nil(e["exited_at_ns"]),
                "oom": e["oom"],
            }
            for e in record.get("last_exits", [])
        ],
        "health": _health(health(ns, cid)) if health is not None else None,
    }
