"""containerd through its gRPC API, shaped like berth's client, for ``--compare containerd``.

Needs the optional extra ``berth[compare]`` (``grpcio`` and ``containerd``,
the PyPI package of containerd's generated API stubs). Those stubs were
generated for protobuf 3; newer protobuf runtimes load them only with the
pure-Python implementation, so :func:`load_api` selects it before the first
protobuf import (this makes containerd's client decode in Python, as
berth's client does with msgpack's C extension: see bench/README.md).

:class:`Containerd` is one gRPC channel to one namespace (the
``containerd-namespace`` header), with the groups the bench operations
use (:class:`bench.api.ContainersApi`, :class:`bench.api.SnapshotsApi`,
and tasks). Every resource is made under a lease (``containerd-lease``),
so containerd's garbage collector keeps what the bench holds; a failed
call raises :class:`CtrdError` carrying the gRPC status name as ``code``,
the same names berth's wire codes use.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from collections.abc import Iterable, Iterator
from types import SimpleNamespace
from typing import Any

__all__ = [
    "LEASE",
    "RUNTIME",
    "SNAPSHOTTER",
    "Containerd",
    "CtrdError",
    "available",
    "exit_events",
    "load_api",
]

RUNTIME = "io.containerd.runc.v2"
SNAPSHOTTER = "overlayfs"
# The lease every bench client works under, created in each namespace before the load.
LEASE = "berth-bench"
_SPEC_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
_PROCESS_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Process"
_MODULES = {
    "grpc": "grpc",
    "any": "google.protobuf.any_pb2",
    "mask": "google.protobuf.field_mask_pb2",
    "containers": "containerd.services.containers.v1.containers_pb2",
    "containers_grpc": "containerd.services.containers.v1.containers_pb2_grpc",
    "snapshots": "containerd.services.snapshots.v1.snapshots_pb2",
    "snapshots_grpc": "containerd.services.snapshots.v1.snapshots_pb2_grpc",
    "tasks": "containerd.services.tasks.v1.tasks_pb2",
    "tasks_grpc": "containerd.services.tasks.v1.tasks_pb2_grpc",
    "events": "containerd.services.events.v1.events_pb2",
    "events_grpc": "containerd.services.events.v1.events_pb2_grpc",
    "task_events": "containerd.events.task_pb2",
    "leases": "containerd.services.leases.v1.leases_pb2",
    "leases_grpc": "containerd.services.leases.v1.leases_pb2_grpc",
    "mount": "containerd.types.mount_pb2",
}
_api: SimpleNamespace | None = None


class CtrdError(Exception):
    """A failed containerd call; ``code`` is the gRPC status name (``NOT_FOUND``, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def load_api() -> SimpleNamespace:
    """The grpc module and containerd's stubs (untyped: Any), loaded once."""
    global _api
    if _api is None:
        os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        _api = SimpleNamespace(
            **{name: importlib.import_module(module) for name, module in _MODULES.items()}
        )
    return _api


def available() -> str | None:
    """None when the compare extra is installed, else why not."""
    try:
        load_api()
    except ImportError as exc:
        return f"{exc}: install the extra, pip install 'berth[compare]'"
    return None


def _target(address: str) -> str:
    path = address.removeprefix("unix://")
    return f"unix://{path}"


class Containerd:
    """One channel to containerd at ``address`` (a socket path or ``unix://`` address)."""

    def __init__(
        self, address: str, namespace: str, *, timeout: float | None = 30.0, lease: str = ""
    ) -> None:
        self.api = api = load_api()
        self.namespace = namespace
        self.timeout = timeout
        self.channel = api.grpc.insecure_channel(_target(address))
        self.metadata: tuple[tuple[str, str], ...] = (("containerd-namespace", namespace),)
        if lease:
            self.metadata += (("containerd-lease", lease),)
        self.containers = _Containers(self)
        self.snapshots = _Snapshots(self)
        self.tasks = _Tasks(self)
        self._leases = api.leases_grpc.LeasesStub(self.channel)

    def call(self, method: Any, request: Any, *, timeout: float | bool | None = True) -> Any:
        """Call a stub method with this namespace's headers; gRPC errors as :class:`CtrdError`."""
        limit = self.timeout if timeout is True else timeout
        try:
            return method(request, metadata=self.metadata, timeout=limit)
        except self.api.grpc.RpcError as exc:
            raise CtrdError(exc.code().name, exc.details() or "") from None

    def create_lease(self, lease_id: str) -> None:
        """A lease holding what is made under it until :meth:`delete_lease`."""
        request = self.api.leases.CreateRequest(id=lease_id)
        with contextlib.suppress(CtrdError):  # ALREADY_EXISTS: a rerun
            self.call(self._leases.Create, request)

    def delete_lease(self, lease_id: str) -> None:
        """Drop the lease; what only it held is collected."""
        with contextlib.suppress(CtrdError):
            self.call(self._leases.Delete, self.api.leases.DeleteRequest(id=lease_id, sync=False))

    def events(self, filters: Iterable[str] = ()) -> Any:
        """``Events/Subscribe``: an iterator of envelopes; ``.cancel()`` it to stop."""
        stub = self.api.events_grpc.EventsStub(self.channel)
        request = self.api.events.SubscribeRequest(filters=list(filters))
        return stub.Subscribe(request, metadata=self.metadata)

    def close(self) -> None:
        self.channel.close()


def _put_map(field: Any, values: dict[str, str] | None) -> None:
    # The stubs' map fields load as repeated entry messages under newer protobuf
    # runtimes (their map_entry option is lost), which encode the same on the wire.
    for key, value in (values or {}).items():
        field.add(key=key, value=value)


def any_of(api: Any, value: dict[str, Any], type_url: str) -> Any:
    """A protobuf Any from berth's ``{"type_url", "value"}`` map or a plain spec dict."""
    if "type_url" in value:
        return api.any.Any(type_url=value["type_url"], value=value["value"])
    return api.any.Any(type_url=type_url, value=json.dumps(value).encode())


class _Containers:
    """``containerd.services.containers.v1.Containers`` as :class:`bench.api.ContainersApi`."""

    def __init__(self, ctrd: Containerd) -> None:
        self.c, self.pb = ctrd, ctrd.api.containers
        self.stub = ctrd.api.containers_grpc.ContainersStub(ctrd.channel)

    def create(
        self,
        id: str,
        *,
        spec: dict[str, Any],
        labels: dict[str, str] | None = None,
        snapshot_key: str = "",
    ) -> Any:
        container = self.pb.Container(
            id=id,
            runtime=self.pb.Container.Runtime(name=RUNTIME),
            spec=any_of(self.c.api, spec, _SPEC_TYPE),
            snapshotter=SNAPSHOTTER if snapshot_key else "",
            snapshot_key=snapshot_key,
        )
        _put_map(container.labels, labels)
        request = self.pb.CreateContainerRequest(container=container)
        return self.c.call(self.stub.Create, request).container

    def get(self, id: str) -> Any:
        return self.c.call(self.stub.Get, self.pb.GetContainerRequest(id=id)).container

    def list(self, filter: str = "") -> Any:
        request = self.pb.ListContainersRequest(filters=[filter] if filter else [])
        return list(self.c.call(self.stub.List, request).containers)

    def update(
        self,
        id: str,
        *,
        labels: dict[str, str] | None = None,
        update_mask: Iterable[str] | None = None,
    ) -> Any:
        container = self.pb.Container(id=id)
        _put_map(container.labels, labels)
        mask = self.c.api.mask.FieldMask(paths=list(update_mask or []))
        request = self.pb.UpdateContainerRequest(container=container, update_mask=mask)
        return self.c.call(self.stub.Update, request).container

    def delete(self, id: str) -> Any:
        return self.c.call(self.stub.Delete, self.pb.DeleteContainerRequest(id=id))


class _Snapshots:
    """``containerd.services.snapshots.v1.Snapshots`` (overlayfs), as ``SnapshotsApi``."""

    def __init__(self, ctrd: Containerd) -> None:
        self.c, self.pb = ctrd, ctrd.api.snapshots
        self.stub = ctrd.api.snapshots_grpc.SnapshotsStub(ctrd.channel)

    def prepare(self, key: str, parent: str = "", *, labels: dict[str, str] | None = None) -> Any:
        request = self.pb.PrepareSnapshotRequest(snapshotter=SNAPSHOTTER, key=key, parent=parent)
        _put_map(request.labels, labels)
        return list(self.c.call(self.stub.Prepare, request).mounts)

    def commit(self, name: str, key: str) -> Any:
        request = self.pb.CommitSnapshotRequest(snapshotter=SNAPSHOTTER, name=name, key=key)
        return self.c.call(self.stub.Commit, request)

    def remove(self, key: str) -> Any:
        request = self.pb.RemoveSnapshotRequest(snapshotter=SNAPSHOTTER, key=key)
        return self.c.call(self.stub.Remove, request)

    def keys(self) -> list[str]:
        """Every snapshot key of the namespace."""
        request = self.pb.ListSnapshotsRequest(snapshotter=SNAPSHOTTER)
        stream = self.stub.List(request, metadata=self.c.metadata, timeout=self.c.timeout)
        return [info.name for reply in stream for info in reply.info]


class _Tasks:
    """``containerd.services.tasks.v1.Tasks``: what the task, exec and events loads call."""

    def __init__(self, ctrd: Containerd) -> None:
        self.c, self.pb = ctrd, ctrd.api.tasks
        self.stub = ctrd.api.tasks_grpc.TasksStub(ctrd.channel)

    def create(self, container_id: str, rootfs: Iterable[Any] = ()) -> int:
        request = self.pb.CreateTaskRequest(container_id=container_id, rootfs=list(rootfs))
        return int(self.c.call(self.stub.Create, request).pid)

    def start(self, container_id: str, exec_id: str = "") -> int:
        request = self.pb.StartRequest(container_id=container_id, exec_id=exec_id)
        return int(self.c.call(self.stub.Start, request).pid)

    def wait(self, container_id: str, exec_id: str = "", timeout: float | None = None) -> int:
        """Block until the process exits; its exit status."""
        request = self.pb.WaitRequest(container_id=container_id, exec_id=exec_id)
        return int(self.c.call(self.stub.Wait, request, timeout=timeout).exit_status)

    def delete(self, container_id: str) -> Any:
        return self.c.call(self.stub.Delete, self.pb.DeleteTaskRequest(container_id=container_id))

    def exec(self, container_id: str, exec_id: str, process: dict[str, Any]) -> Any:
        request = self.pb.ExecProcessRequest(
            container_id=container_id,
            exec_id=exec_id,
            spec=any_of(self.c.api, process, _PROCESS_TYPE),
        )
        return self.c.call(self.stub.Exec, request)

    def delete_process(self, container_id: str, exec_id: str) -> Any:
        request = self.pb.DeleteProcessRequest(container_id=container_id, exec_id=exec_id)
        return self.c.call(self.stub.DeleteProcess, request)

    def kill(self, container_id: str, signal: int, *, all: bool = False) -> Any:
        request = self.pb.KillRequest(container_id=container_id, signal=signal, all=all)
        return self.c.call(self.stub.Kill, request)

    def ids(self) -> list[str]:
        """The container ids of the namespace's tasks."""
        reply = self.c.call(self.stub.List, self.pb.ListTasksRequest())
        return [t.id for t in reply.tasks]


def exit_events(envelopes: Any) -> Iterator[tuple[Any, Any]]:
    """(envelope, decoded TaskExit) for each ``/tasks/exit`` envelope of a subscription."""
    api = load_api()
    for envelope in envelopes:
        if envelope.topic == "/tasks/exit":
            event = api.task_events.TaskExit()
            event.ParseFromString(envelope.event.value)
            yield envelope, event
