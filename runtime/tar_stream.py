"""Read a tar stream, plain or gzip, hashing its uncompressed bytes.

What image layers and image archives share: gzip is detected by its magic
bytes, not by a name or media type; the sha256 of the uncompressed stream
(a layer's diff_id) is computed while it is read, to the stream's very end;
and a stream that is damaged, cut short or not a tar at all is refused as
:class:`~wire.errors.InvalidArgument` naming the last entry read whole.

:class:`TarStream` reads a stream once, as it comes; :class:`SpooledTar`
also copies the uncompressed bytes to a file of the caller's, so that the
entries' data can be read again, at random, without a second decompression
or header parse. gzip is gunzipped by zlib in large chunks (:class:`_Gunzip`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Protocol, TypeAlias, cast

from wire.errors import InvalidArgument

__all__ = [
    "GZIP_MAGIC",
    "LayerSource",
    "SpooledTar",
    "StrictTarInfo",
    "TarStream",
    "layer_opener",
    "uncompressed_digest",
]

LayerSource: TypeAlias = Callable[[], IO[bytes]] | str | os.PathLike[str]
GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer, which zlib checks
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

    def take(self, size: int) -> bytes:
        """Up to ``size`` bytes, ``b""`` only at the end; no copy into a buffer."""
        if self.head:
            data, self.head = self.head[:size], self.head[size:]
        else:
            try:
                data = self.inner.read(size)
            except (EOFError, zlib.error) as exc:
                raise _Corrupt(f"damaged gzip stream: {exc}") from None
        if self.sha is not None:
            self.sha.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.take(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def layer_opener(layer: LayerSource) -> Callable[[], IO[bytes]]:
    """A callable opening ``layer`` afresh: ``layer`` itself, or one opening a path."""
    if callable(layer):
        return layer
    path = os.fspath(layer)
    return lambda: open(path, "rb")  # the caller closes it


class _Gunzip:
    """A gzip stream's data, read as :class:`gzip.GzipFile` reads it, in large chunks.

    zlib parses each member's header and checks its CRC and length (and the
    header's CRC, when there is one, which GzipFile does not); members follow
    one another, with zero bytes between them skipped, as GzipFile does.
    Anything else after a member, or a member cut short, is an error.
    """

    def __init__(self, raw: _Readable) -> None:
        self.raw = raw
        # The member being read; None between members.
        self.member: zlib._Decompress | None = zlib.decompressobj(_GZIP_WBITS)
        self.input = b""

    def read(self, size: int = _CHUNK, /) -> bytes:
        while True:
            if self.member is None:
                self.input = self.input.lstrip(b"\0")
                if not self.input:
                    self.input = self.raw.read(_CHUNK)
                    if not self.input:
                        return b""
                    continue
                self.member = zlib.decompressobj(_GZIP_WBITS)
            if not self.input:
                self.input = self.raw.read(_CHUNK)
                if not self.input:
                    raise EOFError(
                        "Compressed file ended before the end-of-stream marker was reached"
                    )
            out = self.member.decompress(self.input, size)
            if self.member.eof:
                self.input, self.member = self.member.unused_data, None
            else:
                self.input = self.member.unconsumed_tail
            if out:
                return out


def _uncompressed(raw: IO[bytes]) -> _Source:
    """``raw`` gunzipped when it starts with the gzip magic, hashed as read."""
    head = raw.read(len(GZIP_MAGIC))
    buffered = io.BufferedReader(_Source(raw, head))
    stream: _Readable = buffered
    if head == GZIP_MAGIC:
        stream = _Gunzip(buffered)
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


class _SpoolReader:
    """What tarfile reads in :class:`SpooledTar`: the stream, spooled as first read.

    Seekable: reading past what is spooled so far reads on (decompresses) and
    appends to the spool; anything before is read back, from the chunk read
    last when it is there (as tar headers mostly are), else from the spool.
    """

    def __init__(self, source: _Source, spool: int) -> None:
        self.source, self.spool = source, spool
        self.pos = self.filled = 0
        self.ended = False
        self.window, self.window_at = b"", 0  # the chunk spooled last, and its offset

    def _fill(self, end: int) -> None:
        while self.filled < end and not self.ended:
            chunk = self.source.take(_CHUNK)
            if not chunk:
                self.ended = True
                return
            _write_all(self.spool, chunk)
            self.window, self.window_at = chunk, self.filled
            self.filled += len(chunk)

    def read(self, size: int = -1, /) -> bytes:
        start = self.pos
        end = start + size if size >= 0 else 1 << 62
        self._fill(end)
        end = min(end, self.filled)
        if end <= start:
            return b""
        self.pos = end
        if start >= self.window_at and end <= self.window_at + len(self.window):
            return self.window[start - self.window_at : end - self.window_at]
        return _pread_all(self.spool, end - start, start)

    def seek(self, pos: int, whence: int = os.SEEK_SET, /) -> int:
        if whence == os.SEEK_CUR:
            pos += self.pos
        elif whence != os.SEEK_SET:
            raise io.UnsupportedOperation("seek from the end")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self.pos = pos
        return pos

    def tell(self) -> int:
        return self.pos

    def write(self, data: bytes, /) -> int:
        raise io.UnsupportedOperation("write")

    def close(self) -> None:
        pass  # the spool belongs to the caller

    def drain(self) -> None:
        """Read (and hash) the rest of the stream, past the archive's end: not spooled."""
        self.ended = True
        while self.source.take(_CHUNK):
            pass


class SpooledTar(TarStream):
    """A :class:`TarStream` that copies the uncompressed stream to ``spool`` as read.

    ``spool`` is a descriptor of an empty regular file open for reading and
    writing, which the caller owns (and removes). The stream is read once;
    up to the end of the archive (what follows it is hashed, not spooled),
    its bytes go to ``spool``, and :attr:`members` records every entry with
    its data's offset, as tarfile parsed it. After the loop, :meth:`copy_data`
    reads an entry's data back by that offset: a second pass neither
    decompresses nor parses a header again.
    """

    def __init__(self, raw: IO[bytes], label: str, spool: int) -> None:
        super().__init__(raw, label)
        self.spool = spool
        self.members: list[tarfile.TarInfo] = []
        self._tar: tarfile.TarFile | None = None

    def __iter__(self) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
        with self.reading():
            source = _uncompressed(self.raw)
            reader = _SpoolReader(source, self.spool)
            if reader.read(1):  # an empty stream is an empty layer, as in Go's archive/tar
                reader.seek(0)
                # Random access on the spool: data is skipped by seeking, not read through.
                self._tar = tarfile.TarFile(fileobj=reader, tarinfo=StrictTarInfo)
                for m in self._tar:
                    self.last = m.name
                    if m.sparse is not None:  # its map must stay within its own data
                        mapped = sum(n for _, n in cast(list[tuple[int, int]], m.sparse))
                        if mapped > self._tar.offset - m.offset_data:
                            raise tarfile.ReadError("sparse map beyond the entry's data")
                    self.members.append(m)
                    yield self._tar, m
            reader.drain()
        assert source.sha is not None
        self.digest, self.size = f"sha256:{source.sha.hexdigest()}", source.size

    def copy_data(self, m: tarfile.TarInfo, out: int) -> None:
        """Write the data of ``m``, one of :attr:`members`, to descriptor ``out``."""
        if m.sparse is not None:  # GNU sparse: tarfile maps the data onto the holes
            assert self._tar is not None
            data = self._tar.extractfile(m)
            assert data is not None
            while chunk := data.read(_CHUNK):
                _write_all(out, chunk)
            return
        offset, left = m.offset_data, m.size
        while left:  # tarfile checked that the whole of it was there
            try:
                sent = os.sendfile(out, self.spool, offset, min(left, 1 << 30))
            except OSError as exc:  # no sendfile between these files: copy
                if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                for at in range(offset, offset + left, _CHUNK):
                    _write_all(out, _pread_all(self.spool, min(_CHUNK, offset + left - at), at))
                return
            if not sent:
                raise tarfile.ReadError("unexpected end of data")
            offset, left = offset + sent, left - sent


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    parts = []
    while size:
        part = os.pread(fd, min(size, _CHUNK), offset)
        if not part:
            raise tarfile.ReadError("unexpected end of data")
        parts.append(part)
        size, offset = size - len(part), offset + len(part)
    return b"".join(parts)


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
