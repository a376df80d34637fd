"""berth.v1.Events: Subscribe (a stream from a position in the log) and Info.

Subscribe is validated here (body, filter) and handed to the event bus,
which checks the position against the log and serves the stream; Info is
one read transaction, answered in the front end's thread.
"""

from __future__ import annotations

from actors.events import Subscribe
from actors.store import Store
from actors.supervision import Directory
from wire.filter import parse_filter
from wire.frontend import Request, Route
from wire.schema import STRING, UINT64, Message

__all__ = ["SUBSCRIBE", "EventsService"]

_PKG = "berth.v1.Events"

SUBSCRIBE = Message("berth.v1.SubscribeRequest", {"after_seq": UINT64, "filter": STRING})
INFO = Message("berth.v1.EventsInfoRequest", {})


class EventsService:
    """Handlers of berth.v1.Events."""

    def __init__(self, store: Store, directory: Directory) -> None:
        self.store = store
        self.directory = directory

    def routes(self) -> dict[str, Route]:
        """This service's entries of the method table."""
        return {
            f"{_PKG}/Subscribe": Route(self.subscribe, stream=True),
            f"{_PKG}/Info": Route(self.info),
        }

    def subscribe(self, request: Request) -> None:
        """Subscribe {after_seq, filter} -> stream of {events, seq}."""
        body = SUBSCRIBE.decode(request.body)
        flt = parse_filter(body["filter"])
        after = body["after_seq"] or None
        self.directory.tell("events", Subscribe(request.reply, flt, after))

    def info(self, request: Request) -> None:
        """Info {} -> {oldest_seq, latest_seq, count, bytes}."""
        INFO.decode(request.body)
        with self.store.read() as txn:
            info = self.store.log.info(txn)
        request.reply.ok(info)
