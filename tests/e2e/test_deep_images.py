"""An image of 128 layers, deeper than one page of absolute overlay options, against a real berthd.

Each layer's snapshot is ``<root>/snapshots/overlayfs/snapshots/<id>/fs``;
under a pytest root that is about 100 bytes a layer, so the overlay of the
top layer names ~13 KiB of lowers, three pages. ``runtime.mounts`` mounts
it with the lowers relative to ``snapshots/``: the unpack of each layer
over its parents, the container's rootfs in the shim, and a View mounted by
this test all go that way. The first layer is busybox, each of the other
127 adds ``/deep/<n>``, and the top one also whites out ``/deep/064``, so
what the container prints shows the top layer, the bottom ones and their
order.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import berth
from runtime.mounts import mount_all, unmount_all
from runtime.spec import default_spec
from tests.e2e.conftest import requires_root_and_runc, unique_id
from tests.e2e.image_fixtures import (
    blob_files,
    chain_ids,
    mounts_under,
    snapshot_dirs,
    unmount_below,
    unpack_leftovers,
)
from tests.image_archives import (
    Layer,
    busybox_layer,
    dir_entry,
    file_entry,
    layer,
    oci_archive,
    whiteout_entry,
)
from tests.integration.conftest import DaemonProcess, make_daemon

pytestmark = requires_root_and_runc

DEPTH = 128
SNAPSHOT = "containerd.v1.snapshot.Snapshot/"
WAIT = 20.0
PROBE = "cat /deep/001 /deep/127; ls /deep | wc -l; test -e /deep/064 || echo whited-out"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A berthd of the test's own; whatever a failure left mounted goes after."""
    d = make_daemon(tmp_path).start()
    try:
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            try:
                d.stop(timeout=20)
            except subprocess.TimeoutExpired:
                d.kill()
        unmount_below(d.state, d.root)
        subprocess.run(["rm", "-rf", str(d.state)], check=False)


def deep_layers() -> list[Layer]:
    """Busybox, then 127 layers of one small file each; the top one whites out deep/064."""
    layers = [busybox_layer()]
    for n in range(1, DEPTH):
        entries = [dir_entry("deep"), file_entry(f"deep/{n:03d}", f"{n}\n".encode())]
        if n == DEPTH - 1:
            entries.append(whiteout_entry("deep/064"))
        layers.append(layer(entries))
    return layers


def run_task(client: berth.Client, cid: str, log: Path) -> int:
    """Create and start ``cid``'s task, wait for its EXIT, delete it; its exit status."""
    events = client.tasks.events(timeout=WAIT)
    try:
        client.tasks.create(cid, stdout=f"file://{log}", stderr=f"file://{log}")
        client.tasks.start(cid)
        for event in events:
            if event["type"] == "EXIT" and event["id"] == cid:
                break
        else:
            raise AssertionError(f"no EXIT event for {cid}")
    finally:
        events.close()
    status: int = client.tasks.delete(cid)["exit_status"]
    return status


def snapshot_keys(client: berth.Client) -> list[str]:
    return sorted(i["name"] for f in client.stream(SNAPSHOT + "List", {}) for i in f["info"])


def test_a_128_layer_image_imports_runs_is_viewed_and_deletes_cleanly(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    started = time.monotonic()
    layers = deep_layers()
    oci_archive(tmp_path / "deep.tar", layers, name="example.com/test/deep:1.0")
    chain = chain_ids(layers)
    with berth.Client(daemon.address, namespace=unique_id("deep"), timeout=60) as client:
        (image,) = client.call("berth.v1.Images/Import", {"path": str(tmp_path / "deep.tar")})[
            "images"
        ]
        assert snapshot_keys(client) == sorted(chain)
        assert unpack_leftovers(daemon.state) == [], "every layer's scratch mount went"

        # The container's rootfs: an active snapshot on all 128 layers, mounted by the shim.
        cid = "deep"
        reply = client.call(
            "berth.v1.Images/PrepareRootfs", {"name": image["name"], "key": "deep-rootfs"}
        )
        (rootfs,) = reply["mounts"]
        lowerdir = next(o for o in rootfs["options"] if o.startswith("lowerdir="))
        assert lowerdir.count(":") == DEPTH - 1 and len(lowerdir) > 4096
        client.containers.create(
            cid, spec=default_spec(["sh", "-c", PROBE], "rootfs"), rootfs="deep-rootfs"
        )
        log = tmp_path / "probe.log"
        try:
            assert run_task(client, cid, log) == 0, log.read_text()
        finally:
            client.containers.delete(cid)
        assert log.read_text().split() == ["1", "127", str(DEPTH - 2), "whited-out"]

        # A View of the same depth, mounted here as any client of the Snapshot service would.
        view = tmp_path / "view"
        mounts: list[dict[str, Any]] = client.call(
            SNAPSHOT + "View", {"key": "deep-view", "parent": chain[-1]}
        )["mounts"]
        mount_all(mounts, view)
        try:
            assert (view / "deep" / "001").read_text() == "1\n"
            assert (view / "deep" / "127").read_text() == "127\n"
            assert (view / "bin" / "busybox").is_file()
            with pytest.raises(berth.FailedPrecondition):
                client.call(SNAPSHOT + "Remove", {"key": chain[0]})  # the bottom layer
        finally:
            unmount_all(view)
        client.call(SNAPSHOT + "Remove", {"key": "deep-view"})

        client.call("containerd.v1.Images/Delete", {"name": image["name"]})
        client.call("berth.v1.GC/Run", {})
        assert snapshot_keys(client) == []
        assert snapshot_dirs(daemon.root) == []
        assert blob_files(daemon.root) == []
        assert mounts_under(daemon.root, daemon.state) == []
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"a {DEPTH}-layer image took {elapsed:.1f}s"
