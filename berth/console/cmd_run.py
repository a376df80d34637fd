"""``run``: ``ctr run`` for berth -- snapshot, container, task, stdio, exit status, cleanup."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from berth.client import Client
from berth.console.commands import Arg, Command, UsageError, arg
from berth.console.context import Context
from berth.console.image_spec import build_spec, image_config, parse_pairs, resolve_image
from berth.console.launch import discard_task, start_task
from berth.console.supervision_args import (
    SUPERVISION_ARGS,
    restarts_on_exit,
    supervision_labels,
)
from wire.errors import AlreadyExists, BerthError, NotFound

__all__ = [
    "COMMANDS",
    "SPEC_ARGS",
    "container_labels",
    "create_from_image",
    "create_on_snapshot",
    "refuse_existing",
]

# The arguments `run` and `containers create` share.
SPEC_ARGS: tuple[Arg, ...] = (
    arg("--label", action="append", default=[], metavar="K=V", help="container label (repeat)"),
    *SUPERVISION_ARGS,
    arg("--env", action="append", default=[], metavar="K=V", help="environment variable (repeat)"),
    arg("--cwd", metavar="DIR", help="working directory (default: the image's, else /)"),
    arg("-t", "--tty", action="store_true", help="give the process a terminal"),
    arg("image", metavar="IMAGE", complete="image", help="image to run"),
    arg("id", metavar="ID", help="the new container's id"),
    arg("command", metavar="CMD", nargs=argparse.REMAINDER, help="command (default: the image's)"),
)


def container_labels(args: argparse.Namespace, prog: str) -> dict[str, str]:
    """The ``--label`` pairs and the labels of the restart and health flags."""
    return parse_pairs(args.label, "label") | supervision_labels(args, prog)


def create_from_image(ctx: Context, args: argparse.Namespace, labels: dict[str, str]) -> None:
    """Create container ``ID`` from ``IMAGE`` (normalised): its spec from the image's config."""
    refuse_existing(ctx.client, args.id)
    image = resolve_image(ctx.client, args.image)  # busybox -> docker.io/library/busybox:latest
    config = image_config(ctx.client, image)
    spec = build_spec(
        config,
        args.command,
        env=parse_pairs(args.env, "env"),
        cwd=args.cwd,
        terminal=args.tty,
        image=image,
    )
    create_on_snapshot(ctx.client, args.id, image, spec, labels)


def refuse_existing(client: Client, container_id: str) -> None:
    """AlreadyExists for a taken id, said before preparing a snapshot with that key."""
    with contextlib.suppress(NotFound):
        client.containers.get(container_id)
        raise AlreadyExists(f'container "{container_id}": already exists')


def create_on_snapshot(
    client: Client, container_id: str, image: str, spec: dict[str, Any], labels: dict[str, str]
) -> None:
    """Prepare snapshot ``container_id`` on ``image`` (if any), and the container on it.

    The snapshot of a container that could not be created is removed again.
    """
    if not image:
        client.containers.create(container_id, spec=spec, labels=labels)
        return
    client.images.prepare_rootfs(image, key=container_id)
    try:
        client.containers.create(
            container_id, spec=spec, labels=labels, image=image, rootfs=container_id
        )
    except BaseException:
        with contextlib.suppress(BerthError):
            client.snapshots.remove(container_id)
        raise


def run(ctx: Context, args: argparse.Namespace) -> int:
    """Run a command in a new container made from an image.

    As `ctr run` does: prepares a snapshot of IMAGE (key ID), creates
    container ID on it, creates and starts its task with this terminal's
    stdin, stdout and stderr attached, and exits with the task's exit
    status after deleting the task. CMD defaults to the image's command;
    the image's environment and working directory apply. IMAGE is
    normalised as Docker does: busybox is docker.io/library/busybox:latest.

    Ctrl-C sends SIGINT to the task (a second Ctrl-C, SIGKILL). With -t the
    terminal is in raw mode, so keys, Ctrl-C included, go to the task's
    terminal; window size changes follow.

    -d starts the task and returns at once: its output is appended to a log
    file (without -t), or kept in FIFOs for `tasks attach` (with -t).
    --rm deletes the container, and with it its snapshot, at the end.

    --restart and --health-* are Docker's flags, kept as the container's
    supervision labels: the daemon restarts the task by its policy when it
    exits (with a backoff from --restart-backoff, doubling up to
    --restart-backoff-max) and runs the health check in it. Durations are
    Go's: 100ms, 2s, 1m. A restarting task needs -d: an attached run
    deletes its task when it exits. `berth supervision ID` shows it.

    examples:
      berth run --rm busybox:latest hello echo hello
      berth run --rm -t busybox:latest shell sh
      berth run -d -t --label tier=web busybox:latest web sh
      berth run -d --restart on-failure:3 --restart-backoff 200ms busybox:latest job sh -c 'exit 1'
      berth run -d --health-cmd 'test -f /tmp/ok' --health-interval 5s busybox:latest web sh
    """
    if args.rm and args.detach:
        raise UsageError("run: --rm cannot be used with -d (nothing would be left to remove it)")
    labels = container_labels(args, "run")
    if restarts_on_exit(args) and not args.detach:
        how = "--restart" if args.restart not in (None, "no") else "--health-on-failure restart"
        raise UsageError(
            f"run: {how} needs -d (an attached run deletes its task when it exits, "
            "which cancels the restart)"
        )
    create_from_image(ctx, args, labels)
    try:
        status = start_task(ctx, args.id, terminal=args.tty, detach=args.detach)
    except BaseException:
        if args.rm:  # the first error is the one to report; clean up quietly
            discard_task(ctx.client, args.id)
            with contextlib.suppress(BerthError):
                ctx.client.containers.delete(args.id)
        raise
    if args.rm:
        ctx.client.containers.delete(args.id)  # its snapshot goes with it
    return status


COMMANDS = (
    Command(
        None,
        "run",
        run,
        (
            arg("--rm", action="store_true", help="delete the container when the task exits"),
            arg("-d", "--detach", action="store_true", help="start the task and return"),
            *SPEC_ARGS,
        ),
    ),
)
