"""berth's command line and console: one command table, two ways to use it.

::

    cli.py (berth/)         global options; one-shot or console
    dispatch.py             run one command line: find, parse, call, report
    table.py                the command table, assembled from the cmd_* modules
    commands.py             Command, Arg, the parser built from them
    cmd_run.py              run
    cmd_containers.py       containers ls|create|info|label|update|rm
    cmd_tasks.py            tasks ls|start|attach|kill|ps|pause|resume|exec|pty-resize|rm|info
    cmd_storage.py          images, snapshots, content, gc
    cmd_events.py           events, events info (the event log)
    cmd_supervision.py      supervision (sv): restart policies and health
    supervision_args.py     run's --restart and --health-* flags, as labels
    cmd_daemon.py           tasks events (a namespace's task events), version
    context.py              Session (address, namespace, client), Context
    render.py               tables, details, JSON
    image_spec.py           an OCI spec from an image's config
    launch.py               start/attach/exec a task process with our stdio
    attach.py               the copy loop between our stdio and a task's FIFOs
    exit_watch.py           a process's EXIT, from the event stream, on a thread
    fifos.py                the stdio FIFOs
    terminal.py             raw mode, window size, SIGWINCH
    repl.py, completion.py  the interactive console (prompt_toolkit)
"""

from __future__ import annotations

from berth.console.dispatch import execute
from berth.console.table import COMMANDS

__all__ = ["COMMANDS", "execute"]
