"""The proto messages of the services berth serves, as :mod:`wire.schema` types.

Field names and types are those of containerd's API at the seed commit,
plus the additions of the wire protocol (``created_at``/``updated_at`` on
Container, set by the daemon and ignored on input).
"""

from __future__ import annotations

from wire.schema import (
    ANY,
    BOOL,
    EMPTY,
    FIELD_MASK,
    INT64,
    STRING,
    STRING_MAP,
    TIMESTAMP,
    UINT32,
    Message,
    Repeated,
)

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

# --- containerd.v1.types and containerd.v1.services.execution.Tasks ---

MOUNT = Message(
    "containerd.v1.types.Mount",
    {"type": STRING, "source": STRING, "target": STRING, "options": Repeated(STRING)},
)
DESCRIPTOR = Message(
    "containerd.v1.types.Descriptor", {"media_type": STRING, "digest": STRING, "size": INT64}
)

_CID = {"container_id": STRING}

CREATE_TASK = Message(
    "containerd.v1.services.execution.CreateRequest",
    {
        "container_id": STRING,
        "rootfs": Repeated(MOUNT),
        "stdin": STRING,
        "stdout": STRING,
        "stderr": STRING,
        "terminal": BOOL,
        "checkpoint": DESCRIPTOR,
    },
)
START_TASK = Message("containerd.v1.services.execution.StartRequest", dict(_CID))
DELETE_TASK = Message("containerd.v1.services.execution.DeleteRequest", dict(_CID))
INFO_TASK = Message("containerd.v1.services.execution.InfoRequest", dict(_CID))
LIST_TASKS = Message("containerd.v1.services.execution.ListRequest", {})
KILL_TASK = Message(
    "containerd.v1.services.execution.KillRequest",
    {"container_id": STRING, "signal": UINT32, "all": BOOL, "pid": UINT32},
    oneofs={"pid_or_all": ("all", "pid")},
)
EVENTS = Message("containerd.v1.services.execution.EventsRequest", {})
EXEC_PROCESS = Message(
    "containerd.v1.services.execution.ExecRequest",
    {
        "container_id": STRING,
        "terminal": BOOL,
        "stdin": STRING,
        "stdout": STRING,
        "stderr": STRING,
        "spec": ANY,
    },
)
PTY = Message(
    "containerd.v1.services.execution.PtyRequest",
    {"container_id": STRING, "pid": UINT32, "width": UINT32, "height": UINT32},
)
CLOSE_STDIN = Message(
    "containerd.v1.services.execution.CloseStdinRequest", {"container_id": STRING, "pid": UINT32}
)
PAUSE_TASK = Message("containerd.v1.services.execution.PauseRequest", dict(_CID))
RESUME_TASK = Message("containerd.v1.services.execution.ResumeRequest", dict(_CID))
PROCESSES = Message("containerd.v1.services.execution.ProcessesRequest", dict(_CID))
CHECKPOINT_TASK = Message(
    "containerd.v1.services.execution.CheckpointRequest",
    {
        "container_id": STRING,
        "allow_tcp": BOOL,
        "allow_unix_sockets": BOOL,
        "allow_terminal": BOOL,
        "file_locks": BOOL,
        "empty_namespaces": Repeated(STRING),
        "exit": BOOL,
    },
)
