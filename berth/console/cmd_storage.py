"""``images``, ``snapshots``, ``content`` and ``gc``: what containers are made from."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from typing import Any

from berth.console.commands import Command, arg
from berth.console.context import Context
from berth.console.image_spec import resolve_image
from berth.console.render import (
    details,
    error_line,
    human_size,
    human_time,
    print_json,
    table,
)
from wire.errors import BerthError

__all__ = ["COMMANDS"]


def _images_table(ctx: Context, images: list[dict[str, Any]]) -> None:
    if ctx.json:
        print_json(ctx.out, images)
        return
    rows = [
        [
            i["name"],
            (i.get("target") or {}).get("digest", "-"),
            human_size((i.get("target") or {}).get("size", 0)),
            human_time(i.get("created_at")),
        ]
        for i in sorted(images, key=lambda i: str(i["name"]))
    ]
    table(ctx.out, ["NAME", "DIGEST", "SIZE", "CREATED"], rows)


def images_import(ctx: Context, args: argparse.Namespace) -> None:
    """Import the images of an OCI image-layout or `docker save` archive (tar).

    The daemon reads PATH on its own host (this one, over an ipc socket);
    a relative PATH is taken from the current directory. --name names the
    image when the archive holds exactly one. Names are recorded normalised,
    as `ctr images import` records them: busybox:latest is
    docker.io/library/busybox:latest.

    example:
      berth images import --name busybox:latest busybox.tar
    """
    path = os.path.abspath(args.path)
    _images_table(ctx, ctx.client.images.import_archive(path, name=args.name))


def images_ls(ctx: Context, args: argparse.Namespace) -> None:
    """List the namespace's images: name, target digest and size, creation time."""
    _images_table(ctx, ctx.client.images.list())


def _each(ctx: Context, items: Iterable[str], action: Callable[[str], object]) -> int:
    """Apply ``action`` to each item, reporting failures one line each; the exit status."""
    failed = 0
    for item in items:
        try:
            action(item)
        except BerthError as exc:
            ctx.err.write(error_line(exc))
            failed += 1
        else:
            if not ctx.json:
                ctx.out.write(f"{item}\n")
    ctx.out.flush()
    return 1 if failed else 0


def images_rm(ctx: Context, args: argparse.Namespace) -> int:
    """Delete images; what only they used is then garbage-collected.

    A NAME is normalised as Docker does: busybox is
    docker.io/library/busybox:latest.
    """

    def delete(name: str) -> None:
        ctx.client.images.delete(resolve_image(ctx.client, name))

    return _each(ctx, args.names, delete)


def _snapshot_infos(ctx: Context) -> list[dict[str, Any]]:
    return [info for batch in ctx.client.snapshots.list() for info in batch["info"]]


def snapshots_ls(ctx: Context, args: argparse.Namespace) -> None:
    """List the namespace's snapshots: key, parent, kind."""
    infos = sorted(_snapshot_infos(ctx), key=lambda s: str(s["name"]))
    if ctx.json:
        print_json(ctx.out, infos)
    else:
        rows = [[s["name"], s["parent"] or "-", s["kind"]] for s in infos]
        table(ctx.out, ["KEY", "PARENT", "KIND"], rows)


def snapshots_info(ctx: Context, args: argparse.Namespace) -> None:
    """Show a snapshot: name, parent, kind, labels."""
    info = ctx.client.snapshots.stat(args.key)
    if ctx.json:
        print_json(ctx.out, info)
    else:
        details(ctx.out, info)


def snapshots_rm(ctx: Context, args: argparse.Namespace) -> int:
    """Remove snapshots; one with children or used by a container is refused."""
    return _each(ctx, args.keys, ctx.client.snapshots.remove)


def snapshots_usage(ctx: Context, args: argparse.Namespace) -> None:
    """Show the disk usage of snapshots' own trees (all of them without KEY)."""
    keys = args.keys or [s["name"] for s in _snapshot_infos(ctx)]
    usage = [{"key": key, **ctx.client.snapshots.usage(key)} for key in sorted(keys)]
    if ctx.json:
        print_json(ctx.out, usage)
    else:
        rows = [[u["key"], human_size(u["size"]), u["inodes"]] for u in usage]
        table(ctx.out, ["KEY", "SIZE", "INODES"], rows)


def content_ls(ctx: Context, args: argparse.Namespace) -> None:
    """List the blobs the namespace holds: digest, size, when committed."""
    infos = [info for batch in ctx.client.content.list() for info in batch["info"]]
    infos.sort(key=lambda i: str(i["digest"]))
    if ctx.json:
        print_json(ctx.out, infos)
    else:
        rows = [[i["digest"], human_size(i["size"]), human_time(i["committed_at"])] for i in infos]
        table(ctx.out, ["DIGEST", "SIZE", "COMMITTED"], rows)


def content_rm(ctx: Context, args: argparse.Namespace) -> int:
    """Stop holding blobs in this namespace; unheld ones are removed."""
    return _each(ctx, args.digests, ctx.client.content.delete)


def gc(ctx: Context, args: argparse.Namespace) -> None:
    """Collect garbage now: list the snapshots and blobs removed."""
    removed = ctx.client.gc()
    if ctx.json:
        print_json(ctx.out, removed)
        return
    rows = [["snapshot", key] for key in removed["snapshots"]]
    rows += [["content", digest] for digest in removed["content"]]
    if rows:
        table(ctx.out, ["KIND", "REMOVED"], rows)
    else:
        ctx.out.write("nothing to collect\n")
        ctx.out.flush()


_KEY = arg("key", metavar="KEY", complete="snapshot", help="snapshot key")
COMMANDS = (
    Command(
        "images",
        "import",
        images_import,
        (
            arg("--name", default="", metavar="NAME", help="name of the archive's only image"),
            arg("path", metavar="PATH", complete="path", help="archive (tar) on this host"),
        ),
    ),
    Command("images", "ls", images_ls),
    Command(
        "images",
        "rm",
        images_rm,
        (arg("names", metavar="NAME", nargs="+", complete="image", help="image names"),),
    ),
    Command("snapshots", "ls", snapshots_ls),
    Command("snapshots", "info", snapshots_info, (_KEY,)),
    Command(
        "snapshots",
        "rm",
        snapshots_rm,
        (arg("keys", metavar="KEY", nargs="+", complete="snapshot", help="snapshot keys"),),
    ),
    Command(
        "snapshots",
        "usage",
        snapshots_usage,
        (arg("keys", metavar="KEY", nargs="*", complete="snapshot", help="snapshot keys"),),
    ),
    Command("content", "ls", content_ls),
    Command(
        "content",
        "rm",
        content_rm,
        (arg("digests", metavar="DIGEST", nargs="+", complete="digest", help="blob digests"),),
    ),
    Command(None, "gc", gc),
)
