"""Read an image archive: an OCI image layout or a ``docker save`` tar.

The archive is a plain tar on the daemon's host. Its members are indexed
once; a blob is read afterwards through its own file handle, as the window
of the archive file that holds it, so no layer is held in memory. Members
are only ever found by the exact names the layout implies
(``blobs/sha256/<hex>``, or a name from ``manifest.json`` checked to stay
inside the archive), and links inside the archive are followed only to other
members.

OCI layout (also what ``docker save`` writes since Docker 25; preferred when
``index.json`` is present): each descriptor of ``index.json`` is an image.
A manifest is taken as is; a nested index gives the manifest of the
requested platform (the host's by default) and stays the image's target, as
in containerd. The name is the descriptor's ``io.containerd.image.name``
annotation, else its ``org.opencontainers.image.ref.name``, which may be a
bare tag such as ``latest`` (``ArchiveImage.name_from`` says which).

docker save: ``manifest.json`` lists ``{Config, RepoTags, Layers}``; each
repo tag is an image (an entry without tags, one unnamed image). Names are
returned as written; the importer normalises them (``busybox:latest`` is
``docker.io/library/busybox:latest``, :mod:`runtime.reference`). The manifest is
synthesised as containerd does: Docker schema 2 media types, the layer type
by the layer's gzip magic, digest and size computed.

Every blob is checked before anything is returned: digest and size against
its descriptor, JSON that parses, as many ``rootfs.diff_ids`` as layers,
known media types, and, for an uncompressed layer, digest equal to its
diff_id. Anything else is :class:`~wire.errors.InvalidArgument` naming the
blob. A compressed layer's diff_id is checked when it is applied.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from platform import machine
from typing import IO, Any

from runtime.archive_members import JSON_LIMIT, ArchiveMembers, member_name
from runtime.tar_stream import GZIP_MAGIC
from wire.errors import InvalidArgument, NotFound

__all__ = [
    "REF_NAME",
    "ArchiveImage",
    "ArchiveLayer",
    "Blob",
    "Descriptor",
    "ImageArchive",
    "chain_ids",
    "read_image_archive",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
INDEX_TYPES = {OCI_INDEX, DOCKER_LIST}
MANIFEST_TYPES = {OCI_MANIFEST, DOCKER_MANIFEST}
CONFIG_TYPES = {OCI_CONFIG, DOCKER_CONFIG}
# media type -> compressed?
LAYER_TYPES = {OCI_LAYER: False, OCI_LAYER + "+gzip": True,
               DOCKER_LAYER: False, DOCKER_LAYER + ".gzip": True}  # fmt: skip
REF_NAME = "org.opencontainers.image.ref.name"
NAME_ANNOTATIONS = ("io.containerd.image.name", REF_NAME)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_NAMED_BY_DIGEST = re.compile(r"(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?")
_CHUNK = 1 << 20
_MAX_NESTING = 8  # indexes within indexes
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "i386": "386",
         "armv7l": "arm/v7", "armv6l": "arm/v6"}  # fmt: skip


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a blob is, its digest and its size."""

    media_type: str
    digest: str
    size: int

    def to_wire(self) -> dict[str, Any]:
        """The descriptor as containerd's ``Descriptor`` message."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class ArchiveLayer:
    """A layer of an image: its blob's descriptor and its config's diff_id."""

    descriptor: Descriptor
    diff_id: str


@dataclass(frozen=True)
class ArchiveImage:
    """An image the archive names (or leaves unnamed), checked and ready to unpack."""

    name: str | None
    target: Descriptor  # what the image record points at: a manifest or an index
    manifest: Descriptor  # the manifest to unpack (the target, or chosen from it)
    config: Descriptor
    layers: tuple[ArchiveLayer, ...]
    chain_ids: tuple[str, ...]  # the committed snapshots' names, bottom first
    name_from: str  # where the name was found: an annotation's key, "RepoTags", or ""


@dataclass(frozen=True)
class Blob:
    """A blob to store: ``open()`` gives a fresh reader of its bytes."""

    digest: str
    size: int
    media_type: str
    open: Callable[[], IO[bytes]]


@dataclass(frozen=True)
class ImageArchive:
    """What an archive holds: its images, and each blob they use once."""

    path: str
    layout: str  # "oci" or "docker"
    images: tuple[ArchiveImage, ...]
    blobs: tuple[Blob, ...]  # children before parents: layers, configs, manifests, indexes

    def blob(self, digest: str) -> Blob:
        """The blob ``digest``; NotFound when no image of the archive uses it."""
        for blob in self.blobs:
            if blob.digest == digest:
                return blob
        raise NotFound(f'blob "{digest}": not in image archive "{self.path}"')


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The OCI ChainIDs of layers with these diff_ids, bottom first.

    ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
    """
    chain: list[str] = []
    for diff_id in diff_ids:
        if not chain:
            chain.append(diff_id)
        else:
            joined = f"{chain[-1]} {diff_id}".encode()
            chain.append(f"sha256:{hashlib.sha256(joined).hexdigest()}")
    return chain


def read_image_archive(
    path: str | os.PathLike[str], *, platform: str | None = None
) -> ImageArchive:
    """Index and check the archive at ``path``.

    ``platform`` (``os/arch[/variant]``, default the host's) picks the manifest
    of a multi-platform index. NotFound when ``path`` does not exist.
    """
    members = ArchiveMembers(os.fspath(path))
    reader = _Reader(members, _parse_platform(platform) if platform else _host_platform())
    if members.has("index.json"):
        layout, images = "oci", reader.oci()
    elif members.has("manifest.json"):
        layout, images = "docker", reader.docker()
    else:
        raise InvalidArgument(
            f"{members.label}: neither an OCI image layout (index.json)"
            " nor a docker save archive (manifest.json)"
        )
    return ImageArchive(members.path, layout, tuple(images), tuple(reader.ordered()))


def _descriptor(obj: Any, what: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{what}: not a descriptor")
    media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(media_type, str):
        raise InvalidArgument(f"{what}: no mediaType")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidArgument(f"{what}: digest {digest!r} is not a sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"{what} {digest}: size {size!r} is not a size")
    return Descriptor(media_type, digest, size)


def _load_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:  # UnicodeDecodeError is one
        raise InvalidArgument(f"{what}: not JSON: {exc}") from None


def _parse_json(data: bytes, what: str) -> dict[str, Any]:
    obj = _load_json(data, what)
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{what}: not a JSON object")
    return obj


def _diff_ids(config: dict[str, Any], what: str, layers: int) -> list[str]:
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and _DIGEST.fullmatch(d) for d in diff_ids
    ):
        raise InvalidArgument(f"{what}: rootfs.diff_ids is not a list of sha256 digests")
    if len(diff_ids) != layers:
        raise InvalidArgument(f"{what}: {len(diff_ids)} diff_ids for {layers} layers")
    return diff_ids


def _parse_platform(text: str) -> tuple[str, str, str | None]:
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidArgument(f'platform "{text}": not os/arch[/variant]')
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _host_platform() -> tuple[str, str, str | None]:
    arch = machine()
    return _parse_platform(f"linux/{_ARCH.get(arch, arch)}")


class _Reader:
    """Walks the archive's descriptors, checking each blob once."""

    def __init__(self, members: ArchiveMembers, want: tuple[str, str, str | None]) -> None:
        self.members, self.want = members, want
        self.label = members.label
        self._blobs: dict[str, Blob] = {}
        self._rank: dict[str, int] = {}  # 0 layer, 1 config, 2 manifest, 3 index
        self._docker_layers: dict[str, Descriptor] = {}  # by member name: hashed once

    def ordered(self) -> list[Blob]:
        return sorted(self._blobs.values(), key=lambda b: self._rank[b.digest])

    def _keep(self, blob: Blob, rank: int) -> None:
        self._blobs.setdefault(blob.digest, blob)
        self._rank[blob.digest] = min(rank, self._rank.get(blob.digest, rank))

    def blob(self, desc: Descriptor, what: str, rank: int) -> Blob:
        """The OCI layout's blob for ``desc``, its size and digest checked."""
        if desc.digest in self._blobs:
            self._keep(self._blobs[desc.digest], rank)
            return self._blobs[desc.digest]
        what = f"{what} {desc.digest}"
        m = self.members.member(f"blobs/sha256/{desc.digest[7:]}", what)
        if m.size != desc.size:
            raise InvalidArgument(
                f"{what}: size {m.size} does not match the descriptor's {desc.size}"
            )
        if self.members.digest(m)[0] != desc.digest:
            raise InvalidArgument(f"{what}: content does not match its digest")
        blob = Blob(desc.digest, desc.size, desc.media_type, self.members.opener(m))
        self._keep(blob, rank)
        return blob

    def json_blob(self, desc: Descriptor, what: str, rank: int) -> dict[str, Any]:
        if desc.size > JSON_LIMIT:
            raise InvalidArgument(f"{what} {desc.digest}: {desc.size} bytes is too large")
        with self.blob(desc, what, rank).open() as f:
            return _parse_json(f.read(), f"{what} {desc.digest}")

    def oci(self) -> list[ArchiveImage]:
        layout = _parse_json(
            self.members.read("oci-layout", self.label), f"{self.label}: oci-layout"
        )
        if not isinstance(layout.get("imageLayoutVersion"), str):
            raise InvalidArgument(f"{self.label}: oci-layout has no imageLayoutVersion")
        what = f"{self.label}: index.json"
        index = _parse_json(self.members.read("index.json", what), what)
        images = []
        for desc_obj in self._entries(index, what):
            desc = _descriptor(desc_obj, f"{what}: descriptor")
            notes = desc_obj.get("annotations")
            notes = notes if isinstance(notes, dict) else {}
            key = next((a for a in NAME_ANNOTATIONS if isinstance(notes.get(a), str)), "")
            images.append(self._image(notes.get(key), key, desc, self._pick(desc, 0)))
        return images

    def _entries(self, index: dict[str, Any], what: str) -> list[dict[str, Any]]:
        if index.get("schemaVersion") != 2 or not isinstance(index.get("manifests"), list):
            raise InvalidArgument(f"{what}: not a schema 2 image index")
        return list(index["manifests"])

    def _pick(self, desc: Descriptor, depth: int) -> Descriptor:
        """``desc`` if a manifest, else the wanted platform's manifest below it."""
        if desc.media_type in MANIFEST_TYPES:
            return desc
        if desc.media_type not in INDEX_TYPES or depth >= _MAX_NESTING:
            raise InvalidArgument(
                f"descriptor {desc.digest}: unsupported media type {desc.media_type}"
            )
        what = f"index {desc.digest}"
        for entry in self._entries(self.json_blob(desc, "index", 3), what):
            child = _descriptor(entry, f"{what}: descriptor")
            if self._matches(entry.get("platform")):
                return self._pick(child, depth + 1)
        raise InvalidArgument(
            f"{what}: no manifest for platform {'/'.join(filter(None, self.want))}"
        )

    def _matches(self, plat: Any) -> bool:
        if plat is None:
            return True
        if not isinstance(plat, dict):
            return False
        want_os, want_arch, want_variant = self.want
        arch, _, variant = want_arch.partition("/")
        variant = want_variant or variant
        given = plat.get("variant")
        return bool(
            plat.get("os") == want_os
            and plat.get("architecture") == arch
            and (not variant or not given or given == variant)
        )

    def _image(
        self, name: str | None, name_from: str, target: Descriptor, desc: Descriptor
    ) -> ArchiveImage:
        what = f"manifest {desc.digest}"
        manifest = self.json_blob(desc, "manifest", 2)
        if manifest.get("schemaVersion") != 2 or manifest.get("mediaType", desc.media_type) != (
            desc.media_type
        ):
            raise InvalidArgument(f"{what}: not a schema 2 {desc.media_type}")
        config = _descriptor(manifest.get("config"), f"{what}: config")
        if config.media_type not in CONFIG_TYPES:
            raise InvalidArgument(
                f"config {config.digest}: unsupported media type {config.media_type}"
            )
        raw_layers = manifest.get("layers")
        if not isinstance(raw_layers, list):
            raise InvalidArgument(f"{what}: layers is not a list")
        layers = [_descriptor(entry, f"{what}: layer") for entry in raw_layers]
        diff_ids = _diff_ids(
            self.json_blob(config, "config", 1), f"config {config.digest}", len(layers)
        )
        for layer, diff_id in zip(layers, diff_ids, strict=True):
            _check_layer(layer, diff_id)
            self.blob(layer, "layer", 0)
        return _archive_image(name, name_from, target, desc, config, layers, diff_ids)

    def docker(self) -> list[ArchiveImage]:
        what = f"{self.label}: manifest.json"
        entries = _load_json(self.members.read("manifest.json", what), what)
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise InvalidArgument(f"{what}: not a list of objects")
        images = []
        for entry in entries:
            config_name = member_name(entry.get("Config"), f"{what}: Config")
            data = self.members.read(config_name, f'{what}: config "{config_name}"')
            config = Descriptor(
                DOCKER_CONFIG, f"sha256:{hashlib.sha256(data).hexdigest()}", len(data)
            )
            _check_named(config_name, config.digest, "config")
            self._keep(Blob(config.digest, config.size, DOCKER_CONFIG, _bytes_opener(data)), 1)
            layer_names = entry.get("Layers")
            if not isinstance(layer_names, list):
                raise InvalidArgument(f"{what}: Layers is not a list")
            diff_ids = _diff_ids(
                _parse_json(data, f"config {config.digest}"),
                f"config {config.digest}",
                len(layer_names),
            )
            layers = [self._docker_layer(n, what) for n in layer_names]
            for layer, diff_id in zip(layers, diff_ids, strict=True):
                _check_layer(layer, diff_id)
            body = {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": config.to_wire(),
                "layers": [layer.to_wire() for layer in layers],
            }
            raw = json.dumps(body, separators=(",", ":")).encode()
            desc = Descriptor(
                DOCKER_MANIFEST, f"sha256:{hashlib.sha256(raw).hexdigest()}", len(raw)
            )
            self._keep(Blob(desc.digest, desc.size, DOCKER_MANIFEST, _bytes_opener(raw)), 2)
            tags = entry.get("RepoTags") or [None]
            if not isinstance(tags, list) or not all(isinstance(t, str) or t is None for t in tags):
                raise InvalidArgument(f"{what}: RepoTags is not a list of names")
            images += [
                _archive_image(t, "RepoTags" if t else "", desc, desc, config, layers, diff_ids)
                for t in tags
            ]
        return images

    def _docker_layer(self, name: Any, what: str) -> Descriptor:
        name = member_name(name, f"{what}: layer")
        if name in self._docker_layers:
            return self._docker_layers[name]
        m = self.members.member(name, f'{what}: layer "{name}"')
        digest, head = self.members.digest(m)
        _check_named(name, digest, "layer")
        media_type = DOCKER_LAYER + ".gzip" if head == GZIP_MAGIC else DOCKER_LAYER
        self._keep(Blob(digest, m.size, media_type, self.members.opener(m)), 0)
        self._docker_layers[name] = Descriptor(media_type, digest, m.size)
        return self._docker_layers[name]


def _check_layer(layer: Descriptor, diff_id: str) -> None:
    if layer.media_type.endswith("+zstd"):
        raise InvalidArgument(f"layer {layer.digest}: zstd layers are not supported")
    if layer.media_type not in LAYER_TYPES:
        raise InvalidArgument(f"layer {layer.digest}: unsupported media type {layer.media_type}")
    if not LAYER_TYPES[layer.media_type] and layer.digest != diff_id:
        raise InvalidArgument(f"layer {layer.digest}: uncompressed, yet not its diff_id {diff_id}")


def _check_named(name: str, digest: str, what: str) -> None:
    """A member named by a digest (``<hex>.json``, ``blobs/sha256/<hex>``) must hold it."""
    named = _NAMED_BY_DIGEST.fullmatch(name)
    if named and f"sha256:{named.group(1)}" != digest:
        raise InvalidArgument(f'{what} "{name}": content does not match its digest ({digest})')


def _bytes_opener(data: bytes) -> Callable[[], IO[bytes]]:
    return lambda: io.BytesIO(data)


def _archive_image(
    name: str | None,
    name_from: str,
    target: Descriptor,
    manifest: Descriptor,
    config: Descriptor,
    layers: list[Descriptor],
    diff_ids: list[str],
) -> ArchiveImage:
    return ArchiveImage(
        name,
        target,
        manifest,
        config,
        tuple(ArchiveLayer(d, i) for d, i in zip(layers, diff_ids, strict=True)),
        tuple(chain_ids(diff_ids)),
        name_from,
    )
