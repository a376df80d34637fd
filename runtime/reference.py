"""Image references, parsed and normalised as Docker and containerd do.

The grammar (distribution/reference's, which containerd's
``reference/docker`` and Docker share)::

    reference      := name [ ":" tag ] [ "@" digest ]
    name           := [ domain "/" ] path
    domain         := host [ ":" port ]
    host           := domain-name | "[" IPv6 "]"
    domain-name    := label ( "." label )*
    label          := [a-zA-Z0-9] | [a-zA-Z0-9] [a-zA-Z0-9-]* [a-zA-Z0-9]
    path           := path-component ( "/" path-component )*
    path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag            := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
    digest         := algorithm ":" hex    ; sha256, sha384, sha512: 64, 96, 128 lowercase hex

Normalisation (``ParseNormalizedNamed`` and ``TagNameOnly``):

- the first ``/``-separated component is the domain when it contains a
  ``.`` or a ``:``, is ``localhost``, or has an uppercase letter (paths
  never do); otherwise the domain is ``docker.io`` and the whole name is
  the path. ``index.docker.io`` is ``docker.io``.
- on ``docker.io`` a one-component path is an official image:
  ``busybox`` -> ``library/busybox``.
- a reference with neither tag nor digest gets the tag ``latest``; one with
  both keeps both (``name:tag@digest``), as ``ParseNormalizedNamed`` does
  (containerd's ``ParseDockerRef`` would drop the tag; the digest decides
  what is fetched either way).
- a reference that is 64 hex digits alone is refused (it would be an image
  id), and the name (``domain/path``, normalised) is at most 255
  characters, as in containerd's ``reference/docker``.

Anything else is :class:`~wire.errors.InvalidArgument` naming the reference
and saying why: ``reference "Busybox": repository name must be lowercase``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from wire.errors import InvalidArgument

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "MAX_NAME_LENGTH",
    "Reference",
    "normalize_reference",
    "parse_reference",
    "registry_host",
]

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255
_LEGACY_DOMAIN = "index.docker.io"
_DOCKER_HUB_REGISTRY = "registry-1.docker.io"
_OFFICIAL_PREFIX = "library/"

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_ALGORITHM = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*")
_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")
_LOWER_HEX = re.compile(r"[0-9a-f]*")
_Refusal = Callable[[str], InvalidArgument]  # builds the error for a reason


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalised image reference: ``domain/path[:tag][@digest]``."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """The repository: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def string(self) -> str:
        """The full normalised form: ``docker.io/library/busybox:latest``."""
        return self.name + self._suffix()

    @property
    def familiar(self) -> str:
        """Docker's short form, for display: ``busybox:latest``, ``user/app:1``."""
        name = self.name
        if self.domain == DEFAULT_DOMAIN:
            name = self.path
            rest = name.removeprefix(_OFFICIAL_PREFIX)
            if rest != name and "/" not in rest:
                name = rest
        return name + self._suffix()

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.string


def parse_reference(text: str) -> Reference:
    """``text`` parsed and normalised; InvalidArgument saying why it is not a reference."""

    def bad(why: str) -> InvalidArgument:
        return InvalidArgument(f"reference {_quote(text)}: {why}")

    if not text:
        raise bad("must not be empty")
    if _IMAGE_ID.fullmatch(text):
        raise bad("a 64-digit hexadecimal string is an image id, not a repository name")
    remainder, at, digest = text.partition("@")
    if at:
        _check_digest(digest, bad)
    domain, path_and_tag = _split_domain(remainder)
    path, colon, tag = path_and_tag.partition(":")
    if colon and not _TAG.fullmatch(tag):
        if not tag:
            raise bad("tag must not be empty")
        if len(tag) > 128:
            raise bad(f"tag is {len(tag)} characters, more than 128")
        raise bad(f"tag {_quote(tag)} is not [A-Za-z0-9_][A-Za-z0-9_.-]*")
    if not _DOMAIN.fullmatch(domain):
        raise bad(f"domain {_quote(domain)} is not a host name or [IPv6 address], with a port")
    _check_path(path, bad)
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = _OFFICIAL_PREFIX + path
    name_length = len(domain) + 1 + len(path)
    if name_length > MAX_NAME_LENGTH:
        raise bad(
            f"repository name must not be more than {MAX_NAME_LENGTH} characters"
            f" (this one has {name_length})"
        )
    if not tag and not digest:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def normalize_reference(text: str) -> str:
    """``text`` normalised in full: ``busybox`` -> ``docker.io/library/busybox:latest``."""
    return parse_reference(text).string


def registry_host(domain: str) -> str:
    """The host to contact for a reference's domain (``docker.io`` -> ``registry-1.docker.io``)."""
    return _DOCKER_HUB_REGISTRY if domain in (DEFAULT_DOMAIN, _LEGACY_DOMAIN) else domain


def _split_domain(name: str) -> tuple[str, str]:
    """``(domain, path[:tag])``: the first component is a domain only if it looks like one."""
    first, slash, rest = name.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, name  # one component ("busybox:1"): never a host:port
    if first == _LEGACY_DOMAIN:
        return DEFAULT_DOMAIN, rest
    if first == "localhost" or "." in first or ":" in first or first.lower() != first:
        return first, rest
    return DEFAULT_DOMAIN, name


def _check_path(path: str, bad: _Refusal) -> None:
    for component in path.split("/"):
        if not component:
            raise bad("repository name has an empty path component")
        if _PATH_COMPONENT.fullmatch(component):
            continue
        if _PATH_COMPONENT.fullmatch(component.lower()):
            raise bad("repository name must be lowercase")
        raise bad(
            f"path component {_quote(component)} is not lowercase letters and digits"
            " separated by '.', '_', '__' or '-'"
        )


def _check_digest(digest: str, bad: _Refusal) -> None:
    algorithm, colon, hex_digits = digest.partition(":")
    if not colon or not _ALGORITHM.fullmatch(algorithm):
        raise bad(f"digest {_quote(digest)} is not algorithm:hex")
    if algorithm not in _HEX_LENGTHS:
        raise bad(f"digest algorithm {_quote(algorithm)} is not supported")
    want = _HEX_LENGTHS[algorithm]
    if len(hex_digits) != want or not _LOWER_HEX.fullmatch(hex_digits):
        raise bad(f"{algorithm} digest must be {want} lowercase hexadecimal digits")


def _quote(text: str) -> str:
    """``text`` in double quotes, control characters escaped, long text cut."""
    return json.dumps(text if len(text) <= 300 else text[:300] + "...", ensure_ascii=False)
