"""A minimal root filesystem from a static busybox.

For the test suites, the benchmarks and quick trials: ``/bin/busybox``
(Debian's ``busybox-static``), the applets people reach for, and the usual
directories, so a spec from :func:`runtime.spec.default_spec` runs in it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["APPLETS", "BUSYBOX", "make_busybox_rootfs"]

BUSYBOX = Path("/bin/busybox")
APPLETS = (
    "sh", "echo", "sleep", "cat", "true", "false", "ls", "ps", "id", "env", "pwd",
    "wc", "head", "stty", "kill", "printf", "test", "touch", "mkdir", "rm", "yes",
)  # fmt: skip


def make_busybox_rootfs(path: Path) -> Path:
    """A minimal rootfs at ``path``: static busybox, its applets, the usual dirs."""
    if not BUSYBOX.is_file():
        raise FileNotFoundError(f"{BUSYBOX} is missing: install busybox-static")
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "root"):
        (path / d).mkdir(parents=True, exist_ok=True)
    (path / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX, path / "bin" / "busybox")
    for applet in APPLETS:
        link = path / "bin" / applet
        if not link.is_symlink():
            link.symlink_to("busybox")
    (path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (path / "etc" / "group").write_text("root:x:0:\n")
    return path
