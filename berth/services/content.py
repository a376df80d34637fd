"""containerd.v1.Content: the blobs a namespace holds.

A blob is stored once under the daemon's root and listed in each namespace
that holds it (a content record, :mod:`actors.image_records`). So Info,
Read and Delete of a digest the request's namespace holds no record of are
``NOT_FOUND``, even when another namespace holds the blob; ingests in
progress (Status) are daemon-wide, as the files they write are.

Handlers validate completely (body types, then the digest, offset and
size) before anything is looked up. Info and Status answer here (a read
transaction and a ``stat``; a directory scan); List and Read stream from
the content reader actor; Delete goes to the metadata actor, and the sweep
after its commit removes the blob once no namespace holds it.
"""

from __future__ import annotations

import re
from typing import Any

import lmdb

from actors.content_reader import ListContent, ReadContent, held_content, wire_info
from actors.gc import image_using
from actors.image_records import delete_content
from actors.metadata import EMPTY_BODY, Transact
from actors.store import Store
from actors.supervision import Directory
from runtime.content import ContentStore
from wire.codec import timestamp_or_nil
from wire.content_messages import (
    DELETE_CONTENT,
    INFO_CONTENT,
    LIST_CONTENT,
    READ_CONTENT,
    STATUS_CONTENT,
)
from wire.errors import FailedPrecondition, InvalidArgument
from wire.frontend import Request, Route

__all__ = ["ContentService", "check_digest"]

_PKG = "containerd.v1.Content"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def check_digest(digest: str) -> str:
    """``digest`` if it is ``sha256:`` and 64 lowercase hex digits, else InvalidArgument."""
    if not _DIGEST.fullmatch(digest):
        raise InvalidArgument(f'digest "{digest}": not a sha256 digest (sha256:<64 lowercase hex>)')
    return digest


class ContentService:
    """Handlers of the Content service; they hold no state of their own."""

    def __init__(self, store: Store, content: ContentStore, directory: Directory) -> None:
        self.store = store
        self.content = content
        self.directory = directory

    def routes(self) -> dict[str, Route]:
        """This service's entries of the method table."""
        return {
            f"{_PKG}/Info": Route(self.info),
            f"{_PKG}/List": Route(self.list, stream=True),
            f"{_PKG}/Delete": Route(self.delete),
            f"{_PKG}/Read": Route(self.read, stream=True),
            f"{_PKG}/Status": Route(self.status),
        }

    def info(self, request: Request) -> None:
        """Info {digest} -> {info: {digest, size, committed_at}}."""
        digest = check_digest(INFO_CONTENT.decode(request.body)["digest"])
        held_content(self.store, request.ns, digest)
        request.reply.ok({"info": wire_info(self.content.info(digest))})

    def list(self, request: Request) -> None:
        """List {} -> stream of {info: [Info, ...]}: by the content reader."""
        LIST_CONTENT.decode(request.body)
        self.directory.tell("content-reader", ListContent(request.ns, request.reply))

    def read(self, request: Request) -> None:
        """Read {digest, offset, size} -> stream of {offset, data}: by the content reader.

        ``size`` 0 reads to the end; a range past the end is cut there; an
        ``offset`` past the end is INVALID_ARGUMENT (before ``ready``).
        """
        body = READ_CONTENT.decode(request.body)
        digest = check_digest(body["digest"])
        if body["offset"] < 0 or body["size"] < 0:
            raise InvalidArgument(
                f'content "{digest}": offset {body["offset"]} and size {body["size"]} '
                "must not be negative"
            )
        self.directory.tell(
            "content-reader",
            ReadContent(request.ns, digest, body["offset"], body["size"], request.reply),
        )

    def delete(self, request: Request) -> None:
        """Delete {digest} -> {}: the namespace no longer holds the blob.

        The blob itself is removed by the sweep after the commit once no
        namespace holds it (and no import in progress does). A blob an image
        of the namespace references is FAILED_PRECONDITION: delete the image.
        """
        digest = check_digest(DELETE_CONTENT.decode(request.body)["digest"])
        ns = request.ns
        content = self.content

        def apply(txn: lmdb.Transaction, store: Store, stamp: Any) -> bytes:
            user = image_using(txn, store, content, ns, digest)
            if user is not None:
                raise FailedPrecondition(f'content "{digest}": used by image "{user}"')
            delete_content(txn, store, ns, digest)
            return EMPTY_BODY

        self.directory.tell("metadata", Transact(apply, reply=request.reply, releases=True))

    def status(self, request: Request) -> None:
        """Status {regexp} -> {statuses}: ingests in progress whose ref matches (RE2 search)."""
        regexp = STATUS_CONTENT.decode(request.body)["regexp"]
        statuses = [
            {
                "ref": s["ref"],
                "offset": s["offset"],
                "total": s["total"],
                "expected": s["expected"],
                "started_at": timestamp_or_nil(s["started_at_ns"]),
                "updated_at": timestamp_or_nil(s["updated_at_ns"]),
            }
            for s in self.content.statuses(regexp)
        ]
        request.reply.ok({"statuses": statuses})
