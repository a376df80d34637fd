"""Helpers of :mod:`tests.e2e.test_event_log`: a raw DEALER, a big-blob archive, a producer.

- :class:`Raw` speaks the wire contract alone (docs/protocol.md §1.2, §2,
  §6.6): msgpack frames on a DEALER socket, so a test decides exactly when
  it sends credit, and whether it reads at all.
- :func:`big_blob_archive` writes an OCI image-layout archive whose one
  layer is an uncompressed tar of one all-zero file, the archive file
  sparse, so a blob of a gigabyte costs the test no time to build.
- :func:`produce` churns containers (Create + Delete) as fast as a
  pipelining client can, two events per cycle. ``python -m
  tests.e2e.event_helpers ADDRESS EVENTS CONCURRENCY NS SECONDS`` runs it in a
  process of its own, so a test's latency probe does not share its GIL.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

import berth
from wire.errors import from_wire

__all__ = ["Raw", "big_blob_archive", "produce", "read_until"]

_ids = itertools.count(1)
TINY_SPEC: dict[str, Any] = {"ociVersion": "1.0.2"}  # containers that never run


def pack(frame: dict[str, Any]) -> bytes:
    return msgpack.packb(frame, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(payload: bytes) -> dict[str, Any]:
    frame = msgpack.unpackb(payload, raw=False)
    assert isinstance(frame, dict), frame
    return frame


class Raw:
    """A DEALER client written from the wire contract alone.

    Frames of calls other than the one waited for are kept (``kept``) so a
    stream and unary calls can share the socket. ``rcvhwm`` small keeps a
    client that does not read from buffering much on its side.
    """

    def __init__(self, address: str, *, rcvhwm: int = 1000) -> None:
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.connect(address)
        self.kept: list[dict[str, Any]] = []

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{os.getpid()}-{next(_ids)}"

    def send(self, frame: dict[str, Any]) -> None:
        self.sock.send_multipart([b"", pack(frame)])

    def request(self, request_id: str, method: str, body: dict[str, Any], ns: str = "") -> None:
        frame: dict[str, Any] = {"v": 1, "id": request_id, "method": method, "body": body}
        if ns:
            frame["ns"] = ns
        self.send(frame)

    def credit(self, request_id: str, frames: Any, **extra: Any) -> None:
        self.send({"v": 1, "id": request_id, "credit": frames, **extra})

    def recv(self, timeout: float) -> dict[str, Any] | None:
        """The next frame off the socket, or None after ``timeout`` seconds."""
        if not self.sock.poll(max(0, int(timeout * 1000))):
            return None
        return unpack(self.sock.recv_multipart()[-1])

    def next_for(self, request_id: str, timeout: float) -> dict[str, Any] | None:
        """The next frame of ``request_id`` (kept ones first), or None after ``timeout``."""
        for n, kept in enumerate(self.kept):
            if kept.get("id") == request_id:
                return self.kept.pop(n)
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv(max(0.0, deadline - time.monotonic()))
            if frame is None:
                return None
            if frame.get("id") == request_id:
                return frame
            self.kept.append(frame)

    def call(self, method: str, body: dict[str, Any], ns: str = "", timeout: float = 20) -> Any:
        """A unary call on this socket; its reply body (raises the error it got)."""
        call_id = self.new_id("call")
        self.request(call_id, method, body, ns)
        frame = self.next_for(call_id, timeout)
        assert frame is not None, f"no reply to {method} within {timeout}s"
        if "error" in frame:
            raise from_wire(frame["error"])
        return frame["body"]

    def close(self) -> None:
        self.sock.close(linger=0)


def read_until(stream: Any, target: int, timeout: float) -> tuple[list[dict[str, Any]], int]:
    """Events of ``Events/Subscribe`` frames (an iterator of bodies) until ``seq`` >= ``target``.

    Returns the events and the last frame's ``seq``.
    """
    events: list[dict[str, Any]] = []
    seq = -1
    deadline = time.monotonic() + timeout
    for body in stream:
        events.extend(body["events"])
        seq = body["seq"]
        if seq >= target:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"the stream reached seq {seq}, not {target}, in {timeout}s")
    return events, seq


# --- a big blob ------------------------------------------------------------

_BLOCK = 512


def _zero_sha(prefix: bytes, zeros: int, suffix: bytes = b"") -> str:
    h = hashlib.sha256(prefix)
    chunk = bytes(8 << 20)
    left = zeros
    while left:
        n = min(left, len(chunk))
        h.update(chunk[:n] if n < len(chunk) else chunk)
        left -= n
    h.update(suffix)
    return f"sha256:{h.hexdigest()}"


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, 0o644, 1_700_000_000, tarfile.REGTYPE
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


def big_blob_archive(path: Path, file_bytes: int, name: str) -> tuple[str, int]:
    """An OCI archive at ``path`` with one image ``name`` whose layer holds ``file_bytes`` zeros.

    The layer is a plain tar (so its blob is its diff_id): one 512-byte
    header, the zeros, two zero blocks. Returns the layer blob's digest and
    size. The archive's file is sparse where the zeros are.
    """
    assert file_bytes % _BLOCK == 0
    inner = _header("big.bin", file_bytes)
    layer_size = len(inner) + file_bytes + 2 * _BLOCK
    layer_digest = _zero_sha(inner, file_bytes + 2 * _BLOCK)
    config = _json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
    )
    config_digest = f"sha256:{hashlib.sha256(config).hexdigest()}"
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": layer_size,
                }
            ],
        }
    )
    manifest_digest = f"sha256:{hashlib.sha256(manifest).hexdigest()}"
    index = _json(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {"org.opencontainers.image.ref.name": name},
                }
            ],
        }
    )
    small = [
        ("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
        ("index.json", index),
        (f"blobs/sha256/{config_digest[7:]}", config),
        (f"blobs/sha256/{manifest_digest[7:]}", manifest),
    ]
    with open(path, "wb") as f:
        for member, data in small:
            f.write(_header(member, len(data)))
            f.write(data + bytes(-len(data) % _BLOCK))
        f.write(_header(f"blobs/sha256/{layer_digest[7:]}", layer_size))
        f.write(inner)
        f.seek(file_bytes + 2 * _BLOCK, os.SEEK_CUR)  # the layer's zeros: a hole
        f.write(bytes(2 * _BLOCK))  # the archive's end
    return layer_digest, layer_size


# --- a fast producer -------------------------------------------------------


async def _produce(
    address: str,
    events: int,
    concurrency: int,
    ns: str,
    stop: threading.Event | None,
    seconds: float | None,
) -> int:
    client = berth.AsyncClient(address, namespace=ns, timeout=60)
    cycles = itertools.count()
    prefix = f"load-{os.getpid()}-{next(_ids)}"
    until = None if seconds is None else time.monotonic() + seconds

    def more(n: int) -> bool:
        if n * 2 >= events or (stop is not None and stop.is_set()):
            return False
        return until is None or time.monotonic() < until

    async def worker() -> None:
        while more(n := next(cycles)):
            await client.containers.create(f"{prefix}-{n}", spec=TINY_SPEC)
            await client.containers.delete(f"{prefix}-{n}")

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.aclose()
    return next(cycles)


def produce(
    address: str,
    events: int,
    concurrency: int = 64,
    ns: str = "load",
    stop: threading.Event | None = None,
    seconds: float | None = None,
) -> None:
    """Create and delete containers in ``ns`` until ``events`` events were made.

    Or until ``stop`` is set, or ``seconds`` passed: then fewer.
    """
    asyncio.run(_produce(address, events, concurrency, ns, stop, seconds))


if __name__ == "__main__":
    produce(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], None, float(sys.argv[5]))
