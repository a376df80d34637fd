"""berth.v1.Supervision: Get and List, each container's restart policy, state and history.

One read transaction each, answered in the front end's thread; the live
task state comes from what the tasks' actors last showed.
"""

from __future__ import annotations

from actors.containers import ContainerActors
from actors.store import Store, ns_key, ns_prefix
from actors.supervision_view import Shown, supervision_view
from wire.codec import pack, unpack
from wire.errors import NotFound
from wire.frontend import Request, Route
from wire.identifiers import check_identifier
from wire.schema import STRING, Message

__all__ = ["SupervisionService"]

_PKG = "berth.v1.Supervision"

GET = Message("berth.v1.SupervisionGetRequest", {"container_id": STRING})
LIST = Message("berth.v1.SupervisionListRequest", {})


class SupervisionService:
    """Handlers of berth.v1.Supervision."""

    def __init__(self, store: Store, actors: ContainerActors, health: Shown | None = None) -> None:
        self.store = store
        self.actors = actors
        self.health = health

    def routes(self) -> dict[str, Route]:
        """This service's entries of the method table."""
        return {f"{_PKG}/Get": Route(self.get), f"{_PKG}/List": Route(self.list)}

    def get(self, request: Request) -> None:
        """Get {container_id} -> {supervision}."""
        body = GET.decode(request.body)
        cid = check_identifier("container", body["container_id"])
        with self.store.read() as txn:
            raw = txn.get(ns_key(request.ns, cid), db=self.store.containers)
            if raw is None:
                raise NotFound(f'container "{cid}": not found')
            view = supervision_view(
                txn, self.store, self.actors.shown, request.ns, unpack(bytes(raw)), self.health
            )
        request.reply.ok({"supervision": view})

    def list(self, request: Request) -> None:
        """List {} -> {supervision}: every container of the namespace, in id order."""
        LIST.decode(request.body)
        with self.store.read() as txn:
            views = [
                supervision_view(
                    txn, self.store, self.actors.shown, request.ns, unpack(raw), self.health
                )
                for _, raw in self.store.scan(txn, self.store.containers, ns_prefix(request.ns))
            ]
        request.reply.ok_packed(pack({"supervision": views}))
