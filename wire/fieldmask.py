"""Field masks of ``Containers/Update``.

A mask names what an update touches: ``labels`` (all of them),
``labels.<key>`` (one key: set from the update, or deleted when the
update has no or an empty value for it; the rest of the path is the key,
dots included), ``image``, ``runtime``, ``spec`` and ``rootfs``. An empty
mask means every mutable field. ``id`` and anything else are refused:
they are immutable or do not exist.
"""

from __future__ import annotations

from typing import Any

from wire.errors import InvalidArgument

__all__ = ["CONTAINER_MUTABLE", "apply_container_mask", "check_container_paths"]

CONTAINER_MUTABLE = ("labels", "image", "runtime", "spec", "rootfs")


def check_container_paths(container_id: str, paths: list[str]) -> None:
    """Refuse any path an update of a container may not name."""
    for path in paths:
        if path in CONTAINER_MUTABLE:
            continue
        if path.startswith("labels.") and len(path) > len("labels."):
            continue
        owner = f'container "{container_id}"'
        if path == "id":
            raise InvalidArgument(f'{owner}: update_mask: field "id" is immutable')
        raise InvalidArgument(f"{owner}: update_mask: cannot update field {path!r}")


def apply_container_mask(
    current: dict[str, Any], update: dict[str, Any], paths: list[str]
) -> dict[str, Any]:
    """A new container: ``current`` with the masked fields taken from ``update``.

    ``update`` is a decoded Container with every field present (defaults
    filled); ``paths`` were checked by :func:`check_container_paths`.
    """
    result = dict(current)
    result["labels"] = dict(current.get("labels") or {})
    for path in paths or CONTAINER_MUTABLE:
        if path == "labels":
            result["labels"] = dict(update["labels"])
        elif path.startswith("labels."):
            key = path[len("labels.") :]
            value = update["labels"].get(key, "")
            if value:
                result["labels"][key] = value
            else:
                result["labels"].pop(key, None)
        else:
            result[path] = update[path]
    return result
