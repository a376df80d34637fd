"""Fit an overlay's ``lowerdir`` into the one page of options mount(2) takes.

The kernel copies mount(2)'s data argument into one page and cuts it at
``PAGE_SIZE - 1`` bytes, so ``lowerdir=/var/lib/berth/snapshots/overlayfs/
snapshots/123/fs:...`` stops fitting at about 80 layers (and a cut list
would mount fewer layers, or fail with a bare EINVAL). As containerd's
``compactLowerdirOption`` does, a lowerdir too long for the page is
rewritten relative to the lowers' common directory (``lowerdir=123/fs:
122/fs:...``, a few bytes a layer, room for overlayfs's 500), and the mount
is made from that directory (:func:`runtime.mounts.mount_all` does it on a
thread with a working directory of its own). ``upperdir`` and ``workdir``
stay absolute.

mountinfo shows the options as they were given, so relative lowers mean
nothing to its readers by themselves: the mount's *source* (which overlayfs
only displays) is set to the common directory, and :func:`overlay_layers`
reads the layers of a mountinfo entry back as absolute paths from it.
"""

from __future__ import annotations

import os

__all__ = ["MAX_MOUNT_DATA", "compact_lowerdir", "data_size", "overlay_layers"]

MAX_MOUNT_DATA = os.sysconf("SC_PAGESIZE") - 1  # one page, its last byte the kernel's NUL
_LOWERDIR = "lowerdir="
# Options naming layers, with ":"-separated lists; "+" ones come from fsconfig(2) mounts.
_LAYER_OPTIONS = frozenset({"lowerdir", "upperdir", "workdir", "lowerdir+", "datadir+"})


def data_size(options: list[str]) -> int:
    """Bytes of mount(2)'s data argument for the (non-flag) ``options``, without the NUL."""
    return len(os.fsencode(",".join(options)))


def compact_lowerdir(options: list[str], limit: int = MAX_MOUNT_DATA) -> tuple[str, list[str]]:
    """``("", options)`` when they fit in ``limit`` bytes, else ``(directory, shorter options)``.

    ``options`` are an overlay mount's data options (flags such as ``ro``
    left out). When they do not fit, the ``lowerdir`` option is rewritten
    with each layer relative to the directory every layer is strictly
    below, which the mount must then be made from. Nothing changes when
    there is no such directory but ``/`` (no gain) or a layer is relative
    already. The result may still be too long: the caller checks.
    """
    if data_size(options) <= limit:
        return "", options
    at = next((i for i, o in enumerate(options) if o.startswith(_LOWERDIR)), None)
    if at is None:
        return "", options
    # "::" separates data-only lower layers: empty entries stay as they are.
    layers = options[at][len(_LOWERDIR) :].split(":")
    named = [layer for layer in layers if layer]
    if len(named) < 2 or not all(os.path.isabs(layer) for layer in named):
        return "", options
    # The parents' common path, so that no layer *is* the common directory
    # (a relative path of "." would be a different option).
    common = os.path.commonpath([os.path.dirname(os.path.normpath(p)) for p in named])
    if common == "/":
        return "", options
    relative = [os.path.relpath(layer, common) if layer else "" for layer in layers]
    return common, [*options[:at], _LOWERDIR + ":".join(relative), *options[at + 1 :]]


def overlay_layers(source: str, options: str) -> list[str]:
    """The lower, upper and work directories a mountinfo overlay entry names, absolute.

    ``options`` are the entry's super options; relative layers are taken
    relative to ``source`` when it is an absolute path (as
    :func:`compact_lowerdir`'s mounts set it) and left out otherwise, as
    their directory is unknown.
    """
    paths = []
    for option in options.split(","):
        name, _, value = option.partition("=")
        if name not in _LAYER_OPTIONS:
            continue
        for layer in value.split(":"):
            if os.path.isabs(layer):
                paths.append(os.path.normpath(layer))
            elif layer and os.path.isabs(source):
                paths.append(os.path.normpath(os.path.join(source, layer)))
    return paths
