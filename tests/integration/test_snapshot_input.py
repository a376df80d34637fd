"""Bad input to the Snapshot service, Import, PrepareRootfs and GC/Run: clear errors, no harm."""

from __future__ import annotations

import pytest

import berth
from tests.integration.conftest import DaemonProcess

SNAP = "containerd.v1.snapshot.Snapshot/"


@pytest.mark.parametrize(
    ("method", "body", "code", "text"),
    [
        (SNAP + "Prepare", {"key": ""}, berth.InvalidArgument, "key: must be set"),
        (SNAP + "Prepare", {"key": "a\x00b"}, berth.InvalidArgument, "NUL"),
        (SNAP + "Prepare", {"key": 7}, berth.InvalidArgument, "key"),
        (SNAP + "Prepare", {"key": "k", "parent": "missing"}, berth.NotFound, '"missing"'),
        (SNAP + "Prepare", {"key": "k", "labels": {"a": 1}}, berth.InvalidArgument, "labels"),
        (SNAP + "Prepare", {"key": "k", "size": 1}, berth.InvalidArgument, "size"),
        (SNAP + "View", {"key": "x" * 2000}, berth.InvalidArgument, "longer than"),
        (SNAP + "Mounts", {"key": "missing"}, berth.NotFound, 'snapshot "missing"'),
        (SNAP + "Stat", {"key": "missing"}, berth.NotFound, 'snapshot "missing"'),
        (SNAP + "Usage", {"key": "missing"}, berth.NotFound, 'snapshot "missing"'),
        (SNAP + "Remove", {"key": "missing"}, berth.NotFound, 'snapshot "missing"'),
        (SNAP + "Commit", {"name": "n", "key": "missing"}, berth.NotFound, '"missing"'),
        (SNAP + "Commit", {"name": "", "key": "k"}, berth.InvalidArgument, "name"),
        ("berth.v1.Images/Import", {"path": "relative.tar"}, berth.InvalidArgument, "absolute"),
        ("berth.v1.Images/Import", {"path": "/no/such.tar"}, berth.NotFound, "/no/such.tar"),
        ("berth.v1.Images/Import", {"path": "/"}, berth.InvalidArgument, "directory"),
        ("berth.v1.Images/Import", {"path": b"/x"}, berth.InvalidArgument, "path"),
        ("berth.v1.Images/PrepareRootfs", {"name": "nope", "key": "k"}, berth.NotFound, "nope"),
        ("berth.v1.Images/PrepareRootfs", {"name": "", "key": "k"}, berth.InvalidArgument, "name"),
        ("berth.v1.GC/Run", {"all": True}, berth.InvalidArgument, "all"),
    ],
)
def test_bad_snapshot_and_image_requests_get_clear_errors(
    daemon: DaemonProcess, method, body, code, text
) -> None:
    with berth.Client(daemon.address, namespace="bad-input") as client:
        with pytest.raises(code) as caught:
            client.call(method, body)
        assert text in caught.value.message
        # Nothing was made, and the daemon still serves.
        assert [i for b in client.snapshots.list() for i in b["info"]] == []
        assert client.version()["version"]


def test_a_snapshot_lifecycle_keeps_its_rules(daemon: DaemonProcess) -> None:
    with berth.Client(daemon.address, namespace="snap-rules") as client:
        client.snapshots.prepare("base", labels={"team": "a"})
        with pytest.raises(berth.AlreadyExists):
            client.snapshots.prepare("base")
        with pytest.raises(berth.FailedPrecondition, match="not committed"):
            client.snapshots.prepare("child", "base")
        usage = client.snapshots.usage("base")
        assert usage["inodes"] >= 1 and usage["size"] >= 0
        client.snapshots.commit("layer", "base")
        info = client.snapshots.stat("layer")
        assert (info["kind"], info["labels"]) == ("COMMITTED", {"team": "a"})
        mounts = client.snapshots.view("look", "layer")
        assert "ro" in mounts[0]["options"] or mounts[0]["type"] == "overlay"
        assert client.snapshots.stat("look")["readonly"] is True
        with pytest.raises(berth.FailedPrecondition, match="children"):
            client.snapshots.remove("layer")
        client.snapshots.remove("look")
        client.snapshots.remove("layer")
        assert [i for b in client.snapshots.list() for i in b["info"]] == []
