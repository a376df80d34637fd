"""Checkpoints as content: a CRIU image directory, tarred into one blob.

``Tasks/Checkpoint`` stores the image as a sha256-addressed blob and
answers its descriptor; ``Tasks/Create`` with that descriptor unpacks it
for ``runc restore``. The tar holds only regular files (what CRIU writes),
so unpacking cannot place anything outside the target.
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.content import ContentStore
from wire.errors import InvalidArgument

__all__ = ["CHECKPOINT_MEDIA_TYPE", "store_checkpoint", "unpack_checkpoint"]

CHECKPOINT_MEDIA_TYPE = "application/vnd.containerd.container.criu.checkpoint.criu.tar"


def store_checkpoint(
    image_dir: Path, content: ContentStore, hold: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Tar ``image_dir`` into a blob; returns its Descriptor.

    ``hold`` is called with the digest before the blob is stored (a lease:
    the garbage collector must not take a blob not yet recorded).
    """
    with tempfile.TemporaryFile() as buf:
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for path in sorted(image_dir.iterdir()):
                if path.is_file():
                    tar.add(path, arcname=path.name, recursive=False)
        buf.seek(0)
        sha = hashlib.sha256()
        while chunk := buf.read(1 << 20):
            sha.update(chunk)
        expected = f"sha256:{sha.hexdigest()}"
        if hold is not None:
            hold(expected)
        buf.seek(0)
        digest, size = content.ingest(f"checkpoint-{expected}", buf, expected_digest=expected)
    return {"media_type": CHECKPOINT_MEDIA_TYPE, "digest": digest, "size": size}


def unpack_checkpoint(digest: str, content: ContentStore, target: Path) -> None:
    """Unpack the checkpoint blob ``digest`` into ``target``."""
    blob = content.path_of(digest)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tarfile.open(blob, mode="r") as tar:
        for member in tar.getmembers():
            if not member.isfile() or "/" in member.name or member.name in ("", ".", ".."):
                raise InvalidArgument(
                    f'checkpoint "{digest}": entry {member.name!r} is not a plain image file'
                )
        tar.extractall(target, filter="data")
