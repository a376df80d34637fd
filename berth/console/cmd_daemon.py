"""``tasks events`` and ``version``: what the daemon says about itself and its tasks.

``tasks events`` is what ``events`` was before the event log had its own
command (:mod:`berth.console.cmd_events`): one namespace's task events,
from ``Tasks/Events``, filtered here.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any

import msgpack

from berth.console.commands import Command, arg
from berth.console.context import Context
from berth.console.render import print_json
from berth.version import VERSION as client_version
from wire.filter import FieldLookup, parse_filter

__all__ = ["COMMANDS", "event_fields", "event_line"]

_EVENT_FIELDS = ("id", "type", "pid", "exit_status", "namespace", "seq")


def event_fields(event: dict[str, Any]) -> FieldLookup:
    """The fields a filter may name: id, type, pid, exit_status, namespace, seq."""

    def lookup(path: tuple[str, ...]) -> str | None:
        if len(path) != 1 or path[0] not in _EVENT_FIELDS or event.get(path[0]) is None:
            return None
        return str(event[path[0]])

    return lookup


def event_line(event: dict[str, Any]) -> str:
    """``10:12:10.613  START  web  pid=1234``, plus the exit status of an exit."""
    ts = event.get("timestamp")
    if isinstance(ts, msgpack.Timestamp):
        when = (
            time.strftime("%H:%M:%S", time.localtime(ts.seconds))
            + f".{ts.nanoseconds // 10**6:03d}"
        )
    else:
        when = "-"
    extra = f"pid={event.get('pid', 0)}"
    if event.get("type") in ("EXIT", "DELETE"):
        extra += f" exit_status={event.get('exit_status', 0)}"
    return f"{when}  {event.get('type', '?'):<9} {event.get('id', '')}  {extra}\n"


def task_events(ctx: Context, args: argparse.Namespace) -> None:
    """Follow the namespace's task events until Ctrl-C (or --count of them).

    Events: CREATE, START, EXIT, EXEC_ADDED, PAUSED, RESUMED, OOM, DELETE.
    --filter takes containerd's filter language on the fields id, type,
    pid, exit_status, namespace and seq; with --json each event is one
    line of JSON. (This was `berth events` before the event log had its
    own command; `berth events` now follows the whole log.)

    examples:
      berth tasks events
      berth tasks events --filter 'type==EXIT,id~=^web'
    """
    selected = parse_filter(args.filter)
    shown = 0
    stream = ctx.client.tasks.events(timeout=None)
    if ctx.err.isatty():
        # For a person: the subscription is live, events from now on will show.
        ctx.err.write(f"following the events of namespace {ctx.namespace}; Ctrl-C stops\n")
        ctx.err.flush()
    with contextlib.closing(stream), contextlib.suppress(KeyboardInterrupt):
        # Ctrl-C is how a follow ends, not a failure; closing cancels the stream.
        for event in stream:
            if not selected.match(event_fields(event)):
                continue
            if ctx.json:
                print_json(ctx.out, event, lines=True)
            else:
                ctx.out.write(event_line(event))
                ctx.out.flush()
            shown += 1
            if args.count and shown >= args.count:
                break


def version(ctx: Context, args: argparse.Namespace) -> None:
    """Show the versions of this client and of the daemon."""
    server = ctx.client.version()
    if ctx.json:
        print_json(ctx.out, {"client": {"version": client_version}, "server": server})
    else:
        ctx.out.write(f"client: {client_version}\n")
        ctx.out.write(f"server: {server['version']} (revision {server['revision'] or '-'})\n")
        ctx.out.write(f"address: {ctx.session.address}\n")
        ctx.out.flush()


COMMANDS = (
    Command(
        "tasks",
        "events",
        task_events,
        (
            arg("--filter", default="", metavar="FILTER", help="which events to show"),
            arg("-n", "--count", type=int, default=0, metavar="N", help="stop after N events"),
        ),
    ),
    Command(None, "version", version),
)
