"""berth's public client: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

Both share one method table. Each RPC is written once, in a group class such
as :class:`_Containers`, as a description of the call (:class:`Rpc`: method,
body, and how to pick the useful part out of the reply) handed to an
*invoker*. The sync invoker performs the call and returns the value; the
async one returns a coroutine (or an async generator for streams). The group
classes are generic in those return types, so ``Client().containers.get``
is typed ``-> dict`` and ``AsyncClient().containers.get`` ``-> Coroutine[...,
dict]`` from the one definition.

Errors are the classes of :mod:`wire.errors`, re-exported by :mod:`berth`::

    with berth.Client() as client:
        try:
            client.containers.get("web")
        except berth.NotFound:
            ...
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Iterable
from operator import itemgetter
from types import TracebackType
from typing import Any, cast

from berth.client_base import (
    DEFAULT,
    AsyncInvoker,
    Body,
    Done,
    Group,
    Invoker,
    Map,
    MapIter,
    MapList,
    Rpc,
    SyncInvoker,
    Timeout,
    nothing,
    whole,
)
from berth.client_events import AsyncEvents, Events
from berth.client_images import Content, Images, Snapshots
from berth.client_supervision import Supervision
from wire.transport import AsyncTransport, SyncTransport

__all__ = [
    "OCI_SPEC_TYPE_URL",
    "PROCESS_TYPE_URL",
    "AsyncClient",
    "Client",
    "oci_spec_any",
    "process_any",
]

OCI_SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"


def oci_spec_any(spec: dict[str, Any]) -> dict[str, Any]:
    """Wrap an OCI runtime spec (a dict) as the ``google.protobuf.Any`` the wire carries."""
    return {"type_url": OCI_SPEC_TYPE_URL, "value": json.dumps(spec).encode()}


def _spec_any(spec: dict[str, Any]) -> dict[str, Any]:
    # An Any has a type_url; anything else is taken to be the OCI spec itself.
    return spec if "type_url" in spec else oci_spec_any(spec)


_CONTAINERS = "containerd.v1.Containers/"


class _Containers(Group[Map, MapList, Done, MapIter]):
    """``containerd.v1.Containers``, plus ``berth.v1.Containers/ListStream``.

    Containers are returned as dicts with the proto's fields (``id``,
    ``labels``, ``image``, ``runtime``, ``spec``, ``rootfs``, ``created_at``,
    ``updated_at``). ``spec`` arguments take an Any (``{"type_url", "value"}``)
    or a plain OCI spec dict, which is wrapped with :func:`oci_spec_any`.
    """

    def create(
        self,
        id: str,
        *,
        spec: dict[str, Any],
        labels: dict[str, str] | None = None,
        image: str = "",
        runtime: str = "",
        rootfs: str = "",
    ) -> Map:
        """``Create``: store a new container; returns it as stored."""
        container = {
            "id": id,
            "labels": dict(labels or {}),
            "image": image,
            "runtime": runtime,
            "spec": _spec_any(spec),
            "rootfs": rootfs,
        }
        rpc = Rpc(_CONTAINERS + "Create", {"container": container}, itemgetter("container"))
        return cast(Map, self._unary(rpc))

    def get(self, id: str) -> Map:
        """``Get``: the container ``id``; :class:`~wire.errors.NotFound` if none."""
        return cast(Map, self._unary(Rpc(_CONTAINERS + "Get", {"id": id}, itemgetter("container"))))

    def list(self, filter: str = "") -> MapList:
        """``List``: the containers matching ``filter`` (containerd's filter syntax)."""
        rpc = Rpc(_CONTAINERS + "List", {"filter": filter}, itemgetter("containers"))
        return cast(MapList, self._unary(rpc))

    def update(
        self,
        id: str,
        *,
        labels: dict[str, str] | None = None,
        image: str | None = None,
        runtime: str | None = None,
        spec: dict[str, Any] | None = None,
        rootfs: str | None = None,
        update_mask: Iterable[str] | None = None,
    ) -> Map:
        """``Update``: send the fields given (not None); returns the stored container.

        Without ``update_mask`` the daemon replaces every mutable field, so
        fields not given are reset; name the ``update_mask`` paths (``labels``,
        ``labels.<key>``, ``image``, ``runtime``, ``spec``, ``rootfs``) to
        change only those.
        """
        given = {"labels": labels, "image": image, "runtime": runtime, "rootfs": rootfs}
        container: Body = {"id": id} | {k: v for k, v in given.items() if v is not None}
        if spec is not None:
            container["spec"] = _spec_any(spec)
        body: Body = {"container": container}
        if update_mask is not None:
            body["update_mask"] = {"paths": list(update_mask)}
        return cast(Map, self._unary(Rpc(_CONTAINERS + "Update", body, itemgetter("container"))))

    def delete(self, id: str) -> Done:
        """``Delete``: remove the container; FailedPrecondition while it has a task."""
        return cast(Done, self._unary(Rpc(_CONTAINERS + "Delete", {"id": id}, nothing)))

    def list_stream(self, filter: str = "") -> MapIter:
        """``berth.v1.Containers/ListStream``: the matching containers, one at a time."""
        rpc = Rpc("berth.v1.Containers/ListStream", {"filter": filter}, itemgetter("container"))
        return cast(MapIter, self._stream(rpc))


_TASKS = "containerd.v1.services.execution.Tasks/"
PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"


def process_any(process: dict[str, Any]) -> dict[str, Any]:
    """Wrap an OCI process spec (a dict) as the Any that ``Exec`` carries."""
    return {"type_url": PROCESS_TYPE_URL, "value": json.dumps(process).encode()}


class _Tasks(Group[Map, MapList, Done, MapIter]):
    """``containerd.v1.services.execution.Tasks``: a container's running instance.

    Tasks are dicts with the proto's fields (``id``, ``container_id``,
    ``pid``, ``status``, ``spec``, ``exit_status``, ``exited_at``). Stdio
    arguments are ``""`` (/dev/null), the absolute path of a FIFO, or
    ``file:///abs/path`` (a log file, appended to).
    """

    def create(
        self,
        container_id: str,
        *,
        rootfs: Iterable[dict[str, Any]] = (),
        stdin: str = "",
        stdout: str = "",
        stderr: str = "",
        terminal: bool = False,
        checkpoint: dict[str, Any] | None = None,
    ) -> Map:
        """``Create``: the task of ``container_id``; returns ``{container_id, pid}``."""
        body: Body = {
            "container_id": container_id,
            "rootfs": list(rootfs),
            "stdin": stdin,
            "stdout": stdout,
            "stderr": stderr,
            "terminal": terminal,
        }
        if checkpoint is not None:
            body["checkpoint"] = checkpoint
        return cast(Map, self._unary(Rpc(_TASKS + "Create", body)))

    def _by_id(self, method: str, container_id: str, extract: Callable[[Body], Any]) -> Any:
        return self._unary(Rpc(_TASKS + method, {"container_id": container_id}, extract))

    def start(self, container_id: str) -> Done:
        """``Start``: CREATED -> RUNNING."""
        return cast(Done, self._by_id("Start", container_id, nothing))

    def delete(self, container_id: str) -> Map:
        """``Delete``: a stopped (or never started) task; returns its exit status and time."""
        return cast(Map, self._by_id("Delete", container_id, whole))

    def info(self, container_id: str) -> Map:
        """``Info``: the task."""
        return cast(Map, self._by_id("Info", container_id, itemgetter("task")))

    def list(self) -> MapList:
        """``List``: every task of the namespace."""
        return cast(MapList, self._unary(Rpc(_TASKS + "List", {}, itemgetter("tasks"))))

    def kill(self, container_id: str, signal: int = 0, *, all: bool = False, pid: int = 0) -> Done:
        """``Kill``: signal the init (default), one ``pid``, or ``all`` processes; 0 is SIGTERM."""
        body: Body = {"container_id": container_id, "signal": signal}
        if all:
            body["all"] = True
        elif pid:
            body["pid"] = pid
        return cast(Done, self._unary(Rpc(_TASKS + "Kill", body, nothing)))

    def exec(
        self,
        container_id: str,
        *,
        spec: dict[str, Any],
        terminal: bool = False,
        stdin: str = "",
        stdout: str = "",
        stderr: str = "",
    ) -> Map:
        """``Exec``: a new process in a RUNNING task; ``spec`` is an OCI process (dict or Any)."""
        body: Body = {
            "container_id": container_id,
            "terminal": terminal,
            "stdin": stdin,
            "stdout": stdout,
            "stderr": stderr,
            "spec": spec if "type_url" in spec else process_any(spec),
        }
        return cast(Map, self._unary(Rpc(_TASKS + "Exec", body)))

    def pty(self, container_id: str, *, width: int, height: int, pid: int = 0) -> Done:
        """``Pty``: resize a terminal process's pty (pid 0: the init)."""
        body = {"container_id": container_id, "pid": pid, "width": width, "height": height}
        return cast(Done, self._unary(Rpc(_TASKS + "Pty", body, nothing)))

    def close_stdin(self, container_id: str, pid: int = 0) -> Done:
        """``CloseStdin``: close a process's stdin (pid 0: the init)."""
        body = {"container_id": container_id, "pid": pid}
        return cast(Done, self._unary(Rpc(_TASKS + "CloseStdin", body, nothing)))

    def pause(self, container_id: str) -> Done:
        """``Pause``: RUNNING -> PAUSED."""
        return cast(Done, self._by_id("Pause", container_id, nothing))

    def resume(self, container_id: str) -> Done:
        """``Resume``: PAUSED -> RUNNING."""
        return cast(Done, self._by_id("Resume", container_id, nothing))

    def processes(self, container_id: str) -> MapList:
        """``Processes``: the task's processes."""
        return cast(MapList, self._by_id("Processes", container_id, itemgetter("processes")))

    def checkpoint(self, container_id: str, **options: Any) -> MapList:
        """``Checkpoint``: returns the checkpoint's descriptors; UNAVAILABLE without CRIU."""
        body: Body = {"container_id": container_id, **options}
        return cast(
            MapList, self._unary(Rpc(_TASKS + "Checkpoint", body, itemgetter("descriptors")))
        )

    def events(self, *, timeout: float | None = None) -> MapIter:
        """``Events``: every task event of the namespace from now on (a stream).

        With :class:`Client` the subscription is live when this returns. It
        has no deadline unless ``timeout`` (seconds) is given.
        """
        return cast(MapIter, self._stream(Rpc(_TASKS + "Events", {}, timeout=timeout)))


class _Api(Group[Map, MapList, Done, MapIter]):
    """The calls common to both clients: generic ones, service groups, top-level RPCs."""

    containers: _Containers[Map, MapList, Done, MapIter]
    tasks: _Tasks[Map, MapList, Done, MapIter]
    images: Images[Map, MapList, Done, MapIter]
    snapshots: Snapshots[Map, MapList, Done, MapIter]
    content: Content[Map, MapList, Done, MapIter]
    supervision: Supervision[Map, MapList, Done, MapIter]

    def __init__(self, invoker: Invoker) -> None:
        super().__init__(invoker)
        self.containers = _Containers(invoker)
        self.tasks = _Tasks(invoker)
        self.images = Images(invoker)
        self.snapshots = Snapshots(invoker)
        self.content = Content(invoker)
        self.supervision = Supervision(invoker)

    @property
    def namespace(self) -> str:
        """The namespace of calls that do not name one."""
        return self._invoker.namespace

    @property
    def timeout(self) -> float | None:
        """Seconds a call may take unless it says otherwise; None: no limit."""
        return self._invoker.timeout

    def call(
        self,
        method: str,
        body: dict[str, Any] | None = None,
        *,
        namespace: str | None = None,
        timeout: Timeout = DEFAULT,
    ) -> Map:
        """Call any unary ``method`` (``"<package>.<Service>/<Method>"``); the reply body."""
        rpc = Rpc(method, body or {}, namespace=namespace, timeout=timeout)
        return cast(Map, self._unary(rpc))

    def stream(
        self,
        method: str,
        body: dict[str, Any] | None = None,
        *,
        namespace: str | None = None,
        timeout: Timeout = DEFAULT,
    ) -> MapIter:
        """Call any streaming ``method``; an iterator of the bodies of its items.

        The timeout covers the whole stream: pass ``timeout=None`` for a long one.
        Closing the iterator before the end cancels the stream on the daemon.
        """
        rpc = Rpc(method, body or {}, namespace=namespace, timeout=timeout)
        return cast(MapIter, self._stream(rpc))

    def version(self) -> Map:
        """``containerd.v1.Version/Version``: ``{"version", "revision"}`` of the daemon."""
        return cast(Map, self._unary(Rpc("containerd.v1.Version/Version", {})))

    def gc(self) -> Map:
        """``berth.v1.GC/Run``: collect now; ``{"snapshots": [keys], "content": [digests]}``."""
        return cast(Map, self._unary(Rpc("berth.v1.GC/Run", {})))


class Client(_Api[Body, list[Body], None, Generator[Body, None, None]]):
    """Blocking berth client on one DEALER connection.

    Not thread-safe: use one Client per thread. ``address`` defaults to
    ``$BERTH_ADDRESS``, else ``ipc:///run/berth/berth.sock``; ``timeout`` is
    in seconds (None: wait forever). For a ``tcp://`` daemon pass its CURVE
    ``server_public_key`` and this client's ``(public, secret)`` key pair.
    A streaming method sends its request at once and returns a generator
    when the stream is in place (its ``ready`` frame came); ``close()`` the
    generator (or drop it after ``break``) to cancel it on the daemon.
    ``events.subscribe()`` follows the event log across daemon restarts.
    """

    events: Events

    def __init__(
        self,
        address: str | None = None,
        *,
        namespace: str = "default",
        timeout: float | None = 30.0,
        server_public_key: bytes | None = None,
        client_keypair: tuple[bytes, bytes] | None = None,
    ) -> None:
        self._transport = SyncTransport(
            address, server_public_key=server_public_key, client_keypair=client_keypair
        )
        super().__init__(SyncInvoker(self._transport, namespace, timeout))
        self.events = Events(self._invoker)

    @property
    def address(self) -> str:
        """The address this client is connected to."""
        return self._transport.address

    def close(self) -> None:
        """Close the connection."""
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(
    _Api[
        Coroutine[Any, Any, Body],
        Coroutine[Any, Any, list[Body]],
        Coroutine[Any, Any, None],
        AsyncGenerator[Body, None],
    ]
):
    """asyncio berth client; many coroutines may call concurrently on one.

    Same arguments as :class:`Client`. Calls are pipelined on one connection
    and replies matched by id. It belongs to the event loop of its first
    call. Streams are async generators: ``aclose()`` one, or iterate it under
    ``contextlib.aclosing``, to cancel it on the daemon when leaving early.
    ``events.subscribe()`` is an async iterator that follows the event log
    across daemon restarts.
    """

    events: AsyncEvents

    def __init__(
        self,
        address: str | None = None,
        *,
        namespace: str = "default",
        timeout: float | None = 30.0,
        server_public_key: bytes | None = None,
        client_keypair: tuple[bytes, bytes] | None = None,
    ) -> None:
        self._transport = AsyncTransport(
            address, server_public_key=server_public_key, client_keypair=client_keypair
        )
        super().__init__(AsyncInvoker(self._transport, namespace, timeout))
        self.events = AsyncEvents(self._invoker)

    @property
    def address(self) -> str:
        """The address this client is connected to."""
        return self._transport.address

    def close(self) -> None:
        """Close the connection now; pending calls raise Unavailable."""
        self._transport.close()

    async def aclose(self) -> None:
        """Close the connection and wait for its reader task to stop."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
