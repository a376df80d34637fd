"""The CreateTask message for a container: its bundle spec built from its stored record.

Shared by Tasks/Create and by a restart, which repeats the options the
task was first created with (recorded with the task).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from actors.containers import CreateTask
from runtime.spec import bundle_spec, load_spec
from wire.reply import Reply

__all__ = ["create_task_message"]


def create_task_message(
    ns: str,
    container: dict[str, Any],
    *,
    state: Path,
    binary: str,
    mounts: list[dict[str, Any]],
    stdin: str,
    stdout: str,
    stderr: str,
    terminal: bool,
    checkpoint: str,
    reply: Reply,
) -> CreateTask:
    """CreateTask for ``container`` (its stored record); InvalidArgument for a bad spec."""
    cid = container["id"]
    owner = f'task "{cid}"'
    spec = load_spec(container["spec"]["value"], owner=owner)
    rootfs = state / "tasks" / ns / cid / "bundle" / "rootfs" if mounts else None
    final = bundle_spec(spec, rootfs=rootfs, terminal=terminal, owner=owner)
    return CreateTask(
        ns,
        cid,
        json.dumps(final).encode(),
        final,
        mounts,
        stdin,
        stdout,
        stderr,
        terminal,
        checkpoint,
        binary,
        reply,
    )
