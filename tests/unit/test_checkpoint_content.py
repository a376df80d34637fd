"""Checkpoint images stored as content-addressed blobs, and unpacked again."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from runtime.checkpoint import CHECKPOINT_MEDIA_TYPE, store_checkpoint, unpack_checkpoint
from runtime.content import ContentStore
from wire.errors import InvalidArgument, NotFound


def test_a_checkpoint_image_round_trips_through_a_sha256_blob(tmp_path):
    image = tmp_path / "image"
    image.mkdir()
    (image / "core-1.img").write_bytes(b"core")
    (image / "pstree.img").write_bytes(b"tree")
    content = ContentStore(tmp_path / "root")
    desc = store_checkpoint(image, content)
    blob = content.path_of(desc["digest"])
    assert desc["media_type"] == CHECKPOINT_MEDIA_TYPE
    assert desc["size"] == blob.stat().st_size
    assert desc["digest"] == "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
    out = tmp_path / "restored"
    unpack_checkpoint(desc["digest"], content, out)
    assert (out / "core-1.img").read_bytes() == b"core"
    assert sorted(p.name for p in out.iterdir()) == ["core-1.img", "pstree.img"]


def test_a_missing_or_malformed_digest_is_refused(tmp_path):
    content = ContentStore(tmp_path)
    with pytest.raises(NotFound):
        content.path_of("sha256:" + "0" * 64)
    with pytest.raises(InvalidArgument):
        content.path_of("md5:abc")


def test_a_checkpoint_blob_with_a_path_outside_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    buf.seek(0)
    content = ContentStore(tmp_path)
    digest, _ = content.write(buf)
    with pytest.raises(InvalidArgument, match="evil"):
        unpack_checkpoint(digest, content, tmp_path / "out")
    assert not (tmp_path / "evil").exists()


def test_the_checkpoint_digest_is_held_before_its_blob_is_stored(tmp_path):
    image = tmp_path / "image"
    image.mkdir()
    (image / "core-1.img").write_bytes(b"core")
    content = ContentStore(tmp_path / "root")
    held: list[tuple[str, bool]] = []

    def hold(digest: str) -> None:
        held.append((digest, content.exists(digest)))

    descriptor = store_checkpoint(image, content, hold=hold)
    assert held == [(descriptor["digest"], False)]
    assert content.exists(descriptor["digest"])
