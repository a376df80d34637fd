"""Real runc containers on a busybox rootfs: fixtures and importable helpers.

The helpers (``make_busybox_rootfs``, ``make_bundle``, ``unique_id``,
``set_subreaper``, ``wait_exit``, ``wait_status``) and the
``requires_root_and_runc`` marker are plain names, so other e2e modules
import them: ``from tests.e2e.conftest import make_bundle``.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.rootfs import BUSYBOX, make_busybox_rootfs
from runtime.runc import Runc
from runtime.spec import default_spec

_PR_SET_CHILD_SUBREAPER = 36
_ids = itertools.count()


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "e2e tests need root (runc creates namespaces and mounts)"
    if shutil.which("runc") is None:
        return "e2e tests need runc on PATH"
    if not BUSYBOX.is_file():
        return f"e2e tests need a static busybox at {BUSYBOX}"
    return None


SKIP_REASON = _skip_reason()
requires_root_and_runc = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


def make_bundle(path: Path, args: list[str], rootfs: Path | str, **process: object) -> Path:
    """A bundle dir at ``path`` whose config.json runs ``args`` on ``rootfs``."""
    path.mkdir(parents=True, exist_ok=True)
    spec = default_spec(args, str(rootfs))
    spec["process"].update(process)
    (path / "config.json").write_text(json.dumps(spec))
    return path


def unique_id(prefix: str = "e2e") -> str:
    """A container id no other test (or concurrent test run) uses."""
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


def set_subreaper(on: bool) -> None:
    """Make this process the subreaper of orphans below it (runc's inits and execs)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def wait_exit(pid: int, timeout: float = 10.0) -> int:
    """Reap child ``pid``; its exit status, 128 + N when killed by signal N."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.WEXITSTATUS(status)
        if time.monotonic() > deadline:
            raise TimeoutError(f"pid {pid} did not exit within {timeout}s")
        time.sleep(0.01)


def wait_status(runc: Runc, id: str, status: str, timeout: float = 10.0) -> dict[str, object]:
    """Poll ``runc state`` until the container reports ``status``."""
    deadline = time.monotonic() + timeout
    while True:
        state = runc.state(id)
        if state["status"] == status:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"container {id} is {state['status']}, not {status}")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One busybox rootfs shared by the session's containers (they do not write to it)."""
    if not BUSYBOX.is_file():
        pytest.skip(f"no static busybox at {BUSYBOX}")
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture(scope="session")
def runc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runc's ``--root`` for the session's containers."""
    return tmp_path_factory.mktemp("runc-root")


@pytest.fixture
def runc(runc_root: Path, tmp_path: Path) -> Runc:
    """A runc driver on the session's runc root."""
    return Runc(root=runc_root, log_dir=tmp_path / "runc-logs")


@pytest.fixture
def subreaper() -> Iterator[None]:
    """This process as subreaper for the test, so it can reap the inits it makes."""
    set_subreaper(True)
    try:
        yield
    finally:
        set_subreaper(False)
