"""``containers``: the Containers service -- ls, create, info, label, update, rm."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from berth.console.cmd_run import (
    SPEC_ARGS,
    container_labels,
    create_from_image,
    create_on_snapshot,
    refuse_existing,
)
from berth.console.commands import Command, UsageError, arg
from berth.console.context import Context
from berth.console.fifos import remove_fifo_dir
from berth.console.image_spec import parse_pairs
from berth.console.render import details, error_line, human_time, print_json, table
from wire.errors import BerthError

__all__ = ["COMMANDS"]


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def ls(ctx: Context, args: argparse.Namespace) -> None:
    """List containers, optionally those matching a filter.

    The filter is containerd's: selectors joined by commas, all of which
    must hold, on the fields id, image, runtime, rootfs and labels.KEY, with
    == (equal), != (differs or absent), ~= (regular expression) or no
    operator (present).

    examples:
      berth containers ls
      berth containers ls --filter 'labels.tier==web,image~=^busybox'
    """
    containers = ctx.client.containers.list(filter=args.filter)
    if ctx.json:
        print_json(ctx.out, containers)
    elif args.quiet:
        ctx.out.write("".join(f"{c['id']}\n" for c in containers))
    else:
        rows = [
            [
                c["id"],
                c["image"] or "-",
                c["runtime"],
                _labels(c["labels"]),
                human_time(c["created_at"]),
            ]
            for c in containers
        ]
        table(ctx.out, ["ID", "IMAGE", "RUNTIME", "LABELS", "CREATED"], rows)


def create(ctx: Context, args: argparse.Namespace) -> None:
    """Create a container from an image, without a task.

    Prepares a snapshot of IMAGE (key ID) and creates container ID on it,
    with the image's command unless CMD is given: `berth tasks start ID`
    then runs it. With --spec FILE the container's OCI spec is read from
    FILE instead, and IMAGE may be "-" for none (the spec's root.path must
    then be an absolute directory on the daemon's host). --restart and
    --health-* set the supervision labels as for `run`; `berth tasks start
    -d ID` then starts a supervised task.

    examples:
      berth containers create --label tier=web busybox:latest web sh -c 'httpd -f'
      berth containers create --spec config.json - legacy
    """
    labels = container_labels(args, "containers create")
    if args.spec is None:
        create_from_image(ctx, args, labels)
    else:
        _create_from_spec(ctx, args, labels)
    _show(ctx, ctx.client.containers.get(args.id))


def _create_from_spec(ctx: Context, args: argparse.Namespace, labels: dict[str, str]) -> None:
    try:
        spec = json.loads(Path(args.spec).read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(f"containers create: --spec {args.spec}: {exc}") from None
    if not isinstance(spec, dict):
        raise UsageError(f"containers create: --spec {args.spec}: not a JSON object")
    process = spec.setdefault("process", {})
    if args.command:
        process["args"] = list(args.command)
    if args.env:
        process["env"] = [
            *process.get("env", []),
            *(f"{k}={v}" for k, v in parse_pairs(args.env, "env").items()),
        ]
    if args.cwd:
        process["cwd"] = args.cwd
    process["terminal"] = bool(args.tty or process.get("terminal"))
    image = "" if args.image == "-" else args.image
    if image:
        spec.setdefault("root", {})["path"] = "rootfs"  # where the snapshot is mounted
    refuse_existing(ctx.client, args.id)
    create_on_snapshot(ctx.client, args.id, image, spec, labels)


def info(ctx: Context, args: argparse.Namespace) -> None:
    """Show a container: id, image, runtime, rootfs, labels, spec, times."""
    _show(ctx, ctx.client.containers.get(args.id))


def _show(ctx: Context, container: dict[str, Any]) -> None:
    if ctx.json:
        print_json(ctx.out, container)
    else:
        details(ctx.out, container)


def label(ctx: Context, args: argparse.Namespace) -> None:
    """Set or remove labels of a container, and show its labels.

    KEY=VALUE sets a label; KEY= removes it. Other labels are kept.
    Without any, shows the labels.

    example:
      berth containers label web tier=front owner=
    """
    client = ctx.client
    pairs = parse_pairs(args.labels, "label")
    if pairs:
        container = client.containers.update(
            args.id, labels=pairs, update_mask=[f"labels.{k}" for k in pairs]
        )
    else:
        container = client.containers.get(args.id)
    if ctx.json:
        print_json(ctx.out, container["labels"])
    else:
        table(ctx.out, ["KEY", "VALUE"], sorted(container["labels"].items()))


def update(ctx: Context, args: argparse.Namespace) -> None:
    """Change a container's image, runtime, rootfs snapshot, spec or labels.

    Only the fields given change. --label KEY=VALUE sets one label (KEY=
    removes it); --spec FILE replaces the whole OCI spec.

    example:
      berth containers update --image busybox:1.36 --label tier=back web
    """
    fields: dict[str, Any] = {}
    mask: list[str] = []
    for name in ("image", "runtime", "rootfs"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
            mask.append(name)
    if args.spec is not None:
        try:
            fields["spec"] = json.loads(Path(args.spec).read_bytes())
        except (OSError, ValueError) as exc:
            raise UsageError(f"containers update: --spec {args.spec}: {exc}") from None
        mask.append("spec")
    labels = parse_pairs(args.label, "label")
    if labels:
        fields["labels"] = labels
        mask += [f"labels.{k}" for k in labels]
    if not mask:
        raise UsageError(
            "containers update: nothing to change: give --image, --runtime, "
            "--rootfs, --spec or --label"
        )
    _show(ctx, ctx.client.containers.update(args.id, update_mask=mask, **fields))


def rm(ctx: Context, args: argparse.Namespace) -> int:
    """Delete containers (their rootfs snapshots go with them).

    A container with a task is refused: `berth tasks rm -f ID` first. Each
    failure is reported on a line of its own; the others are still deleted.
    """
    failed = 0
    for cid in args.ids:
        try:
            ctx.client.containers.delete(cid)
        except BerthError as exc:
            ctx.err.write(error_line(exc))
            failed += 1
            continue
        remove_fifo_dir(ctx.session.fifo_dir(cid))
        if not ctx.json:
            ctx.out.write(f"{cid}\n")
    if ctx.json:
        print_json(ctx.out, {"deleted": len(args.ids) - failed, "failed": failed})
    return 1 if failed else 0


_ID = arg("id", metavar="ID", complete="container", help="container id")
COMMANDS = (
    Command(
        "containers",
        "ls",
        ls,
        (
            arg("--filter", default="", metavar="FILTER", help="containerd filter expression"),
            arg("-q", "--quiet", action="store_true", help="print only the ids"),
        ),
    ),
    Command(
        "containers",
        "create",
        create,
        (arg("--spec", metavar="FILE", help="OCI spec (JSON) to use"), *SPEC_ARGS),
    ),
    Command("containers", "info", info, (_ID,)),
    Command(
        "containers",
        "label",
        label,
        (_ID, arg("labels", metavar="KEY=VALUE", nargs="*", help="labels to set (KEY= removes)")),
    ),
    Command(
        "containers",
        "update",
        update,
        (
            arg("--image", metavar="IMAGE", complete="image", help="new image name"),
            arg("--runtime", metavar="NAME", help="new runtime name"),
            arg("--rootfs", metavar="KEY", complete="snapshot", help="new rootfs snapshot key"),
            arg("--spec", metavar="FILE", help="new OCI spec (JSON file)"),
            arg("--label", action="append", default=[], metavar="K=V", help="set a label (repeat)"),
            _ID,
        ),
    ),
    Command(
        "containers",
        "rm",
        rm,
        (arg("ids", metavar="ID", nargs="+", complete="container", help="container ids"),),
    ),
)
