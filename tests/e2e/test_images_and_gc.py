"""Images, snapshots and garbage collection against a real berthd running runc.

Each test starts a daemon of its own on a fresh root and state (start-up
takes a fraction of a second), so "nothing is left" can be checked on the
whole root: no snapshot record, no snapshot directory, no blob, no mount,
no scratch directory. Archives are built by :mod:`tests.image_archives`
from the static busybox; containers get their root filesystem the
containerd way: ``berth.v1.Images/PrepareRootfs`` prepares a snapshot on
the image's top layer and the container's ``rootfs`` names it, so
``Tasks.Create`` (with no mounts of its own) mounts it at the bundle's
``rootfs/``.
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

import berth
from runtime.spec import default_spec
from tests.e2e.conftest import requires_root_and_runc, unique_id
from tests.e2e.image_fixtures import (
    big_layer,
    blob_files,
    chain_ids,
    ingest_entries,
    mounts_under,
    snapshot_dirs,
    tree,
    unmount_below,
    unpack_leftovers,
)
from tests.image_archives import (
    HOSTILE_LAYERS,
    BuiltArchive,
    Layer,
    busybox_layer,
    docker_archive,
    hostile_archive,
    hostile_layer,
    multi_layers,
    oci_archive,
)
from tests.integration.conftest import DaemonProcess, make_daemon
from wire.codec import pack, unpack

pytestmark = requires_root_and_runc

IMPORT = "berth.v1.Images/Import"
PREPARE_ROOTFS = "berth.v1.Images/PrepareRootfs"
GC_RUN = "berth.v1.GC/Run"
SNAPSHOT = "containerd.v1.snapshot.Snapshot/"
IMAGES = "containerd.v1.Images/"
WAIT = 20.0  # seconds a container may take to run `true` or a few ls on a busy machine
PROBE = "cat /etc/hello; echo --; ls /etc; echo --; ls -a /opt/old; echo --; ls /opt"
ARCHIVE_KINDS = ("digest-mismatch", "size-mismatch", "truncated", "not-a-tar")
_cids = itertools.count()


# --- fixtures and helpers ----------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A berthd of the test's own; whatever a failure left running or mounted goes after."""
    d = make_daemon(tmp_path).start()
    try:
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            with contextlib.suppress(Exception):
                _remove_everything(d)
            try:
                d.stop(timeout=20)
            except subprocess.TimeoutExpired:
                d.kill()
        unmount_below(d.state, d.root)
        subprocess.run(["rm", "-rf", str(d.state)], check=False)


def _remove_everything(d: DaemonProcess) -> None:
    """Kill and delete every task, delete every container, in every namespace a test used."""
    with berth.Client(d.address, timeout=10) as c:
        for ns in _namespaces_used:
            for task in c.call("containerd.v1.services.execution.Tasks/List", {}, namespace=ns)[
                "tasks"
            ]:
                cid = task["id"]
                with contextlib.suppress(berth.BerthError):
                    c.call(
                        "containerd.v1.services.execution.Tasks/Kill",
                        {"container_id": cid, "signal": 9, "all": True},
                        namespace=ns,
                    )
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    with contextlib.suppress(berth.BerthError):
                        c.call(
                            "containerd.v1.services.execution.Tasks/Delete",
                            {"container_id": cid},
                            namespace=ns,
                        )
                        break
                    time.sleep(0.05)
            for container in c.call("containerd.v1.Containers/List", {}, namespace=ns)[
                "containers"
            ]:
                with contextlib.suppress(berth.BerthError):
                    c.call("containerd.v1.Containers/Delete", {"id": container["id"]}, namespace=ns)


_namespaces_used: set[str] = set()


def namespace(prefix: str) -> str:
    """A namespace no other test uses; remembered so teardown can empty it."""
    ns = unique_id(prefix)
    _namespaces_used.add(ns)
    return ns


def client_for(d: DaemonProcess, ns: str) -> berth.Client:
    return berth.Client(d.address, namespace=ns, timeout=60)


def import_archive(client: berth.Client, path: Path, name: str = "") -> list[dict[str, Any]]:
    images: list[dict[str, Any]] = client.call(IMPORT, {"path": str(path), "name": name})["images"]
    return images


def snapshots(client: berth.Client) -> list[dict[str, Any]]:
    """Every snapshot Info of the client's namespace (Snapshot/List, all frames)."""
    return [info for frame in client.stream(SNAPSHOT + "List", {}) for info in frame["info"]]


def snapshots_by_key(client: berth.Client) -> dict[str, dict[str, Any]]:
    infos = snapshots(client)
    keys = [i["name"] for i in infos]
    assert len(keys) == len(set(keys)), f"a snapshot is listed twice: {keys}"
    return {i["name"]: i for i in infos}


def images(client: berth.Client) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.call(IMAGES + "List", {})["images"]
    return found


def archive_digests(built: BuiltArchive) -> set[str]:
    """The blobs an import of ``built`` stores: layers, config and (OCI) manifest.

    A docker archive has no manifest blob: the reader synthesises one, which
    this does not name.
    """
    digests = {lay.digest for lay in built.layers} | {built.config_digest}
    if built.manifest is not None:
        digests.add(built.manifest_digest)
    return digests


def new_container(client: berth.Client, image: str, args: list[str], cid: str | None = None) -> str:
    """A container on a fresh snapshot of ``image``'s top layer, running ``args``."""
    cid = cid or f"c{next(_cids)}"
    key = f"{cid}-rootfs"
    reply = client.call(PREPARE_ROOTFS, {"name": image, "key": key, "labels": {}})
    assert reply["mounts"], reply
    client.containers.create(cid, spec=default_spec(args, "rootfs"), rootfs=key, image=image)
    return cid


def run_task(client: berth.Client, cid: str, log: Path | None = None) -> int:
    """Create and start ``cid``'s task, wait for its EXIT, delete it; its exit status."""
    stdio = f"file://{log}" if log is not None else ""
    events = client.tasks.events(timeout=WAIT)
    try:
        client.tasks.create(cid, stdout=stdio, stderr=stdio)
        client.tasks.start(cid)
        for event in events:
            if event["type"] == "EXIT" and event["id"] == cid:
                break
        else:
            raise AssertionError(f"no EXIT event for {cid}")
    finally:
        events.close()
    deleted = client.tasks.delete(cid)
    status: int = deleted["exit_status"]
    return status


def check_probe_output(text: str) -> None:
    """What PROBE prints on the image of multi_layers(): the upper layer's changes applied."""
    hello, etc, old, opt, *_ = [part.split() for part in text.split("--")]
    assert hello == ["hello"], text
    assert "hello" in etc and "passwd" in etc and "group" in etc, text
    assert "motd" not in etc, f"etc/motd was whited out by the upper layer: {text}"
    assert sorted(old) == [".", "..", "c"], f"opt/old is opaque in the upper layer: {text}"
    assert opt == ["keep", "old"], text


def assert_nothing_left(d: DaemonProcess, client: berth.Client) -> None:
    """No record, directory, blob, ingest, mount or scratch directory is left."""
    assert snapshots(client) == []
    assert snapshot_dirs(d.root) == []
    assert blob_files(d.root) == []
    assert ingest_entries(d.root) == []
    assert mounts_under(d.root, d.state) == []
    assert unpack_leftovers(d.state) == []


# --- 1. import and run --------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "gzip"),
    [("oci", False), ("oci", True), ("docker", False), ("docker", True)],
    ids=["oci-plain", "oci-gzip", "docker-plain", "docker-gzip"],
)
def test_an_imported_image_runs_with_whiteouts_and_opaque_dirs_of_its_upper_layer_applied(
    daemon: DaemonProcess, tmp_path: Path, layout: str, gzip: bool
) -> None:
    layers = multi_layers(gzip=gzip)
    path = tmp_path / "image.tar"
    if layout == "oci":
        built = oci_archive(path, layers, name="example.com/test/layers:1.0")
        stored = "example.com/test/layers:1.0"
    else:
        built = docker_archive(path, layers, repo_tags=["layers:1.0"])
        stored = "docker.io/library/layers:1.0"  # RepoTags normalised, as ctr import does
    ns = namespace("import")
    with client_for(daemon, ns) as client:
        imported = import_archive(client, path)
        assert len(imported) == 1, imported
        image = imported[0]
        assert image["name"] == stored, image
        if built.manifest is not None:
            assert image["target"]["digest"] == built.manifest_digest
        assert set(blob_files(daemon.root)) >= archive_digests(built)
        committed = {k for k, i in snapshots_by_key(client).items() if i["kind"] == "COMMITTED"}
        assert committed == set(chain_ids(layers))

        cid = new_container(client, image["name"], ["sh", "-c", PROBE])
        log = tmp_path / "probe.log"
        try:
            assert run_task(client, cid, log) == 0, log.read_text()
        finally:
            client.containers.delete(cid)
        check_probe_output(log.read_text())
        assert f"{cid}-rootfs" not in snapshots_by_key(client), "the container's snapshot stayed"


# --- 2. layers are shared ---------------------------------------------------


def test_two_containers_from_one_image_share_its_layer_snapshots(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    layers = multi_layers(gzip=True)
    oci_archive(tmp_path / "image.tar", layers, name="example.com/test/shared:1.0")
    chain = chain_ids(layers)
    ns = namespace("shared")
    with client_for(daemon, ns) as client:
        (image,) = import_archive(client, tmp_path / "image.tar")
        first = new_container(client, image["name"], ["sh", "-c", "echo changed > /etc/hello"])
        second = new_container(client, image["name"], ["cat", "/etc/hello"])
        try:
            listed = snapshots_by_key(client)
            committed = sorted(k for k, i in listed.items() if i["kind"] == "COMMITTED")
            assert committed == sorted(chain), "one set of layer snapshots for both"
            assert listed[chain[1]]["parent"] == chain[0]
            assert listed[chain[0]]["parent"] == ""
            active = sorted(k for k, i in listed.items() if i["kind"] == "ACTIVE")
            assert active == sorted([f"{first}-rootfs", f"{second}-rootfs"])
            stats = [
                client.call(SNAPSHOT + "Stat", {"key": f"{cid}-rootfs"})["info"]
                for cid in (first, second)
            ]
            assert stats[0]["parent"] == stats[1]["parent"] == chain[-1]
            assert len(snapshot_dirs(daemon.root)) == 4, "two layers, two container snapshots"
            mounts = [
                client.call(SNAPSHOT + "Mounts", {"key": f"{cid}-rootfs"})["mounts"]
                for cid in (first, second)
            ]
            lower = [
                [o for m in ms for o in m["options"] if o.startswith("lowerdir=")] for ms in mounts
            ]
            if lower[0]:  # overlayfs: the same layer directories under both
                assert lower[0] == lower[1]

            # Shared read-only layers, private upper dirs: a write in one is not seen in the other.
            assert run_task(client, first) == 0
            log = tmp_path / "second.log"
            assert run_task(client, second, log) == 0
            assert log.read_text() == "hello\n"
        finally:
            for cid in (first, second):
                client.containers.delete(cid)
        assert sorted(snapshots_by_key(client)) == sorted(chain)


# --- 3. garbage collection after many containers -----------------------------


def test_two_hundred_container_cycles_then_an_image_delete_leave_nothing_behind(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    layers = multi_layers(gzip=True)
    oci_archive(tmp_path / "image.tar", layers, name="example.com/test/cycles:1.0")
    ns = namespace("cycles")
    with client_for(daemon, ns) as client:
        (image,) = import_archive(client, tmp_path / "image.tar")
        started = time.monotonic()
        for i in range(200):
            cid = new_container(client, image["name"], ["true"], cid=f"cycle-{i}")
            try:
                assert run_task(client, cid) == 0
            finally:
                client.containers.delete(cid)
        elapsed = time.monotonic() - started
        assert elapsed < 90, f"200 cycles took {elapsed:.1f}s"
        assert sorted(snapshots_by_key(client)) == sorted(chain_ids(layers)), (
            "every container's snapshot went with its container"
        )
        assert len(snapshot_dirs(daemon.root)) == len(layers)
        assert mounts_under(daemon.root, daemon.state) == []

        client.call(IMAGES + "Delete", {"name": image["name"]})
        client.call(GC_RUN, {})
        assert images(client) == []
        assert_nothing_left(daemon, client)


# --- 4. an image deleted under a container -----------------------------------


def test_an_image_deleted_while_a_container_uses_it_keeps_the_container_runnable(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    layers = multi_layers(gzip=False)
    oci_archive(tmp_path / "image.tar", layers, name="example.com/test/orphan:1.0")
    chain = chain_ids(layers)
    ns = namespace("orphan")
    with client_for(daemon, ns) as client:
        (image,) = import_archive(client, tmp_path / "image.tar")
        cid = new_container(client, image["name"], ["sh", "-c", PROBE])
        try:
            log = tmp_path / "before.log"
            assert run_task(client, cid, log) == 0
            check_probe_output(log.read_text())

            client.call(IMAGES + "Delete", {"name": image["name"]})
            client.call(GC_RUN, {})
            assert images(client) == []
            kept = snapshots_by_key(client)
            assert set(chain) <= set(kept), "the container's snapshot still has them as parents"

            log = tmp_path / "after.log"
            assert run_task(client, cid, log) == 0, log.read_text()
            check_probe_output(log.read_text())
        finally:
            client.containers.delete(cid)
        client.call(GC_RUN, {})
        assert_nothing_left(daemon, client)


# --- 5. hostile and wrong imports; removals refused --------------------------


def _root_listing(d: DaemonProcess, client: berth.Client) -> tuple[list[str], list[str], list[str]]:
    """Every path under the root's snapshots and content, the snapshot keys, the image names."""
    return (
        tree(d.root / "snapshots", d.root / "content"),
        sorted(snapshots_by_key(client)),
        sorted(i["name"] for i in images(client)),
    )


@pytest.mark.parametrize("kind", [*sorted(HOSTILE_LAYERS), *ARCHIVE_KINDS])
def test_a_hostile_archive_is_refused_naming_what_is_wrong_and_leaves_the_root_unchanged(
    daemon: DaemonProcess, tmp_path: Path, kind: str
) -> None:
    honest = oci_archive(tmp_path / "honest.tar", [busybox_layer()], name="example.com/ok:1")
    path = tmp_path / f"{kind}.tar"
    bad: Layer | None = None
    if kind in HOSTILE_LAYERS:
        # On top of busybox, which the namespace already holds: only the bad layer is new.
        bad = hostile_layer(kind, gzip=True)
        oci_archive(path, [busybox_layer(), bad], name="example.com/hostile:1")
    else:
        hostile_archive(path, kind)
    ns = namespace("hostile")
    with client_for(daemon, ns) as client:
        import_archive(client, honest.path)
        before = _root_listing(daemon, client)
        assert before[1] and before[2]

        with pytest.raises(berth.InvalidArgument) as caught:
            import_archive(client, path)
        message = caught.value.message
        if bad is not None:
            entry = HOSTILE_LAYERS[kind][-1][0].name
            assert f'entry "{entry}"' in message, message
            assert bad.digest in message, message
        elif kind in ("digest-mismatch", "size-mismatch"):
            assert busybox_layer().digest in message, message
        else:
            assert str(path) in message, message

        assert _root_listing(daemon, client) == before, "the failed import left something"
        client.call(GC_RUN, {})
        assert _root_listing(daemon, client) == before
        assert mounts_under(daemon.root, daemon.state) == []
        assert unpack_leftovers(daemon.state) == []
    assert not Path("/tmp/berth-escaped").exists()


def test_an_import_of_a_relative_path_is_invalid_and_of_a_missing_one_not_found(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    ns = namespace("paths")
    with client_for(daemon, ns) as client:
        with pytest.raises(berth.InvalidArgument):
            client.call(IMPORT, {"path": "images/busybox.tar", "name": ""})
        missing = tmp_path / "absent.tar"
        with pytest.raises(berth.NotFound) as caught:
            client.call(IMPORT, {"path": str(missing), "name": ""})
        assert str(missing) in caught.value.message
        assert images(client) == [] and snapshots(client) == []
    assert blob_files(daemon.root) == []


def test_removing_a_snapshot_with_children_or_used_by_a_container_fails_precondition(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    layers = multi_layers()
    oci_archive(tmp_path / "image.tar", layers, name="example.com/test/busy:1.0")
    chain = chain_ids(layers)
    ns = namespace("remove")
    with client_for(daemon, ns) as client:
        (image,) = import_archive(client, tmp_path / "image.tar")
        cid = new_container(client, image["name"], ["true"])
        key = f"{cid}-rootfs"
        try:
            for parent in chain:  # the bottom layer has the top as child, the top has key
                with pytest.raises(berth.FailedPrecondition):
                    client.call(SNAPSHOT + "Remove", {"key": parent})
            with pytest.raises(berth.FailedPrecondition) as caught:
                client.call(SNAPSHOT + "Remove", {"key": key})
            assert cid in caught.value.message
            assert sorted(snapshots_by_key(client)) == sorted([*chain, key])
            assert run_task(client, cid) == 0, "the refused removals broke nothing"
        finally:
            client.containers.delete(cid)
        assert sorted(snapshots_by_key(client)) == sorted(chain)


def test_deleting_a_blob_an_image_references_fails_precondition_naming_the_image(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    oci_archive(tmp_path / "image.tar", [busybox_layer()], name="example.com/test/held:1")
    with client_for(daemon, namespace("held")) as client:
        (image,) = import_archive(client, tmp_path / "image.tar")
        digest = image["target"]["digest"]
        with pytest.raises(berth.FailedPrecondition, match=r"example\.com/test/held:1"):
            client.call("containerd.v1.Content/Delete", {"digest": digest})
        assert client.call("containerd.v1.Content/Info", {"digest": digest})["info"]["size"] > 0
        client.call("containerd.v1.Images/Delete", {"name": image["name"]})
        # The collection an image delete starts runs after the reply.
        deadline = time.monotonic() + 20
        while digest in {i["digest"] for b in client.content.list() for i in b["info"]}:
            assert time.monotonic() < deadline, "the image's blobs outlived its delete"
            time.sleep(0.05)


# --- 6. a daemon killed during an import --------------------------------------


@dataclass
class _Trigger:
    """When to SIGKILL the daemon: a condition on its root and state directories."""

    name: str

    def fired(self, d: DaemonProcess, blobs_before: set[str]) -> bool:
        if self.name == "ingest":
            return bool(ingest_entries(d.root)) or bool(set(blob_files(d.root)) - blobs_before)
        return bool(mounts_under(d.state / "unpack"))


@pytest.mark.parametrize("phase", ["ingest", "unpack"])
def test_a_daemon_killed_during_an_import_keeps_no_half_image_and_leaves_no_orphan_files(
    daemon: DaemonProcess, tmp_path: Path, phase: str
) -> None:
    small = oci_archive(tmp_path / "small.tar", [busybox_layer()], name="example.com/small:1")
    big = oci_archive(
        tmp_path / "big.tar", [busybox_layer(), big_layer()], name="example.com/big:1"
    )
    ns = namespace("killed")
    with client_for(daemon, ns) as client:
        import_archive(client, small.path)
    blobs_before = set(blob_files(daemon.root))
    assert blobs_before == archive_digests(small)

    trigger = _Trigger(phase)
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.address)
    try:
        request = {
            "v": 1,
            "id": 1,
            "method": IMPORT,
            "ns": ns,
            "body": {"path": str(big.path), "name": ""},
        }
        sock.send_multipart([b"", pack(request)])
        deadline = time.monotonic() + 60
        while not trigger.fired(daemon, blobs_before):
            if sock.poll(0):
                reply = unpack(sock.recv_multipart()[-1])
                pytest.fail(f"the import ended before the {phase} phase was seen: {reply}")
            assert time.monotonic() < deadline, f"no {phase} phase within 60s"
            time.sleep(0.001)
        daemon.kill()
    finally:
        sock.close(linger=0)

    daemon.start()
    with client_for(daemon, ns) as client:
        assert [i["name"] for i in images(client)] == ["example.com/small:1"], "no half image"
        client.call(GC_RUN, {})
        # A layer being unpacked is mounted under <state>/unpack; the kill leaves that
        # mount, and while it stands the layer's directory cannot be removed.
        assert mounts_under(daemon.root, daemon.state) == [], "mounts the killed import left"
        assert unpack_leftovers(daemon.state) == [], "scratch dirs the killed import left"
        assert ingest_entries(daemon.root) == []
        assert sorted(snapshots_by_key(client)) == chain_ids([busybox_layer()])
        assert len(snapshot_dirs(daemon.root)) == 1, (
            f"snapshot directories no record names: {snapshot_dirs(daemon.root)}"
        )
        assert set(blob_files(daemon.root)) == archive_digests(small), "blobs no record names"

        # What is left is whole: the small image still runs.
        cid = new_container(client, "example.com/small:1", ["true"])
        try:
            assert run_task(client, cid) == 0
        finally:
            client.containers.delete(cid)
