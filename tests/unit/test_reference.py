"""Image references parsed and normalised as Docker and containerd do (distribution/reference)."""

from __future__ import annotations

import pytest

from runtime.reference import (
    Reference,
    normalize_reference,
    parse_reference,
    registry_host,
)
from wire.errors import InvalidArgument

D = "sha256:" + "86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
D512 = "sha512:" + "ab" * 64
HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"
LONG_COMPONENT = "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev"

# input -> the normalised full form
VALID = [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("busybox:latest", "docker.io/library/busybox:latest"),
    ("redis", "docker.io/library/redis:latest"),
    ("debian", "docker.io/library/debian:latest"),
    ("library/debian", "docker.io/library/debian:latest"),
    ("docker/docker", "docker.io/docker/docker:latest"),
    ("user/app", "docker.io/user/app:latest"),
    ("user/app:v2", "docker.io/user/app:v2"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("docker.io/library/busybox", "docker.io/library/busybox:latest"),
    ("docker.io/library/redis:latest", "docker.io/library/redis:latest"),
    ("docker.io/docker/docker", "docker.io/docker/docker:latest"),
    ("index.docker.io/debian", "docker.io/library/debian:latest"),
    ("index.docker.io/library/debian", "docker.io/library/debian:latest"),
    ("index.docker.io/docker/docker", "docker.io/docker/docker:latest"),
    ("library/foo/bar", "docker.io/library/foo/bar:latest"),
    ("store/foo/bar", "docker.io/store/foo/bar:latest"),
    ("other/library", "docker.io/other/library:latest"),
    ("localhost/debian", "localhost/debian:latest"),
    ("localhost/library/debian", "localhost/library/debian:latest"),
    ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
    ("localhost:5000/a/b:tag", "localhost:5000/a/b:tag"),
    (f"host:5000/a/b@{D}", f"host:5000/a/b@{D}"),
    (f"busybox@{D}", f"docker.io/library/busybox@{D}"),
    (f"busybox:latest@{D}", f"docker.io/library/busybox:latest@{D}"),
    (f"example.com/a:1.0@{D512}", f"example.com/a:1.0@{D512}"),
    ("127.0.0.1:5000/docker/docker", "127.0.0.1:5000/docker/docker:latest"),
    ("127.0.0.1:5000/debian", "127.0.0.1:5000/debian:latest"),
    ("192.168.0.1:8/debian", "192.168.0.1:8/debian:latest"),
    ("192.168.0.1", "docker.io/library/192.168.0.1:latest"),  # one component: never a host
    ("192.168.0.1:80", "docker.io/library/192.168.0.1:80"),  # ... so ":80" is a tag
    ("localhost", "docker.io/library/localhost:latest"),
    ("localhost:5000", "docker.io/library/localhost:5000"),
    ("[fc00::1]:5000/docker", "[fc00::1]:5000/docker:latest"),
    ("[fc00:1:2:3:4:5:6:7]:5000/library/debian", "[fc00:1:2:3:4:5:6:7]:5000/library/debian:latest"),
    ("example.com/private/moonbase", "example.com/private/moonbase:latest"),
    ("example.com:8000/privatebase", "example.com:8000/privatebase:latest"),
    ("example.com/test/busybox:1.0", "example.com/test/busybox:1.0"),
    ("ghcr.io/owner/repo/sub:sha-1234", "ghcr.io/owner/repo/sub:sha-1234"),
    ("LOCALDOMAIN/debian", "LOCALDOMAIN/debian:latest"),  # uppercase first component: a domain
    ("Foo/bar", "Foo/bar:latest"),
    ("docker-rules/docker", "docker.io/docker-rules/docker:latest"),
    ("docker---rules/docker", "docker.io/docker---rules/docker:latest"),
    ("dock__er/docker", "docker.io/dock__er/docker:latest"),
    ("d/docker", "docker.io/d/docker:latest"),
    ("jess/t", "docker.io/jess/t:latest"),
    ("ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base:latest"),
    (LONG_COMPONENT, f"docker.io/library/{LONG_COMPONENT}:latest"),
    (f"docker.io/{HEX64}", f"docker.io/library/{HEX64}:latest"),  # with a domain: not an id
    ("busybox:UPPER_tag.1-x", "docker.io/library/busybox:UPPER_tag.1-x"),
    ("busybox:_", "docker.io/library/busybox:_"),
    ("busybox:" + "t" * 128, "docker.io/library/busybox:" + "t" * 128),
    ("a.b.c/d.e_f__g-h", "a.b.c/d.e_f__g-h:latest"),
]

# input -> a piece of the reason
INVALID = [
    ("", "must not be empty"),
    ("Busybox", "repository name must be lowercase"),
    ("docker/Docker", "repository name must be lowercase"),
    ("docker.io/docker/Docker", "repository name must be lowercase"),
    ("Foo/Bar", "repository name must be lowercase"),
    (HEX64, "image id"),
    ("docker///docker", "empty path component"),
    ("docker.io/docker///docker", "empty path component"),
    ("docker/", "empty path component"),
    ("/busybox", "empty path component"),
    ("example.com/", "empty path component"),
    ("-docker", 'path component "-docker"'),
    ("-docker/docker", 'path component "-docker"'),
    ("docker-/docker", 'path component "docker-"'),
    ("____/____", 'path component "____"'),
    ("_docker/_docker", 'path component "_docker"'),
    ("dock..er/docker", 'domain "dock..er"'),  # a "." makes it a domain
    ("dock_.er/docker", 'domain "dock_.er"'),
    ("docker/dock..er", 'path component "dock..er"'),
    ("docker/dock_.er", 'path component "dock_.er"'),
    ("docker/dock-.er", 'path component "dock-.er"'),
    ("-docker.io/docker/docker", 'domain "-docker.io"'),
    ("https://github.com/docker/docker", 'domain "https:"'),
    ("[fc00::1]", "tag"),
    ("[fc00::1]:5000", "tag"),
    ("fc00::1:5000/debian", 'domain "fc00::1:5000"'),
    ("[fe80::1%eth0]:5000/debian", 'domain "[fe80::1%eth0]:5000"'),
    ("host:port/x", 'domain "host:port"'),
    ("busybox:", "tag must not be empty"),
    ("busybox:" + "t" * 129, "tag is 129 characters, more than 128"),
    ("busybox:-x", 'tag "-x"'),
    ("busybox:.x", 'tag ".x"'),
    ("busybox:a+b", 'tag "a+b"'),
    ("busybox:a:b", 'tag "a:b"'),
    ("busybox@", "is not algorithm:hex"),
    ("busybox@sha256", "is not algorithm:hex"),
    ("busybox@sha256:abc", "sha256 digest must be 64 lowercase hexadecimal digits"),
    ("busybox@sha256:" + "A" * 64, "sha256 digest must be 64 lowercase hexadecimal digits"),
    ("busybox@sha256:" + "a" * 65, "sha256 digest must be 64 lowercase hexadecimal digits"),
    ("busybox@md5:" + "a" * 32, 'digest algorithm "md5" is not supported'),
    ("busybox@" + D + "@" + D, "sha256 digest must be 64"),
    ("example.com/" + "a" * 244, "must not be more than 255 characters (this one has 256)"),
    ("a" * 238, "must not be more than 255 characters (this one has 256)"),  # docker.io/library/
    ("bu sybox", 'path component "bu sybox"'),
    ("busybox\n", "path component"),
]


@pytest.mark.parametrize(("text", "normalised"), VALID)
def test_a_valid_reference_normalises_as_docker_does(text: str, normalised: str) -> None:
    assert parse_reference(text).string == normalised
    assert normalize_reference(text) == normalised


@pytest.mark.parametrize(("text", "normalised"), VALID)
def test_normalising_a_normalised_reference_changes_nothing(text: str, normalised: str) -> None:
    assert normalize_reference(normalised) == normalised


@pytest.mark.parametrize(("text", "why"), INVALID)
def test_an_invalid_reference_is_refused_naming_it_and_why(text: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_reference(text)
    message = str(caught.value)
    assert why in message
    assert message.startswith("reference ")


def test_the_error_quotes_the_reference_as_given() -> None:
    with pytest.raises(InvalidArgument, match=r'^reference "Busybox": repository name must be'):
        parse_reference("Busybox")


def test_the_parts_of_a_reference() -> None:
    ref = parse_reference(f"localhost:5000/a/b:1@{D}")
    assert ref == Reference("localhost:5000", "a/b", "1", D)
    assert ref.name == "localhost:5000/a/b"
    assert str(ref) == ref.string == f"localhost:5000/a/b:1@{D}"


def test_a_reference_with_a_digest_gets_no_default_tag() -> None:
    ref = parse_reference(f"busybox@{D}")
    assert (ref.tag, ref.digest) == ("", D)


@pytest.mark.parametrize(
    ("text", "familiar"),
    [
        ("busybox", "busybox:latest"),
        ("docker.io/library/busybox:1.36", "busybox:1.36"),
        ("index.docker.io/library/ubuntu", "ubuntu:latest"),
        ("user/app", "user/app:latest"),
        ("library/foo/bar", "library/foo/bar:latest"),  # nested under library/: kept
        (f"busybox:latest@{D}", f"busybox:latest@{D}"),
        ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
        ("example.com/test/busybox:1.0", "example.com/test/busybox:1.0"),
    ],
)
def test_the_familiar_form_drops_docker_hub_and_library(text: str, familiar: str) -> None:
    assert parse_reference(text).familiar == familiar


@pytest.mark.parametrize(
    ("domain", "host"),
    [
        ("docker.io", "registry-1.docker.io"),
        ("index.docker.io", "registry-1.docker.io"),
        ("localhost:5000", "localhost:5000"),
        ("ghcr.io", "ghcr.io"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
def test_the_registry_host_of_docker_hub_is_registry_1(domain: str, host: str) -> None:
    assert registry_host(domain) == host
    assert registry_host(parse_reference(f"{domain}/x/y").domain) == host


def test_there_are_enough_cases_in_the_tables() -> None:
    assert len(VALID) >= 40
    assert len(INVALID) >= 30
