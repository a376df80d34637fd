"""containerd.v1.Images: named references to a target descriptor, per namespace.

Handlers validate completely (body types, then the name, the target
descriptor and the labels) before anything is looked up. Get and List
answer here from a read transaction; Put and Delete go to the metadata
actor, which answers after its commit. A Delete then starts a garbage
collection, so the blobs and snapshots only that image used go at once
rather than at the next collection.
"""

from __future__ import annotations

import logging
from typing import Any

import lmdb

from actors.gc import Collect
from actors.image_records import (
    check_descriptor,
    check_image_name,
    delete_image,
    get_image,
    list_images,
    put_image,
)
from actors.metadata import EMPTY_BODY, Transact
from actors.store import Store
from actors.supervision import Directory
from wire.codec import pack
from wire.content_messages import DELETE_IMAGE, GET_IMAGE, LIST_IMAGES, PUT_IMAGE
from wire.errors import InvalidArgument, Unavailable
from wire.frontend import Request, Route
from wire.identifiers import check_labels

__all__ = ["ImagesService"]

log = logging.getLogger(__name__)

_PKG = "containerd.v1.Images"


def _checked_image(body: dict[str, Any]) -> dict[str, Any]:
    image: dict[str, Any] | None = body["image"]
    if image is None:
        raise InvalidArgument("image: must be set")
    name = check_image_name(image["name"])
    owner = f'image "{name}"'
    check_descriptor(owner, image["target"])
    image["labels"] = check_labels(owner, image["labels"])
    return image


class ImagesService:
    """Handlers of the Images service; they hold no state of their own."""

    def __init__(self, store: Store, directory: Directory) -> None:
        self.store = store
        self.directory = directory

    def routes(self) -> dict[str, Route]:
        """This service's entries of the method table."""
        return {
            f"{_PKG}/Get": Route(self.get),
            f"{_PKG}/List": Route(self.list),
            f"{_PKG}/Put": Route(self.put),
            f"{_PKG}/Delete": Route(self.delete),
        }

    def get(self, request: Request) -> None:
        """Get {name} -> {image}."""
        name = check_image_name(GET_IMAGE.decode(request.body)["name"])
        with self.store.read() as txn:
            image = get_image(txn, self.store, request.ns, name)
        request.reply.ok({"image": image})

    def list(self, request: Request) -> None:
        """List {} -> {images}: every image of the namespace, in name order (one reply)."""
        LIST_IMAGES.decode(request.body)
        with self.store.read() as txn:
            images = list(list_images(txn, self.store, request.ns))
            seq = self.store.log.latest(txn)
        request.reply.ok_packed(pack({"images": images, "seq": seq}))

    def put(self, request: Request) -> None:
        """Put {image} -> {}: create or replace the image (``created_at`` kept on replace)."""
        image = _checked_image(PUT_IMAGE.decode(request.body))
        ns = request.ns

        def apply(txn: lmdb.Transaction, store: Store, stamp: Any) -> bytes:
            put_image(txn, store, ns, image, stamp)
            return EMPTY_BODY

        self.directory.tell("metadata", Transact(apply, reply=request.reply))

    def delete(self, request: Request) -> None:
        """Delete {name} -> {}; then a collection removes what only this image used."""
        name = check_image_name(DELETE_IMAGE.decode(request.body)["name"])
        ns = request.ns
        directory = self.directory

        def apply(txn: lmdb.Transaction, store: Store, stamp: Any) -> bytes:
            delete_image(txn, store, ns, name)
            return EMPTY_BODY

        def collect(result: bytes | BaseException) -> None:
            # Runs in the metadata actor's thread after the commit; a tell
            # only, never an ask (the collector asks the metadata actor).
            if isinstance(result, BaseException):
                return
            try:
                directory.tell("gc", Collect())
            except Unavailable as exc:
                log.warning(
                    'image "%s" (ns %s) deleted; collection not started: %s', name, ns, exc.message
                )

        self.directory.tell("metadata", Transact(apply, reply=request.reply, done=collect))
