"""The registry fixtures against the real docker-registry and skopeo.

What the pull/push tests rely on: images pushed from OCI layouts come back
with the media types and digests the layouts hold (or the docker schema 2
ones a conversion makes), basic auth and TLS behave as a registry's do, and
a registry leaves no process or listening port behind.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.rootfs import BUSYBOX
from tests.registry_fixtures import (
    ALICE,
    DOCKER_CONFIG,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Credentials,
    Registry,
    SkopeoFailed,
    auth_skip_reason,
    busybox_layers,
    multi_arch_layout,
    oci_layout,
    port_is_listening,
    push_oci_layout,
    registry_skip_reason,
    sha256,
    skopeo_inspect_raw,
    tls_skip_reason,
)


def _skip_reason() -> str | None:
    if not BUSYBOX.is_file():
        return f"registry fixture tests build images from a static busybox at {BUSYBOX}"
    return registry_skip_reason()


SKIP_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "registry") as reg:
        yield reg


def test_a_two_layer_oci_image_comes_back_with_the_layouts_bytes_and_digests(
    registry: Registry, tmp_path: Path
) -> None:
    layout = oci_layout(tmp_path / "image", busybox_layers(2), tag="1.0")
    image = layout.images[0]

    pushed = push_oci_layout(layout.path, registry, "test/busybox", "1.0")

    assert pushed == layout.digest == image.digest
    media_type, digest, body = registry.manifest("test/busybox", "1.0", accept=OCI_MANIFEST)
    assert (media_type, digest, body) == (OCI_MANIFEST, image.digest, image.manifest)
    assert skopeo_inspect_raw(registry, "test/busybox", "1.0") == image.manifest
    manifest = json.loads(body)
    assert [lay["digest"] for lay in manifest["layers"]] == [lay.digest for lay in image.layers]
    assert len(image.layers) == 2
    for lay in image.layers:
        status, headers, _ = registry.get(f"/v2/test/busybox/blobs/{lay.digest}", method="HEAD")
        assert (status, int(headers["Content-Length"])) == (200, len(lay.blob))
    status, _, config = registry.get(f"/v2/test/busybox/blobs/{image.config_digest}")
    assert (status, config) == (200, image.config)
    # by digest too, and the registry's own file of a blob is where blob_path says
    assert registry.manifest("test/busybox", image.digest)[2] == image.manifest
    assert registry.blob_path(image.layers[1].digest).read_bytes() == image.layers[1].blob


def test_a_multi_arch_index_keeps_its_digest_and_both_platforms(
    registry: Registry, tmp_path: Path
) -> None:
    layout = multi_arch_layout(tmp_path / "multi", tag="multi")

    pushed = push_oci_layout(layout.path, registry, "test/multi", "multi")

    assert pushed == layout.digest
    media_type, digest, body = registry.manifest("test/multi", "multi")
    assert (media_type, digest, body) == (OCI_INDEX, layout.digest, layout.top)
    platforms = {m["platform"]["architecture"]: m["digest"] for m in json.loads(body)["manifests"]}
    assert platforms == {
        "amd64": layout.image("amd64").digest,
        "arm64": layout.image("arm64").digest,
    }
    for arch, child in platforms.items():
        media_type, digest, manifest = registry.manifest("test/multi", child)
        assert (media_type, digest) == (OCI_MANIFEST, child)
        config_digest = json.loads(manifest)["config"]["digest"]
        _, _, config = registry.get(f"/v2/test/multi/blobs/{config_digest}")
        assert json.loads(config)["architecture"] == arch


def test_docker_format_pushes_serve_schema_2_manifests_and_lists(
    registry: Registry, tmp_path: Path
) -> None:
    image_layout = oci_layout(tmp_path / "image", busybox_layers(3), tag="v2")
    index_layout = multi_arch_layout(tmp_path / "multi", tag="v2list")

    pushed = push_oci_layout(image_layout.path, registry, "test/docker", "v2", docker_format=True)
    listed = push_oci_layout(
        index_layout.path, registry, "test/docker", "v2list", docker_format=True
    )

    media_type, digest, body = registry.manifest("test/docker", "v2", accept=DOCKER_MANIFEST)
    assert (media_type, digest) == (DOCKER_MANIFEST, pushed)
    assert sha256(body) == pushed != image_layout.digest
    manifest = json.loads(body)
    assert manifest["config"]["mediaType"] == DOCKER_CONFIG
    assert [(lay["mediaType"], lay["digest"]) for lay in manifest["layers"]] == [
        (lay.docker_media_type, lay.digest) for lay in image_layout.images[0].layers
    ]  # gzip layers are pushed as they are
    media_type, digest, body = registry.manifest("test/docker", "v2list", accept=DOCKER_LIST)
    assert (media_type, digest, sha256(body)) == (DOCKER_LIST, listed, listed)
    children = json.loads(body)["manifests"]
    assert [c["mediaType"] for c in children] == [DOCKER_MANIFEST, DOCKER_MANIFEST]
    assert [c["platform"]["architecture"] for c in children] == ["amd64", "arm64"]


@pytest.mark.skipif(auth_skip_reason() is not None, reason=auth_skip_reason() or "")
def test_basic_auth_refuses_a_wrong_password_and_accepts_the_right_one(tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "image", busybox_layers(1), tag="1.0")
    wrong = Credentials(ALICE.username, "not-" + ALICE.password)
    with Registry(tmp_path / "registry", users=[ALICE]) as registry:
        status, headers, _ = registry.get("/v2/")
        assert status == 401
        assert headers["WWW-Authenticate"].startswith('Basic realm="berth-tests"')
        assert registry.get("/v2/", creds=wrong)[0] == 401
        assert registry.get("/v2/", creds=ALICE)[0] == 200

        with pytest.raises(SkopeoFailed, match=r"(?i)unauthorized|authentication required"):
            push_oci_layout(layout.path, registry, "test/auth", "1.0", creds=wrong)
        pushed = push_oci_layout(layout.path, registry, "test/auth", "1.0", creds=ALICE)

        path = f"/v2/test/auth/manifests/{pushed}"
        assert registry.get(path, accept=OCI_MANIFEST, creds=wrong)[0] == 401
        assert registry.manifest("test/auth", "1.0", creds=ALICE)[1] == pushed


@pytest.mark.skipif(tls_skip_reason() is not None, reason=tls_skip_reason() or "")
def test_a_tls_registry_is_trusted_through_its_test_ca_only(tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "image", busybox_layers(1), tag="1.0")
    with Registry(tmp_path / "registry", tls=True) as registry:
        assert registry.url.startswith("https://127.0.0.1:")
        assert registry.ca is not None
        assert registry.get("/v2/")[0] == 200  # verified against the test CA

        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(registry.url + "/v2/", context=ssl.create_default_context())
        pushed = push_oci_layout(layout.path, registry, "test/tls", "1.0")
        assert registry.manifest("test/tls", "1.0")[1] == pushed == layout.digest


def test_the_registry_leaves_no_process_or_port_behind_and_restarts_on_its_storage(
    tmp_path: Path,
) -> None:
    layout = oci_layout(tmp_path / "image", busybox_layers(1), tag="1.0")
    with Registry(tmp_path / "registry") as registry:
        push_oci_layout(layout.path, registry, "test/keep", "1.0")
        port, first = registry.port, registry.pid
        assert first is not None and port_is_listening(port)

        registry.kill()  # as a fault test would, mid-transfer
        assert not port_is_listening(port)
        registry.start()
        assert registry.port == port and registry.pid != first
        assert registry.manifest("test/keep", "1.0")[1] == layout.digest
        second = registry.pid
    assert registry.proc is None
    for pid in (first, second):
        assert pid is not None
        assert not os.path.exists(f"/proc/{pid}"), f"registry pid {pid} still exists"
    assert not port_is_listening(port)
