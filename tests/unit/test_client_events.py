"""``client.events`` and stream credit, against fakes: a scripted invoker, a ROUTER on a thread.

The subscription's resume logic is driven through fake invokers (each
Subscribe answered by a scripted list of frames and errors); credit frames
and the whole path through a real transport through an in-process ROUTER.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from typing import Any

import pytest
import zmq

import berth
from berth.client_base import Rpc
from berth.client_events import AsyncEvents, Events
from wire.client_core import CREDIT_BATCH, ClientCore, StreamMarker
from wire.codec import pack, unpack

# --- fakes ------------------------------------------------------------------------------

Script = list[Any]  # frames (dicts) to yield, then at most one exception to raise


class Later:
    """An error that comes after the stream's ``ready`` even when it is the first item."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def event(seq: int, topic: str = "/containers/create", id: str = "web") -> dict[str, Any]:
    return {
        "seq": seq,
        "timestamp": None,
        "namespace": "default",
        "topic": topic,
        "id": id,
        "type": topic.rsplit("/", 1)[-1].upper(),
        "payload": {"id": id},
    }


def frame(*seqs: int, seq: int | None = None) -> dict[str, Any]:
    """A Subscribe body: events ``seqs``, position ``seq`` (default: the last event's)."""
    return {"events": [event(s) for s in seqs], "seq": seq if seq is not None else seqs[-1]}


class FakeInvoker:
    """An invoker whose Subscribe calls play ``scripts`` in turn; Info says ``latest_seq``."""

    namespace = "default"
    timeout = 5.0

    def __init__(self, scripts: list[Script], latest_seq: int = 0) -> None:
        self.scripts = list(scripts)
        self.latest_seq = latest_seq
        self.subscribed: list[dict[str, Any]] = []  # request bodies, in order
        self.closed = 0

    def unary(self, rpc: Rpc) -> Any:
        assert rpc.method == "berth.v1.Events/Info"
        return {"oldest_seq": 1, "latest_seq": self.latest_seq, "count": 0, "bytes": 0}

    def _next_script(self, rpc: Rpc) -> Script:
        assert rpc.method == "berth.v1.Events/Subscribe"
        assert rpc.timeout is None, "a subscription must carry no whole-stream deadline"
        self.subscribed.append(dict(rpc.body))
        if not self.scripts:
            raise berth.Unavailable("no daemon")
        return self.scripts.pop(0)

    def stream(self, rpc: Rpc) -> Generator[Any, None, None]:
        script = self._next_script(rpc)
        # Like the sync transport: an error instead of ready is raised by the call itself.
        if script and isinstance(script[0], BaseException):
            raise script[0]
        return self._play(script)

    def _play(self, script: Script) -> Generator[Any, None, None]:
        try:
            for item in script:
                if isinstance(item, BaseException | Later):
                    raise item.exc if isinstance(item, Later) else item
                yield item
            # Out of script: the daemon is still there but quiet; the test ends before.
            raise AssertionError("the test read past its script")
        finally:
            self.closed += 1


class AsyncFakeInvoker(FakeInvoker):
    """The same scripts, played as the async transport does: everything on the first read."""

    async def unary(self, rpc: Rpc) -> Any:  # type: ignore[override]
        return FakeInvoker.unary(self, rpc)

    def stream(self, rpc: Rpc) -> AsyncGenerator[Any, None]:  # type: ignore[override]
        return self._aplay(rpc)

    async def _aplay(self, rpc: Rpc) -> AsyncGenerator[Any, None]:
        script = self._next_script(rpc)
        try:
            for item in script:
                if isinstance(item, BaseException):
                    raise item
                yield item
            raise AssertionError("the test read past its script")
        finally:
            self.closed += 1


def take(iterator: Iterator[dict[str, Any]], n: int) -> list[int]:
    return [next(iterator)["seq"] for _ in range(n)]


# --- the subscription: resume, no duplicate, no gap ---------------------------------------


def test_a_subscription_resumes_after_a_lost_daemon_with_no_duplicate_and_no_gap():
    invoker = FakeInvoker(
        [
            [frame(4, 5), frame(6), berth.Unavailable("berthd is stopping")],
            # The restarted daemon repeats 6 (as a careless server might): not yielded again.
            [frame(6, 7), frame(8, 9)],
        ]
    )
    events = Events(invoker).subscribe(after_seq=3)
    assert take(events, 6) == [4, 5, 6, 7, 8, 9]
    assert [body["after_seq"] for body in invoker.subscribed] == [3, 6]
    assert events.seq == 9


def test_a_silent_stream_counts_as_lost_and_is_subscribed_again():
    invoker = FakeInvoker(
        [[frame(1), berth.DeadlineExceeded("no frame in 15 s")], [frame(2)]], latest_seq=0
    )
    events = Events(invoker).subscribe()
    assert take(events, 2) == [1, 2]
    assert [body["after_seq"] for body in invoker.subscribed] == [0, 1]


def test_from_now_on_is_fixed_at_the_latest_seq_so_a_resume_misses_nothing():
    invoker = FakeInvoker([[Later(berth.Unavailable("gone"))], [frame(42)]], latest_seq=41)
    events = Events(invoker).subscribe()
    assert events.seq == 41
    assert take(events, 1) == [42]
    assert [body["after_seq"] for body in invoker.subscribed] == [41, 41]


def test_seq_advances_on_progress_frames_and_a_resume_starts_there():
    invoker = FakeInvoker(
        [
            [frame(seq=10), frame(11, seq=20), frame(seq=30), berth.Unavailable("gone")],
            [frame(31)],
        ]
    )
    events = Events(invoker).subscribe(after_seq=5, filter="topic==/containers/create")
    assert next(events)["seq"] == 11
    assert events.seq == 20, "the frame's position holds once its events are read"
    assert next(events)["seq"] == 31
    assert invoker.subscribed == [
        {"after_seq": 5, "filter": "topic==/containers/create"},
        {"after_seq": 30, "filter": "topic==/containers/create"},
    ]


def test_seq_is_the_last_event_read_while_a_frame_is_being_read():
    events = Events(FakeInvoker([[frame(1, 2, 3, seq=9)]])).subscribe(after_seq=0)
    assert next(events)["seq"] == 1 and events.seq == 1
    assert next(events)["seq"] == 2 and events.seq == 2
    assert next(events)["seq"] == 3 and events.seq == 9


def test_out_of_range_is_raised_at_subscribe_and_never_retried():
    invoker = FakeInvoker([[berth.OutOfRange("after_seq 1: oldest is 41")]])
    with pytest.raises(berth.OutOfRange):
        Events(invoker).subscribe(after_seq=1)
    assert len(invoker.subscribed) == 1


def test_out_of_range_on_a_resume_is_raised_and_ends_the_iteration():
    invoker = FakeInvoker(
        [[frame(2), berth.Unavailable("gone")], [berth.OutOfRange("trimmed")], [frame(3)]]
    )
    events = Events(invoker).subscribe(after_seq=1)
    assert next(events)["seq"] == 2
    with pytest.raises(berth.OutOfRange):
        next(events)
    assert len(invoker.subscribed) == 2
    assert list(events) == []


def test_invalid_argument_is_raised_and_never_retried():
    invoker = FakeInvoker([[berth.InvalidArgument("bad filter")]])
    with pytest.raises(berth.InvalidArgument):
        Events(invoker).subscribe(after_seq=1, filter="topic==")
    assert len(invoker.subscribed) == 1


def test_the_error_is_raised_once_reconnect_timeout_has_passed():
    invoker = FakeInvoker([[frame(1), berth.Unavailable("gone")]])
    events = Events(invoker).subscribe(after_seq=0, reconnect_timeout=0.35)
    assert next(events)["seq"] == 1
    started = time.monotonic()
    with pytest.raises(berth.Unavailable):
        next(events)
    waited = time.monotonic() - started
    assert 0.3 <= waited < 1.5
    # 0.1 + 0.2, then what is left of the 0.35: four attempts in all (the first
    # included), five if a sleep ended a hair early.
    assert len(invoker.subscribed) in (4, 5)


def test_closing_a_subscription_closes_its_stream():
    invoker = FakeInvoker([[frame(1), frame(2)]])
    with Events(invoker).subscribe(after_seq=0) as events:
        assert next(events)["seq"] == 1
    assert invoker.closed == 1
    assert list(events) == []


def test_an_async_subscription_resumes_with_no_duplicate_and_advances_on_progress():
    invoker = AsyncFakeInvoker(
        [
            [frame(1, 2), frame(seq=7), berth.Unavailable("berthd is stopping")],
            [frame(7, 8)],
            [berth.OutOfRange("trimmed")],
        ],
        latest_seq=0,
    )

    async def main() -> tuple[list[int], int]:
        events = AsyncEvents(invoker).subscribe()
        seen = [(await anext(events))["seq"] for _ in range(3)]
        return seen, events.seq

    seen, seq = asyncio.run(main())
    assert seen == [1, 2, 8] and seq == 8
    assert [body["after_seq"] for body in invoker.subscribed] == [0, 7]


def test_an_async_subscription_raises_out_of_range():
    invoker = AsyncFakeInvoker([[berth.OutOfRange("after_seq 1: oldest is 41")]])

    async def main() -> None:
        async with AsyncEvents(invoker).subscribe(after_seq=1) as events:
            await anext(events)

    with pytest.raises(berth.OutOfRange):
        asyncio.run(main())
    assert len(invoker.subscribed) == 1


# --- credit in the core --------------------------------------------------------------------


def more(call_id: int, n: int) -> bytes:
    return pack({"v": 1, "id": call_id, "body": {"n": n}, "more": True})


def test_the_core_grants_credit_after_every_eight_frames_read():
    core = ClientCore()
    call_id, _ = core.start("x.v1.S/Stream", {}, namespace="default", timeout=None)
    core.feed(pack({"v": 1, "id": call_id, "ready": True}))
    assert core.stream_step(call_id, core.next_frame(call_id)) is StreamMarker.READY
    grants = []
    for n in range(2 * CREDIT_BATCH + 3):
        core.feed(more(call_id, n))
        core.stream_step(call_id, core.next_frame(call_id))
        if (payload := core.credit_payload(call_id)) is not None:
            grants.append((n, unpack(payload)))
    assert grants == [
        (7, {"v": 1, "id": call_id, "credit": 8}),
        (15, {"v": 1, "id": call_id, "credit": 8}),
    ]


def test_the_core_grants_nothing_to_a_stream_that_ended_or_was_given_up():
    core = ClientCore()
    ended, _ = core.start("x.v1.S/Stream", {}, namespace="default", timeout=None)
    for n in range(CREDIT_BATCH):
        core.feed(more(ended, n))
        core.stream_step(ended, core.next_frame(ended))
    core.feed(pack({"v": 1, "id": ended, "end": True}))
    assert core.credit_payload(ended) is None, "its end frame is in: nothing left to grant"
    assert core.stream_step(ended, core.next_frame(ended)) is StreamMarker.END
    assert core.credit_payload(ended) is None

    left, _ = core.start("x.v1.S/Stream", {}, namespace="default", timeout=None)
    for n in range(CREDIT_BATCH):
        core.feed(more(left, n))
        core.stream_step(left, core.next_frame(left))
    core.finish(left)
    assert core.credit_payload(left) is None


# --- credit and resume through a real transport ------------------------------------------


class StreamServer:
    """A ROUTER on a thread: each stream request is answered by ``script(server, send, n)``.

    ``send(frame_fields)`` replies to that request; ``n`` counts the stream
    requests so far. Every frame received is kept in ``received``.
    """

    def __init__(self, address: str, script: Callable[..., None]) -> None:
        self.address = address
        self.received: list[dict[str, Any]] = []
        self._script = script
        self._stop = threading.Event()
        self._sock = zmq.Context.instance().socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(address)
        self._outgoing: list[list[bytes]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def credits(self) -> list[dict[str, Any]]:
        return [r for r in self.received if "credit" in r]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _run(self) -> None:
        streams = 0
        while not self._stop.is_set():
            with self._lock:
                out, self._outgoing = self._outgoing, []
            for parts in out:
                self._sock.send_multipart(parts)
            if not self._sock.poll(10):
                continue
            *envelope, payload = self._sock.recv_multipart()
            request = unpack(payload)
            self.received.append(request)
            if "method" not in request:
                if request.get("cancel"):
                    self._sock.send_multipart([*envelope, pack({**_head(request), "end": True})])
                continue
            if request["method"] == "berth.v1.Events/Info":
                body = {"oldest_seq": 1, "latest_seq": 0, "count": 0, "bytes": 0}
                self._sock.send_multipart([*envelope, pack({**_head(request), "body": body})])
                continue
            streams += 1

            def send(env: list[bytes] = envelope, req: dict = request, **fields: Any) -> None:
                with self._lock:
                    self._outgoing.append([*env, pack({**_head(req), **fields})])

            self._script(self, send, streams, request)


def _head(request: dict[str, Any]) -> dict[str, Any]:
    return {"v": 1, "id": request["id"]}


@pytest.fixture
def stream_server(tmp_path) -> Iterator[Callable[..., StreamServer]]:
    servers: list[StreamServer] = []

    def start(script: Callable[..., None]) -> StreamServer:
        server = StreamServer(f"ipc://{tmp_path}/events-{len(servers)}.sock", script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def twenty_items(server: StreamServer, send: Callable[..., None], n: int, request: dict) -> None:
    send(ready=True)
    for i in range(20):
        send(body={"n": i}, more=True)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_sync_stream_sends_a_credit_of_8_after_every_8_frames_and_none_once_left(
    stream_server,
):
    server = stream_server(twenty_items)
    with berth.Client(server.address, timeout=5) as client:
        stream = client.stream("x.v1.S/Stream", {})
        got = [next(stream)["n"] for _ in range(8)]
        time.sleep(0.1)
        assert server.credits() == [], "the 8th frame is granted once the next is asked for"
        got += [next(stream)["n"] for _ in range(9)]
        assert got == list(range(17))
        wait_for(lambda: len(server.credits()) == 2)
        stream_id = server.received[0]["id"]
        assert server.credits() == [{"v": 1, "id": stream_id, "credit": 8}] * 2
        stream.close()
        wait_for(lambda: any(r.get("cancel") for r in server.received))
        time.sleep(0.1)
        assert len(server.credits()) == 2, "a stream left sends no credit"


def test_an_async_stream_sends_a_credit_of_8_after_every_8_frames(stream_server):
    server = stream_server(twenty_items)

    async def main() -> list[int]:
        async with berth.AsyncClient(server.address, timeout=5) as client:
            stream = client.stream("x.v1.S/Stream", {})
            got = [(await anext(stream))["n"] for _ in range(17)]
            await stream.aclose()
            return got

    assert asyncio.run(main()) == list(range(17))
    wait_for(lambda: any(r.get("cancel") for r in server.received))
    assert [c["credit"] for c in server.credits()] == [8, 8]


def test_a_client_subscription_resumes_after_an_unavailable_frame_and_a_silent_daemon(
    stream_server,
):
    def daemon(server: StreamServer, send: Callable[..., None], n: int, request: dict) -> None:
        after = request["body"]["after_seq"]
        send(ready=True)
        if n == 1:
            assert after == 0
            send(body=frame(1, 2), more=True)
            send(error={"code": "UNAVAILABLE", "message": "berthd is stopping"})
        elif n == 2:
            assert after == 2
            send(body=frame(3), more=True)  # then silence, as a SIGKILLed daemon gives
        else:
            assert after == 3
            send(body=frame(4), more=True)

    server = stream_server(daemon)
    with berth.Client(server.address, timeout=5) as client:
        events = client.events.subscribe(idle_timeout=0.3)
        assert [next(events)["seq"] for _ in range(4)] == [1, 2, 3, 4]
        assert events.seq == 4
        events.close()
    subscribes = [r for r in server.received if r.get("method") == "berth.v1.Events/Subscribe"]
    assert len(subscribes) == 3
    # The silent stream was cancelled when given up on.
    assert any(r.get("cancel") and r["id"] == subscribes[1]["id"] for r in server.received)
