"""A real ``berthd`` process on a temporary root, for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class DaemonProcess:
    """A berthd started by a test: its directories, address and process."""

    root: Path
    state: Path
    address: str
    log: Path
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> DaemonProcess:
        """Start berthd and wait until its socket exists."""
        sock = Path(self.address.removeprefix("ipc://"))
        if sock.exists():
            sock.unlink()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "berth.daemon",
                "--root",
                str(self.root),
                "--state",
                str(self.state),
                "--address",
                self.address,
                "--log-level",
                "debug",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),  # noqa: SIM115 - the child owns it
        )
        if wait:
            deadline = time.monotonic() + 60  # a loaded 2-core CI machine is slow
            while not sock.exists():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"berthd exited {self.proc.returncode}: {self.log_text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"berthd did not bind: {self.log_text()}")
                time.sleep(0.02)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal berthd and wait for it; returns its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        """What berthd logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def make_daemon(tmp_path: Path, *extra_args: str) -> DaemonProcess:
    """A daemon (not started) on fresh directories under ``tmp_path``."""
    # ipc paths are limited to ~107 bytes; pytest's tmp_path can be long.
    state = Path(f"/tmp/berth-it-{os.getpid()}-{time.monotonic_ns()}")
    return DaemonProcess(
        root=tmp_path / "root",
        state=state,
        address=f"ipc://{state}/berth.sock",
        log=tmp_path / "berthd.log",
        extra_args=list(extra_args),
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A running berthd; stopped (SIGTERM) after the test."""
    d = make_daemon(tmp_path).start()
    try:
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        subprocess.run(["rm", "-rf", str(d.state)], check=False)
