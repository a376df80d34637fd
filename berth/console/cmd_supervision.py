"""``supervision`` (``sv``): restart policies and health checks, as ``berth.v1.Supervision`` tells.

``berth supervision`` is a table of every container of the namespace;
``berth supervision ID`` one container in detail, with its last exits and
health log. ``tasks ls`` borrows :func:`supervision_cells` for its RESTARTS
and HEALTH columns.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Sequence
from typing import Any, TextIO

import msgpack

from berth.console.commands import Command, arg
from berth.console.context import Context
from berth.console.render import details, print_json, table

__all__ = ["COMMANDS", "is_supervised", "supervision_cells"]

# Characters of a health check's output shown on its line; --json shows all of it.
_OUTPUT_WIDTH = 60


def is_supervised(sv: dict[str, Any]) -> bool:
    """Whether a container has a restart policy, a health check, or was ever restarted."""
    return sv["policy"] != "no" or sv["health"] is not None or bool(sv["restart_count"])


def supervision_cells(sv: dict[str, Any] | None) -> list[str]:
    """``tasks ls``'s RESTARTS and HEALTH cells; ``-`` for what is not supervised."""
    if sv is None:
        return ["-", "-"]
    restarts = sv["restart_count"] if sv["policy"] != "no" or sv["restart_count"] else "-"
    health = sv["health"]["status"] if sv["health"] is not None else "-"
    return [str(restarts), str(health)]


def clock(ts: msgpack.Timestamp | None) -> str:
    """Local time to the millisecond (restarts come milliseconds apart), or ``-``."""
    if ts is None:
        return "-"
    day = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts.seconds))
    return f"{day}.{ts.nanoseconds // 1_000_000:03d}"


def _next_restart(ts: msgpack.Timestamp | None, now: float) -> str:
    """``in 1.2s`` (or ``due``) for a scheduled restart, ``-`` for none."""
    if ts is None:
        return "-"
    left = ts.to_unix() - now
    return f"in {left:.1f}s" if left > 0 else "due"


def _one_line(text: str) -> str:
    line = " ".join(text.split())  # newlines and runs of spaces as one space
    return line if len(line) <= _OUTPUT_WIDTH else line[: _OUTPUT_WIDTH - 3] + "..."


def _indented(out: TextIO, title: str, headers: Sequence[str], rows: list[list[Any]]) -> None:
    out.write(f"{title}:")
    if not rows:
        out.write(" -\n")
        return
    out.write("\n")
    buffer = io.StringIO()
    table(buffer, headers, rows)
    out.write("".join(f"  {line}\n" for line in buffer.getvalue().splitlines()))


def show_one(out: TextIO, sv: dict[str, Any], now: float) -> None:
    """One container's supervision: its fields, then its last exits and health log."""
    health = sv["health"]
    next_at = sv["next_restart_at"]
    fields: dict[str, Any] = {
        "container_id": sv["container_id"],
        "policy": sv["policy"],
        "desired": sv["desired"],
        "state": sv["state"],
        "reason": sv["reason"],
        "restart_count": sv["restart_count"],
        "next_restart_at": f"{clock(next_at)} ({_next_restart(next_at, now)})"
        if next_at is not None
        else "-",
        "health": health["status"] if health is not None else "-",
    }
    if health is not None:
        fields["failing_streak"] = health["failing_streak"]
    details(out, fields)
    exits = [
        [clock(e["exited_at"]), e["exit_status"], "yes" if e["oom"] else "no"]
        for e in sv["last_exits"]
    ]
    _indented(out, "last exits", ["EXITED", "STATUS", "OOM"], exits)
    if health is not None:
        log = [
            [
                clock(r["start"]),
                _took(r["start"], r["end"]),
                r["exit_code"],
                _one_line(r["output"]) or "-",
            ]
            for r in health["log"]
        ]
        _indented(out, "health log", ["STARTED", "TOOK", "EXIT", "OUTPUT"], log)
    out.flush()


def _took(start: msgpack.Timestamp | None, end: msgpack.Timestamp | None) -> str:
    if start is None or end is None:
        return "-"
    return f"{(end.to_unix_nano() - start.to_unix_nano()) / 1e6:.0f}ms"


def show_all(out: TextIO, views: list[dict[str, Any]], now: float) -> None:
    """Every container's supervision, one line each."""
    headers = ["CONTAINER", "POLICY", "DESIRED", "STATE", "RESTARTS", "NEXT", "HEALTH", "REASON"]
    rows = [
        [
            sv["container_id"],
            sv["policy"],
            sv["desired"],
            sv["state"],
            sv["restart_count"],
            _next_restart(sv["next_restart_at"], now),
            sv["health"]["status"] if sv["health"] is not None else "-",
            sv["reason"] or "-",
        ]
        for sv in views
    ]
    table(out, headers, rows)


def supervision(ctx: Context, args: argparse.Namespace) -> None:
    """Show restart policies and health: every container's, or one in detail.

    Per container: the restart policy, the desired state (running, or
    stopped by request), the state (BACKOFF while a restart waits, FAILED
    once the policy gave up, else the task's), why, the restart count, when
    the next restart is due, and the health status. With an ID, also its
    last exits and the health checks' last results.

    Set the policy and the check with `berth run -d --restart ... --health-cmd
    ...` (or the labels of docs/protocol.md §6.7); `berth events --filter
    'topic~=^/tasks/(restart|health|gave)'` follows the changes.

    examples:
      berth supervision
      berth sv web
      berth supervision web --json
    """
    now = time.time()
    if args.id is not None:
        sv = ctx.client.supervision.get(args.id)
        if ctx.json:
            print_json(ctx.out, sv)
        else:
            show_one(ctx.out, sv, now)
        return
    views = ctx.client.supervision.list()
    if ctx.json:
        print_json(ctx.out, views)
    else:
        show_all(ctx.out, views, now)


COMMANDS = (
    Command(
        None,
        "supervision",
        supervision,
        (
            arg(
                "id",
                metavar="ID",
                nargs="?",
                complete="container",
                help="a container (default: every one)",
            ),
        ),
        aliases=("sv",),
    ),
)
