"""The berthd side of ``berth-bench images`` (:mod:`bench.images`): imports and snapshots.

:class:`BerthImages` drives one daemon through one :class:`berth.Client`,
one call at a time, in namespace :data:`NAMESPACE`: timed imports of the
bench archive, the cleanup between them (``Images/Delete`` + ``GC/Run``),
and Prepare + Remove rounds on the imported image. Every snapshot it makes
is tracked until removed, so :meth:`BerthImages.cleanup` can remove what a
failed run left. :func:`quiesce` and :func:`unjournaled_ext4` serve both
daemons' imports.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from pathlib import Path
from typing import Any

import berth
from bench.image_archive import BenchArchive
from bench.image_report import ImagesOutcome
from bench.load import RunOptions
from bench.target import Target

__all__ = [
    "IMPORT_TIMEOUT_S",
    "NAMESPACE",
    "WARMUP_ROUNDS",
    "BerthImages",
    "quiesce",
    "unjournaled_ext4",
    "warm",
]

NAMESPACE = "bench-images"
WARMUP_ROUNDS = 10  # unmeasured Prepare + Remove rounds before each measured loop
IMPORT_TIMEOUT_S = 900.0  # an import of a large archive on a slow disk takes minutes
_IMPORT = "berth.v1.Images/Import"
_DELETE = "containerd.v1.Images/Delete"
_GC = "berth.v1.GC/Run"
_PREPARE_ROOTFS = "berth.v1.Images/PrepareRootfs"
_SNAPSHOT = "containerd.v1.snapshot.Snapshot/"


def quiesce() -> None:
    """Before a timed import: nothing left to write back.

    Dirty pages of the previous run (its unpacking, its cleanup, the other
    daemon's import) would otherwise be written back during this one.
    """
    os.sync()


def unjournaled_ext4(path: Path) -> str | None:
    """The device when ``path`` is on an ext4 without a journal, else None.

    There (no journal), the inode allocator skips every inode of the group
    freed in the last 60 s, or 360 s once its inode table block is dirty
    again, one buffer lookup each, for every file it creates: after
    thousands of files were deleted nearby (the cleanup between runs, a
    previous run's daemon root, other work in the same directory) an import
    can take twice as long, and it is the filesystem that is measured.
    """
    try:
        dev = path.stat().st_dev
        mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in mountinfo:
        fields = line.split()
        major, minor = fields[2].split(":")
        rest = fields[fields.index("-") + 1 :]
        if os.makedev(int(major), int(minor)) != dev or rest[0] != "ext4":
            continue
        name = Path(rest[1]).name
        try:
            journal = Path(f"/sys/fs/ext4/{name}/journal_task").read_text().strip()
        except OSError:
            return None
        return name if journal == "<none>" else None
    return None


def _snapshot_infos(client: berth.Client, ns: str) -> list[dict[str, Any]]:
    return [
        info
        for body in client.stream(_SNAPSHOT + "List", {}, namespace=ns)
        for info in body["info"]
    ]


class BerthImages:
    """The berthd side: imports, their cleanup, snapshot latencies."""

    def __init__(
        self, target: Target, options: RunOptions, outcome: ImagesOutcome, archive: BenchArchive
    ) -> None:
        timeout = None if options.timeout is None else max(options.timeout, IMPORT_TIMEOUT_S)
        self.client = berth.Client(target.address, namespace=NAMESPACE, timeout=timeout)
        self.outcome = outcome
        self.archive = archive
        self.can_delete = True  # the daemon serves containerd.v1.Images/Delete
        self.spawned = target.spawned  # so its content store was empty at the start
        self.image_ns = NAMESPACE  # where the last import went
        self.live: set[str] = set()  # snapshot keys made and not yet removed
        self.prefix = f"b{os.getpid()}-"
        self._ids = itertools.count()

    def _delete_image(self, ns: str) -> None:
        """Images/Delete of the archive's image (if there), then a collection."""
        with contextlib.suppress(berth.NotFound):
            self.client.call(_DELETE, {"name": self.archive.name}, namespace=ns)
        self.client.call(_GC, {})

    def clear(self) -> None:
        """Before the first import: this run's namespace with no image and no snapshot.

        It also finds out whether the daemon can delete images; if not, every
        import goes to a namespace of its own.
        """
        for info in _snapshot_infos(self.client, NAMESPACE):
            if info["kind"] == "ACTIVE":
                with contextlib.suppress(berth.BerthError):
                    self.client.call(_SNAPSHOT + "Remove", {"key": info["name"]})
        try:
            self._delete_image(NAMESPACE)
        except berth.Unimplemented:
            self.can_delete = False
        if self.can_delete:
            self.outcome.fresh = "berthd Images/Delete + GC/Run, containerd ctr images rm --sync"
            self._check_collected("before the first import")
        else:
            self.outcome.fresh = (
                "this berthd has no Images/Delete, so each import goes to a namespace of its own"
                " (containerd: ctr images rm --sync)"
            )

    def _check_collected(self, when: str) -> None:
        if left := _snapshot_infos(self.client, NAMESPACE):
            self.outcome.breaches.append(
                f"{len(left)} snapshot(s) in {NAMESPACE} {when}, after Images/Delete + GC/Run:"
                f" {[i['name'] for i in left][:5]}"
            )

    def import_once(self, run: int, last: bool) -> None:
        """One timed import; unless ``last``, the image is then deleted and collected."""
        ns = NAMESPACE if self.can_delete else f"{NAMESPACE}-{os.getpid()}-{run}"
        quiesce()
        began = time.perf_counter()
        reply = self.client.call(
            _IMPORT, {"path": str(self.archive.path), "name": ""}, namespace=ns
        )
        self.outcome.berth_imports_s.append(time.perf_counter() - began)
        # Without Images/Delete, only the first import into a daemon spawned on an empty root
        # stores every blob; later ones find them stored and only unpack.
        self.outcome.berth_fresh.append(self.can_delete or (run == 0 and self.spawned))
        self.image_ns = ns
        names = [image["name"] for image in reply["images"]]
        if names != [self.archive.name]:
            self.outcome.breaches.append(
                f"import {run + 1} answered {names}, not the archive's image"
            )
        if last or not self.can_delete:
            return
        began = time.perf_counter()
        self._delete_image(ns)
        self.outcome.berth_cleanup_s.append(time.perf_counter() - began)
        self._check_collected(f"after run {run + 1}")

    def _key(self) -> str:
        return f"{self.prefix}{next(self._ids)}"

    def _prepare_remove(
        self, method: str, body: dict[str, Any], keys: tuple[str, str], n: int
    ) -> None:
        """``n`` measured rounds of ``method`` then Remove, after the warm-up rounds."""
        for i in range(WARMUP_ROUNDS + n):
            key = self._key()
            self.live.add(key)
            began = time.perf_counter_ns()
            reply = self.client.call(
                method, {**body, "key": key, "labels": {}}, namespace=self.image_ns
            )
            prepared = time.perf_counter_ns()
            self.client.call(_SNAPSHOT + "Remove", {"key": key}, namespace=self.image_ns)
            removed = time.perf_counter_ns()
            self.live.discard(key)
            if not reply["mounts"]:
                self.outcome.breaches.append(f"{method} of {key} answered no mounts")
            elif self.outcome.mount_type is None:
                self.outcome.mount_type = reply["mounts"][0]["type"]
            if i >= WARMUP_ROUNDS:
                self.outcome.add(keys[0], prepared - began)
                self.outcome.add(keys[1], removed - prepared)

    def top_chain_id(self) -> str | None:
        """The committed snapshot no other committed one has as parent: the image's top layer."""
        committed = [
            i for i in _snapshot_infos(self.client, self.image_ns) if i["kind"] == "COMMITTED"
        ]
        parents = {i["parent"] for i in committed}
        tops = [i["name"] for i in committed if i["name"] not in parents]
        if len(tops) != 1:
            self.outcome.notes.append(f"plain Prepare not measured: {len(tops)} top snapshots")
            return None
        return str(tops[0])

    def snapshots(self, iterations: int) -> None:
        """PrepareRootfs + Remove, then Prepare on the top chain id + Remove; each timed."""
        name = {"name": self.archive.name}
        self._prepare_remove(_PREPARE_ROOTFS, name, ("prepare_rootfs", "remove"), iterations)
        if (top := self.top_chain_id()) is not None:
            self._prepare_remove(
                _SNAPSHOT + "Prepare", {"parent": top}, ("prepare", "remove_prepared"), iterations
            )
        mine = [i["name"] for i in _snapshot_infos(self.client, self.image_ns)]
        if left := [key for key in mine if key.startswith(self.prefix)]:
            self.outcome.breaches.append(f"snapshots left after their Remove: {left[:5]}")

    def cleanup(self) -> None:
        """Remove what this run left: snapshots, and the image when the daemon can delete it."""
        for key in list(self.live):
            with contextlib.suppress(berth.BerthError):
                self.client.call(_SNAPSHOT + "Remove", {"key": key}, namespace=self.image_ns)
            self.live.discard(key)
        if self.can_delete:
            self._delete_image(NAMESPACE)

    def close(self) -> None:
        self.client.close()


def warm(path: Path) -> None:
    """Read the archive once, so every import of either daemon finds it in the page cache."""
    with path.open("rb") as f:
        while f.read(1 << 20):
            pass
