"""The content store: ingests, committed blobs, reads, statuses and stale ingests."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import threading
import time
from typing import Any

import pytest

from runtime.content import ContentStore
from wire.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ExplodingSource:
    """A source that must not be read."""

    def read(self, size: int = -1) -> bytes:
        raise AssertionError("the source was read")


class GatedSource:
    """Hands out ``first``, then blocks until ``release`` is set, then the rest."""

    def __init__(self, first: bytes, rest: bytes) -> None:
        self.parts = [first, rest]
        self.started = threading.Event()
        self.release = threading.Event()

    def read(self, size: int = -1) -> bytes:
        if len(self.parts) == 2:
            self.started.set()
            return self.parts.pop(0)
        if self.parts:
            assert self.release.wait(5)
            return self.parts.pop(0)
        return b""


class Background:
    """Runs an ingest in a thread and keeps its result or error."""

    def __init__(self, store: ContentStore, ref: str, source: Any, **kw: Any) -> None:
        self.result: tuple[str, int] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(store, ref, source, kw))
        self.thread.start()

    def _run(self, store: ContentStore, ref: str, source: Any, kw: dict[str, Any]) -> None:
        try:
            self.result = store.ingest(ref, source, **kw)
        except BaseException as exc:
            self.error = exc

    def join(self) -> None:
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def store(tmp_path):
    return ContentStore(tmp_path)


def ingest_dirs(store: ContentStore) -> list[str]:
    return sorted(os.listdir(store.ingests)) if store.ingests.exists() else []


def test_an_ingest_commits_a_read_only_blob_named_by_its_digest(store):
    before = time.time_ns()
    digest, size = store.ingest("layer-1", io.BytesIO(b"hello"), sha(b"hello"), 5)
    assert (digest, size) == (sha(b"hello"), 5)
    blob = store.blobs / digest.removeprefix("sha256:")
    assert blob.read_bytes() == b"hello"
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    info = store.info(digest)
    assert info["digest"] == digest and info["size"] == 5
    assert before <= info["committed_at_ns"] <= time.time_ns()
    assert store.exists(digest)
    assert ingest_dirs(store) == []


def test_the_same_content_twice_is_stored_once_and_keeps_its_commit_time(store):
    digest, _ = store.ingest("a", io.BytesIO(b"same"))
    committed = store.info(digest)["committed_at_ns"]
    time.sleep(0.01)
    assert store.ingest("b", io.BytesIO(b"same")) == (digest, 4)
    assert store.write(io.BytesIO(b"same")) == (digest, 4)
    assert store.info(digest)["committed_at_ns"] == committed
    assert os.listdir(store.blobs) == [digest.removeprefix("sha256:")]
    assert ingest_dirs(store) == []


def test_an_ingest_of_a_stored_digest_does_not_read_its_source(store):
    digest, _ = store.ingest("a", io.BytesIO(b"stored"))
    assert store.ingest("b", ExplodingSource(), digest, 6) == (digest, 6)
    with pytest.raises(InvalidArgument, match=r'ingest "c".*size 6, expected 7'):
        store.ingest("c", ExplodingSource(), digest, 7)


def test_a_digest_mismatch_names_the_ref_and_both_digests_and_keeps_nothing(store):
    wrong = sha(b"something else")
    with pytest.raises(InvalidArgument) as caught:
        store.ingest("layer-x", io.BytesIO(b"payload"), wrong)
    assert 'ingest "layer-x"' in caught.value.message
    assert wrong in caught.value.message and sha(b"payload") in caught.value.message
    assert store.digests() == set()
    assert ingest_dirs(store) == []
    assert store.statuses() == []


@pytest.mark.parametrize("expected_size", [3, 100])
def test_a_size_mismatch_keeps_neither_blob_nor_ingest(store, expected_size):
    with pytest.raises(InvalidArgument, match=f'ingest "r".*expected {expected_size}'):
        store.ingest("r", io.BytesIO(b"0123456789"), expected_size=expected_size)
    assert store.digests() == set()
    assert ingest_dirs(store) == []


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:" + "A" * 64,
        "sha256:" + "0" * 63,
        "sha512:" + "0" * 128,
        "0" * 64,
        "sha256:" + "0" * 64 + "/../x",
        "",
    ],
)
def test_only_sha256_with_64_lowercase_hex_digits_is_a_digest(store, digest):
    for call in (store.info, store.exists, store.delete, store.read, store.path_of):
        with pytest.raises(InvalidArgument, match="not a sha256 digest"):
            call(digest)
    with pytest.raises(InvalidArgument):
        store.ingest("r", io.BytesIO(b"x"), digest)


def test_a_missing_blob_is_not_found_by_name(store):
    missing = "sha256:" + "0" * 64
    for call in (store.info, store.delete, store.read):
        with pytest.raises(NotFound, match=f'content "{missing}": not found'):
            call(missing)
    assert not store.exists(missing)


def test_list_digests_and_delete_see_committed_blobs_only(store):
    a, _ = store.ingest("a", io.BytesIO(b"aaa"))
    b, _ = store.ingest("b", io.BytesIO(b"bb"))
    (store.blobs / ".ingest-leftover").write_bytes(b"junk")
    assert store.digests() == {a, b}
    assert {(i["digest"], i["size"]) for i in store.list()} == {(a, 3), (b, 2)}
    store.delete(a)
    assert store.digests() == {b}
    with pytest.raises(NotFound):
        store.delete(a)


def test_read_returns_the_asked_range_in_chunks_with_their_offsets(store):
    data = bytes(range(256)) * 40  # 10240 bytes
    digest, _ = store.ingest("r", io.BytesIO(data))
    assert b"".join(d for _, d in store.read(digest)) == data
    chunks = list(store.read(digest, 100, 2500, chunk_size=1000))
    assert [o for o, _ in chunks] == [100, 1100, 2100]
    assert b"".join(d for _, d in chunks) == data[100:2600]
    assert b"".join(d for _, d in store.read(digest, 10000)) == data[10000:]
    assert b"".join(d for _, d in store.read(digest, 10000, 5000)) == data[10000:]
    assert list(store.read(digest, len(data))) == []


def test_read_refuses_negative_values_and_an_offset_beyond_the_end_before_streaming(store):
    digest, _ = store.ingest("r", io.BytesIO(b"short"))
    with pytest.raises(InvalidArgument, match="beyond its size 5"):
        store.read(digest, 6)
    with pytest.raises(InvalidArgument, match="negative"):
        store.read(digest, -1)
    with pytest.raises(InvalidArgument, match="negative"):
        store.read(digest, 0, -1)


def test_a_running_ingest_shows_in_statuses_and_locks_its_ref(store):
    source = GatedSource(b"first-part", b"rest")
    expected = sha(b"first-partrest")
    running = Background(store, "image/layer-1", source, expected_digest=expected, expected_size=14)
    assert source.started.wait(5)
    deadline = time.monotonic() + 5
    while not store.statuses() or store.statuses()[0]["offset"] < 10:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (status,) = store.statuses()
    assert status["ref"] == "image/layer-1"
    assert (status["offset"], status["total"], status["expected"]) == (10, 14, expected)
    assert status["started_at_ns"] <= status["updated_at_ns"]
    assert store.statuses("layer-[0-9]$") == [status]
    assert store.statuses("^other") == []
    with pytest.raises(Unavailable, match='ingest "image/layer-1": locked'):
        store.ingest("image/layer-1", io.BytesIO(b"x"))
    assert store.clean_ingests(0) == []  # a running ingest is never stale
    source.release.set()
    running.join()
    assert running.error is None and running.result == (expected, 14)
    assert store.statuses() == []


def test_an_invalid_status_regexp_is_an_invalid_argument(store):
    with pytest.raises(InvalidArgument, match="regexp"):
        store.statuses("(unclosed")


def test_aborting_a_running_ingest_stops_it_and_keeps_nothing(store):
    source = GatedSource(b"partial", b"more")
    running = Background(store, "doomed", source)
    assert source.started.wait(5)
    store.abort("doomed")
    source.release.set()
    running.join()
    assert isinstance(running.error, FailedPrecondition)
    assert 'ingest "doomed": aborted' in running.error.message
    assert store.digests() == set()
    assert ingest_dirs(store) == []


def crashed_ingest(store: ContentStore, ref: str, data: bytes, age_s: float) -> None:
    """Leave an ingest on disk as a crash would, last written ``age_s`` ago."""
    where = store._ingest_dir(ref)
    where.mkdir(parents=True)
    status = {"ref": ref, "expected": "", "total": 0, "started_at_ns": 1}
    (where / "status.json").write_text(json.dumps(status))
    (where / "data").write_bytes(data)
    then = time.time() - age_s
    for path in (where / "status.json", where / "data", where):
        os.utime(path, (then, then))


def test_clean_ingests_removes_only_ingests_older_than_the_limit(store):
    crashed_ingest(store, "old", b"abc", age_s=3600)
    crashed_ingest(store, "recent", b"de", age_s=1)
    (store.blobs).mkdir(parents=True)
    legacy = store.blobs / ".ingest-xyz"
    legacy.write_bytes(b"junk")
    os.utime(legacy, (time.time() - 3600,) * 2)
    assert [s["ref"] for s in store.statuses()] == ["old", "recent"]
    assert sorted(store.clean_ingests(600)) == [".ingest-xyz", "old"]
    assert [s["ref"] for s in store.statuses()] == ["recent"]
    assert not legacy.exists()


def test_an_ingest_whose_status_is_unreadable_is_cleaned_by_its_directory_name(store):
    where = store.ingests / ("f" * 64)
    where.mkdir(parents=True)
    os.utime(where, (time.time() - 3600,) * 2)
    assert store.statuses() == []
    assert store.clean_ingests(60) == ["f" * 64]
    assert ingest_dirs(store) == []


def test_abort_removes_a_crashed_ingest_and_an_unknown_ref_is_not_found(store):
    crashed_ingest(store, "left", b"abc", age_s=0)
    store.abort("left")
    assert store.statuses() == []
    with pytest.raises(NotFound, match='ingest "left": not found'):
        store.abort("left")


def test_an_ingest_over_a_crashed_one_of_the_same_ref_starts_over(store):
    crashed_ingest(store, "again", b"stale bytes", age_s=0)
    assert store.ingest("again", io.BytesIO(b"fresh")) == (sha(b"fresh"), 5)
    assert store.statuses() == []


def test_write_still_answers_digest_and_size_and_leaves_no_temporaries(store):
    assert store.write(io.BytesIO(b"checkpoint")) == (sha(b"checkpoint"), 10)
    assert store.path_of(sha(b"checkpoint")).read_bytes() == b"checkpoint"
    assert ingest_dirs(store) == []


def test_an_empty_ref_or_a_negative_expected_size_is_refused(store):
    with pytest.raises(InvalidArgument):
        store.ingest("", io.BytesIO(b""))
    with pytest.raises(InvalidArgument, match="negative"):
        store.ingest("r", io.BytesIO(b""), expected_size=-1)
