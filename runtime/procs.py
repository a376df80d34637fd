"""Finding berth's processes by their titles."""

from __future__ import annotations

import os

__all__ = ["find_shim_pid", "shim_title"]


def shim_title(ns: str, cid: str) -> str:
    """The process title of the shim of task ``ns/cid``."""
    return f"berth-shim {ns}/{cid}"


def find_shim_pid(ns: str, cid: str) -> int:
    """The pid of the live shim of ``ns/cid``, or 0 when there is none."""
    want = shim_title(ns, cid).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().split(b"\0", 1)[0].rstrip()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        # An exact title, and not a zombie waiting to be reaped.
        if title == want and state != b"Z":
            return int(entry)
    return 0
