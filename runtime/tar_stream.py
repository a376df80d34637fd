"""Read a tar stream, plain or gzip, hashing its uncompressed bytes.

What image layers and image archives share: gzip is detected by its magic
bytes, not by a name or media type; the sha256 of the uncompressed stream
(a layer's diff_id) is computed while it is read, to the stream's very end;
and a stream that is damaged, cut short or not a tar at all is refused as
:class:`~wire.errors.InvalidArgument` naming the last entry read whole.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Protocol, TypeAlias

from wire.errors import InvalidArgument

__all__ = [
    "GZIP_MAGIC",
    "LayerSource",
    "StrictTarInfo",
    "TarStream",
    "layer_opener",
    "uncompressed_digest",
]

LayerSource: TypeAlias = Callable[[], IO[bytes]] | str | os.PathLike[str]
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
# Not in typeshed; what tarfile raises for a garbled or a cut header block.
_BAD_HEADER: tuple[type[Exception], ...] = (
    vars(tarfile)["InvalidHeaderError"],
    vars(tarfile)["TruncatedHeaderError"],
)


class StrictTarInfo(tarfile.TarInfo):
    """A TarInfo whose reader refuses a bad header past the first.

    tarfile ends an archive silently at a garbled or cut header after offset
    0; a layer or archive cut there must be refused as truncated instead.
    """

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> StrictTarInfo:
        try:
            return super().fromtarfile(tf)
        except _BAD_HEADER as exc:
            raise tarfile.ReadError(f"{exc} at offset {tf.offset}") from None


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Corrupt(Exception):
    """The gzip stream is damaged or cut short."""


class _Source(io.RawIOBase):
    """Reads ``inner`` after ``head``, optionally hashing what passes."""

    def __init__(self, inner: _Readable, head: bytes = b"", hashing: bool = False) -> None:
        self.inner, self.head = inner, head
        self.sha = hashlib.sha256() if hashing else None
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.head:
            data, self.head = self.head[: len(buffer)], self.head[len(buffer) :]
        else:
            try:
                data = self.inner.read(len(buffer))
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise _Corrupt(f"damaged gzip stream: {exc}") from None
        buffer[: len(data)] = data
        if self.sha is not None:
            self.sha.update(data)
        self.size += len(data)
        return len(data)


def layer_opener(layer: LayerSource) -> Callable[[], IO[bytes]]:
    """A callable opening ``layer`` afresh: ``layer`` itself, or one opening a path."""
    if callable(layer):
        return layer
    path = os.fspath(layer)
    return lambda: open(path, "rb")  # the caller closes it


def _uncompressed(raw: IO[bytes]) -> _Source:
    """``raw`` gunzipped when it starts with the gzip magic, hashed as read."""
    head = raw.read(len(GZIP_MAGIC))
    buffered = io.BufferedReader(_Source(raw, head))
    stream: _Readable = buffered
    if head == GZIP_MAGIC:
        stream = gzip.GzipFile(fileobj=buffered, mode="rb")
    return _Source(stream, hashing=True)


class TarStream:
    """One read of a tar stream: its entries, then the rest of it read and hashed.

    Iterate for ``(tarfile, member)`` pairs (a member's data is read with
    ``tarfile.extractfile(member)`` before the next); after the loop,
    ``digest`` and ``size`` are those of the uncompressed stream.
    """

    def __init__(self, raw: IO[bytes], label: str) -> None:
        self.raw, self.label = raw, label
        self.last: str | None = None
        self.digest = ""
        self.size = 0

    def __iter__(self) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
        with self.reading():
            source = _uncompressed(self.raw)
            buffered = io.BufferedReader(source, _CHUNK)
            if buffered.peek(1):  # an empty stream is an empty layer, as in Go's archive/tar
                with tarfile.open(fileobj=buffered, mode="r|", tarinfo=StrictTarInfo) as tf:
                    for m in tf:
                        self.last = m.name
                        yield tf, m
            while buffered.read(_CHUNK):
                pass
        assert source.sha is not None
        self.digest, self.size = f"sha256:{source.sha.hexdigest()}", source.size

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Damaged or cut data, met while parsing or extracting, as InvalidArgument."""
        try:
            yield
        except (tarfile.TarError, _Corrupt, EOFError) as exc:
            if self.last is not None:
                where = f'after entry "{self.last}": '
            else:
                where = "" if isinstance(exc, _Corrupt) else "not a tar archive: "
            raise InvalidArgument(f"{self.label}: {where}{exc}") from None


def uncompressed_digest(source: LayerSource, label: str = "layer") -> tuple[str, int]:
    """The sha256 and size of ``source`` gunzipped when it is gzip (a diff_id)."""
    with layer_opener(source)() as raw:
        reader = _uncompressed(raw)
        try:
            while reader.read(_CHUNK):
                pass
        except _Corrupt as exc:
            raise InvalidArgument(f"{label}: {exc}") from None
        assert reader.sha is not None
        return f"sha256:{reader.sha.hexdigest()}", reader.size
