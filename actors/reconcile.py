"""Start-up reconciliation: take back every task a previous daemon left.

For each task record, in parallel and with a timeout per shim: a shim that
answers is adopted (its task keeps running, fully controllable); one that
does not is gone, so its task is torn down (processes killed, mounts and
runc state removed) and marked STOPPED with the status from its exit file,
else 255, and its EXIT is emitted. It returns once every exit it found is
committed to the event log, so the log has them before the first request.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from actors.containers import AdoptTask, ContainerActors
from actors.store import Store
from actors.task_state import ExecProcess, TaskState, TaskStatus
from runtime.procs import find_shim_pid
from runtime.shim_client import ShimClient, read_exits
from wire.codec import unpack
from wire.errors import BerthError

__all__ = ["reconcile_tasks"]

log = logging.getLogger(__name__)

SHIM_TIMEOUT = 5.0
SETTLE_TIMEOUT = 30.0


def _task_records(store: Store) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    with store.read() as txn:
        for key, raw in store.scan(txn, store.tasks, b""):
            ns, _, cid = key.decode().partition("\x00")
            out.append((ns, cid, unpack(raw)))
    return out


def _probe(
    actors: ContainerActors, ns: str, cid: str, record: dict[str, Any]
) -> tuple[str, str, AdoptTask]:
    rt = actors.runtime
    assert rt is not None
    task_dir = rt.task_dir(ns, cid)
    state = TaskState(
        ns,
        cid,
        pid=int(record.get("pid", 0)),
        status=TaskStatus(record.get("status", "CREATED")),
        exit_status=int(record.get("exit_status", 0)),
        exited_at_ns=int(record.get("exited_at_ns", 0)),
    )
    binary = str(record.get("runtime_binary", "runc"))
    alive = False
    if (task_dir / "shim.sock").exists():
        client = ShimClient(task_dir, timeout=SHIM_TIMEOUT)
        try:
            shim_state = client.call("state")
            alive = True
            for proc in shim_state.get("execs", []):
                state.execs[int(proc["pid"])] = ExecProcess(
                    int(proc["pid"]),
                    bool(proc.get("exited")),
                    int(proc.get("exit_status", 0)),
                    int(proc.get("exited_at_ns", 0)),
                )
            # The shim knows best; the record may trail it (its writes are
            # not waited for). A STOPPED init is left to its exit, replayed
            # from the exit file, so that EXIT is emitted.
            shim_status = TaskStatus(shim_state.get("status", state.status.value))
            if shim_status is not TaskStatus.STOPPED:
                state.status = shim_status
            if not state.pid:
                state.pid = int(shim_state.get("pid", 0))
        except BerthError as exc:
            log.warning("task %s/%s: shim does not answer (%s); treating it as gone", ns, cid, exc)
        finally:
            client.close()
    exits = read_exits(task_dir) if alive else []
    shim_pid = find_shim_pid(ns, cid) if alive else 0
    options = dict(record.get("options") or {})
    return ns, cid, AdoptTask(state, binary, alive, exits, shim_pid, options)


def reconcile_tasks(store: Store, actors: ContainerActors) -> int:
    """Adopt or tear down every recorded task; returns how many were found."""
    records = _task_records(store)
    if not records:
        return 0
    with ThreadPoolExecutor(
        max_workers=min(16, len(records)), thread_name_prefix="reconcile"
    ) as pool:
        results = list(pool.map(lambda r: _probe(actors, *r), records))
    settled = threading.Semaphore(0)
    for ns, cid, adopt in results:
        log.info(
            "task %s/%s: %s (pid %d, %s)",
            ns,
            cid,
            "reconnected" if adopt.shim_alive else "shim gone",
            adopt.state.pid,
            adopt.state.status.value,
        )
        actors.tell(ns, cid, replace(adopt, settled=settled.release))
    # Before the daemon answers anything: the exits found here are logged.
    for _ in results:
        if not settled.acquire(timeout=SETTLE_TIMEOUT):
            log.error("start-up: tasks still settling after %.0f s; serving anyway", SETTLE_TIMEOUT)
            break
    return len(results)
