"""runtime.registry_client against a real docker-registry filled by skopeo."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from runtime.reference import parse_reference
from runtime.registry_client import RegistryClient
from runtime.rootfs import BUSYBOX
from tests.registry_fixtures import (
    ALICE,
    OCI_INDEX,
    OCI_MANIFEST,
    Layout,
    Registry,
    auth_skip_reason,
    busybox_layers,
    free_port,
    multi_arch_layout,
    oci_layout,
    push_oci_layout,
    registry_skip_reason,
    tls_skip_reason,
)
from wire.errors import InvalidArgument, NotFound, Unauthenticated, Unavailable


def _skip_reason() -> str | None:
    if not BUSYBOX.is_file():
        return f"registry client tests build images from a static busybox at {BUSYBOX}"
    return registry_skip_reason()


SKIP_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


@dataclass
class Filled:
    registry: Registry
    image: Layout
    index: Layout


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    root = tmp_path_factory.mktemp("registry-client")
    with Registry(root / "registry") as reg:
        image = oci_layout(root / "img", busybox_layers(2), tag="1.0")
        push_oci_layout(image.path, reg, "test/busybox", "1.0")
        index = multi_arch_layout(root / "multi", tag="multi")
        push_oci_layout(index.path, reg, "test/multi", "multi")
        yield Filled(reg, image, index)


@pytest.fixture
def client(filled: Filled) -> Iterator[RegistryClient]:
    with RegistryClient(filled.registry.host, timeout=10) as c:
        yield c


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_tag_resolves_to_the_pushed_manifest_over_loopback_plain_http(filled, client):
    # no plain_http given: https is tried first, the registry speaks http, loopback falls back
    desc, body = client.resolve(parse_reference(filled.registry.ref("test/busybox", "1.0")))
    assert body == filled.image.top
    assert (desc.media_type, desc.digest, desc.size) == (
        OCI_MANIFEST,
        filled.image.digest,
        len(filled.image.top),
    )
    assert client._scheme == "http"


def test_a_digest_resolves_to_the_same_manifest(filled, client):
    ref = parse_reference(filled.registry.ref("test/busybox", filled.image.digest))
    desc, body = client.resolve(ref)
    assert desc.digest == filled.image.digest and body == filled.image.top


def test_a_multi_arch_tag_resolves_to_its_index_and_each_manifest_fetches(filled, client):
    desc, body = client.resolve(parse_reference(filled.registry.ref("test/multi", "multi")))
    assert desc.media_type == OCI_INDEX and desc.digest == filled.index.digest
    for entry in json.loads(body)["manifests"]:
        manifest = client.fetch_manifest("test/multi", entry["digest"])
        assert sha256(manifest) == entry["digest"] and len(manifest) == entry["size"]


def test_a_blob_streams_with_bytes_hashing_to_its_digest(filled, client):
    layer = filled.image.images[0].layers[0]
    assert client.blob_exists("test/busybox", layer.digest)
    chunks, total = client.open_blob("test/busybox", layer.digest)
    data = b"".join(chunks)
    assert total == len(layer.blob) and sha256(data) == layer.digest


def test_a_blob_resumes_from_an_offset_with_range(filled, client):
    layer = filled.image.images[0].layers[0]
    offset = len(layer.blob) // 3
    chunks, total = client.open_blob("test/busybox", layer.digest, offset=offset)
    assert total == len(layer.blob)
    assert b"".join(chunks) == layer.blob[offset:]


def test_an_unknown_tag_or_blob_is_not_found_naming_the_reference(filled, client):
    ref = filled.registry.ref("test/busybox", "nope")
    with pytest.raises(NotFound, match="nope"):
        client.resolve(parse_reference(ref))
    with pytest.raises(NotFound):
        client.resolve(parse_reference(filled.registry.ref("test/absent", "1.0")))
    assert not client.blob_exists("test/busybox", "sha256:" + "0" * 64)


def test_a_tampered_manifest_is_refused_and_an_oversized_one_before_it_is_read(tmp_path):
    with Registry(tmp_path / "reg") as reg:
        image = oci_layout(tmp_path / "img", busybox_layers(1), tag="1.0")
        push_oci_layout(image.path, reg, "test/tamper", "1.0")
        blob = reg.blob_path(image.digest)
        blob.write_bytes(image.top + b"\n")  # still a manifest the registry serves
        ref = parse_reference(reg.ref("test/tamper", image.digest))
        with RegistryClient(reg.host) as c:
            with pytest.raises(InvalidArgument, match="digest mismatch"):
                c.fetch_manifest("test/tamper", image.digest)
            with pytest.raises(InvalidArgument, match="digest mismatch"):
                c.resolve(ref)


class _HugeManifestHandler(http.server.BaseHTTPRequestHandler):
    """A "registry" whose manifests claim 1 GiB (docker-registry itself refuses > 4 MiB)."""

    chunked = False

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", OCI_MANIFEST)
        if self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            piece = b" " * 65536
            with contextlib.suppress(OSError):
                for _ in range(100):  # 6.25 MiB, never announced
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        else:
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(b"{" + b" " * 65536)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_manifest_over_4_mib_is_refused_without_reading_it_all(chunked):
    handler = type("Handler", (_HugeManifestHandler,), {"chunked": chunked})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        with (
            RegistryClient(host, plain_http=True, timeout=5) as c,
            pytest.raises(InvalidArgument, match="limit"),
        ):
            c.fetch_manifest("test/huge", "sha256:" + "2" * 64)
    finally:
        server.shutdown()
        server.server_close()


def test_a_port_nobody_serves_is_unavailable_naming_the_host():
    host = f"127.0.0.1:{free_port()}"
    with RegistryClient(host, timeout=2) as c, pytest.raises(Unavailable, match=host):
        c.resolve(parse_reference(f"{host}/a/b:1"))


@pytest.mark.skipif(auth_skip_reason() is not None, reason=auth_skip_reason() or "")
def test_basic_auth_with_right_credentials_pulls_and_wrong_ones_are_unauthenticated(tmp_path):
    with Registry(tmp_path / "reg", users=[ALICE]) as reg:
        image = oci_layout(tmp_path / "img", busybox_layers(1), tag="1.0")
        push_oci_layout(image.path, reg, "test/auth", "1.0", creds=ALICE)
        ref = parse_reference(reg.ref("test/auth", "1.0"))
        with RegistryClient(reg.host, credentials=(ALICE.username, ALICE.password)) as c:
            assert c.resolve(ref)[0].digest == image.digest
        with (
            RegistryClient(reg.host, credentials=("alice", "wrong")) as c,
            pytest.raises(Unauthenticated, match="refused"),
        ):
            c.resolve(ref)
        with RegistryClient(reg.host) as c, pytest.raises(Unauthenticated, match="requires"):
            c.resolve(ref)


@pytest.mark.skipif(tls_skip_reason() is not None, reason=tls_skip_reason() or "")
def test_tls_with_the_test_ca_is_spoken_and_plain_http_forced_fails(tmp_path):
    with Registry(tmp_path / "reg", tls=True) as reg:
        image = oci_layout(tmp_path / "img", busybox_layers(1), tag="1.0")
        push_oci_layout(image.path, reg, "test/tls", "1.0")
        ref = parse_reference(reg.ref("test/tls", "1.0"))
        assert reg.ca is not None
        with RegistryClient(reg.host, ca_file=str(reg.ca.cert)) as c:
            assert c.resolve(ref)[0].digest == image.digest
        with RegistryClient(reg.host, plain_http=True) as c, pytest.raises(InvalidArgument):
            c.resolve(ref)  # the TLS port answers plain http with 400
        # TLS with a certificate nobody trusts is reported, never retried as plain http
        with RegistryClient(reg.host) as c, pytest.raises(Unavailable, match="CERTIFICATE"):
            c.resolve(ref)
