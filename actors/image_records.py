"""Image and content records: the Images service's rules, and which namespace holds which blob.

An image, at ``images: <ns> 0x00 <name>``, is the wire ``Image`` as
stored: ``{name, labels, target: {media_type, digest, size}, created_at,
updated_at}``. A content record, at ``content: <ns> 0x00 <digest>``, says
the namespace holds the blob: ``{"labels": {...}, "created_at": ...}``;
the blob itself is stored once under the root (``runtime.content``).

The functions take validated values and run in the metadata actor's write
transaction, or in any read transaction for the read-only ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import lmdb

from actors.namespace_records import note_namespace
from actors.store import Store, ns_key, ns_prefix
from wire.codec import pack, unpack
from wire.errors import InvalidArgument, NotFound

__all__ = [
    "GC_ROOT_LABEL",
    "add_content",
    "check_descriptor",
    "check_image_name",
    "delete_content",
    "delete_image",
    "get_content",
    "get_image",
    "list_content",
    "list_images",
    "log_content_delete",
    "put_image",
]

# containerd's label: a resource carrying it is a root of garbage collection.
GC_ROOT_LABEL = "containerd.io/gc.root"
MAX_NAME_BYTES = 4096
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def check_image_name(name: str) -> str:
    """An image name as the wire allows it: printable text, 1..4096 bytes."""
    if not name:
        raise InvalidArgument("image name: must be set")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidArgument(f"image name: longer than {MAX_NAME_BYTES} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidArgument(f"image name {name!r}: must not contain control characters")
    return name


def check_descriptor(owner: str, descriptor: dict[str, Any] | None) -> dict[str, Any]:
    """A Descriptor with a sha256 digest, a media type and a size >= 0."""
    if descriptor is None:
        raise InvalidArgument(f"{owner}: target must be set")
    if not _DIGEST.fullmatch(descriptor["digest"]):
        raise InvalidArgument(f'{owner}: digest "{descriptor["digest"]}" is not a sha256 digest')
    if not descriptor["media_type"]:
        raise InvalidArgument(f"{owner}: media_type must be set")
    if descriptor["size"] < 0:
        raise InvalidArgument(f"{owner}: size must not be negative")
    return descriptor


def get_image(txn: lmdb.Transaction, store: Store, ns: str, name: str) -> dict[str, Any]:
    """The record of image ``name``, or NotFound."""
    raw = txn.get(ns_key(ns, name), db=store.images)
    if raw is None:
        raise NotFound(f'image "{name}": not found')
    image: dict[str, Any] = unpack(bytes(raw))
    return image


def list_images(txn: lmdb.Transaction, store: Store, ns: str) -> Iterator[dict[str, Any]]:
    """Every image of the namespace, in name order."""
    for _, raw in store.scan(txn, store.images, ns_prefix(ns)):
        yield unpack(raw)


def put_image(
    txn: lmdb.Transaction, store: Store, ns: str, image: dict[str, Any], stamp: Any
) -> dict[str, Any]:
    """Create or replace image ``image["name"]``; returns the stored record."""
    note_namespace(txn, store, ns, stamp)
    key = ns_key(ns, image["name"])
    raw = txn.get(key, db=store.images)
    created_at = unpack(bytes(raw))["created_at"] if raw is not None else stamp
    target = image["target"]
    record = {
        "name": image["name"],
        "labels": image["labels"],
        "target": {
            "media_type": target["media_type"],
            "digest": target["digest"],
            "size": target["size"],
        },
        "created_at": created_at,
        "updated_at": stamp,
    }
    txn.put(key, pack(record), db=store.images)
    topic = "/images/create" if raw is None else "/images/update"
    payload = {k: record[k] for k in ("name", "labels", "target")}
    store.log.append(txn, ns, topic, image["name"], payload)
    return record


def delete_image(txn: lmdb.Transaction, store: Store, ns: str, name: str) -> None:
    """Forget image ``name`` (what only it used goes at the next collection)."""
    if not txn.delete(ns_key(ns, name), db=store.images):
        raise NotFound(f'image "{name}": not found')
    store.log.append(txn, ns, "/images/delete", name, {"name": name})


def add_content(
    txn: lmdb.Transaction,
    store: Store,
    ns: str,
    digests: Iterable[str],
    stamp: Any,
    labels: dict[str, str] | None = None,
) -> None:
    """Record that ``ns`` holds each blob of ``digests`` (kept as is when already held)."""
    note_namespace(txn, store, ns, stamp)
    value = pack({"labels": labels or {}, "created_at": stamp})
    for digest in digests:
        txn.put(ns_key(ns, digest), value, db=store.content, overwrite=labels is not None)


def get_content(txn: lmdb.Transaction, store: Store, ns: str, digest: str) -> dict[str, Any]:
    """The namespace's record of blob ``digest``, or NotFound."""
    raw = txn.get(ns_key(ns, digest), db=store.content)
    if raw is None:
        raise NotFound(f'content "{digest}": not found')
    record: dict[str, Any] = unpack(bytes(raw))
    return record


def list_content(txn: lmdb.Transaction, store: Store, ns: str) -> Iterator[tuple[str, Any]]:
    """``(digest, record)`` of every blob the namespace holds, in digest order."""
    prefix = ns_prefix(ns)
    for key, raw in store.scan(txn, store.content, prefix):
        yield key[len(prefix) :].decode(), unpack(raw)


def delete_content(txn: lmdb.Transaction, store: Store, ns: str, digest: str) -> None:
    """The namespace no longer holds ``digest`` (the blob goes once no namespace does)."""
    if not txn.delete(ns_key(ns, digest), db=store.content):
        raise NotFound(f'content "{digest}": not found')
    log_content_delete(txn, store, ns, digest)


def log_content_delete(txn: lmdb.Transaction, store: Store, ns: str, digest: str) -> None:
    """Log that ``ns`` no longer holds blob ``digest`` (in the transaction that forgot it)."""
    store.log.append(txn, ns, "/content/delete", digest, {"digest": digest})
