"""containerd.v1.Content and containerd.v1.Images against a real berthd.

Content cannot be written over the wire (containerd's ``Write`` is not
part of berth's API), so blobs get into a namespace in one of two ways:

- seeded: before the module's daemon starts, blobs are written with
  :class:`runtime.content.ContentStore` under its root and recorded in
  namespaces through :class:`actors.store.Store`, each record labelled
  ``containerd.io/gc.root`` so the collection the daemon runs at start-up
  keeps it;
- imported: ``berth.v1.Images/Import`` of a test archive, which also
  checks that deleting the image collects what only it used.

One daemon serves the module (faster, and it must keep serving after
every malformed request); each test uses namespaces of its own, except
the read-only checks of the seeded ones.
"""

from __future__ import annotations

import functools
import hashlib
import io
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

import berth
from actors.content_reader import READ_CHUNK
from actors.image_records import GC_ROOT_LABEL, add_content
from actors.store import Store
from runtime.content import ContentStore
from tests.image_archives import busybox_layer, oci_archive
from tests.integration.conftest import DaemonProcess, make_daemon
from wire.codec import now

CONTENT = "containerd.v1.Content/"
IMAGES = "containerd.v1.Images/"
MIB = 1 << 20

# Seeded blobs: BIG spans three 1 MiB read chunks; SHARED is held by two
# namespaces; MANY fills more than one List frame; the DOOMED ones are deleted.
BIG = bytes(range(256)) * (10 * 1024 + 7)  # 2,623,232 bytes: 2.5 MiB and a bit
SHARED = b"held by two namespaces\n"
DOOMED_ALONE = b"deleted from its only namespace\n"
DOOMED_SHARED = b"deleted from one of two namespaces\n"
EMPTY = b""
MANY = [f"blob {i}\n".encode() for i in range(130)]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


SEEDS: dict[str, list[bytes]] = {
    "seeded": [BIG, SHARED, EMPTY],
    "seeded-other": [SHARED],
    "doomed-a": [DOOMED_ALONE, DOOMED_SHARED],
    "doomed-b": [DOOMED_SHARED],
    "many": MANY,
}


def seed(root: Path) -> None:
    """Write the blobs of SEEDS under ``root`` and record them in their namespaces."""
    content = ContentStore(root)
    for blobs in SEEDS.values():
        for data in blobs:
            content.ingest(f"seed-{sha(data)}", io.BytesIO(data), sha(data), len(data))
    store = Store(root / "meta")
    try:
        with store.env.begin(write=True) as txn:
            for ns, blobs in SEEDS.items():
                digests = [sha(data) for data in blobs]
                add_content(txn, store, ns, digests, now(), labels={GC_ROOT_LABEL: "test"})
    finally:
        store.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One berthd for the module, started on a root seeded with SEEDS."""
    d = make_daemon(tmp_path_factory.mktemp("content-images"))
    seed(d.root)
    d.start()
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
def client(daemon: DaemonProcess) -> Iterator[berth.Client]:
    assert daemon.proc is not None and daemon.proc.poll() is None, "berthd died"
    with berth.Client(daemon.address, timeout=30) as c:
        yield c


def read(client: berth.Client, ns: str, digest: str, **body: Any) -> list[dict[str, Any]]:
    """Every frame body of a Content/Read."""
    return list(client.stream(CONTENT + "Read", {"digest": digest, **body}, namespace=ns))


def data_of(frames: list[dict[str, Any]]) -> bytes:
    return b"".join(f["data"] for f in frames)


def listed(client: berth.Client, ns: str) -> list[list[dict[str, Any]]]:
    """The ``info`` batches of a Content/List, one per frame."""
    return [f["info"] for f in client.stream(CONTENT + "List", {}, namespace=ns)]


def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def not_found(client: berth.Client, method: str, body: dict[str, Any], ns: str) -> bool:
    try:
        client.call(method, body, namespace=ns)
    except berth.NotFound:
        return True
    return False


class Raw:
    """A DEALER socket speaking the wire protocol by hand, to see every frame."""

    def __init__(self, address: str) -> None:
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 10_000)
        self.sock.connect(address)
        self.ids = iter(range(1, 1 << 30))

    def frames(self, method: str, body: Any, ns: str = "default") -> list[dict[str, Any]]:
        """Send one request; every frame answering it, up to the terminal one."""
        request_id = next(self.ids)
        request = {"v": 1, "id": request_id, "method": method, "ns": ns, "body": body}
        self.sock.send_multipart([b"", msgpack.packb(request, use_bin_type=True)])
        out: list[dict[str, Any]] = []
        while True:
            frame = msgpack.unpackb(self.sock.recv_multipart()[-1], raw=False)
            assert frame["id"] == request_id, frame
            out.append(frame)
            if "more" not in frame and "ready" not in frame:
                return out

    def close(self) -> None:
        self.sock.close(linger=0)


@pytest.fixture
def raw(daemon: DaemonProcess) -> Iterator[Raw]:
    sock = Raw(daemon.address)
    try:
        yield sock
    finally:
        sock.close()


def target(
    data: bytes = b"{}", media_type: str = "application/vnd.oci.image.manifest.v1+json"
) -> dict[str, Any]:
    return {"media_type": media_type, "digest": sha(data), "size": len(data)}


def image(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "labels": {}, "target": target(), **fields}


# --- Images ---------------------------------------------------------------


def test_put_then_get_returns_the_image_with_its_labels_and_times(client: berth.Client) -> None:
    ns = "img-roundtrip"
    labels = {"a": "1", "example.com/tier": "web", "dropped": ""}
    assert client.call(IMAGES + "Put", {"image": image("app:1", labels=labels)}, namespace=ns) == {}
    got = client.call(IMAGES + "Get", {"name": "app:1"}, namespace=ns)["image"]
    assert set(got) == {"name", "labels", "target", "created_at", "updated_at"}
    assert got["name"] == "app:1"
    assert got["labels"] == {"a": "1", "example.com/tier": "web"}  # empty value dropped
    assert got["target"] == target()
    assert isinstance(got["created_at"], msgpack.Timestamp)
    assert got["updated_at"] == got["created_at"]


def test_put_of_an_existing_name_replaces_it_and_keeps_created_at(client: berth.Client) -> None:
    ns = "img-replace"
    client.call(IMAGES + "Put", {"image": image("app", labels={"v": "1"})}, namespace=ns)
    first = client.call(IMAGES + "Get", {"name": "app"}, namespace=ns)["image"]
    replaced = image("app", labels={"v": "2"}, target=target(b"other"))
    client.call(IMAGES + "Put", {"image": replaced}, namespace=ns)
    second = client.call(IMAGES + "Get", {"name": "app"}, namespace=ns)["image"]
    assert second["labels"] == {"v": "2"}
    assert second["target"] == target(b"other")
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"].to_unix_nano() > first["updated_at"].to_unix_nano()


def test_created_at_and_updated_at_given_on_put_are_ignored(client: berth.Client) -> None:
    ns = "img-times"
    epoch = msgpack.Timestamp(0, 0)
    client.call(
        IMAGES + "Put",
        {"image": image("app", created_at=epoch, updated_at=epoch)},
        namespace=ns,
    )
    got = client.call(IMAGES + "Get", {"name": "app"}, namespace=ns)["image"]
    assert got["created_at"] != epoch and got["updated_at"] != epoch


def test_list_gives_the_namespace_images_in_name_order_in_one_reply(
    client: berth.Client,
) -> None:
    ns = "img-list"
    assert client.call(IMAGES + "List", {}, namespace=ns)["images"] == []
    for name in ("b:2", "a:1", "docker.io/library/c:latest"):
        client.call(IMAGES + "Put", {"image": image(name)}, namespace=ns)
    client.call(IMAGES + "Put", {"image": image("elsewhere")}, namespace="img-list-other")
    images = client.call(IMAGES + "List", {}, namespace=ns)["images"]
    assert [i["name"] for i in images] == ["a:1", "b:2", "docker.io/library/c:latest"]


def test_images_belong_to_their_namespace(client: berth.Client) -> None:
    client.call(IMAGES + "Put", {"image": image("mine")}, namespace="img-ns-a")
    with pytest.raises(berth.NotFound, match='image "mine": not found'):
        client.call(IMAGES + "Get", {"name": "mine"}, namespace="img-ns-b")
    with pytest.raises(berth.NotFound):
        client.call(IMAGES + "Delete", {"name": "mine"}, namespace="img-ns-b")
    assert client.call(IMAGES + "Get", {"name": "mine"}, namespace="img-ns-a")["image"]


def test_delete_removes_the_image_and_a_second_delete_is_not_found(
    client: berth.Client,
) -> None:
    ns = "img-delete"
    client.call(IMAGES + "Put", {"image": image("gone")}, namespace=ns)
    assert client.call(IMAGES + "Delete", {"name": "gone"}, namespace=ns) == {}
    with pytest.raises(berth.NotFound, match='image "gone": not found'):
        client.call(IMAGES + "Get", {"name": "gone"}, namespace=ns)
    with pytest.raises(berth.NotFound, match='image "gone": not found'):
        client.call(IMAGES + "Delete", {"name": "gone"}, namespace=ns)


def test_get_of_an_unknown_image_is_not_found(client: berth.Client) -> None:
    with pytest.raises(berth.NotFound, match='image "nope:1": not found'):
        client.call(IMAGES + "Get", {"name": "nope:1"}, namespace="img-unknown")


@pytest.mark.parametrize(
    "name",
    ["", "bad\nname", "tab\there", "del\x7f", "x" * 4097],
    ids=["empty", "newline", "tab", "del", "too-long"],
)
@pytest.mark.parametrize("method", ["Get", "Delete", "Put"])
def test_a_bad_image_name_is_invalid_argument_in_every_method(
    client: berth.Client, method: str, name: str
) -> None:
    body = {"image": image(name)} if method == "Put" else {"name": name}
    with pytest.raises(berth.InvalidArgument, match="image name"):
        client.call(IMAGES + method, body, namespace="img-bad-names")


@pytest.mark.parametrize(
    ("bad_target", "why"),
    [
        (None, "target must be set"),
        ({**target(), "digest": "sha256:abc"}, "not a sha256 digest"),
        ({**target(), "digest": "md5:" + "0" * 32}, "not a sha256 digest"),
        ({**target(), "digest": sha(b"x").upper()}, "not a sha256 digest"),
        ({**target(), "media_type": ""}, "media_type must be set"),
        ({**target(), "size": -1}, "size must not be negative"),
    ],
    ids=["absent", "short", "md5", "uppercase", "no-media-type", "negative-size"],
)
def test_put_with_a_bad_target_is_invalid_argument(
    client: berth.Client, bad_target: dict[str, Any] | None, why: str
) -> None:
    ns = "img-bad-target"
    with pytest.raises(berth.InvalidArgument, match=why):
        client.call(IMAGES + "Put", {"image": image("app", target=bad_target)}, namespace=ns)
    with pytest.raises(berth.NotFound):
        client.call(IMAGES + "Get", {"name": "app"}, namespace=ns)


@pytest.mark.parametrize(
    ("labels", "why"),
    [({"": "v"}, "label key must not be empty"), ({"k": "v" * 4096}, "over the limit")],
    ids=["empty-key", "too-big"],
)
def test_put_with_bad_labels_is_invalid_argument(
    client: berth.Client, labels: dict[str, str], why: str
) -> None:
    with pytest.raises(berth.InvalidArgument, match=why):
        client.call(IMAGES + "Put", {"image": image("app", labels=labels)}, namespace="img-labels")


def test_put_without_an_image_is_invalid_argument(client: berth.Client) -> None:
    with pytest.raises(berth.InvalidArgument, match="image: must be set"):
        client.call(IMAGES + "Put", {}, namespace="img-none")


# --- Content: Info, Read ----------------------------------------------------


def test_info_gives_digest_size_and_commit_time(client: berth.Client) -> None:
    info = client.call(CONTENT + "Info", {"digest": sha(BIG)}, namespace="seeded")["info"]
    assert set(info) == {"digest", "size", "committed_at"}
    assert info["digest"] == sha(BIG)
    assert info["size"] == len(BIG)
    assert isinstance(info["committed_at"], msgpack.Timestamp)
    assert abs(info["committed_at"].to_unix_nano() / 1e9 - time.time()) < 3600


def test_info_of_a_blob_the_namespace_does_not_hold_is_not_found(client: berth.Client) -> None:
    # BIG is stored, but only "seeded" holds it.
    with pytest.raises(berth.NotFound, match=f'content "{sha(BIG)}": not found'):
        client.call(CONTENT + "Info", {"digest": sha(BIG)}, namespace="seeded-other")
    with pytest.raises(berth.NotFound):
        client.call(CONTENT + "Info", {"digest": sha(b"never stored")}, namespace="seeded")


def test_a_blob_held_by_two_namespaces_is_listed_in_both(client: berth.Client) -> None:
    for ns in ("seeded", "seeded-other"):
        info = client.call(CONTENT + "Info", {"digest": sha(SHARED)}, namespace=ns)["info"]
        assert info["size"] == len(SHARED)
        assert data_of(read(client, ns, sha(SHARED))) == SHARED


@pytest.mark.parametrize(
    "digest",
    ["", "sha256:abc", "sha256:" + "G" * 64, "sha512:" + "0" * 128, sha(b"x") + "\n"],
    ids=["empty", "short", "not-hex", "sha512", "trailing-newline"],
)
@pytest.mark.parametrize("method", ["Info", "Delete", "Read"])
def test_a_malformed_digest_is_invalid_argument(
    client: berth.Client, method: str, digest: str
) -> None:
    with pytest.raises(berth.InvalidArgument, match="not a sha256 digest"):
        if method == "Read":
            read(client, "seeded", digest)
        else:
            client.call(CONTENT + method, {"digest": digest}, namespace="seeded")


def test_read_of_a_whole_blob_comes_in_chunks_of_at_most_256_kib(client: berth.Client) -> None:
    frames = read(client, "seeded", sha(BIG))
    assert data_of(frames) == BIG
    assert all(set(f) == {"offset", "data"} for f in frames)
    assert all(0 < len(f["data"]) <= READ_CHUNK for f in frames)
    assert len(frames) == -(-len(BIG) // READ_CHUNK)
    offsets = [f["offset"] for f in frames]
    assert offsets == list(range(0, len(BIG), READ_CHUNK))


@pytest.mark.parametrize(
    ("offset", "size"),
    [
        (0, 10),
        (5, 0),  # size 0: to the end
        (MIB - 3, 10),  # across a chunk boundary
        (1000, 2 * MIB),  # three chunks
        (len(BIG) - 10, 100),  # past the end: cut at the end
        (len(BIG) - 1, 0),
    ],
)
def test_read_of_a_range_gives_exactly_those_bytes(
    client: berth.Client, offset: int, size: int
) -> None:
    frames = read(client, "seeded", sha(BIG), offset=offset, size=size)
    end = len(BIG) if size == 0 else min(len(BIG), offset + size)
    assert data_of(frames) == BIG[offset:end]
    assert frames[0]["offset"] == offset
    position = offset
    for frame in frames:  # contiguous, in order
        assert frame["offset"] == position
        position += len(frame["data"])


def test_read_at_the_very_end_or_of_an_empty_blob_sends_no_data(client: berth.Client) -> None:
    assert read(client, "seeded", sha(BIG), offset=len(BIG)) == []
    assert read(client, "seeded", sha(EMPTY)) == []


def test_read_with_offset_past_the_end_gets_only_an_error_frame(raw: Raw) -> None:
    body = {"digest": sha(BIG), "offset": len(BIG) + 1}
    frames = raw.frames(CONTENT + "Read", body, ns="seeded")
    assert len(frames) == 1, frames  # no ready: the stream never was in place
    assert frames[0]["error"]["code"] == "INVALID_ARGUMENT"
    assert "beyond its size" in frames[0]["error"]["message"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"digest": sha(BIG)}, "NOT_FOUND"),  # held by another namespace only
        ({"digest": sha(b"never stored")}, "NOT_FOUND"),
        ({"digest": sha(SHARED), "offset": -1}, "INVALID_ARGUMENT"),
        ({"digest": sha(SHARED), "size": -1}, "INVALID_ARGUMENT"),
    ],
    ids=["other-namespace", "unknown", "negative-offset", "negative-size"],
)
def test_read_refused_before_the_stream_gets_only_an_error_frame(
    raw: Raw, body: dict[str, Any], code: str
) -> None:
    frames = raw.frames(CONTENT + "Read", body, ns="seeded-other")
    assert [f.get("error", {}).get("code") for f in frames] == [code], frames


def test_read_stream_frames_are_ready_more_then_end(raw: Raw) -> None:
    frames = raw.frames(CONTENT + "Read", {"digest": sha(SHARED)}, ns="seeded")
    assert frames[0] == {"v": 1, "id": frames[0]["id"], "ready": True}
    assert frames[1]["more"] is True and frames[1]["body"] == {"offset": 0, "data": SHARED}
    assert frames[2] == {"v": 1, "id": frames[0]["id"], "end": True}


def test_a_read_left_early_is_cancelled_and_the_daemon_keeps_serving(
    client: berth.Client,
) -> None:
    stream = client.stream(CONTENT + "Read", {"digest": sha(BIG)}, namespace="seeded")
    first = next(stream)
    assert first["offset"] == 0 and len(first["data"]) == READ_CHUNK
    stream.close()  # cancels on the daemon
    assert data_of(read(client, "seeded", sha(SHARED))) == SHARED


def test_concurrent_reads_each_get_their_own_bytes(daemon: DaemonProcess) -> None:
    results: list[bytes] = [b""] * 4
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with berth.Client(daemon.address, timeout=60) as c:
                results[i] = data_of(read(c, "seeded", sha(BIG), offset=i))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    assert results == [BIG[i:] for i in range(4)]


# --- Content: List ----------------------------------------------------------


def test_list_streams_the_namespace_blobs_in_batches(client: berth.Client) -> None:
    batches = listed(client, "many")
    assert len(batches) >= 2  # 130 entries do not fit one frame
    assert all(0 < len(batch) <= 100 for batch in batches)
    infos = [info for batch in batches for info in batch]
    assert sorted(i["digest"] for i in infos) == sorted(sha(d) for d in MANY)
    sizes = {sha(d): len(d) for d in MANY}
    assert all(i["size"] == sizes[i["digest"]] for i in infos)
    assert all(isinstance(i["committed_at"], msgpack.Timestamp) for i in infos)


def test_list_shows_only_what_the_namespace_holds(client: berth.Client) -> None:
    infos = [i for batch in listed(client, "seeded-other") for i in batch]
    assert [i["digest"] for i in infos] == [sha(SHARED)]
    assert listed(client, "content-empty-ns") == []


# --- Content: Delete --------------------------------------------------------


def test_delete_from_one_namespace_leaves_the_blob_to_the_others(
    client: berth.Client, daemon: DaemonProcess
) -> None:
    digest = sha(DOOMED_SHARED)
    assert client.call(CONTENT + "Delete", {"digest": digest}, namespace="doomed-b") == {}
    with pytest.raises(berth.NotFound, match=f'content "{digest}": not found'):
        client.call(CONTENT + "Info", {"digest": digest}, namespace="doomed-b")
    with pytest.raises(berth.NotFound):
        client.call(CONTENT + "Delete", {"digest": digest}, namespace="doomed-b")
    time.sleep(0.5)  # a sweep after the commit must not take it from doomed-a
    assert data_of(read(client, "doomed-a", digest)) == DOOMED_SHARED
    assert ContentStore(daemon.root).exists(digest)


def test_delete_from_the_only_namespace_removes_the_blob(
    client: berth.Client, daemon: DaemonProcess
) -> None:
    digest = sha(DOOMED_ALONE)
    assert client.call(CONTENT + "Delete", {"digest": digest}, namespace="doomed-a") == {}
    with pytest.raises(berth.NotFound):
        client.call(CONTENT + "Info", {"digest": digest}, namespace="doomed-a")
    eventually(lambda: not ContentStore(daemon.root).exists(digest))


def test_delete_of_a_blob_the_namespace_does_not_hold_is_not_found(
    client: berth.Client, daemon: DaemonProcess
) -> None:
    with pytest.raises(berth.NotFound, match=f'content "{sha(BIG)}": not found'):
        client.call(CONTENT + "Delete", {"digest": sha(BIG)}, namespace="seeded-other")
    assert ContentStore(daemon.root).exists(sha(BIG))


# --- Content: Status --------------------------------------------------------


@dataclass
class Gate:
    """A source that gives its first chunk, then blocks until opened."""

    first: bytes
    opened: threading.Event
    given: threading.Event
    sent: bool = False

    def read(self, size: int = -1, /) -> bytes:
        if not self.sent:
            self.sent = True
            return self.first
        self.given.set()
        self.opened.wait(30)
        return b""


def test_status_lists_ingests_in_progress_matching_the_regexp(
    client: berth.Client, daemon: DaemonProcess
) -> None:
    # An ingest running in this process writes under the daemon's root;
    # ingests are daemon-wide files, so Status sees it from any namespace.
    data = b"partial ingest\n"
    gate = Gate(data, threading.Event(), threading.Event())
    ref = "test-status/layer-1"
    store = ContentStore(daemon.root)
    worker = threading.Thread(
        target=store.ingest, args=(ref, gate, sha(data), len(data)), daemon=True
    )
    worker.start()
    try:
        assert gate.given.wait(10)
        statuses = client.call(CONTENT + "Status", {"regexp": "^test-status/"})["statuses"]
        assert len(statuses) == 1
        status = statuses[0]
        assert set(status) == {"ref", "offset", "total", "expected", "started_at", "updated_at"}
        assert status["ref"] == ref
        assert status["offset"] == len(data)
        assert status["total"] == len(data)
        assert status["expected"] == sha(data)
        assert isinstance(status["started_at"], msgpack.Timestamp)
        assert isinstance(status["updated_at"], msgpack.Timestamp)
        everything = client.call(CONTENT + "Status", {}, namespace="other")["statuses"]
        assert ref in [s["ref"] for s in everything]
        none = client.call(CONTENT + "Status", {"regexp": "layer-2$"})["statuses"]
        assert none == []
    finally:
        gate.opened.set()
        worker.join(10)
    assert client.call(CONTENT + "Status", {"regexp": "^test-status/"}) == {"statuses": []}


def test_status_with_an_invalid_regexp_is_invalid_argument(client: berth.Client) -> None:
    for pattern in ["(", "a{2,1}", r"(a)\1"]:  # unbalanced, bad repeat, backreference
        with pytest.raises(berth.InvalidArgument, match="regexp"):
            client.call(CONTENT + "Status", {"regexp": pattern})


# --- Import, then collection on image delete -------------------------------


def test_imported_image_content_is_listed_and_collected_when_the_image_goes(
    client: berth.Client, tmp_path: Path
) -> None:
    ns = "imported"
    built = oci_archive(tmp_path / "busybox.tar", [busybox_layer(gzip=False)], name="busybox:test")
    try:
        client.call("berth.v1.Images/Import", {"path": str(built.path)}, namespace=ns)
    except berth.Unimplemented:
        pytest.skip("berth.v1.Images/Import is not served by this daemon yet")
    assert built.manifest is not None
    layer = built.layers[0]
    blobs = {
        built.manifest_digest: built.manifest,
        built.config_digest: built.config,
        layer.digest: layer.blob,
    }
    held = {i["digest"]: i["size"] for batch in listed(client, ns) for i in batch}
    assert held == {digest: len(data) for digest, data in blobs.items()}
    for digest, data in blobs.items():
        assert data_of(read(client, ns, digest)) == data
    stored = "docker.io/library/busybox:test"  # imports record names normalised
    got = client.call(IMAGES + "Get", {"name": stored}, namespace=ns)["image"]
    assert got["target"]["digest"] == built.manifest_digest
    assert [i["name"] for i in client.call(IMAGES + "List", {}, namespace=ns)["images"]] == [stored]

    client.call(IMAGES + "Delete", {"name": stored}, namespace=ns)
    # The collection the delete starts forgets the blobs only the image used.
    for digest in blobs:
        eventually(functools.partial(not_found, client, CONTENT + "Info", {"digest": digest}, ns))
    assert listed(client, ns) == []


# --- Malformed input ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        (CONTENT + "Info", {"digest": 1}, "digest"),
        (CONTENT + "Info", {"digest": b"sha256:00"}, "digest"),
        (CONTENT + "Info", {"digest": sha(BIG), "extra": 1}, "extra"),
        (CONTENT + "Delete", {"digest": None}, "digest"),
        (CONTENT + "Read", {"digest": sha(BIG), "offset": "0"}, "offset"),
        (CONTENT + "Read", {"digest": sha(BIG), "size": 2**63}, "size"),
        (CONTENT + "Read", {"digest": sha(BIG), "offset": 1.5}, "offset"),
        (CONTENT + "Read", {"digest": sha(BIG), "size": True}, "size"),
        (CONTENT + "List", {"filters": []}, "filters"),
        (CONTENT + "Status", {"regexp": ["a"]}, "regexp"),
        (IMAGES + "Get", {"name": 7}, "name"),
        (IMAGES + "List", {"filter": ""}, "filter"),
        (IMAGES + "Put", {"image": "busybox"}, "image"),
        (IMAGES + "Put", {"image": {**image("a"), "labels": {"k": 1}}}, "image.labels.k"),
        (IMAGES + "Put", {"image": {**image("a"), "labels": ["k"]}}, "image.labels"),
        (IMAGES + "Put", {"image": {**image("a"), "target": {"size": "1"}}}, "image.target.size"),
        (IMAGES + "Put", {"image": {**image("a"), "created_at": 5}}, "image.created_at"),
        (IMAGES + "Put", {"image": {**image("a"), "id": "a"}}, "image.id"),
        (IMAGES + "Delete", {"name": {"n": "a"}}, "name"),
    ],
)
def test_wrong_types_are_invalid_argument_and_the_daemon_keeps_serving(
    raw: Raw, method: str, body: dict[str, Any], field: str
) -> None:
    frames = raw.frames(method, body, ns="malformed")
    assert len(frames) == 1, frames  # a stream refused before ``ready`` too
    error = frames[0]["error"]
    assert error["code"] == "INVALID_ARGUMENT", error
    assert f'field "{field}"' in error["message"]
    # Same connection, still served.
    assert raw.frames(IMAGES + "List", {}, ns="malformed")[0]["body"]["images"] == []
    version = raw.frames("containerd.v1.Version/Version", {})[0]
    assert "version" in version["body"]


def test_a_body_that_is_not_a_map_is_invalid_argument(raw: Raw) -> None:
    for method in (CONTENT + "Info", CONTENT + "Read", IMAGES + "Put"):
        frames = raw.frames(method, ["not", "a", "map"])
        assert frames[0]["error"]["code"] == "INVALID_ARGUMENT", frames
    assert raw.frames(IMAGES + "List", {})[0]["body"]["images"] == []
