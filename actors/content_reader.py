"""The content reader actor: ``Content/List`` and ``Content/Read`` streams, off the front end.

Both read files (a ``stat`` per listed blob; a blob's bytes), which the
socket loop must never wait for. A read is sent a few chunks per turn: the
rest of it is queued behind whatever else arrived meanwhile, so one long
read does not hold up other clients' listings and reads. Nothing here
writes: namespace records are read through LMDB read transactions, blobs
through :class:`~runtime.content.ContentStore`.

Both obey their stream's window (docs/protocol.md §6.6): a reader that
stops reading leaves its read parked here, an open file and an offset,
until its window opens again.

A request that fails before its stream is in place (a digest the
namespace does not hold, an offset past the end) gets only the error
frame; ``ready`` is sent once the first chunk can be read.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pykka

from actors.image_records import get_content, list_content
from actors.store import Store
from actors.supervision import SupervisedActor
from runtime.content import ContentInfo, ContentStore
from wire.codec import pack, timestamp_or_nil
from wire.errors import BerthError, NotFound
from wire.reply import Reply, Resume, feed

__all__ = [
    "LIST_BATCH",
    "READ_CHUNK",
    "ContentReader",
    "ListContent",
    "ReadContent",
    "held_content",
    "wire_info",
]

log = logging.getLogger(__name__)

LIST_BATCH = 100  # Info entries per List frame
READ_CHUNK = 256 << 10  # bytes per Read frame, at most (a parked reader holds ~80 of them)
_CHUNKS_PER_TURN = 8  # then the rest of the read waits behind other requests


@dataclass(frozen=True, slots=True)
class ListContent:
    """Stream ``{"info": [Info, ...]}`` frames: the blobs the namespace holds, then end."""

    ns: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class ReadContent:
    """Stream ``{"offset", "data"}`` frames of the blob's bytes ``[offset, offset + size)``.

    ``size`` 0 reads to the end. ``offset`` and ``size`` are validated
    non-negative, ``digest`` well-formed.
    """

    ns: str
    digest: str
    offset: int
    size: int
    reply: Reply


@dataclass(frozen=True, slots=True)
class _ReadMore:
    """The rest of a read in progress, queued to the actor itself."""

    reply: Reply
    chunks: Iterator[tuple[int, bytes]] = field(compare=False)


def wire_info(info: ContentInfo) -> dict[str, Any]:
    """The wire ``Info`` of a committed blob."""
    return {
        "digest": info["digest"],
        "size": info["size"],
        "committed_at": timestamp_or_nil(info["committed_at_ns"]),
    }


def held_content(store: Store, ns: str, digest: str) -> None:
    """NotFound unless namespace ``ns`` holds blob ``digest`` (a read transaction)."""
    with store.read() as txn:
        get_content(txn, store, ns, digest)


def _close(chunks: Iterator[tuple[int, bytes]]) -> None:
    # A read left early must release its open file now, not at collection.
    if isinstance(chunks, Generator):
        chunks.close()


class ContentReader(SupervisedActor):
    """Serves the Content service's streams from read transactions and the content store."""

    name = "content-reader"

    def __init__(
        self, supervisor: pykka.ActorRef[Any] | None, store: Store, content: ContentStore
    ) -> None:
        super().__init__(supervisor)
        self.store = store
        self.content = content
        self._current: Reply | None = None

    def pending_replies(self) -> list[Reply]:
        return [self._current] if self._current is not None else []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Resume):
            message.step()
            return None
        if not isinstance(message, ListContent | ReadContent | _ReadMore):
            log.warning("content reader: unexpected message %r", message)
            return None
        # Kept while serving: if this raises something unexpected, on_failure
        # answers it; a BerthError is the request's own answer.
        self._current = message.reply
        try:
            if isinstance(message, ListContent):
                self._list(message)
            elif isinstance(message, ReadContent):
                self._read(message)
            else:
                self._send_chunks(message.reply, message.chunks)
        except BerthError as exc:
            message.reply.fail(exc)
        self._current = None
        return None

    def _list(self, message: ListContent) -> None:
        reply = message.reply
        with self.store.read() as txn:
            digests = [digest for digest, _ in list_content(txn, self.store, message.ns)]
        reply.ready()
        me = self.actor_ref
        feed(reply, self._info_frames(digests), lambda step: me.tell(Resume(step)))

    def _info_frames(self, digests: list[str]) -> Iterator[bytes]:
        batch: list[dict[str, Any]] = []
        for digest in digests:
            try:
                batch.append(wire_info(self.content.info(digest)))
            except NotFound:
                continue  # swept since the transaction: no longer held
            if len(batch) == LIST_BATCH:
                yield pack({"info": batch})
                batch = []
        if batch:
            yield pack({"info": batch})

    def _read(self, message: ReadContent) -> None:
        held_content(self.store, message.ns, message.digest)
        # Checks the range against the blob's size: an error here still
        # comes before ``ready``.
        chunks = self.content.read(
            message.digest, message.offset, message.size, chunk_size=READ_CHUNK
        )
        message.reply.ready()
        self._send_chunks(message.reply, chunks)

    def _send_chunks(self, reply: Reply, chunks: Iterator[tuple[int, bytes]]) -> None:
        me = self.actor_ref
        for _ in range(_CHUNKS_PER_TURN):
            if reply.cancelled:
                _close(chunks)
                return
            if not reply.wait_window(lambda: me.tell(_ReadMore(reply, chunks))):
                return  # parked until the client's window opens
            chunk = next(chunks, None)
            if chunk is None:
                reply.end()
                return
            offset, data = chunk
            reply.more({"offset": offset, "data": data})
        self.actor_ref.tell(_ReadMore(reply, chunks))
