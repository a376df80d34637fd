"""containerd.v1.Containers (and berth.v1.Containers/ListStream).

Each handler validates the request completely (body types, then
identifiers, labels, mask paths and filters) before anything is looked
up, then either answers from a read transaction (Get) or hands the request
to one actor, which answers through the request's reply.
"""

from __future__ import annotations

import contextlib
from typing import Any

from actors.container_records import get_container_raw
from actors.containers import ContainerActors
from actors.metadata import CONTAINER_BODY, CreateContainer, DeleteContainer, UpdateContainer
from actors.reader import ListContainers, StreamContainers
from actors.restart_monitor import Reconsider
from actors.restart_policy import EXPLICITLY_STOPPED_LABEL, STATUS_LABEL
from actors.store import Store
from actors.supervision import Directory
from wire.errors import InvalidArgument, Unavailable
from wire.fieldmask import check_container_paths
from wire.filter import parse_filter
from wire.frontend import Request, Route
from wire.identifiers import check_identifier, check_labels
from wire.messages import (
    CREATE_CONTAINER,
    DELETE_CONTAINER,
    GET_CONTAINER,
    LIST_CONTAINERS,
    UPDATE_CONTAINER,
)

__all__ = ["ContainersService"]


def _checked_container(body: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] | None = body["container"]
    if container is None:
        raise InvalidArgument("container: must be set")
    check_identifier("container", container["id"])
    container["labels"] = check_labels(f'container "{container["id"]}"', container["labels"])
    return container


def _sets_desired_state(container: dict[str, Any], paths: list[str]) -> bool:
    """Whether an Update sets containerd's desired-state labels (restart.status and co)."""
    keys = (STATUS_LABEL, EXPLICITLY_STOPPED_LABEL)
    if not paths or "labels" in paths:
        return any(k in (container["labels"] or {}) for k in keys)
    return any(f"labels.{k}" in paths for k in keys)


class ContainersService:
    """Handlers of the Containers service; they hold no state of their own."""

    def __init__(self, store: Store, directory: Directory, actors: ContainerActors) -> None:
        self.store = store
        self.directory = directory
        self.actors = actors

    def routes(self) -> dict[str, Route]:
        """This service's entries of the method table."""
        return {
            "containerd.v1.Containers/Get": Route(self.get),
            "containerd.v1.Containers/List": Route(self.list),
            "containerd.v1.Containers/Create": Route(self.create),
            "containerd.v1.Containers/Update": Route(self.update),
            "containerd.v1.Containers/Delete": Route(self.delete),
            "berth.v1.Containers/ListStream": Route(self.list_stream, stream=True),
        }

    def get(self, request: Request) -> None:
        """Get {id} -> {container}. Answered here: one read, no actor."""
        body = GET_CONTAINER.decode(request.body)
        check_identifier("container", body["id"])
        with self.store.read() as txn:
            raw = get_container_raw(txn, self.store, request.ns, body["id"])
        request.reply.ok_packed(CONTAINER_BODY + raw)

    def list(self, request: Request) -> None:
        """List {filter} -> {containers}: by the reader actor."""
        body = LIST_CONTAINERS.decode(request.body)
        flt = parse_filter(body["filter"])
        self.directory.tell("reader", ListContainers(request.ns, flt, request.reply))

    def list_stream(self, request: Request) -> None:
        """ListStream {filter} -> stream of {container}: by the reader actor."""
        body = LIST_CONTAINERS.decode(request.body)
        flt = parse_filter(body["filter"])
        self.directory.tell("reader", StreamContainers(request.ns, flt, request.reply))

    def create(self, request: Request) -> None:
        """Create {container} -> {container}: by the metadata actor, after its commit."""
        container = _checked_container(CREATE_CONTAINER.decode(request.body))
        if container["spec"] is None:
            raise InvalidArgument(f'container "{container["id"]}": spec must be set')
        self.directory.tell("metadata", CreateContainer(request.ns, container, request.reply))

    def update(self, request: Request) -> None:
        """Update {container, update_mask} -> {container}: by the metadata actor."""
        body = UPDATE_CONTAINER.decode(request.body)
        container = _checked_container(body)
        paths = body["update_mask"]["paths"] if body["update_mask"] is not None else []
        check_container_paths(container["id"], paths)
        done = None
        if _sets_desired_state(container, paths):
            ns, cid, directory = request.ns, container["id"], self.directory

            def done(_result: bytes | BaseException) -> None:
                with contextlib.suppress(Unavailable):
                    directory.tell("restarts", Reconsider(ns, cid))

        self.directory.tell(
            "metadata", UpdateContainer(request.ns, container, paths, request.reply, done)
        )

    def delete(self, request: Request) -> None:
        """Delete {id} -> {}: behind the container's in-flight operations, if any."""
        body = DELETE_CONTAINER.decode(request.body)
        check_identifier("container", body["id"])
        message = DeleteContainer(request.ns, body["id"], request.reply)
        if not self.actors.tell(request.ns, body["id"], message, start=False):
            self.directory.tell("metadata", message)
