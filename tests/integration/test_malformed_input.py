"""Malformed input, as docs/protocol.md 2.4 and the wire contract define it.

Each test sends one bad frame through a raw pyzmq socket (nothing of berth
is imported), checks the error frame (code ``INVALID_ARGUMENT``, the
request's ``id`` echoed when it could be read, else nil), then sends a
``containerd.v1.Version/Version`` request on the same socket: the daemon
never closes the connection or stalls because of a bad frame.

A REQ socket is used where a reply is expected (it takes exactly one reply
per request); a DEALER socket (``[b"", payload]``) where none is.

All tests share one daemon (module scope, overriding the conftest's
``daemon``): besides being quicker, that checks it keeps serving after every
kind of bad frame in turn. Reads and writes use namespaces of their own.
"""

from __future__ import annotations

import random
import string
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from tests.integration.conftest import DaemonProcess, make_daemon

RECV_TIMEOUT_MS = 10_000
VERSION = "containerd.v1.Version/Version"
GET = "containerd.v1.Containers/Get"
LIST = "containerd.v1.Containers/List"
CREATE = "containerd.v1.Containers/Create"
SPEC = {"type_url": "types.containerd.io/opencontainers/runtime-spec/1/Spec", "value": b"{}"}


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(payload: bytes) -> Any:
    return msgpack.unpackb(payload, raw=False)


def envelope(**fields: Any) -> dict[str, Any]:
    """A valid Version request, with ``fields`` replacing or adding keys."""
    frame: dict[str, Any] = {"v": 1, "id": 1, "method": VERSION, "body": {}}
    frame.update(fields)
    return frame


def without(frame: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in frame.items() if k != key}


class Req:
    """A REQ socket with a receive timeout."""

    def __init__(self, address: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
        self.sock.connect(address)

    def close(self) -> None:
        self.sock.close(linger=0)

    def send_raw(self, payload: bytes) -> dict[str, Any]:
        self.sock.send(payload)
        reply = unpack(self.sock.recv())
        assert isinstance(reply, dict), reply
        return reply

    def bad(self, payload: bytes, expected_id: Any) -> dict[str, str]:
        """Send a bad payload; check the error frame; return its error map."""
        reply = self.send_raw(payload)
        assert set(reply) == {"v", "id", "error"}, reply
        assert reply["v"] == 1
        assert reply["id"] == expected_id, reply
        assert type(reply["id"]) is type(expected_id), reply
        error = reply["error"]
        assert set(error) == {"code", "message"}, error
        assert error["code"] == "INVALID_ARGUMENT", error
        assert isinstance(error["message"], str) and error["message"]
        return error

    def assert_serving(self) -> None:
        reply = self.send_raw(pack({"v": 1, "id": "after", "method": VERSION, "body": {}}))
        assert reply["id"] == "after"
        assert set(reply["body"]) == {"version", "revision"}, reply


class Dealer:
    """A DEALER socket: send ``[b"", payload]``, receive by polling."""

    def __init__(self, address: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)

    def close(self) -> None:
        self.sock.close(linger=0)

    def send(self, frame: Any) -> None:
        self.sock.send_multipart([b"", pack(frame)])

    def recv_frames(self, timeout_ms: int = RECV_TIMEOUT_MS) -> list[bytes]:
        assert self.sock.poll(timeout_ms), f"no reply within {timeout_ms} ms"
        return self.sock.recv_multipart()

    def recv(self) -> dict[str, Any]:
        frames = self.recv_frames()
        assert len(frames) == 2 and frames[0] == b"", frames
        reply = unpack(frames[1])
        assert isinstance(reply, dict)
        return reply

    def nothing_within(self, timeout_ms: int) -> bool:
        return not self.sock.poll(timeout_ms)

    def assert_serving(self) -> None:
        self.send({"v": 1, "id": "after", "method": VERSION, "body": {}})
        reply = self.recv()
        assert reply["id"] == "after", reply
        assert set(reply["body"]) == {"version", "revision"}, reply


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One berthd for the whole module: it must take every bad frame in turn."""
    d = make_daemon(tmp_path_factory.mktemp("malformed")).start()
    try:
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            try:
                d.stop(timeout=10)
            except subprocess.TimeoutExpired:
                d.kill()
        subprocess.run(["rm", "-rf", str(d.state)], check=False)


@pytest.fixture
def req(daemon: DaemonProcess) -> Iterator[Req]:
    assert daemon.proc is not None and daemon.proc.poll() is None, "berthd died"
    client = Req(daemon.address)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def dealer(daemon: DaemonProcess) -> Iterator[Dealer]:
    assert daemon.proc is not None and daemon.proc.poll() is None, "berthd died"
    client = Dealer(daemon.address)
    try:
        yield client
    finally:
        client.close()


# Not one msgpack object


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # the one byte msgpack never uses
        b"",
        b"\x85\xa1v\x01",  # a map of 5 entries holding 1
        pack(envelope())[:-3],  # cut inside the body
        b"\x83\xa1v\x01\xa2id\x01\xa6method\xdb\x00\x00\x10\x00abc",  # str32 longer than the data
        pack(envelope()) + b"\x01",  # trailing bytes
        pack(envelope()) + pack(envelope()),  # two maps
    ],
    ids=["c1", "empty", "truncated-map", "cut-body", "short-str32", "trailing-byte", "two-maps"],
)
def test_a_frame_that_is_not_msgpack_gets_invalid_argument_and_the_daemon_keeps_serving(
    req: Req, payload: bytes
) -> None:
    req.bad(payload, None)
    req.assert_serving()


@pytest.mark.parametrize(
    "value",
    [[1, 2, 3], [], 7, -1, "hello", "", None, True, 1.5, b"bytes", msgpack.Timestamp(1, 0)],
    ids=[
        "array",
        "empty-array",
        "int",
        "neg-int",
        "str",
        "empty-str",
        "nil",
        "bool",
        "float",
        "bin",
        "timestamp",
    ],
)
def test_msgpack_that_is_not_a_map_gets_invalid_argument_with_a_nil_id(
    req: Req, value: Any
) -> None:
    req.bad(pack(value), None)
    req.assert_serving()


def test_the_documented_bad_frame_example_gets_a_nil_id(req: Req) -> None:
    req.bad(b"\x93\x01\x02\x03", None)  # protocol.md 7.2
    req.assert_serving()


# Envelope keys: missing, wrong type, unknown


def test_a_map_lacking_v_gets_invalid_argument_echoing_its_id(req: Req) -> None:
    req.bad(pack(without(envelope(id="no-v"), "v")), "no-v")
    req.assert_serving()


def test_a_map_lacking_id_gets_invalid_argument_with_a_nil_id(req: Req) -> None:
    req.bad(pack(without(envelope(), "id")), None)
    req.assert_serving()


def test_a_map_lacking_method_gets_invalid_argument_echoing_its_id(req: Req) -> None:
    req.bad(pack(without(envelope(id=42), "method")), 42)
    req.bad(pack(envelope(id=43, method=None)), 43)
    req.assert_serving()


def test_an_empty_map_gets_invalid_argument_with_a_nil_id(req: Req) -> None:
    req.bad(pack({}), None)
    req.assert_serving()


@pytest.mark.parametrize(
    "bad_id",
    [
        [1],
        True,
        False,
        1.0,
        None,
        b"bin",
        {"a": 1},
        msgpack.ExtType(5, b"x"),
        msgpack.Timestamp(1, 0),
    ],
    ids=["list", "true", "false", "float", "nil", "bin", "map", "ext", "timestamp"],
)
def test_an_id_that_is_neither_int_nor_str_gets_invalid_argument_with_a_nil_id(
    req: Req, bad_id: Any
) -> None:
    req.bad(pack(envelope(id=bad_id)), None)
    req.assert_serving()


@pytest.mark.parametrize(
    "good_id",
    [2**64 - 1, -(2**63), 0, "", "ünï ✓", "x" * 1000],
    ids=["uint64-max", "int64-min", "zero", "empty-str", "non-ascii", "long-str"],
)
def test_ids_across_the_whole_msgpack_int_range_and_any_str_are_echoed(
    req: Req, good_id: Any
) -> None:
    reply = req.send_raw(pack(envelope(id=good_id)))
    assert reply["id"] == good_id
    assert type(reply["id"]) is type(good_id)
    assert "body" in reply, reply


@pytest.mark.parametrize("version", [2, 0, -1, "1", True, 1.0, None, [1]])
def test_a_protocol_version_other_than_1_gets_unsupported_protocol_version(
    req: Req, version: Any
) -> None:
    error = req.bad(pack(envelope(id="v", v=version)), "v")
    assert "unsupported protocol version" in error["message"]
    req.assert_serving()


@pytest.mark.parametrize(
    "key",
    ["zz", "Method", "params", "ID", b"v", 1, None],
    ids=["zz", "Method", "params", "ID", "bin-v", "int", "nil"],
)
def test_an_unknown_envelope_key_gets_invalid_argument_echoing_the_id(req: Req, key: Any) -> None:
    frame: dict[Any, Any] = envelope(id="unknown-key")
    frame[key] = 1
    req.bad(msgpack.packb(frame, use_bin_type=True, strict_types=False), "unknown-key")
    req.assert_serving()


@pytest.mark.parametrize(
    ("ns", "shown"),
    [("bad ns!", "bad ns!"), ("-x", "-x"), ("x" * 77, "x" * 20), ("a\n", "a"), (5, None)],
    ids=["space-bang", "leading-dash", "77-chars", "newline", "int"],
)
def test_an_invalid_namespace_gets_invalid_argument_for_every_method(
    req: Req, ns: Any, shown: str | None
) -> None:
    for method in (VERSION, LIST, GET, "no.such/Method"):
        error = req.bad(pack(envelope(id="ns", method=method, ns=ns)), "ns")
        if shown is not None:
            assert shown in error["message"], error
    req.assert_serving()


@pytest.mark.parametrize("body", [[], [1], "body", 1, b"body", True, 1.5])
def test_a_body_that_is_not_a_map_gets_invalid_argument(req: Req, body: Any) -> None:
    req.bad(pack(envelope(id="body", body=body)), "body")
    req.assert_serving()


@pytest.mark.parametrize("timeout", [-1, -(2**63), 1.5, 100.0, "100", True, [100], b"1"])
def test_a_timeout_that_is_not_a_non_negative_int_gets_invalid_argument(
    req: Req, timeout: Any
) -> None:
    req.bad(pack(envelope(id="t", timeout_ms=timeout)), "t")
    req.assert_serving()


@pytest.mark.parametrize("cancel", [1, 0, "true", [True], 1.0])
def test_a_cancel_flag_that_is_not_a_bool_gets_invalid_argument(req: Req, cancel: Any) -> None:
    req.bad(pack({"v": 1, "id": "c", "cancel": cancel}), "c")
    req.bad(pack(envelope(id="c", cancel=cancel)), "c")
    req.assert_serving()


def test_a_cancel_for_an_unknown_id_gets_no_reply_and_the_daemon_keeps_serving(
    dealer: Dealer,
) -> None:
    dealer.send({"v": 1, "id": "no-such-stream", "cancel": True})
    dealer.send({"v": 1, "id": 99, "cancel": True})
    assert dealer.nothing_within(300)
    dealer.assert_serving()
    # Nor for the id of a unary call already answered.
    dealer.assert_serving()
    dealer.send({"v": 1, "id": "after", "cancel": True})
    assert dealer.nothing_within(300)
    dealer.assert_serving()


def test_a_cancel_frame_with_cancel_false_and_no_method_gets_invalid_argument(req: Req) -> None:
    req.bad(pack({"v": 1, "id": "c", "cancel": False}), "c")
    req.assert_serving()


# Values inside the frame


@pytest.mark.parametrize(
    "payload",
    [
        # method: a str of invalid UTF-8
        b"\x83\xa1v\x01\xa2id\x01\xa6method\xa3\xff\xfe\xfd",
        # id: a str holding a lone surrogate, as CESU/WTF-8 would send it
        b"\x83\xa1v\x01\xa2id\xa3\xed\xa0\x80\xa6method\xbdcontainerd.v1.Version/Version",
        # a key of the body map
        b"\x84\xa1v\x01\xa2id\x01\xa6method\xbdcontainerd.v1.Version/Version"
        b"\xa4body\x81\xa2\xc3\x28\x01",
        # a value deep in a Create body
        b"\x84\xa1v\x01\xa2id\x01\xa6method\xbfcontainerd.v1.Containers/Create"
        b"\xa4body\x81\xa9container\x82\xa2id\xa3web\xa5image\xa2\x80\x80",
        # a str cut in the middle of a multi-byte sequence
        b"\x83\xa1v\x01\xa2id\xa2\xc3\xa9\xa6method\xa2\xe2\x82",
    ],
    ids=["method", "id-surrogate", "body-key", "deep-value", "cut-sequence"],
)
def test_a_str_that_is_not_valid_utf8_gets_invalid_argument(req: Req, payload: bytes) -> None:
    req.bad(payload, None)
    req.assert_serving()
    req.bad(payload, None)  # and again: nothing was left half-read
    req.assert_serving()


def test_a_str_of_valid_utf8_outside_the_bmp_is_accepted(req: Req) -> None:
    reply = req.send_raw(pack(envelope(id="🐳")))
    assert reply["id"] == "🐳"
    assert "body" in reply


@pytest.mark.parametrize(
    ("depth", "kind"),
    [(10_000, "array"), (10_000, "map"), (100_000, "array"), (200, "array")],
)
def test_a_deeply_nested_body_gets_invalid_argument(
    daemon: DaemonProcess, req: Req, depth: int, kind: str
) -> None:
    head = b"\x91" if kind == "array" else b"\x81\xa1k"
    frame = pack(envelope(id="deep", body={"x": 0}))
    assert frame.endswith(b"\xa1x\x00")
    payload = frame[:-1] + head * depth + b"\x90"
    reply = req.send_raw(payload)
    assert reply["error"]["code"] == "INVALID_ARGUMENT", reply
    # Too deep to decode: the id could not be read. Decodable: unknown field "x".
    assert reply["id"] in (None, "deep")
    if depth <= 200:
        assert reply["id"] == "deep"
        assert '"x"' in reply["error"]["message"]
    req.assert_serving()
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_a_deeply_nested_frame_gets_invalid_argument_with_a_nil_id(req: Req) -> None:
    req.bad(b"\x91" * 10_000 + b"\x90", None)
    req.bad(b"\x81\xa1k" * 10_000 + b"\x90", None)
    req.assert_serving()


def test_a_body_with_a_huge_number_of_keys_gets_invalid_argument_quickly(req: Req) -> None:
    body = {f"k{i}": i for i in range(200_000)}
    start = time.monotonic()
    error = req.bad(pack(envelope(id="wide", method=GET, body=body)), "wide")
    assert time.monotonic() - start < 5
    assert "k0" in error["message"]
    req.assert_serving()


def test_an_array_with_a_huge_declared_length_gets_invalid_argument(req: Req) -> None:
    req.bad(b"\xdd\xff\xff\xff\xff\x00", None)  # array32 of 4 Gi items, 1 given
    req.bad(b"\xdf\xff\xff\xff\xff\x00", None)  # map32 likewise
    req.bad(b"\xc6\xff\xff\xff\xff\x00", None)  # bin32 likewise
    req.assert_serving()


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        (GET, {"id": msgpack.ExtType(5, b"web")}, "id"),
        (GET, {"id": msgpack.Timestamp(1, 0)}, "id"),
        (GET, {msgpack.ExtType(1, b"id"): "web"}, None),
        (
            CREATE,
            {"container": {"id": "web", "spec": SPEC, "labels": {"a": msgpack.ExtType(1, b"")}}},
            "labels",
        ),
        (CREATE, {"container": {"id": "web", "spec": msgpack.ExtType(7, b"{}")}}, "spec"),
        (
            CREATE,
            {"container": {"id": "web", "spec": SPEC, "created_at": msgpack.ExtType(3, b"x")}},
            "created_at",
        ),
    ],
    ids=[
        "ext-5-id",
        "timestamp-as-str",
        "ext-key",
        "ext-label",
        "ext-spec",
        "ext-created-at",
    ],
)
def test_an_ext_type_where_the_schema_has_none_gets_invalid_argument(
    req: Req, method: str, body: dict[Any, Any], field: str | None
) -> None:
    error = req.bad(pack(envelope(id="ext", method=method, ns="ext", body=body)), "ext")
    if field is not None:
        assert field in error["message"], error
    req.assert_serving()


def test_an_ext_type_in_the_envelope_gets_invalid_argument(req: Req) -> None:
    req.bad(pack(envelope(id="e", ns=msgpack.ExtType(1, b"a"))), "e")
    req.bad(pack(envelope(id="e", method=msgpack.ExtType(1, b"a"))), "e")
    req.bad(pack(envelope(id="e", timeout_ms=msgpack.ExtType(1, b"a"))), "e")
    req.bad(pack(envelope(id="e", v=msgpack.ExtType(1, b"\x01"))), "e")
    req.assert_serving()


def test_a_reserved_negative_ext_type_gets_invalid_argument(req: Req) -> None:
    frame = pack(envelope(id="neg", method=GET, body={"id": "web"}))
    for ext in (b"\xd4\xfe\x00", b"\xd5\x80\x00\x00", b"\xc7\x00\xf0"):  # types -2, -128, -16
        reply = req.send_raw(frame.replace(b"\xa3web", ext))
        assert reply["error"]["code"] == "INVALID_ARGUMENT", reply
        assert reply["id"] in (None, "neg")
    req.assert_serving()


def test_a_malformed_timestamp_extension_gets_invalid_argument(req: Req) -> None:
    # ext -1 with a 5-byte payload: no Timestamp form has that length.
    frame = pack(envelope(id="ts", method=GET, body={"id": "web"}))
    bad_ts = b"\xc7\x05\xff\x00\x00\x00\x00\x00"
    payload = frame.replace(b"\xa3web", bad_ts)
    reply = req.send_raw(payload)
    assert reply["error"]["code"] == "INVALID_ARGUMENT"
    assert reply["id"] in (None, "ts")
    req.assert_serving()


@pytest.mark.parametrize(
    ("method", "body", "expected_id"),
    [
        (GET, {1: "web"}, "keys"),
        (GET, {b"id": "web"}, "keys"),
        (GET, {True: "web"}, "keys"),
        (GET, {None: "web"}, "keys"),
        (GET, {1.5: "web"}, "keys"),
        # An array key cannot be decoded into a map at all: the id is unread.
        (LIST, {(1, 2): ""}, None),
        (CREATE, {"container": {"id": "web", "spec": SPEC, "labels": {1: "x"}}}, "keys"),
        (CREATE, {"container": {"id": "web", "spec": SPEC, "labels": {b"k": "x"}}}, "keys"),
        (CREATE, {"container": {b"id": "web", "spec": SPEC}}, "keys"),
        (CREATE, {"container": {"id": "web", "spec": {b"type_url": "x", "value": b""}}}, "keys"),
    ],
    ids=[
        "int",
        "bin",
        "bool",
        "nil",
        "float",
        "array",
        "label-int",
        "label-bin",
        "container-bin",
        "spec-bin",
    ],
)
def test_a_map_key_that_is_not_a_str_in_the_body_gets_invalid_argument(
    req: Req, method: str, body: dict[Any, Any], expected_id: str | None
) -> None:
    req.bad(pack(envelope(id="keys", method=method, body=body)), expected_id)
    req.assert_serving()
    get = envelope(id="get", method=GET, ns="keys", body={"id": "web"})
    assert req.send_raw(pack(get))["error"]["code"] == "NOT_FOUND"


# Frames around the payload


def test_the_last_frame_is_the_payload_and_the_frames_before_it_are_echoed(
    dealer: Dealer,
) -> None:
    first = pack({"v": 1, "id": "first", "method": VERSION})
    second = pack({"v": 1, "id": "second", "method": VERSION})
    dealer.sock.send_multipart([b"", first, second])
    frames = dealer.recv_frames()
    assert frames[:2] == [b"", first]
    assert len(frames) == 3
    reply = unpack(frames[2])
    assert reply["id"] == "second"
    assert "body" in reply
    dealer.assert_serving()


def test_a_bad_last_frame_after_a_good_one_gets_invalid_argument_with_a_nil_id(
    dealer: Dealer,
) -> None:
    good = pack({"v": 1, "id": "good", "method": VERSION})
    dealer.sock.send_multipart([b"", good, b"\xc1"])
    frames = dealer.recv_frames()
    assert frames[:2] == [b"", good]
    reply = unpack(frames[-1])
    assert reply["id"] is None
    assert reply["error"]["code"] == "INVALID_ARGUMENT"
    dealer.assert_serving()


def test_a_dealer_frame_without_the_empty_delimiter_is_answered_without_it(
    dealer: Dealer,
) -> None:
    dealer.sock.send_multipart([pack({"v": 1, "id": "bare", "method": VERSION})])
    frames = dealer.recv_frames()
    assert len(frames) == 1
    assert unpack(frames[0])["id"] == "bare"
    dealer.sock.send_multipart([b""])  # one empty frame: an empty payload, nothing before it
    frames = dealer.recv_frames()
    assert len(frames) == 1
    reply = unpack(frames[0])
    assert reply["id"] is None
    assert reply["error"]["code"] == "INVALID_ARGUMENT"
    dealer.assert_serving()


def test_bad_frames_pipelined_between_good_ones_are_each_answered(dealer: Dealer) -> None:
    payloads = []
    for i in range(20):
        payloads.append(pack({"v": 1, "id": i, "method": VERSION}))
        payloads.append(b"\xc1" if i % 2 else pack([i]))
    for p in payloads:
        dealer.sock.send_multipart([b"", p])
    good, bad = set(), 0
    for _ in payloads:
        reply = dealer.recv()
        if reply["id"] is None:
            assert reply["error"]["code"] == "INVALID_ARGUMENT"
            bad += 1
        else:
            assert "body" in reply
            good.add(reply["id"])
    assert good == set(range(20))
    assert bad == 20
    assert dealer.nothing_within(200)


# Fuzz


def _random_str(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + " ._-/\n\téü✓🐳"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def _random_object(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["int", "bigint", "float", "str", "bin", "bool", "nil", "ts", "ext"]
    if depth < 3:
        kinds += ["array", "map"]
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.randint(-1000, 1000)
    if kind == "bigint":
        return rng.choice([2**64 - 1, -(2**63), 2**32, -(2**31), rng.randint(0, 2**64 - 1)])
    if kind == "float":
        return rng.uniform(-1e9, 1e9)
    if kind == "str":
        return _random_str(rng)
    if kind == "bin":
        return rng.randbytes(rng.randint(0, 16))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "nil":
        return None
    if kind == "ts":
        return msgpack.Timestamp(rng.randint(0, 2**34 - 1), rng.randint(0, 999_999_999))
    if kind == "ext":
        return msgpack.ExtType(rng.randint(0, 127), rng.randbytes(rng.randint(0, 8)))
    if kind == "array":
        return [_random_object(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    # Keys prefixed "k" are never envelope keys, so a random map lacks v, id
    # and method: always a bad frame, never a cancel (which gets no reply).
    return {
        "k" + _random_str(rng): _random_object(rng, depth + 1) for _ in range(rng.randint(0, 4))
    }


def test_random_bytes_and_random_msgpack_each_get_invalid_argument_and_the_daemon_survives(
    daemon: DaemonProcess, req: Req
) -> None:
    rng = random.Random(1234)
    payloads = [rng.randbytes(rng.randint(0, 64)) for _ in range(200)]
    payloads += [pack(_random_object(rng)) for _ in range(200)]
    for payload in payloads:
        reply = req.send_raw(payload)
        assert set(reply) == {"v", "id", "error"}, (payload, reply)
        assert reply["error"]["code"] == "INVALID_ARGUMENT", (payload, reply)
        assert reply["id"] is None, (payload, reply)
    req.assert_serving()
    assert daemon.proc is not None and daemon.proc.poll() is None
