"""The containerd side of ``berth-bench images``: ``ctr images import`` of the same archive.

Used when ``--containerd-address`` names a containerd socket and ``ctr`` is
on the PATH (``/work/shared/tools/containerd-sandbox up`` starts a private
containerd and prints its socket). Each run is ``ctr -a <socket> -n
bench-images images import <archive>``, which unpacks with containerd's
default snapshotter (overlayfs), timed as a whole, process start included;
then ``ctr images rm --sync`` of what it made, which waits for containerd's
garbage collection, so the next run starts from nothing again.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from typing import Any

from bench.image_archive import BenchArchive
from bench.image_bench import IMPORT_TIMEOUT_S, NAMESPACE, quiesce
from bench.image_report import ImagesOutcome

__all__ = ["CtrImports", "containerd_side"]


class CtrImports:
    """The containerd side: ``ctr images import`` of the same archive, timed, then removed."""

    def __init__(
        self, ctr: str, address: str, outcome: ImagesOutcome, archive: BenchArchive
    ) -> None:
        self.ctr, self.address, self.outcome, self.archive = ctr, address, outcome, archive

    def _ctr(self, *args: str) -> str:
        argv = [self.ctr, "-a", self.address, "-n", NAMESPACE, *args]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def describe(self) -> dict[str, Any]:
        """Versions, and what containerd would gunzip with (it runs unpigz when on its PATH)."""
        return {
            "address": self.address,
            "ctr": self.ctr,
            "version": self._ctr("version").strip(),
            "unpigz": shutil.which("unpigz"),
        }

    def _remove_images(self) -> None:
        if names := self._ctr("images", "ls", "-q").split():
            self._ctr("images", "rm", "--sync", *names)

    def clear(self) -> None:
        """Before the first import: no image in the namespace, and nothing left of one."""
        self._remove_images()
        self._check_collected("before the first import")

    def _check_collected(self, when: str) -> None:
        snapshots = self._ctr("snapshots", "ls").splitlines()[1:]  # under a header
        content = self._ctr("content", "ls", "-q").split()
        if snapshots or content:
            self.outcome.notes.append(
                f"containerd kept {len(snapshots)} snapshot(s) and {len(content)} blob(s) in"
                f" {NAMESPACE} {when}: its next import did not start from nothing"
            )

    def import_once(self, run: int) -> None:
        """One timed ``ctr images import``, then ``ctr images rm --sync`` (timed apart)."""
        quiesce()
        began = time.perf_counter()
        self._ctr("images", "import", str(self.archive.path))
        self.outcome.ctr_imports_s.append(time.perf_counter() - began)
        names = self._ctr("images", "ls", "-q").split()
        if self.archive.name not in names:
            self.outcome.notes.append(f"ctr import {run + 1} made {names}, not {self.archive.name}")
        began = time.perf_counter()
        self._remove_images()
        self.outcome.ctr_cleanup_s.append(time.perf_counter() - began)
        self._check_collected(f"after run {run + 1}")


def containerd_side(
    args: argparse.Namespace, outcome: ImagesOutcome, archive: BenchArchive
) -> CtrImports | None:
    """The containerd side when asked for and usable; else why not, in ``outcome.containerd``."""
    address = args.containerd_address
    if address is None and args.compare == "containerd":
        address = "/run/containerd/containerd.sock"
    if address is None:
        outcome.containerd = {"skipped": "no --containerd-address"}
        return None
    address = address.removeprefix("unix://")
    ctr = shutil.which("ctr")
    if ctr is None:
        outcome.containerd = {"skipped": "ctr is not on the PATH"}
        return None
    side = CtrImports(ctr, address, outcome, archive)
    try:
        outcome.containerd = side.describe()
        side.clear()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        outcome.containerd = {"skipped": f"{address}: {exc}"}
        return None
    return side
