"""Reading OCI-layout and docker-save image archives, and refusing broken ones."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from actors.importer import _named_images
from runtime.image_archive import REF_NAME, chain_ids, read_image_archive
from runtime.layers import apply_layer
from tests.image_archives import (
    NAME,
    busybox_layer,
    config_json,
    docker_archive,
    hostile_archive,
    multi_layers,
    oci_archive,
    write_tar,
)
from wire.errors import InvalidArgument, NotFound

AMD64 = "linux/amd64"


def sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def test_chain_ids_follow_the_oci_image_spec() -> None:
    # Expected values from `printf '%s %s' A B | sha256sum`.
    diff_ids = [sha(b"a"), sha(b"b"), sha(b"c")]
    assert chain_ids(diff_ids) == [
        "sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
        "sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676",
        "sha256:2fce7f8ce91bcf0a1428b36e1024639fdbd9469eea762dba98aa749631885106",
    ]
    assert chain_ids([]) == []


@pytest.mark.parametrize("gzip", [False, True])
def test_an_oci_archive_lists_its_image_with_descriptors_and_chain_ids(
    tmp_path: Path, gzip: bool
) -> None:
    built = oci_archive(tmp_path / "a.tar", multi_layers(gzip))
    archive = read_image_archive(built.path, platform=AMD64)
    assert archive.layout == "oci"
    [image] = archive.images
    assert image.name == NAME
    assert image.target == image.manifest
    assert image.manifest.to_wire() == {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": built.manifest_digest,
        "size": len(built.manifest or b""),
    }
    assert image.config.digest == built.config_digest
    assert [la.diff_id for la in image.layers] == [la.diff_id for la in built.layers]
    assert [la.descriptor.digest for la in image.layers] == [la.digest for la in built.layers]
    assert [la.descriptor.media_type for la in image.layers] == [
        la.oci_media_type for la in built.layers
    ]
    assert list(image.chain_ids) == chain_ids([la.diff_id for la in built.layers])


@pytest.mark.parametrize("gzip", [False, True])
def test_a_docker_save_archive_gets_a_synthesised_schema2_manifest(
    tmp_path: Path, gzip: bool
) -> None:
    built = docker_archive(tmp_path / "d.tar", multi_layers(gzip), repo_tags=["a:1", "b:2"])
    archive = read_image_archive(built.path)
    assert archive.layout == "docker"
    assert [image.name for image in archive.images] == ["a:1", "b:2"]
    image = archive.images[0]
    assert image.target == image.manifest == archive.images[1].manifest
    assert image.manifest.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    with archive.blob(image.manifest.digest).open() as f:
        raw = f.read()
    assert sha(raw) == image.manifest.digest and len(raw) == image.manifest.size
    manifest = json.loads(raw)
    assert manifest["config"] == {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "digest": built.config_digest,
        "size": len(built.config),
    }
    assert [la["mediaType"] for la in manifest["layers"]] == [
        la.docker_media_type for la in built.layers
    ]
    assert [la["digest"] for la in manifest["layers"]] == [la.digest for la in built.layers]
    assert [la.diff_id for la in image.layers] == [la.diff_id for la in built.layers]


@pytest.mark.parametrize("layout", ["oci", "docker"])
def test_every_blob_reads_back_to_its_digest_and_size_children_first(
    tmp_path: Path, layout: str
) -> None:
    build = oci_archive if layout == "oci" else docker_archive
    archive = read_image_archive(build(tmp_path / "x.tar", multi_layers(True)).path)
    image = archive.images[0]
    order = [layer.descriptor.digest for layer in image.layers]
    assert [blob.digest for blob in archive.blobs] == [
        *order,
        image.config.digest,
        image.manifest.digest,
    ]
    for blob in archive.blobs:
        with blob.open() as f:
            data = f.read()
        assert (sha(data), len(data)) == (blob.digest, blob.size)
    with pytest.raises(NotFound):
        archive.blob(sha(b"nothing"))


def test_a_ref_name_that_is_only_a_tag_is_kept_as_written(tmp_path: Path) -> None:
    built = oci_archive(tmp_path / "a.tar", [busybox_layer()], name="latest")
    image = read_image_archive(built.path).images[0]
    assert (image.name, image.name_from) == ("latest", REF_NAME)


def test_the_containerd_image_name_annotation_wins_over_the_ref_name(tmp_path: Path) -> None:
    notes = {"org.opencontainers.image.ref.name": "1.0", "io.containerd.image.name": NAME}
    built = oci_archive(tmp_path / "a.tar", [busybox_layer()], annotations=notes)
    image = read_image_archive(built.path).images[0]
    assert (image.name, image.name_from) == (NAME, "io.containerd.image.name")


# --- the names an import records (actors.importer), normalised ---------------


def test_an_import_records_docker_repo_tags_normalised_as_ctr_import_does(
    tmp_path: Path,
) -> None:
    tags = ["busybox:1.36", "user/app", "localhost:5000/a/b:2", "index.docker.io/library/x:1"]
    built = docker_archive(tmp_path / "d.tar", [busybox_layer()], repo_tags=tags)
    archive = read_image_archive(built.path)
    assert [i.name_from for i in archive.images] == ["RepoTags"] * 4
    assert [n for _, n in _named_images(archive, "", "/d.tar")] == [
        "docker.io/library/busybox:1.36",
        "docker.io/user/app:latest",
        "localhost:5000/a/b:2",
        "docker.io/library/x:1",
    ]


def test_an_import_records_two_tags_of_one_normalised_name_once(tmp_path: Path) -> None:
    tags = ["busybox:1", "docker.io/library/busybox:1"]
    built = docker_archive(tmp_path / "d.tar", [busybox_layer()], repo_tags=tags)
    named = _named_images(read_image_archive(built.path), "", "/d.tar")
    assert [n for _, n in named] == ["docker.io/library/busybox:1"]


def test_an_import_refuses_a_repo_tag_that_is_no_reference(tmp_path: Path) -> None:
    built = docker_archive(tmp_path / "d.tar", [busybox_layer()], repo_tags=["ok:1", "Bad:1"])
    with pytest.raises(InvalidArgument) as caught:
        _named_images(read_image_archive(built.path), "", "/d.tar")
    assert str(caught.value) == (
        'import "/d.tar": RepoTags: reference "Bad:1": repository name must be lowercase'
    )


def test_an_import_normalises_the_requested_name_and_refuses_a_bad_one(tmp_path: Path) -> None:
    archive = read_image_archive(oci_archive(tmp_path / "a.tar", [busybox_layer()]).path)
    assert _named_images(archive, "mine", "/a.tar")[0][1] == "docker.io/library/mine:latest"
    with pytest.raises(InvalidArgument, match=r'name: reference "mine:": tag must not be empty'):
        _named_images(archive, "mine:", "/a.tar")


def test_an_import_normalises_oci_names_and_takes_a_bare_ref_name_tag_as_no_name(
    tmp_path: Path,
) -> None:
    full = oci_archive(tmp_path / "f.tar", [busybox_layer()], name="busybox:1")
    assert _named_images(read_image_archive(full.path), "", "/f.tar")[0][1] == (
        "docker.io/library/busybox:1"
    )
    notes = {"io.containerd.image.name": "busybox"}  # containerd's annotation is a name
    named = oci_archive(tmp_path / "n.tar", [busybox_layer()], annotations=notes)
    assert _named_images(read_image_archive(named.path), "", "/n.tar")[0][1] == (
        "docker.io/library/busybox:latest"
    )
    bare = read_image_archive(oci_archive(tmp_path / "b.tar", [busybox_layer()], name="1.0").path)
    with pytest.raises(InvalidArgument, match="names no image; give a name"):
        _named_images(bare, "", "/b.tar")
    assert _named_images(bare, "busybox:1.0", "/b.tar")[0][1] == "docker.io/library/busybox:1.0"


def test_images_without_names_are_listed_unnamed(tmp_path: Path) -> None:
    oci = oci_archive(tmp_path / "o.tar", [busybox_layer()], name=None)
    docker = docker_archive(tmp_path / "d.tar", [busybox_layer()], repo_tags=[])
    assert [i.name for i in read_image_archive(oci.path).images] == [None]
    assert [i.name for i in read_image_archive(docker.path).images] == [None]


def test_a_nested_index_gives_the_platforms_manifest_and_stays_the_target(tmp_path: Path) -> None:
    built = oci_archive(tmp_path / "a.tar", [busybox_layer()], nested_index=True)
    archive = read_image_archive(built.path, platform=AMD64)
    [image] = archive.images
    assert image.target.media_type == "application/vnd.oci.image.index.v1+json"
    assert image.target.digest == sha(built.target or b"")
    assert image.manifest.digest == built.manifest_digest
    assert archive.blobs[-1].digest == image.target.digest
    with pytest.raises(InvalidArgument, match="no manifest for platform linux/s390x"):
        read_image_archive(built.path, platform="linux/s390x")


def test_applying_an_archives_layers_in_order_gives_the_merged_tree(tmp_path: Path) -> None:
    archive = read_image_archive(oci_archive(tmp_path / "a.tar", multi_layers(True)).path)
    root = tmp_path / "root"
    root.mkdir()
    for layer in archive.images[0].layers:
        blob = archive.blob(layer.descriptor.digest)
        apply_layer(root, blob.open, label=blob.digest, expected_diff_id=layer.diff_id)
    assert (root / "etc/hello").exists() and not (root / "etc/motd").exists()
    assert os.listdir(root / "opt/old") == ["c"]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("digest-mismatch", f"layer {busybox_layer().digest}: content does not match its digest"),
        ("size-mismatch", f"layer {busybox_layer().digest}: size"),
        ("truncated", "not a whole tar archive"),
        ("not-a-tar", "not a whole tar archive"),
    ],
)
def test_a_broken_archive_is_refused_naming_what_is_wrong(
    tmp_path: Path, kind: str, message: str
) -> None:
    built = hostile_archive(tmp_path / "bad.tar", kind)
    with pytest.raises(InvalidArgument) as caught:
        read_image_archive(built.path)
    assert message in caught.value.message


def test_a_missing_archive_is_not_found_and_a_compressed_one_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        read_image_archive(tmp_path / "absent.tar")
    (tmp_path / "a.tar.gz").write_bytes(busybox_layer(gzip=True).blob)
    with pytest.raises(InvalidArgument, match="compressed"):
        read_image_archive(tmp_path / "a.tar.gz")


def test_a_config_whose_diff_ids_do_not_count_the_layers_is_refused(tmp_path: Path) -> None:
    config = config_json(multi_layers())  # two diff_ids
    built = docker_archive(tmp_path / "d.tar", [busybox_layer()], config=config)
    with pytest.raises(InvalidArgument, match="2 diff_ids for 1 layers"):
        read_image_archive(built.path)


def test_an_uncompressed_layer_that_is_not_its_diff_id_is_refused(tmp_path: Path) -> None:
    config = config_json(multi_layers()[1:])  # the upper layer's diff_id for busybox's
    built = docker_archive(tmp_path / "d.tar", [busybox_layer()], config=config)
    with pytest.raises(InvalidArgument, match="not its diff_id"):
        read_image_archive(built.path)


def test_an_unknown_media_type_is_refused_naming_the_blob(tmp_path: Path) -> None:
    def retype(blobs: dict[str, bytes], manifest: dict[str, Any]) -> None:
        manifest["layers"][0]["mediaType"] = "application/x-unknown"

    built = oci_archive(tmp_path / "a.tar", [busybox_layer()], tamper=retype)
    with pytest.raises(InvalidArgument, match=f"layer {busybox_layer().digest}: unsupported"):
        read_image_archive(built.path)


def test_a_config_that_is_not_json_is_refused(tmp_path: Path) -> None:
    built = docker_archive(tmp_path / "d.tar", [busybox_layer()], config=b"{not json")
    with pytest.raises(InvalidArgument, match=f"config {sha(b'{not json')}: not JSON"):
        read_image_archive(built.path)


@pytest.mark.parametrize("name", ["../layer.tar", "/etc/passwd", "x/../../layer.tar"])
def test_a_docker_layer_named_outside_the_archive_is_refused(tmp_path: Path, name: str) -> None:
    built = docker_archive(tmp_path / "d.tar", [busybox_layer()], layer_names=[name])
    with pytest.raises(InvalidArgument, match="points outside the archive"):
        read_image_archive(built.path)


def test_an_archive_that_is_neither_layout_is_refused(tmp_path: Path) -> None:
    write_tar(tmp_path / "x.tar", [("hello.txt", b"hi")])
    with pytest.raises(InvalidArgument, match="neither an OCI image layout"):
        read_image_archive(tmp_path / "x.tar")
