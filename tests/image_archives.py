"""Image archives for tests: OCI layouts and docker-save tars, honest and hostile.

Built in memory from the static busybox at ``/bin/busybox`` (the tree of
:func:`runtime.rootfs.make_busybox_rootfs`), deterministic (fixed mtimes,
sorted JSON), so digests are stable across runs. Layers are
:class:`Layer` values; archives are written to a path and described by a
:class:`BuiltArchive`.

Honest::

    busybox_layer(gzip=False)          one layer: the busybox tree
    multi_layers(gzip=False)           [base, upper]: upper adds etc/hello,
                                       whites out etc/motd, makes opt/old opaque
    oci_archive(path, layers, ...)     OCI image layout (optionally a nested index)
    docker_archive(path, layers, ...)  docker save layout

Hostile: :data:`HOSTILE_LAYERS` (each starts with a harmless entry, so a
test can check that nothing was written) and :func:`hostile_archive`.
"""

from __future__ import annotations

import functools
import gzip as gzip_module
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from runtime.rootfs import APPLETS, BUSYBOX

MTIME = 1_700_000_000
NAME = "example.com/test/busybox:1.0"
Entry = tuple[tarfile.TarInfo, bytes | None]


def _info(name: str, kind: bytes, mode: int, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, MTIME
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def file_entry(name: str, data: bytes = b"", mode: int = 0o644, **attrs: object) -> Entry:
    """A regular file; ``attrs`` set TarInfo fields (uid, gid, mtime, pax_headers)."""
    return _info(name, tarfile.REGTYPE, mode, size=len(data), **attrs), data


def dir_entry(name: str, mode: int = 0o755, **attrs: object) -> Entry:
    return _info(name, tarfile.DIRTYPE, mode, **attrs), None


def symlink_entry(name: str, target: str) -> Entry:
    return _info(name, tarfile.SYMTYPE, 0o777, linkname=target), None


def hardlink_entry(name: str, target: str) -> Entry:
    return _info(name, tarfile.LNKTYPE, 0o644, linkname=target), None


def device_entry(name: str, major: int, minor: int, kind: bytes = tarfile.CHRTYPE) -> Entry:
    return _info(name, kind, 0o666, devmajor=major, devminor=minor), None


def fifo_entry(name: str) -> Entry:
    return _info(name, tarfile.FIFOTYPE, 0o644), None


def whiteout_entry(path: str) -> Entry:
    """The whiteout removing ``path`` of lower layers (``dir/.wh.name``)."""
    parent, _, base = path.rpartition("/")
    return file_entry(f"{parent}/.wh.{base}" if parent else f".wh.{base}")


def opaque_entry(directory: str) -> Entry:
    """The marker making ``directory`` opaque (``dir/.wh..wh..opq``)."""
    return file_entry(f"{directory}/.wh..wh..opq")


def tar_bytes(entries: Iterable[Entry]) -> bytes:
    """A PAX tar of ``entries``, in order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass(frozen=True)
class Layer:
    """A layer: its uncompressed tar, stored plain or gzip."""

    tar: bytes
    gzip: bool = False
    blob: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        blob = gzip_module.compress(self.tar, compresslevel=1, mtime=0) if self.gzip else self.tar
        object.__setattr__(self, "blob", blob)

    @property
    def diff_id(self) -> str:
        return _sha(self.tar)

    @property
    def digest(self) -> str:
        return _sha(self.blob)

    @property
    def oci_media_type(self) -> str:
        return "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if self.gzip else "")

    @property
    def docker_media_type(self) -> str:
        return "application/vnd.docker.image.rootfs.diff.tar" + (".gzip" if self.gzip else "")


def layer(entries: Iterable[Entry], *, gzip: bool = False) -> Layer:
    return Layer(tar_bytes(entries), gzip)


def busybox_entries() -> list[Entry]:
    """The tree of make_busybox_rootfs: busybox, its applets as symlinks, the usual dirs."""
    entries = [dir_entry(d) for d in ("bin", "proc", "sys", "dev", "etc", "root")]
    entries.append(dir_entry("tmp", 0o1777))
    entries.append(file_entry("bin/busybox", _busybox(), 0o755))
    entries += [symlink_entry(f"bin/{applet}", "busybox") for applet in APPLETS]
    entries.append(file_entry("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"))
    entries.append(file_entry("etc/group", b"root:x:0:\n"))
    return entries


@functools.cache
def _busybox() -> bytes:
    return BUSYBOX.read_bytes()


@functools.cache
def busybox_layer(gzip: bool = False) -> Layer:
    return layer(busybox_entries(), gzip=gzip)


@functools.cache
def multi_layers(gzip: bool = False) -> tuple[Layer, Layer]:
    """Busybox plus files to change, then a layer adding, whiting out, making opaque."""
    base = layer(
        [
            *busybox_entries(),
            file_entry("etc/motd", b"welcome\n"),
            dir_entry("opt"),
            dir_entry("opt/old"),
            file_entry("opt/old/a", b"a\n"),
            dir_entry("opt/old/sub"),
            file_entry("opt/old/sub/b", b"b\n"),
            file_entry("opt/keep", b"keep\n"),
        ],
        gzip=gzip,
    )
    upper = layer(
        [
            dir_entry("etc"),
            file_entry("etc/hello", b"hello\n"),
            whiteout_entry("etc/motd"),
            dir_entry("opt/old"),
            opaque_entry("opt/old"),
            file_entry("opt/old/c", b"c\n"),
        ],
        gzip=gzip,
    )
    return base, upper


def config_json(layers: Iterable[Layer], **extra: object) -> bytes:
    """An image config for ``layers`` (linux/amd64, /bin/sh)."""
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [lay.diff_id for lay in layers]},
        **extra,
    }
    return json.dumps(config, sort_keys=True).encode()


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


def write_tar(path: Path, members: Iterable[tuple[str, bytes]]) -> Path:
    """A plain tar at ``path`` holding regular files ``(name, data)``."""
    path.write_bytes(tar_bytes(file_entry(name, data) for name, data in members))
    return path


@dataclass
class BuiltArchive:
    """What a builder wrote: enough for tests to check the reader's answers."""

    path: Path
    layers: list[Layer]
    config: bytes
    manifest: bytes | None  # None for docker: the reader synthesises it
    target: bytes | None = None  # the nested index, when there is one

    @property
    def config_digest(self) -> str:
        return _sha(self.config)

    @property
    def manifest_digest(self) -> str:
        assert self.manifest is not None
        return _sha(self.manifest)


def oci_archive(
    path: Path,
    layers: Iterable[Layer],
    *,
    annotations: dict[str, str] | None = None,
    name: str | None = NAME,
    nested_index: bool = False,
    tamper: Callable[[dict[str, bytes], dict[str, object]], None] | None = None,
) -> BuiltArchive:
    """An OCI image layout tar at ``path`` holding one image.

    ``name`` goes in ``org.opencontainers.image.ref.name`` unless
    ``annotations`` are given. With ``nested_index``, index.json points at an
    index listing the image for linux/amd64 and a linux/arm64 manifest whose
    blob is absent. ``tamper(blobs, manifest)`` may change blobs (by name)
    and the manifest dict before they are written.
    """
    layers = list(layers)
    config = config_json(layers)
    manifest_obj: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [_descriptor(lay.oci_media_type, lay.blob) for lay in layers],
    }
    blobs = {lay.digest: lay.blob for lay in layers}
    blobs[_sha(config)] = config
    if tamper is not None:
        tamper(blobs, manifest_obj)
    manifest = _json(manifest_obj)
    blobs[_sha(manifest)] = manifest
    target = _descriptor("application/vnd.oci.image.manifest.v1+json", manifest)
    nested = None
    if nested_index:
        other = {**target, "digest": _sha(b"absent"), "platform": _platform("arm64")}
        nested = _json(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [other, {**target, "platform": _platform("amd64")}],
            }
        )
        blobs[_sha(nested)] = nested
        target = _descriptor("application/vnd.oci.image.index.v1+json", nested)
    if annotations is None:
        annotations = {"org.opencontainers.image.ref.name": name} if name else {}
    if annotations:
        target["annotations"] = annotations
    index = {"schemaVersion": 2, "manifests": [target]}
    write_tar(
        path,
        [
            ("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
            ("index.json", _json(index)),
            *((f"blobs/sha256/{digest[7:]}", data) for digest, data in sorted(blobs.items())),
        ],
    )
    return BuiltArchive(path, layers, config, manifest, nested)


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": _sha(data), "size": len(data)}


def _platform(arch: str) -> dict[str, str]:
    return {"os": "linux", "architecture": arch}


def docker_archive(
    path: Path,
    layers: Iterable[Layer],
    *,
    repo_tags: list[str] | None = None,
    layer_names: list[str] | None = None,
    config: bytes | None = None,
) -> BuiltArchive:
    """A ``docker save`` tar at ``path``: ``<id>/layer.tar`` layers, ``<hex>.json`` config.

    ``repo_tags`` default to ``["busybox:1.0"]``; ``layer_names`` and
    ``config`` replace what ``manifest.json`` names and the config's bytes.
    """
    layers = list(layers)
    config = config_json(layers) if config is None else config
    names = layer_names or [f"{lay.diff_id[7:]}/layer.tar" for lay in layers]
    manifest = [
        {
            "Config": f"{_sha(config)[7:]}.json",
            "RepoTags": ["busybox:1.0"] if repo_tags is None else repo_tags,
            "Layers": names,
        }
    ]
    members = [("manifest.json", _json(manifest)), (f"{_sha(config)[7:]}.json", config)]
    members += [(f"{lay.diff_id[7:]}/layer.tar", lay.blob) for lay in layers]
    write_tar(path, members)
    return BuiltArchive(path, layers, config, None)


HOSTILE_LAYERS: dict[str, list[Entry]] = {
    "parent-escape": [file_entry("innocent"), file_entry("../evil", b"x")],
    "absolute": [file_entry("innocent"), file_entry("/evil", b"x")],
    "symlink-escape": [
        file_entry("innocent"),
        symlink_entry("evil", "/"),
        file_entry("evil/tmp/berth-escaped", b"x"),
    ],
    "whiteout-through-symlink": [
        file_entry("innocent"),
        symlink_entry("evil", "../../etc"),
        whiteout_entry("evil/passwd"),
    ],
    "hardlink-escape": [file_entry("innocent"), hardlink_entry("passwd", "/etc/passwd")],
    "hardlink-climb": [file_entry("innocent"), hardlink_entry("passwd", "../../etc/passwd")],
    "char-device": [file_entry("innocent"), device_entry("null", 1, 3)],
}


def hostile_layer(kind: str, *, gzip: bool = False) -> Layer:
    """One of :data:`HOSTILE_LAYERS` as a layer."""
    return layer(HOSTILE_LAYERS[kind], gzip=gzip)


def hostile_archive(path: Path, kind: str) -> BuiltArchive:
    """A broken archive: digest-mismatch, size-mismatch, truncated or not-a-tar."""
    if kind == "not-a-tar":
        path.write_bytes(b"this is not a tar archive\n" * 100)
        return BuiltArchive(path, [], b"", None)

    def flip(blobs: dict[str, bytes], manifest: dict[str, object]) -> None:
        digest = busybox_layer().digest
        blob = bytearray(blobs[digest])
        blob[-1] ^= 0xFF  # same size, other content
        blobs[digest] = bytes(blob)

    def grow(blobs: dict[str, bytes], manifest: dict[str, object]) -> None:
        layers = manifest["layers"]
        assert isinstance(layers, list)
        layers[0]["size"] += 1

    tamper = {"digest-mismatch": flip, "size-mismatch": grow, "truncated": None}[kind]
    built = oci_archive(path, [busybox_layer()], tamper=tamper)
    if kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return built
