"""``events`` and ``events info``: the daemon's event log (``berth.v1.Events``).

``berth events`` follows the log through :meth:`berth.client_events.Events.subscribe`,
so it goes on across a daemon restart with no event lost or shown twice.
The legacy follow of one namespace's task events is ``tasks events``
(:mod:`berth.console.cmd_daemon`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from typing import Any

from berth.console.commands import Command, UsageError, arg
from berth.console.context import Context
from berth.console.render import details, plain, print_json, rfc3339

__all__ = ["COMMANDS", "log_line", "payload_summary"]

# Characters of payload shown on a line; --json shows all of it.
_SUMMARY_WIDTH = 100


def payload_summary(payload: Any) -> str:
    """``k=v`` pairs of the payload's set fields, in its order, cut to a line."""
    if not isinstance(payload, dict):
        return ""
    pairs = []
    for key, value in payload.items():
        if value is None or value == "" or value == {} or value == []:
            continue
        shown = plain(value)
        text = shown if isinstance(shown, str) else json.dumps(shown, sort_keys=True)
        pairs.append(f"{key}={text}")
    summary = " ".join(pairs)
    return summary if len(summary) <= _SUMMARY_WIDTH else summary[: _SUMMARY_WIDTH - 3] + "..."


def log_line(event: dict[str, Any]) -> str:
    """``SEQ TIMESTAMP NAMESPACE TOPIC ID  payload``: one logged event."""
    ts = event.get("timestamp")
    when = rfc3339(ts) if ts is not None else "-"
    head = f"{event['seq']} {when} {event['namespace']} {event['topic']} {event['id']}"
    summary = payload_summary(event.get("payload"))
    return f"{head}  {summary}\n" if summary else f"{head}\n"


def events(ctx: Context, args: argparse.Namespace) -> None:
    """Follow the daemon's event log until Ctrl-C (or --count events).

    Every namespace's events, as containerd's are: containers, images,
    snapshots, content, namespaces and tasks. One line per event:

      SEQ TIMESTAMP NAMESPACE TOPIC ID  payload summary

    or, with --json, one JSON object per line (seq, timestamp, namespace,
    topic, id, type, payload). Without --since it shows what happens from
    now on; --since SEQ first replays every retained event after SEQ
    (0: all of them; OUT_OF_RANGE when SEQ is no longer retained). --filter
    takes containerd's filter language on topic, namespace, id and type.
    A restarted daemon is followed on from the last event shown.

    `berth events info` shows what the log retains; `berth tasks events`
    is the former `events`: one namespace's task events (Tasks/Events).

    examples:
      berth events
      berth events --since 0 --json
      berth events --filter 'topic~=^/containers/,namespace==default'
    """
    if args.since is not None and args.since < 0:
        raise UsageError("events: --since takes a seq, 0 or more")
    after = 0 if args.since is None else _after_seq(ctx, args.since)
    subscription = ctx.client.events.subscribe(after_seq=after, filter=args.filter)
    if ctx.err.isatty():
        # For a person: the subscription is live, events from now on will show.
        ctx.err.write(f"following the event log from seq {subscription.seq}; Ctrl-C stops\n")
        ctx.err.flush()
    shown = 0
    with contextlib.closing(subscription), contextlib.suppress(KeyboardInterrupt):
        # Ctrl-C is how a follow ends, not a failure; closing cancels the stream.
        for event in subscription:
            if ctx.json:
                print_json(ctx.out, event, lines=True)
            else:
                ctx.out.write(log_line(event))
                ctx.out.flush()
            shown += 1
            if args.count and shown >= args.count:
                break


def _after_seq(ctx: Context, since: int) -> int:
    """The ``after_seq`` that replays the events after ``since``.

    On the wire ``after_seq`` 0 means "from now on", so "everything" is
    asked as "after the one before the oldest retained"; while seq 1 is
    still retained that cannot be said, and replay starts at seq 2.
    """
    if since > 0:
        return since
    figures = ctx.client.events.info()
    oldest, latest = int(figures["oldest_seq"]), int(figures["latest_seq"])
    if latest == 0:
        return 0  # nothing was ever logged: from now on is everything
    if oldest > 1:
        return oldest - 1
    ctx.err.write("berth: note: seq 1 cannot be replayed (after_seq 0 means from now on)\n")
    ctx.err.flush()
    return 1


def info(ctx: Context, args: argparse.Namespace) -> None:
    """Show what the event log retains: oldest and latest seq, count, bytes."""
    figures = ctx.client.events.info()
    if ctx.json:
        print_json(ctx.out, figures)
    else:
        details(ctx.out, {k: figures[k] for k in ("oldest_seq", "latest_seq", "count", "bytes")})


COMMANDS = (
    Command(
        None,
        "events",
        events,
        (
            arg("--since", type=int, metavar="SEQ", help="replay the events after SEQ first"),
            arg("--filter", default="", metavar="FILTER", help="which events to show"),
            arg("-n", "--count", type=int, default=0, metavar="N", help="stop after N events"),
        ),
    ),
    Command("events", "info", info),
)
