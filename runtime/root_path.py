"""Resolve paths below a root directory as if it were ``/`` (chroot semantics).

An image layer is unpacked into a directory that will be a container's root,
so a symlink it holds means what it will mean inside the container: an
absolute target starts at that directory, and ``..`` stops there. Resolving
with these rules (containerd's ``fs.RootPath``, securejoin) means no path
of the layer can lead outside the directory, whatever its symlinks say.

:func:`walk` resolves against any view of the tree (a ``lookup`` callable),
so the layer validator can resolve against "the target as it is, with this
layer's entries so far" without writing anything.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable
from typing import TypeAlias

from wire.errors import InvalidArgument

__all__ = [
    "DIR",
    "FILE",
    "Node",
    "Refused",
    "entry_parts",
    "escapes",
    "host_lookup",
    "resolve_in_root",
    "walk",
]

Node: TypeAlias = tuple[str, str]  # ("d" | "f" | "l", the symlink's target)
DIR: Node = ("d", "")
FILE: Node = ("f", "")
_MAX_LINKS = 40  # as Linux's MAXSYMLINKS


class Refused(Exception):
    """A path or entry refused; the caller says whose (layer, entry) it is."""


def resolve_in_root(root: str | os.PathLike[str], relpath: str) -> str:
    """``relpath`` resolved below ``root`` as if ``root`` were ``/`` (chroot).

    Symlinks are followed with absolute targets taken from ``root`` and ``..``
    stopping at it; components that do not exist are kept as written.
    """
    top = os.path.abspath(root)
    try:
        return os.path.join(top, *walk(relpath, host_lookup(top)))
    except Refused as exc:
        raise InvalidArgument(f'path "{relpath}": {exc}') from None


def walk(
    relpath: str,
    lookup: Callable[[list[str]], Node | None],
    on_link: Callable[[list[str], str], None] | None = None,
) -> list[str]:
    """The components of ``relpath`` with every symlink resolved inside the root."""
    pending = relpath.split("/")[::-1]
    out: list[str] = []
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if out:  # ".." of the root is the root, as in a chroot
                out.pop()
            continue
        out.append(part)
        node = lookup(out)
        if node is None or node[0] != "l":
            continue
        hops += 1
        if hops > _MAX_LINKS:
            raise Refused("too many levels of symbolic links")
        if on_link is not None:
            on_link(out, node[1])
        out.pop()
        if node[1].startswith("/"):
            out.clear()
        pending.extend(node[1].split("/")[::-1])
    return out


def host_lookup(root: str) -> Callable[[list[str]], Node | None]:
    """A :func:`walk` lookup reading the tree below ``root``.

    It lstats ``root/parts``; :func:`walk` asks only about paths whose ancestors
    it has resolved to directories, so no symlink is followed on the way.
    """

    def lookup(parts: list[str]) -> Node | None:
        path = os.path.join(root, *parts)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(st.st_mode):
            return ("l", os.readlink(path))
        return DIR if stat.S_ISDIR(st.st_mode) else FILE

    return lookup


def entry_parts(name: str) -> list[str]:
    """An entry name's components; [] for the root itself."""
    if name.startswith("/"):
        raise Refused("absolute path")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../"):
        raise Refused("path escapes the root")
    return [] if norm == "." else norm.split("/")


def escapes(link: list[str], target: str) -> bool:
    """Whether symlink ``link`` -> ``target``, read as a host path, leaves the root."""
    if target.startswith("/"):
        return True
    norm = posixpath.normpath("/".join([*link[:-1], target]))
    return norm == ".." or norm.startswith("../")
