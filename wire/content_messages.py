"""The request messages of containerd.v1.Content and containerd.v1.Images.

Field names and types are those of the wire protocol (``docs/protocol.md``
5.5): the Content service as containerd had it at the seed commit, with
``Info`` wrapped in ``{info}``; the Images service in containerd's later
shape (``labels`` a map), with ``created_at``/``updated_at`` set by the
daemon and ignored on input.
"""

from __future__ import annotations

from wire.messages import DESCRIPTOR
from wire.schema import INT64, STRING, STRING_MAP, TIMESTAMP, Message

__all__ = [
    "DELETE_CONTENT",
    "DELETE_IMAGE",
    "GET_IMAGE",
    "IMAGE",
    "INFO_CONTENT",
    "LIST_CONTENT",
    "LIST_IMAGES",
    "PUT_IMAGE",
    "READ_CONTENT",
    "STATUS_CONTENT",
]

# --- containerd.v1.Content ---

INFO_CONTENT = Message("containerd.v1.InfoRequest", {"digest": STRING})
LIST_CONTENT = Message("containerd.v1.ListContentRequest", {})
DELETE_CONTENT = Message("containerd.v1.DeleteContentRequest", {"digest": STRING})
READ_CONTENT = Message(
    "containerd.v1.ReadRequest", {"digest": STRING, "offset": INT64, "size": INT64}
)
STATUS_CONTENT = Message("containerd.v1.StatusRequest", {"regexp": STRING})

# --- containerd.v1.Images ---

IMAGE = Message(
    "containerd.v1.Image",
    {
        "name": STRING,
        "labels": STRING_MAP,
        "target": DESCRIPTOR,
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    },
    ignored=("created_at", "updated_at"),
)

GET_IMAGE = Message("containerd.v1.GetRequest", {"name": STRING})
LIST_IMAGES = Message("containerd.v1.ListRequest", {})
PUT_IMAGE = Message("containerd.v1.PutRequest", {"image": IMAGE})
DELETE_IMAGE = Message("containerd.v1.DeleteRequest", {"name": STRING})
