"""berth's version, and the source revision it was built from when known."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__all__ = ["VERSION", "revision"]

VERSION = "0.1.0"


@functools.cache
def revision() -> str:
    """The git commit of the source tree, or "" when not running from a checkout."""
    top = Path(__file__).resolve().parent.parent
    if not (top / ".git").exists():
        return ""
    try:
        out = subprocess.run(
            ["git", "-C", str(top), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()
