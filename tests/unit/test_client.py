"""The client against a scripted in-process fake server; no daemon needed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

import berth
import wire.errors
from wire.codec import pack, unpack

Envelope = list[bytes]


class FakeServer:
    """A ROUTER on a thread that records requests and answers as ``handler`` scripts.

    ``handler(server, envelope, request)`` runs on the server thread and
    replies with ``server.send(envelope, frame)``, as many times as it likes,
    now or later (it may keep envelopes). Like berthd, replies echo every
    frame that came before the payload.
    """

    def __init__(self, address: str, handler: Callable[[FakeServer, Envelope, dict], None]):
        self.address = address
        self.handler = handler
        self.received: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {}
        self._stop = threading.Event()
        self._socket = zmq.Context.instance().socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(address)
        self._thread = threading.Thread(target=self._run, name="fake-berthd", daemon=True)
        self._thread.start()

    def send(self, envelope: Envelope, frame: dict[str, Any]) -> None:
        self._socket.send_multipart([*envelope, pack(frame)])

    def requests(self, method: str) -> list[dict[str, Any]]:
        return [r for r in self.received if r.get("method") == method]

    def cancels(self) -> list[dict[str, Any]]:
        return [r for r in self.received if r.get("cancel")]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._socket.poll(20):
                continue
            *envelope, payload = self._socket.recv_multipart()
            request = unpack(payload)
            self.received.append(request)
            self.handler(self, envelope, request)


def reply(server: FakeServer, envelope: Envelope, request: dict, **frame: Any) -> None:
    server.send(envelope, {"v": 1, "id": request["id"], **frame})


@pytest.fixture
def serve(tmp_path) -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def start(handler: Callable[[FakeServer, Envelope, dict], None]) -> FakeServer:
        server = FakeServer(f"ipc://{tmp_path}/berth-{len(servers)}.sock", handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def echo_body(server: FakeServer, envelope: Envelope, request: dict) -> None:
    """Replies to every call with its own request body; ignores cancels."""
    if "method" in request:
        reply(server, envelope, request, body=request["body"])


CONTAINER = {"id": "web", "labels": {}, "image": "", "runtime": "linux", "rootfs": ""}


def stream_of_three(server: FakeServer, envelope: Envelope, request: dict) -> None:
    """ListStream sends ready and three containers; ends on a cancel, or after the three
    when the request asks for ``filter="all"``. Any other method echoes."""
    if request.get("cancel"):
        reply(server, envelope, request, end=True)
    elif request["method"] == "berth.v1.Containers/ListStream":
        reply(server, envelope, request, ready=True)
        for n in range(3):
            item = {"container": {**CONTAINER, "id": f"c{n}"}}
            reply(server, envelope, request, body=item, more=True)
        if request["body"]["filter"] == "all":
            reply(server, envelope, request, end=True)
    else:
        echo_body(server, envelope, request)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_unary_call_returns_the_reply_body(serve):
    def version(server, envelope, request):
        reply(server, envelope, request, body={"version": "0.1.0", "revision": "abc"})

    server = serve(version)
    with berth.Client(server.address, namespace="ns1") as client:
        assert client.version() == {"version": "0.1.0", "revision": "abc"}
    (request,) = server.received
    assert request["v"] == 1
    assert isinstance(request["id"], int)
    assert request["method"] == "containerd.v1.Version/Version"
    assert request["ns"] == "ns1"
    assert request["body"] == {}


def test_an_error_frame_raises_the_error_class_of_its_code(serve):
    def not_found(server, envelope, request):
        error = {"code": "NOT_FOUND", "message": 'container "web": not found'}
        reply(server, envelope, request, error=error)

    server = serve(not_found)
    with berth.Client(server.address) as client, pytest.raises(berth.NotFound) as caught:
        client.containers.get("web")
    assert caught.value.message == 'container "web": not found'
    assert server.received[0]["body"] == {"id": "web"}


def test_pipelined_async_calls_are_matched_by_id_when_replies_come_out_of_order(serve):
    def reversed_after_three(server, envelope, request):
        held = server.state.setdefault("held", [])
        held.append((envelope, request))
        if len(held) == 3:
            for env, req in reversed(held):
                reply(server, env, req, body={"echo": req["body"]["n"]})

    server = serve(reversed_after_three)

    async def main() -> list[dict]:
        async with berth.AsyncClient(server.address) as client:
            return await asyncio.gather(*(client.call("x.v1.S/M", {"n": n}) for n in range(3)))

    assert asyncio.run(main()) == [{"echo": 0}, {"echo": 1}, {"echo": 2}]
    assert len({r["id"] for r in server.received}) == 3


def test_a_stream_yields_each_item_and_stops_at_end(serve):
    server = serve(stream_of_three)
    with berth.Client(server.address) as client:
        ids = [c["id"] for c in client.containers.list_stream(filter="all")]
    assert ids == ["c0", "c1", "c2"]
    assert server.cancels() == []


def test_an_async_stream_yields_each_item_and_stops_at_end(serve):
    server = serve(stream_of_three)

    async def main() -> list[str]:
        async with berth.AsyncClient(server.address) as client:
            return [c["id"] async for c in client.containers.list_stream(filter="all")]

    assert asyncio.run(main()) == ["c0", "c1", "c2"]


def test_breaking_out_of_a_stream_sends_cancel_and_leaves_the_client_usable(serve):
    server = serve(stream_of_three)
    with berth.Client(server.address) as client:
        for container in client.containers.list_stream():
            assert container["id"] == "c0"
            break
        wait_for(lambda: len(server.cancels()) == 1)
        (stream_request,) = server.requests("berth.v1.Containers/ListStream")
        assert server.cancels()[0] == {"v": 1, "id": stream_request["id"], "cancel": True}
        assert client.call("x.v1.S/M", {"still": "usable"}) == {"still": "usable"}


def test_closing_an_async_stream_early_sends_cancel_and_leaves_the_client_usable(serve):
    server = serve(stream_of_three)

    async def main() -> dict:
        async with berth.AsyncClient(server.address) as client:
            async with contextlib.aclosing(client.containers.list_stream()) as stream:
                async for _container in stream:
                    break
            assert len(server.cancels()) == 1
            return await client.call("x.v1.S/M", {"still": "usable"})

    assert asyncio.run(main()) == {"still": "usable"}


def test_frames_of_a_stream_are_kept_while_a_unary_call_waits_on_the_sync_client(serve):
    server = serve(stream_of_three)
    with berth.Client(server.address) as client:
        seen = []
        for container in client.containers.list_stream(filter="all"):
            # The stream's later frames arrive while this call waits for its reply.
            seen.append(client.call("x.v1.S/M", {"n": container["id"]})["n"])
    assert seen == ["c0", "c1", "c2"]


def test_an_error_frame_ends_a_stream_with_the_error_class(serve):
    def fails(server, envelope, request):
        if "method" in request:
            reply(server, envelope, request, ready=True)
            reply(server, envelope, request, error={"code": "UNAVAILABLE", "message": "bye"})

    server = serve(fails)
    with berth.Client(server.address) as client, pytest.raises(berth.Unavailable):
        list(client.stream("x.v1.S/Watch"))


def test_the_client_gives_up_with_deadline_exceeded_when_the_server_never_answers(serve):
    def silent_once(server, envelope, request):
        if request.get("method") == "x.v1.S/Slow":
            return
        echo_body(server, envelope, request)

    server = serve(silent_once)
    with berth.Client(server.address, timeout=0.1) as client:
        started = time.monotonic()
        with pytest.raises(berth.DeadlineExceeded):
            client.call("x.v1.S/Slow")
        assert time.monotonic() - started < 3
        assert client.call("x.v1.S/Fast", {"ok": True}) == {"ok": True}


def test_an_async_call_gives_up_with_deadline_exceeded_when_the_server_never_answers(serve):
    server = serve(lambda server, envelope, request: None)

    async def main() -> None:
        async with berth.AsyncClient(server.address) as client:
            await client.call("x.v1.S/Slow", timeout=0.1)

    with pytest.raises(berth.DeadlineExceeded):
        asyncio.run(main())


def test_the_timeout_is_sent_in_the_envelope_as_timeout_ms(serve):
    server = serve(echo_body)
    with berth.Client(server.address, timeout=None) as client:
        client.call("x.v1.S/A")
        client.call("x.v1.S/B", timeout=2.5)
        client.call("x.v1.S/C", namespace="other")
    a, b, c = server.received
    assert "timeout_ms" not in a
    assert b["timeout_ms"] == 2500
    assert c["ns"] == "other"
    with berth.Client(server.address) as client:
        client.call("x.v1.S/D")
    assert server.received[-1]["timeout_ms"] == 30_000


def test_create_wraps_a_plain_oci_spec_and_update_sends_only_given_fields(serve):
    def container_echo(server, envelope, request):
        reply(server, envelope, request, body={"container": request["body"]["container"]})

    server = serve(container_echo)
    with berth.Client(server.address) as client:
        created = client.containers.create("web", spec={"ociVersion": "1.0.2"}, runtime="linux")
        client.containers.update("web", labels={"a": "b"}, update_mask=["labels"])
    assert created["spec"]["type_url"] == "types.containerd.io/opencontainers/runtime-spec/1/Spec"
    assert json.loads(created["spec"]["value"]) == {"ociVersion": "1.0.2"}
    assert created["runtime"] == "linux"
    update = server.received[1]["body"]
    assert update == {
        "container": {"id": "web", "labels": {"a": "b"}},
        "update_mask": {"paths": ["labels"]},
    }


def test_the_address_comes_from_berth_address_when_not_given(serve, monkeypatch):
    server = serve(echo_body)
    monkeypatch.setenv("BERTH_ADDRESS", server.address)
    with berth.Client() as client:
        assert client.address == server.address
        assert client.call("x.v1.S/M", {"n": 1}) == {"n": 1}


def test_oci_spec_any_wraps_a_dict_as_an_any():
    spec = {"ociVersion": "1.0.2", "process": {"args": ["sh"]}}
    wrapped = berth.oci_spec_any(spec)
    assert wrapped["type_url"] == "types.containerd.io/opencontainers/runtime-spec/1/Spec"
    assert isinstance(wrapped["value"], bytes)
    assert json.loads(wrapped["value"]) == spec


def test_error_classes_are_those_of_wire_errors():
    assert berth.NotFound is wire.errors.NotFound
    assert berth.BerthError is wire.errors.BerthError


def test_exported_members():
    assert berth.__all__ == [
        "AlreadyExists",
        "AsyncClient",
        "BerthError",
        "Client",
        "DeadlineExceeded",
        "FailedPrecondition",
        "Internal",
        "InvalidArgument",
        "NotFound",
        "OutOfRange",
        "PermissionDenied",
        "ResourceExhausted",
        "Unauthenticated",
        "Unavailable",
        "Unimplemented",
        "health_labels",
        "oci_spec_any",
        "restart_labels",
    ]
    assert berth.__version__ == "0.1.0"


def test_a_sync_stream_is_in_place_when_the_method_returns(tmp_path):
    """Regression: Events subscribed lazily missed what happened before the first read."""
    import threading

    import msgpack
    import zmq

    import berth

    address = f"ipc://{tmp_path}/ready.sock"
    ctx = zmq.Context.instance()
    server = ctx.socket(zmq.ROUTER)
    server.bind(address)
    seen = threading.Event()

    def serve():
        frames = server.recv_multipart()
        request = msgpack.unpackb(frames[-1])
        seen.set()
        head = frames[:-1]
        rid = request["id"]
        server.send_multipart([*head, msgpack.packb({"v": 1, "id": rid, "ready": True})])
        body = {"v": 1, "id": rid, "body": {"type": "START"}, "more": True}
        server.send_multipart([*head, msgpack.packb(body)])
        server.send_multipart([*head, msgpack.packb({"v": 1, "id": rid, "end": True})])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with berth.Client(address, timeout=5) as client:
        events = client.tasks.events()
        assert seen.is_set(), "the request must be sent before events() returns"
        assert [e["type"] for e in events] == ["START"]
    thread.join(5)
    server.close(linger=0)
