"""``tasks``: the Tasks service -- a container's running instance and its processes."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from berth.client import Client
from berth.console.cmd_supervision import is_supervised, supervision_cells
from berth.console.commands import Command, UsageError, arg
from berth.console.context import Context
from berth.console.fifos import remove_fifo_dir
from berth.console.image_spec import parse_pairs
from berth.console.launch import (
    attach_task,
    container_process,
    exec_process,
    force_delete,
    start_task,
)
from berth.console.render import details, error_line, human_time, print_json, table
from wire.errors import BerthError, NotFound, Unimplemented

__all__ = ["COMMANDS", "parse_signal"]


def parse_signal(text: str) -> int:
    """``TERM``, ``SIGTERM``, ``sigterm`` or ``15`` as a signal number."""
    if text.isdigit():
        return int(text)
    name = text.upper()
    try:
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        raise UsageError(f"unknown signal {text!r}") from None


def ls(ctx: Context, args: argparse.Namespace) -> None:
    """List the namespace's tasks: pid, status and, once stopped, exit status.

    When any task is supervised (a restart policy or a health check), two
    more columns show its restart count and health, from one
    Supervision/List; "-" where there is neither. `berth supervision`
    tells more.
    """
    tasks = ctx.client.tasks.list()
    if ctx.json:
        print_json(ctx.out, tasks)
        return
    headers = ["TASK", "PID", "STATUS", "EXIT", "EXITED"]
    rows = [
        [
            t["id"],
            t["pid"],
            t["status"],
            t["exit_status"] if t["status"] == "STOPPED" else "-",
            human_time(t["exited_at"]),
        ]
        for t in sorted(tasks, key=lambda t: str(t["id"]))
    ]
    supervised = _supervision_of(ctx.client, [str(t["id"]) for t in tasks])
    if supervised:
        headers += ["RESTARTS", "HEALTH"]
        for row in rows:
            row += supervision_cells(supervised.get(str(row[0])))
    table(ctx.out, headers, rows)


def _supervision_of(client: Client, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The Supervision of the supervised containers among ``ids``; {} when none is."""
    if not ids:
        return {}
    try:
        views = client.supervision.list()
    except Unimplemented:
        return {}  # a daemon from before supervision
    wanted = set(ids)
    return {
        str(sv["container_id"]): sv
        for sv in views
        if sv["container_id"] in wanted and is_supervised(sv)
    }


def start(ctx: Context, args: argparse.Namespace) -> int:
    """Start a container's task, with this terminal's stdio attached.

    Creates the task of container ID and starts it, then (unless -d) copies
    stdio until it exits, deletes it and exits with its status, as `ctr
    tasks start` does. A task already CREATED (by another client) is only
    started.
    """
    try:
        task = ctx.client.tasks.info(args.id)
    except NotFound:
        return start_task(ctx, args.id, terminal=args.tty, detach=args.detach)
    if task["status"] != "CREATED":
        raise UsageError(f'tasks start: task "{args.id}" is {task["status"]}, not CREATED')
    ctx.client.tasks.start(args.id)
    return 0


def attach(ctx: Context, args: argparse.Namespace) -> int:
    """Attach this terminal to a task started with `berth run -d -t`.

    The terminal goes to raw mode and is connected to the task's terminal
    until the task exits; the command then exits with the task's status.
    Ctrl-] detaches and leaves the task running.
    """
    status = attach_task(ctx, args.id)
    return 0 if status is None else status


def kill(ctx: Context, args: argparse.Namespace) -> None:
    """Send a signal to a task's init process (or --pid, or --all processes).

    The signal is a name (TERM, SIGKILL) or a number; the default is TERM.
    """
    if args.all and args.pid:
        raise UsageError("tasks kill: --all and --pid exclude each other")
    ctx.client.tasks.kill(args.id, parse_signal(args.signal), all=args.all, pid=args.pid)


def ps(ctx: Context, args: argparse.Namespace) -> None:
    """List the processes of a task."""
    processes = ctx.client.tasks.processes(args.id)
    if ctx.json:
        print_json(ctx.out, processes)
    else:
        table(ctx.out, ["PID", "STATUS"], [[p["pid"], p["status"]] for p in processes])


def pause(ctx: Context, args: argparse.Namespace) -> None:
    """Pause a running task (RUNNING -> PAUSED)."""
    ctx.client.tasks.pause(args.id)


def resume(ctx: Context, args: argparse.Namespace) -> None:
    """Resume a paused task (PAUSED -> RUNNING)."""
    ctx.client.tasks.resume(args.id)


def exec_(ctx: Context, args: argparse.Namespace) -> int:
    """Run another process in a running task, with this terminal's stdio attached.

    The process starts from the container's spec (its environment, user
    and working directory), with CMD as its arguments; exits with the
    process's status. -d returns at once, its output discarded.

    example:
      berth tasks exec -t web sh
    """
    if not args.command:
        raise UsageError("tasks exec: give the command to run after the ID")
    process = container_process(ctx.client, args.id)
    process["args"] = list(args.command)
    process["terminal"] = args.tty
    if args.env:
        env = [*process.get("env", [])]
        env += [f"{k}={v}" for k, v in parse_pairs(args.env, "env").items()]
        process["env"] = env
    if args.cwd:
        process["cwd"] = args.cwd
    return exec_process(ctx, args.id, process, terminal=args.tty, detach=args.detach)


def pty_resize(ctx: Context, args: argparse.Namespace) -> None:
    """Set the window size of a task's terminal (or of process --pid's)."""
    ctx.client.tasks.pty(args.id, width=args.width, height=args.height, pid=args.pid)


def rm(ctx: Context, args: argparse.Namespace) -> int:
    """Delete stopped tasks and show their exit status.

    A running task is refused unless -f, which kills it (SIGKILL) first.
    """
    failed = 0
    deleted = []
    for cid in args.ids:
        try:
            delete = force_delete if args.force else _delete
            deleted.append({"id": cid, **delete(ctx.client, cid)})
        except BerthError as exc:
            ctx.err.write(error_line(exc))
            failed += 1
            continue
        remove_fifo_dir(ctx.session.fifo_dir(cid))
    if ctx.json:
        print_json(ctx.out, deleted)
    else:
        rows = [[d["id"], d["exit_status"], human_time(d["exited_at"])] for d in deleted]
        table(ctx.out, ["TASK", "EXIT", "EXITED"], rows)
    return 1 if failed else 0


def _delete(client: Client, container_id: str) -> dict[str, Any]:
    return client.tasks.delete(container_id)


def info(ctx: Context, args: argparse.Namespace) -> None:
    """Show a task: pid, status, exit status and time."""
    task = ctx.client.tasks.info(args.id)
    if ctx.json:
        print_json(ctx.out, task)
    else:
        details(ctx.out, task)


_ID = arg("id", metavar="ID", complete="task", help="the task's container id")
_PID = arg(
    "--pid", type=int, default=0, metavar="PID", help="a process of the task (default: init)"
)
_STDIO = (
    arg("-t", "--tty", action="store_true", help="give the process a terminal"),
    arg("-d", "--detach", action="store_true", help="start it and return"),
)
COMMANDS = (
    Command("tasks", "ls", ls),
    Command(
        "tasks",
        "start",
        start,
        (*_STDIO, arg("id", metavar="ID", complete="container", help="container id")),
    ),
    Command("tasks", "attach", attach, (_ID,)),
    Command(
        "tasks",
        "kill",
        kill,
        (
            arg("-s", "--signal", default="TERM", metavar="SIG", complete="signal", help="signal"),
            arg("-a", "--all", action="store_true", help="signal every process of the task"),
            _PID,
            _ID,
        ),
    ),
    Command("tasks", "ps", ps, (_ID,)),
    Command("tasks", "pause", pause, (_ID,)),
    Command("tasks", "resume", resume, (_ID,)),
    Command(
        "tasks",
        "exec",
        exec_,
        (
            *_STDIO,
            arg("--env", action="append", default=[], metavar="K=V", help="add to the env"),
            arg("--cwd", metavar="DIR", help="working directory"),
            _ID,
            arg("command", metavar="CMD", nargs="...", help="command and arguments"),
        ),
    ),
    Command(
        "tasks",
        "pty-resize",
        pty_resize,
        (
            _PID,
            _ID,
            arg("width", type=int, metavar="WIDTH", help="columns"),
            arg("height", type=int, metavar="HEIGHT", help="lines"),
        ),
    ),
    Command(
        "tasks",
        "rm",
        rm,
        (
            arg("-f", "--force", action="store_true", help="kill a running task first"),
            arg("ids", metavar="ID", nargs="+", complete="task", help="task ids"),
        ),
    ),
    Command("tasks", "info", info, (_ID,)),
)
