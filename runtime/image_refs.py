"""What a stored image references: its blobs, and the snapshots unpacked from its layers.

Images are followed through the content store the way containerd's
garbage collector follows its ``gc.ref`` labels: an index references its
manifests, a manifest its config and layers, and a manifest's layers,
unpacked, are the committed snapshots named by their chain ids (the last
one is the image's root filesystem). Only index, manifest and config blobs
are read, and only when their media type says what they are; a missing or
malformed blob ends that branch (a partly stored image keeps what it has).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from runtime.content import ContentStore
from runtime.image_archive import CONFIG_TYPES, INDEX_TYPES, MANIFEST_TYPES, chain_ids
from wire.errors import FailedPrecondition, NotFound

__all__ = ["ImageRefs", "image_refs", "top_chain_id"]

_MAX_JSON = 4 << 20  # an index, manifest or config larger than this is not read
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}


@dataclass
class ImageRefs:
    """Everything an image references: blob digests, and chain ids of its layers."""

    blobs: set[str]
    chain_ids: set[str]


def _read_json(content: ContentStore, digest: str) -> dict[str, Any] | None:
    try:
        path = content.path_of(digest)
        if path.stat().st_size > _MAX_JSON:
            return None
        value = json.loads(path.read_bytes())
    except (NotFound, OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _children(value: dict[str, Any], key: str) -> Iterator[tuple[str, str]]:
    entries = value.get(key)
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        return
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("digest"), str):
            yield entry["digest"], str(entry.get("mediaType") or "")


def _layer_chain(content: ContentStore, config_digest: str) -> list[str]:
    config = _read_json(content, config_digest)
    rootfs = config.get("rootfs") if config else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        return []
    return chain_ids(diff_ids)


def image_refs(content: ContentStore, digest: str, media_type: str) -> ImageRefs:
    """The blobs and layer chain ids reachable from an image's target."""
    refs = ImageRefs(set(), set())
    pending = [(digest, media_type)]
    while pending:
        current, kind = pending.pop()
        if current in refs.blobs:
            continue
        refs.blobs.add(current)
        if kind in INDEX_TYPES:
            value = _read_json(content, current)
            if value is not None:
                pending.extend(_children(value, "manifests"))
        elif kind in MANIFEST_TYPES:
            value = _read_json(content, current)
            if value is None:
                continue
            for config, config_type in _children(value, "config"):
                pending.append((config, config_type))
                if config_type in CONFIG_TYPES:
                    refs.chain_ids.update(_layer_chain(content, config))
            pending.extend(_children(value, "layers"))
    return refs


def top_chain_id(content: ContentStore, name: str, digest: str, media_type: str) -> str:
    """The chain id of image ``name``'s last layer, for this host's platform."""
    for _ in range(8):  # indexes within indexes
        if media_type not in INDEX_TYPES:
            break
        index = _read_json(content, digest)
        if index is None:
            raise FailedPrecondition(f'image "{name}": index {digest} is not stored')
        digest, media_type = _pick_platform(name, index)
    if media_type not in MANIFEST_TYPES:
        raise FailedPrecondition(f'image "{name}": target type "{media_type}" is not a manifest')
    manifest = _read_json(content, digest)
    if manifest is None:
        raise FailedPrecondition(f'image "{name}": manifest {digest} is not stored')
    configs = list(_children(manifest, "config"))
    chain = _layer_chain(content, configs[0][0]) if configs else []
    if not chain:
        raise FailedPrecondition(f'image "{name}": its config lists no layers')
    return chain[-1]


def _pick_platform(name: str, index: dict[str, Any]) -> tuple[str, str]:
    """The manifest of an index for this host (linux, its architecture), else the only one."""
    arch = _ARCH.get(platform.machine(), platform.machine())
    entries = [e for e in index.get("manifests") or [] if isinstance(e, dict)]
    for entry in entries:
        plat = entry.get("platform") or {}
        if isinstance(plat, dict) and (plat.get("os"), plat.get("architecture")) == ("linux", arch):
            return str(entry.get("digest")), str(entry.get("mediaType") or "")
    if len(entries) == 1:
        return str(entries[0].get("digest")), str(entries[0].get("mediaType") or "")
    raise FailedPrecondition(f'image "{name}": no manifest for linux/{arch}')
