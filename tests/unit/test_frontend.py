"""The front end's socket loop, with test handlers instead of services."""

from __future__ import annotations

import threading
import time

import msgpack
import pytest
import zmq

from wire.frontend import FrontEnd, Route


def _later(delay, fn):
    t = threading.Timer(delay, fn)
    t.daemon = True
    t.start()


def _stream(request):
    reply = request.reply
    count = request.body.get("count", 10**9)

    def produce():
        reply.ready()
        for i in range(count):
            if reply.cancelled:
                return
            reply.more({"i": i})
            time.sleep(0.001)
        reply.end()

    threading.Thread(target=produce, daemon=True).start()


ROUTES = {
    "t.T/Echo": Route(lambda r: r.reply.ok({"echo": r.body, "ns": r.ns})),
    "t.T/Slow": Route(lambda r: _later(r.body["delay"], lambda: r.reply.ok({"late": True}))),
    "t.T/Crash": Route(lambda r: 1 / 0),
    "t.T/Stream": Route(_stream, stream=True),
}


@pytest.fixture
def server(tmp_path):
    ctx = zmq.Context()
    address = f"ipc://{tmp_path}/fe.sock"
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(address)
    fe = FrontEnd([sock], ROUTES, max_payload=1024, max_streams=2)
    fe.start()
    yield fe, ctx, address
    fe.stop()
    ctx.term()


@pytest.fixture
def dealer(server):
    _, ctx, address = server
    sock = ctx.socket(zmq.DEALER)
    sock.rcvtimeo = 5000
    sock.linger = 0
    sock.connect(address)
    yield sock
    sock.close()


def send(sock, message):
    sock.send_multipart([b"", msgpack.packb(message, use_bin_type=True)])


def recv(sock):
    frames = sock.recv_multipart()
    assert frames[0] == b""
    return msgpack.unpackb(frames[-1], timestamp=0)


def call(sock, method, body=None, **extra):
    send(sock, {"v": 1, "id": 1, "method": method, "body": body or {}, **extra})
    return recv(sock)


def test_a_request_is_routed_and_answered_with_its_id(dealer):
    assert call(dealer, "t.T/Echo", {"a": 1}) == {
        "v": 1,
        "id": 1,
        "body": {"echo": {"a": 1}, "ns": "default"},
    }


def test_a_req_socket_gets_its_reply_too(server):
    _, ctx, address = server
    req = ctx.socket(zmq.REQ)
    req.rcvtimeo = 5000
    req.connect(address)
    req.send(msgpack.packb({"v": 1, "id": "x", "method": "t.T/Echo"}))
    assert msgpack.unpackb(req.recv())["id"] == "x"
    req.close(linger=0)


def test_a_handler_that_raises_gets_internal_without_a_traceback(dealer):
    error = call(dealer, "t.T/Crash")["error"]
    assert error["code"] == "INTERNAL"
    assert "Traceback" not in error["message"] and "ZeroDivisionError" in error["message"]
    assert "body" in call(dealer, "t.T/Echo")


def test_a_call_past_its_deadline_gets_deadline_exceeded_and_the_late_reply_is_dropped(dealer):
    reply = call(dealer, "t.T/Slow", {"delay": 0.3}, timeout_ms=50)
    assert reply["error"]["code"] == "DEADLINE_EXCEEDED"
    time.sleep(0.4)
    send(dealer, {"v": 1, "id": 2, "method": "t.T/Echo"})
    assert recv(dealer)["id"] == 2, "the late reply of id 1 must not arrive"


def test_pipelined_replies_are_matched_by_id(dealer):
    send(dealer, {"v": 1, "id": 1, "method": "t.T/Slow", "body": {"delay": 0.2}})
    send(dealer, {"v": 1, "id": 2, "method": "t.T/Echo"})
    assert [recv(dealer)["id"], recv(dealer)["id"]] == [2, 1]


def test_a_stream_sends_ready_then_frames_then_end(dealer):
    send(dealer, {"v": 1, "id": 7, "method": "t.T/Stream", "body": {"count": 3}})
    frames = [recv(dealer) for _ in range(5)]
    assert frames[0] == {"v": 1, "id": 7, "ready": True}
    assert [f["body"]["i"] for f in frames[1:4]] == [0, 1, 2]
    assert all(f["more"] is True for f in frames[1:4])
    assert frames[4] == {"v": 1, "id": 7, "end": True}


def test_cancel_ends_an_open_stream_with_an_end_frame(server, dealer):
    fe, _, _ = server
    send(dealer, {"v": 1, "id": 7, "method": "t.T/Stream"})
    assert recv(dealer)["ready"]
    send(dealer, {"v": 1, "id": 7, "cancel": True})
    while True:
        frame = recv(dealer)
        if "more" not in frame:
            break
    assert frame == {"v": 1, "id": 7, "end": True}
    time.sleep(0.05)
    assert fe.open_streams == 0
    dealer.rcvtimeo = 100
    with pytest.raises(zmq.Again):
        recv(dealer)  # nothing after the terminal frame


def test_a_cancel_naming_no_open_stream_is_ignored(dealer):
    send(dealer, {"v": 1, "id": 99, "cancel": True})
    assert call(dealer, "t.T/Echo")["id"] == 1


def test_a_stream_past_its_deadline_ends_with_deadline_exceeded(dealer):
    send(dealer, {"v": 1, "id": 3, "method": "t.T/Stream", "timeout_ms": 100})
    while True:
        frame = recv(dealer)
        if "more" not in frame and "ready" not in frame:
            break
    assert frame["error"]["code"] == "DEADLINE_EXCEEDED"


def test_too_many_open_streams_is_resource_exhausted(dealer):
    for i in (1, 2):
        send(dealer, {"v": 1, "id": i, "method": "t.T/Stream"})
    send(dealer, {"v": 1, "id": 3, "method": "t.T/Stream"})
    while True:
        frame = recv(dealer)
        if frame["id"] == 3:
            break
    assert frame["error"]["code"] == "RESOURCE_EXHAUSTED"
    for i in (1, 2):
        send(dealer, {"v": 1, "id": i, "cancel": True})


def test_a_second_stream_with_an_open_streams_id_is_refused(dealer):
    send(dealer, {"v": 1, "id": 5, "method": "t.T/Stream"})
    send(dealer, {"v": 1, "id": 5, "method": "t.T/Stream"})
    while True:
        frame = recv(dealer)
        if "error" in frame:
            break
    assert frame["error"]["code"] == "INVALID_ARGUMENT"
    assert "open stream" in frame["error"]["message"]
    send(dealer, {"v": 1, "id": 5, "cancel": True})


def test_a_stream_whose_client_is_gone_is_dropped(server):
    fe, ctx, address = server
    sock = ctx.socket(zmq.DEALER)
    sock.connect(address)
    send(sock, {"v": 1, "id": 1, "method": "t.T/Stream"})
    sock.rcvtimeo = 5000
    assert recv(sock)["ready"]
    sock.close(linger=0)
    deadline = time.monotonic() + 5
    while fe.open_streams and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fe.open_streams == 0


def test_an_oversized_payload_is_resource_exhausted_with_its_id(dealer):
    reply = call(dealer, "t.T/Echo", {"pad": b"x" * 2000})
    assert reply["id"] == 1
    assert reply["error"]["code"] == "RESOURCE_EXHAUSTED"


def test_requests_after_refuse_new_are_unavailable(server, dealer):
    fe, _, _ = server
    fe.refuse_new()
    error = call(dealer, "t.T/Echo")["error"]
    assert error == {"code": "UNAVAILABLE", "message": "daemon shutting down"}
