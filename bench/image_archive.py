"""The archive ``berth-bench images`` imports: an OCI image layout of about N MB of layers.

Built once per size and kept under the bench's cache directory (the
workdir), so every run, and berthd and containerd within a run, import
byte-identical files. Four gzip layers, written in a stream (never the
whole layer in memory) from a seeded :class:`random.Random`:

1. the busybox tree of :mod:`runtime.rootfs` (the static ``/bin/busybox``);
2. thousands of small text files (256 B to 16 KiB) in directories of 64;
3. a hundred-odd "libraries" of 32 KiB to 1 MiB, half random, half text;
4. a handful of 2 to 16 MB random "data" files.

Layers 2 to 4 share what the base leaves of ``mb`` x 10^6 bytes of file
data in the ratio 20 : 30 : 50. The text is random letters of a
16-symbol alphabet (gzip keeps about 60% of it) and the rest random bytes
(gzip keeps all of it), so the layers compress little, as most real layers
of binaries and assets do, and the unpacking has real data to write.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import platform
import random
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runtime.rootfs import APPLETS, BUSYBOX

__all__ = ["ARCHIVE_VERSION", "BenchArchive", "LayerInfo", "bench_archive", "image_name"]

# Part of the cache key: bump it whenever what is generated changes.
ARCHIVE_VERSION = 1
_SEED = 20_261_129
_MTIME = 1_700_000_000
_GZIP_LEVEL = 6  # gzip's and docker's default: what real layers are compressed with
_MIN_SHARE = 256 * 1024  # floor of each generated layer's data, for tiny archives
# (layer, share of the data left after the base, smallest and largest file, text fraction)
_PLAN: tuple[tuple[str, float, int, int, float], ...] = (
    ("small", 0.2, 256, 16 * 1024, 1.0),
    ("medium", 0.3, 32 * 1024, 1024 * 1024, 0.5),
    ("large", 0.5, 2_000_000, 16_000_000, 0.0),
)
# Random bytes mapped onto 16 symbols: 4 bits of entropy a byte.
_TEXT = bytes.maketrans(bytes(range(256)), b"etaoinshrdlucm \n" * 16)
_LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
_MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def image_name(mb: int) -> str:
    """The name the archive's index gives its image (``org.opencontainers.image.ref.name``)."""
    return f"example.com/berth-bench/images:{mb}mb"


@dataclass(frozen=True)
class LayerInfo:
    """One layer blob: sizes compressed and not, and what it holds."""

    kind: str
    digest: str
    size: int  # the gzip blob
    diff_id: str
    diff_size: int  # the uncompressed tar
    files: int  # regular files
    file_bytes: int  # their data


@dataclass(frozen=True)
class BenchArchive:
    """The built (or cached) archive and what is in it."""

    path: Path
    name: str
    mb: int
    size: int  # the archive file
    layers: tuple[LayerInfo, ...]
    build_s: float | None  # None when it came from the cache

    @property
    def layer_bytes(self) -> int:
        """The layer blobs, compressed."""
        return sum(layer.size for layer in self.layers)

    @property
    def diff_bytes(self) -> int:
        """The layer tars, uncompressed."""
        return sum(layer.diff_size for layer in self.layers)

    @property
    def files(self) -> int:
        """Regular files over all layers."""
        return sum(layer.files for layer in self.layers)

    def to_json(self) -> dict[str, Any]:
        """Every figure, as plain JSON values."""
        return {
            "path": str(self.path),
            "name": self.name,
            "mb": self.mb,
            "version": ARCHIVE_VERSION,
            "archive_bytes": self.size,
            "layer_bytes": self.layer_bytes,
            "diff_bytes": self.diff_bytes,
            "files": self.files,
            "layers": [asdict(layer) for layer in self.layers],
            "build_s": self.build_s,
        }


class _Hashing:
    """A write-only stream that hashes and counts what goes through it to ``out``."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes, /) -> int:
        self.sha.update(data)
        self.count += len(data)
        self.out.write(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()

    def tell(self) -> int:
        return self.count

    # What tarfile's file protocol asks for besides; a stream being written has no use for it.
    def read(self, size: int, /) -> bytes:
        raise io.UnsupportedOperation("write-only")

    def seek(self, pos: int, /) -> int:
        raise io.UnsupportedOperation("not seekable")

    def close(self) -> None:
        """Nothing: whoever made ``out`` closes it."""

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha.hexdigest()}"


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.size, info.linkname = kind, mode, _MTIME, size, link
    return info


_Entry = tuple[tarfile.TarInfo, bytes | None]


def _file(name: str, data: bytes, mode: int = 0o644) -> _Entry:
    return _info(name, tarfile.REGTYPE, mode, len(data)), data


def _dirs(*names: str) -> list[_Entry]:
    return [(_info(name, tarfile.DIRTYPE, 0o755), None) for name in names]


def _base_entries() -> Iterator[_Entry]:
    """The tree of :func:`runtime.rootfs.make_busybox_rootfs`."""
    yield from _dirs("bin", "proc", "sys", "dev", "etc", "root")
    yield _info("tmp", tarfile.DIRTYPE, 0o1777), None
    yield _file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for applet in APPLETS:
        yield _info(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"), None
    yield _file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    yield _file("etc/group", b"root:x:0:\n")


def _data(rng: random.Random, size: int, text: float) -> bytes:
    """``size`` bytes: the first ``text`` fraction 16-symbol text, the rest random bytes."""
    cut = int(size * text)
    return rng.randbytes(cut).translate(_TEXT) + rng.randbytes(size - cut)


def _generated_entries(
    rng: random.Random, kind: str, budget: int, low: int, high: int, text: float
) -> Iterator[_Entry]:
    """Files of ``kind`` whose data add up to ``budget`` bytes, sizes log-uniform in [low, high]."""
    if kind == "small":
        yield from _dirs("usr", "usr/share", "usr/share/bench")
    elif kind == "medium":
        yield from _dirs("usr", "usr/lib", "usr/lib/bench")
    else:
        yield from _dirs("opt", "opt/bench")
    left, n = budget, 0
    while left > 0:
        size = min(left, int(math.exp(rng.uniform(math.log(low), math.log(high)))))
        if kind == "small":
            if n % 64 == 0:
                yield from _dirs(f"usr/share/bench/d{n // 64:03d}")
            name = f"usr/share/bench/d{n // 64:03d}/f{n:05d}.txt"
        elif kind == "medium":
            name = f"usr/lib/bench/lib{n:04d}.so.1"
        else:
            name = f"opt/bench/blob{n:02d}.bin"
        yield _file(name, _data(rng, size, text), 0o755 if kind == "medium" else 0o644)
        left -= size
        n += 1


def _write_layer(path: Path, kind: str, entries: Iterator[_Entry]) -> LayerInfo:
    """Stream ``entries`` into a gzip tar at ``path``, hashing both forms on the way."""
    files = file_bytes = 0
    with path.open("wb") as out:
        blob = _Hashing(out)
        with gzip.GzipFile(fileobj=blob, mode="wb", compresslevel=_GZIP_LEVEL, mtime=0) as gz:
            diff = _Hashing(gz)
            with tarfile.open(fileobj=diff, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for info, data in entries:
                    tar.addfile(info, None if data is None else io.BytesIO(data))
                    if data is not None:
                        files += 1
                        file_bytes += len(data)
    return LayerInfo(kind, blob.digest, blob.count, diff.digest, diff.count, files, file_bytes)


def _sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _oci_metadata(layers: list[LayerInfo], name: str) -> dict[str, bytes]:
    """The small files and blobs beside the layers: layout, index, manifest, config."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    config = _json(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin:/usr/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": _MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _sha(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": _LAYER_TYPE, "digest": layer.digest, "size": layer.size}
                for layer in layers
            ],
        }
    )
    target = {
        "mediaType": _MANIFEST_TYPE,
        "digest": _sha(manifest),
        "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": name},
    }
    return {
        "oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
        "index.json": _json({"schemaVersion": 2, "manifests": [target]}),
        f"blobs/sha256/{_sha(config)[7:]}": config,
        f"blobs/sha256/{_sha(manifest)[7:]}": manifest,
    }


def _build(path: Path, mb: int, scratch: Path) -> tuple[LayerInfo, ...]:
    """Write the layers into ``scratch``, then the archive of them all at ``path``."""
    rng = random.Random(_SEED)
    layers = [_write_layer(scratch / "base", "base", _base_entries())]
    rest = max(mb * 1_000_000 - layers[0].file_bytes, len(_PLAN) * _MIN_SHARE)
    for kind, share, low, high, text in _PLAN:
        budget = max(int(rest * share), _MIN_SHARE)
        entries = _generated_entries(rng, kind, budget, low, high, text)
        layers.append(_write_layer(scratch / kind, kind, entries))
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in _oci_metadata(layers, image_name(mb)).items():
            info = _info(member, tarfile.REGTYPE, 0o644, len(data))
            tar.addfile(info, io.BytesIO(data))
        for layer in layers:
            info = _info(f"blobs/sha256/{layer.digest[7:]}", tarfile.REGTYPE, 0o644, layer.size)
            with (scratch / layer.kind).open("rb") as blob:
                tar.addfile(info, blob)
    return tuple(layers)


def bench_archive(cache_dir: Path, mb: int) -> BenchArchive:
    """The archive of ``mb`` MB of layers under ``cache_dir``: from the cache, or built now.

    A cached archive is used when its description (a JSON file beside it,
    written last) is there and the archive has the size it records; a
    half-written one is never renamed into place.
    """
    if not BUSYBOX.is_file():
        raise FileNotFoundError(f"{BUSYBOX} is missing: install busybox-static")
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"images-v{ARCHIVE_VERSION}-{platform.machine()}-{mb}mb"
    path, meta = cache_dir / f"{stem}.tar", cache_dir / f"{stem}.json"
    try:
        described = json.loads(meta.read_text())
        if described["archive_bytes"] == path.stat().st_size:
            layers = tuple(LayerInfo(**layer) for layer in described["layers"])
            return BenchArchive(path, described["name"], mb, path.stat().st_size, layers, None)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not built yet, or left half-built: build it again
    began = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=cache_dir))
    try:
        layers = _build(scratch / "archive.tar", mb, scratch)
        os.replace(scratch / "archive.tar", path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    archive = BenchArchive(
        path, image_name(mb), mb, path.stat().st_size, layers, time.monotonic() - began
    )
    tmp = meta.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(archive.to_json(), indent=2) + "\n")
    os.replace(tmp, meta)
    return archive
