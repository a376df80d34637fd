"""The reader actor: listings, off the front end's thread.

A listing can touch every container of a namespace, so it runs here rather
than in the socket loop; it reads through an LMDB read transaction and so
never waits for the metadata actor's writes, nor they for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgpack
import pykka

from actors.store import Store, ns_prefix
from actors.supervision import SupervisedActor
from wire.codec import pack
from wire.filter import Filter, container_fields
from wire.reply import Reply, Resume, feed

__all__ = ["ListContainers", "ReaderActor", "StreamContainers", "matching_containers"]

log = logging.getLogger(__name__)

_CONTAINERS_KEY = pack("containers")
_CONTAINER_KEY = pack("container")
_SEQ_KEY = pack("seq")


@dataclass(frozen=True, slots=True)
class ListContainers:
    """Reply ``{"containers": [...], "seq"}``: the matching containers, and the log's seq then."""

    ns: str
    filter: Filter
    reply: Reply


@dataclass(frozen=True, slots=True)
class StreamContainers:
    """Stream ``{"container": ...}`` frames, one per matching container, then end."""

    ns: str
    filter: Filter
    reply: Reply


def matching_containers(store: Store, txn: Any, ns: str, flt: Filter) -> Any:
    """Packed records of the namespace's containers that match ``flt``, in id order."""
    for _, raw in store.scan(txn, store.containers, ns_prefix(ns)):
        if flt.is_empty or flt.match(container_fields(msgpack.unpackb(raw, timestamp=0))):
            yield raw


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 2**16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


class ReaderActor(SupervisedActor):
    """Answers listings from read transactions."""

    name = "reader"

    def __init__(self, supervisor: pykka.ActorRef[Any] | None, store: Store) -> None:
        super().__init__(supervisor)
        self.store = store

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ListContainers):
            with self.store.read() as txn:
                seq = self.store.log.latest(txn)
                records = list(matching_containers(self.store, txn, message.ns, message.filter))
            message.reply.ok_packed(
                b"\x82"
                + _CONTAINERS_KEY
                + _array_header(len(records))
                + b"".join(records)
                + _SEQ_KEY
                + pack(seq)
            )
        elif isinstance(message, StreamContainers):
            self._stream(message)
        elif isinstance(message, Resume):
            message.step()
        else:
            log.warning("reader actor: unexpected message %r", message)
        return None

    def _stream(self, message: StreamContainers) -> None:
        # Read whole, then sent as the window allows: a reader that stops
        # must not hold a read transaction (and the store's old pages) open.
        with self.store.read() as txn:
            records = list(matching_containers(self.store, txn, message.ns, message.filter))
        message.reply.ready()
        me = self.actor_ref
        feed(
            message.reply,
            (b"\x81" + _CONTAINER_KEY + raw for raw in records),
            lambda step: me.tell(Resume(step)),
        )
