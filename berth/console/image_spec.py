"""The OCI spec of a container made from an image, as ``ctr run`` makes it.

The user's image name is normalised first, as Docker does (``busybox`` is
the stored ``docker.io/library/busybox:latest``, :mod:`runtime.reference`);
a stored name that is not a normalised reference is still found as written.

The image's config (``Env``, ``Entrypoint``, ``Cmd``, ``WorkingDir``) is read
from the content store: image -> target (an index picks this host's
platform) -> manifest -> config. A daemon that does not serve images or
content yet, or an image whose blobs are gone, yields no config: the
command line must then name the command itself. The spec's root is the
relative ``rootfs``, where the daemon mounts the container's snapshot.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from berth.client import Client
from berth.console.commands import UsageError
from runtime.reference import normalize_reference
from runtime.spec import default_spec
from wire.errors import FailedPrecondition, InvalidArgument, NotFound, Unimplemented

__all__ = ["ImageConfig", "build_spec", "image_config", "parse_pairs", "resolve_image"]

ImageConfig = Mapping[str, Any]

_INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
# A manifest or config larger than this is not one: refuse to buffer it.
_MAX_BLOB = 4 << 20
_UNREADABLE = (Unimplemented, NotFound, FailedPrecondition, InvalidArgument)
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386"}


def parse_pairs(pairs: Iterable[str], what: str) -> dict[str, str]:
    """``["k=v", ...]`` as a dict; a pair without ``=`` is a usage error."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def resolve_image(client: Client, image: str) -> str:
    """The stored name of the image the user calls ``image``.

    The normalised reference when it is stored, else ``image`` as written
    when that is (a name given to ``Images/Put``, or recorded before imports
    normalised names); otherwise the normalised reference, so the daemon's
    ``NOT_FOUND`` names what was looked for. A name that is no reference and
    is not stored is :class:`~wire.errors.InvalidArgument` saying why.
    """
    try:
        normal: str | None = normalize_reference(image)
        problem: InvalidArgument | None = None
    except InvalidArgument as exc:
        normal, problem = None, exc
    for name in dict.fromkeys(n for n in (normal, image) if n):
        try:
            client.images.get(name)
        except NotFound:
            continue
        except Unimplemented:
            break
        return name
    if problem is not None:
        raise problem
    return normal or image


def image_config(client: Client, image: str) -> ImageConfig:
    """The ``config`` object of ``image``'s config blob; empty when it cannot be read.

    A missing image is :class:`~wire.errors.NotFound`; a daemon that does not
    serve the read, or a blob that is missing or malformed, leaves the config
    empty. A lost connection is raised: the next step would fail the same way.
    """
    try:
        target = client.images.get(image)["target"]
    except Unimplemented:
        return {}
    try:
        document = _read_json(client, target["digest"])
        if target.get("media_type") in _INDEX_TYPES or "manifests" in document:
            document = _read_json(client, _pick_manifest(document))
        config = _read_json(client, document["config"]["digest"])
    except (*_UNREADABLE, KeyError, TypeError, ValueError):
        return {}
    inner = config.get("config")
    return inner if isinstance(inner, Mapping) else {}


def _read_json(client: Client, digest: str) -> dict[str, Any]:
    data = bytearray()
    for chunk in client.content.read(digest):
        data += chunk["data"]
        if len(data) > _MAX_BLOB:
            raise ValueError(f"blob {digest} is too large for a manifest or config")
    loaded = json.loads(bytes(data))
    if not isinstance(loaded, dict):
        raise ValueError(f"blob {digest} is not a JSON object")
    return loaded


def _pick_manifest(index: Mapping[str, Any]) -> str:
    """The digest of the index's manifest for linux on this machine's architecture."""
    arch = _ARCH.get(platform.machine(), platform.machine())
    manifests = [m for m in index.get("manifests", []) if isinstance(m, Mapping)]
    for m in manifests:
        plat = m.get("platform") or {}
        if plat.get("os", "linux") == "linux" and plat.get("architecture", arch) == arch:
            return str(m["digest"])
    raise KeyError("no manifest for this platform")


def build_spec(
    config: ImageConfig,
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None,
    terminal: bool,
    image: str,
) -> dict[str, Any]:
    """The container's spec: the image's entrypoint and command unless ``command`` is given.

    As docker does, a given ``command`` replaces the image's ``Cmd`` and is
    appended to its ``Entrypoint``. Environment: the defaults, then the
    image's ``Env``, then ``env``, later ones replacing earlier ones by name.
    """
    entrypoint = list(config.get("Entrypoint") or [])
    args = entrypoint + (list(command) or list(config.get("Cmd") or []))
    if not args:
        raise UsageError(f'image "{image}" names no command: give one after the ID')
    spec = default_spec(args, "rootfs")
    process = spec["process"]
    merged: dict[str, str] = {}
    for entry in [*process["env"], *(config.get("Env") or [])]:
        key, _, value = str(entry).partition("=")
        merged[key] = value
    merged.update(env)
    process["env"] = [f"{k}={v}" for k, v in merged.items()]
    process["cwd"] = cwd or str(config.get("WorkingDir") or "") or "/"
    process["terminal"] = terminal
    return spec
