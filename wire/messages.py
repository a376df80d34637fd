"""The proto messages of the services berth serves, as :mod:`wire.schema` types.

Field names and types are those of containerd's API at the seed commit,
plus the additions of the wire protocol (``created_at``/``updated_at`` on
Container, set by the daemon and ignored on input).
"""

from __future__ import annotations

from wire.schema import ANY, EMPTY, FIELD_MASK, STRING, STRING_MAP, TIMESTAMP, Message

__all__ = [
    "CONTAINER",
    "CREATE_CONTAINER",
    "DELETE_CONTAINER",
    "EMPTY",
    "GET_CONTAINER",
    "LIST_CONTAINERS",
    "UPDATE_CONTAINER",
]

CONTAINER = Message(
    "containerd.v1.Container",
    {
        "id": STRING,
        "labels": STRING_MAP,
        "image": STRING,
        "runtime": STRING,
        "spec": ANY,
        "rootfs": STRING,
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    },
    ignored=("created_at", "updated_at"),
)

GET_CONTAINER = Message("containerd.v1.GetContainerRequest", {"id": STRING})
LIST_CONTAINERS = Message("containerd.v1.ListContainersRequest", {"filter": STRING})
CREATE_CONTAINER = Message("containerd.v1.CreateContainerRequest", {"container": CONTAINER})
UPDATE_CONTAINER = Message(
    "containerd.v1.UpdateContainerRequest",
    {"container": CONTAINER, "update_mask": FIELD_MASK},
)
DELETE_CONTAINER = Message("containerd.v1.DeleteContainerRequest", {"id": STRING})
