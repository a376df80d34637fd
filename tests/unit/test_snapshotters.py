"""The overlayfs and native snapshotters: directories, mounts, copies, usage and removal."""

from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

import pytest

from runtime.mounts import mount_all, unmount_all
from runtime.snapshot_base import SnapshotDirs
from runtime.snapshotters import (
    NativeSnapshotter,
    OverlaySnapshotter,
    SnapshotId,
    choose_snapshotter,
    disk_usage,
    open_snapshotter,
    overlay_supported,
)
from wire.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

ROOT = os.geteuid() == 0
# vfs_cap_data revision 2, effective, permitting CAP_NET_RAW (13).
CAP_NET_RAW = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)
KINDS = [OverlaySnapshotter, NativeSnapshotter]


@pytest.fixture(params=KINDS, ids=lambda k: k.name)
def snap(request, tmp_path):
    return request.param(tmp_path / "root")


@pytest.fixture
def overlay(tmp_path):
    root = tmp_path / "root"
    if not ROOT:
        pytest.skip("mounting overlayfs needs root")
    if not overlay_supported(root):
        pytest.skip(f"overlayfs cannot mount on {root} here")
    return OverlaySnapshotter(root)


@pytest.fixture
def native(tmp_path):
    return NativeSnapshotter(tmp_path / "root")


@pytest.fixture
def target(tmp_path):
    where = tmp_path / "mnt"
    where.mkdir()
    yield where
    unmount_all(where)


needs_root = pytest.mark.skipif(not ROOT, reason="mounting needs root")


def fs(snap: SnapshotDirs, sid: SnapshotId) -> Path:
    return snap.snapshots / str(sid) / "fs"


def test_prepare_makes_the_snapshot_directories_and_ids_report_them(snap):
    snap.prepare(1, [])
    snap.prepare("base.2", [1])
    assert snap.ids() == {"1", "base.2"}
    assert fs(snap, 1).is_dir() and fs(snap, "base.2").is_dir()
    assert (snap.snapshots / "1" / "work").is_dir() == (snap.name == "overlayfs")
    assert snap.exists(1) and not snap.exists(3)
    assert os.listdir(snap.temp) == []


def test_prepare_refuses_a_taken_id_a_missing_parent_and_an_unsafe_id(snap):
    snap.prepare(1, [])
    with pytest.raises(AlreadyExists, match='snapshot id "1": already exists'):
        snap.prepare("1", [])
    with pytest.raises(NotFound, match='snapshot id "9": not found'):
        snap.prepare(2, [9])
    for bad in ("", "..", "../x", "a/b", ".hidden", "x" * 200, True, None):
        with pytest.raises(InvalidArgument, match="snapshot id"):
            snap.prepare(bad, [])
    assert snap.ids() == {"1"}


def test_a_failed_prepare_leaves_nothing_behind(snap, monkeypatch):
    def broken(sid, tmp, parents):
        (tmp / "fs").mkdir()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(snap, "_populate", broken)
    with pytest.raises(OSError):
        snap.prepare(1, [])
    assert snap.ids() == set() and os.listdir(snap.temp) == []


def test_what_a_crash_mid_prepare_leaves_is_not_an_id_and_clean_temp_removes_it(snap):
    snap.prepare(1, [])
    half = snap.temp / "new-2-abcdef"
    (half / "fs").mkdir(parents=True)
    assert snap.ids() == {"1"}
    assert snap.clean_temp() == ["new-2-abcdef"]
    assert os.listdir(snap.temp) == []


def test_remove_deletes_a_whole_or_half_made_snapshot_and_an_absent_one_is_not_found(snap):
    snap.prepare(1, [])
    (fs(snap, 1) / "dir").mkdir()
    (fs(snap, 1) / "dir" / "file").write_text("x")
    (fs(snap, 1) / "dir").chmod(0o000)
    (snap.snapshots / "7").mkdir()  # a snapshot whose fs was never made
    snap.remove(1)
    snap.remove("7")
    assert snap.ids() == set() and os.listdir(snap.temp) == []
    with pytest.raises(NotFound, match='snapshot id "1": not found'):
        snap.remove(1)


def test_usage_counts_blocks_and_inodes_of_the_own_tree_once_per_hard_link(snap, tmp_path):
    snap.prepare(1, [])
    root = fs(snap, 1)
    (root / "big").write_bytes(b"x" * 100_000)
    os.link(root / "big", root / "big-again")
    (root / "sub").mkdir()
    (root / "sub" / "small").write_bytes(b"y")
    outside = tmp_path / "outside"
    outside.write_bytes(b"z" * 1_000_000)
    (root / "sub" / "link").symlink_to(outside)
    size, inodes = snap.usage(1)
    assert inodes == 5  # fs, big (once), sub, small, link
    expected = sum(
        os.lstat(p).st_blocks * 512
        for p in (root, root / "big", root / "sub", root / "sub" / "small", root / "sub" / "link")
    )
    assert size == expected
    assert 100_000 <= size < 1_000_000  # the symlink's target is not counted
    assert disk_usage(root / "sub")[1] == 3


def test_open_snapshotter_knows_both_names_and_refuses_others(tmp_path):
    assert isinstance(open_snapshotter("overlayfs", tmp_path), OverlaySnapshotter)
    assert isinstance(open_snapshotter("native", tmp_path), NativeSnapshotter)
    with pytest.raises(InvalidArgument, match='snapshotter "zfs": unknown'):
        open_snapshotter("zfs", tmp_path)


# -- overlayfs ----------------------------------------------------------------


def test_overlay_mounts_have_containerds_shapes(tmp_path):
    snap = OverlaySnapshotter(tmp_path)
    for sid, parents in ((1, []), (2, [1]), (3, [2, 1]), (4, [3, 2, 1])):
        snap.prepare(sid, parents)
    one, two, three = (str(fs(snap, i)) for i in (1, 2, 3))
    assert snap.mounts(1, [], readonly=False) == [
        {"type": "bind", "source": one, "target": "", "options": ["rbind", "rw"]}
    ]
    assert snap.mounts(1, [], readonly=True)[0]["options"] == ["rbind", "ro"]
    (active,) = snap.mounts(3, [2, 1], readonly=False)
    assert active["type"] == "overlay" and active["source"] == "overlay"
    assert active["options"] == [
        f"lowerdir={two}:{one}",
        f"upperdir={three}",
        f"workdir={snap.snapshots / '3' / 'work'}",
    ]
    assert snap.mounts(2, [1], readonly=True) == [
        {"type": "bind", "source": one, "target": "", "options": ["rbind", "ro"]}
    ]
    assert snap.mounts(4, [3, 2, 1], readonly=True)[0]["options"] == [
        f"lowerdir={three}:{two}:{one}"
    ]
    with pytest.raises(NotFound, match='snapshot id "8"'):
        snap.mounts(4, [8], readonly=False)


def test_an_overlay_chain_deeper_than_a_page_of_absolute_paths_is_prepared(tmp_path):
    snap = OverlaySnapshotter(tmp_path / ("a-long-root-" + "x" * 100))
    chain: list[str] = []
    for i in range(1, 129):
        snap.prepare(i, chain)
        chain.insert(0, str(i))
    snap.prepare("top", chain)
    (active,) = snap.mounts("top", chain, readonly=False)
    assert len(",".join(active["options"])) > 4096, "absolute, as containerd's mounts are"
    assert active["options"][0] == "lowerdir=" + ":".join(str(fs(snap, i)) for i in chain)


def test_an_overlay_chain_too_long_for_a_page_even_relative_is_refused_at_prepare(tmp_path):
    snap = OverlaySnapshotter(tmp_path)
    chain: list[str] = []
    for i in range(500):
        sid = f"a-long-layer-name-{i:04d}"
        try:
            snap.prepare(sid, chain)
        except FailedPrecondition as exc:
            assert "over the kernel's limit" in exc.message and f'"{sid}"' in exc.message
            assert "relative to their directory" in exc.message
            break
        chain.insert(0, sid)
    else:
        pytest.fail("no chain was refused")
    assert len(chain) > 100, "refused only once relative paths overflow too"
    assert not snap.exists(sid)
    snap.prepare(sid, chain[:-1])  # shorter fits
    with pytest.raises(FailedPrecondition, match="over the kernel's limit"):
        snap.mounts(sid, chain, readonly=False)


def test_mount_all_refuses_options_longer_than_a_page_instead_of_letting_them_be_cut(tmp_path):
    long = {"type": "tmpfs", "source": "tmpfs", "target": "", "options": ["x" * 5000]}
    with pytest.raises(FailedPrecondition, match="5000 bytes, over the kernel's limit"):
        mount_all([long], tmp_path / "mnt")
    assert not (tmp_path / "mnt").is_mount()


def _deep_chain(snap: OverlaySnapshotter, depth: int) -> list[SnapshotId]:
    """Layers 1..depth, each with a file of its own; nearest first (not committed: no syncfs)."""
    chain: list[SnapshotId] = []
    for i in range(1, depth + 1):
        snap.prepare(i, chain)
        (fs(snap, i) / f"layer-{i}").write_text(str(i))
        chain.insert(0, i)
    return chain


def test_a_128_layer_overlay_mounts_from_its_layers_directory_and_they_stay_in_use(overlay, target):
    chain = _deep_chain(overlay, 128)
    overlay.prepare("top", chain)
    cwd = os.getcwd()
    mount_all(overlay.mounts("top", chain, readonly=False), target)
    assert os.getcwd() == cwd, "the mount changed only its own thread's directory"
    assert sorted(os.listdir(target)) == sorted(f"layer-{i}" for i in range(1, 129))
    (target / "written").write_text("up")
    assert (fs(overlay, "top") / "written").read_text() == "up"
    mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    (entry,) = [line for line in mountinfo if f" {target} " in line]
    assert f" overlay {overlay.snapshots} " in entry and "lowerdir=128/fs:127/fs:" in entry

    # Relative lowers still count as uses: nothing under the mount is removable.
    for sid in ("top", 128, 64, 1):
        with pytest.raises(FailedPrecondition, match=f'"{sid}": in use by the overlay'):
            overlay.remove(sid)
    unmount_all(target)
    assert overlay.in_use(1) is None
    overlay.remove("top")


def test_a_128_layer_overlay_view_mounts_read_only(overlay, target):
    chain = _deep_chain(overlay, 128)
    overlay.prepare("view", chain, readonly=True)
    mount_all(overlay.mounts("view", chain, readonly=True), target)
    assert (target / "layer-1").read_text() == "1" and (target / "layer-128").read_text() == "128"
    with pytest.raises(OSError) as caught:
        (target / "c").write_text("no")
    assert caught.value.errno == errno.EROFS
    assert overlay.in_use(5) is not None


@needs_root
def test_overlay_is_supported_here_and_the_check_leaves_nothing(tmp_path):
    assert OverlaySnapshotter.supported(tmp_path) == overlay_supported(tmp_path)
    if overlay_supported(tmp_path):
        assert isinstance(choose_snapshotter(tmp_path), OverlaySnapshotter)
    assert os.listdir(tmp_path / "snapshots" / "overlayfs" / "tmp") == []


def test_a_root_whose_path_overlay_options_cannot_carry_falls_back_to_native(tmp_path):
    root = tmp_path / "a,b"
    assert not overlay_supported(root)
    assert isinstance(choose_snapshotter(root), NativeSnapshotter)


def test_an_active_overlay_shows_its_parents_and_writes_to_its_own_layer(overlay, target):
    overlay.prepare(1, [])
    (fs(overlay, 1) / "from-parent").write_text("parent")
    overlay.commit(1)
    overlay.prepare(2, [1])
    mount_all(overlay.mounts(2, [1], readonly=False), target)
    assert (target / "from-parent").read_text() == "parent"
    (target / "new").write_text("child")
    (target / "from-parent").write_text("changed")
    assert (fs(overlay, 2) / "new").read_text() == "child"
    assert (fs(overlay, 2) / "from-parent").read_text() == "changed"
    assert (fs(overlay, 1) / "from-parent").read_text() == "parent"
    assert not (fs(overlay, 1) / "new").exists()


def test_an_overlay_view_on_several_parents_is_read_only(overlay, target):
    overlay.prepare(1, [])
    (fs(overlay, 1) / "a").write_text("1")
    overlay.prepare(2, [1])
    (fs(overlay, 2) / "b").write_text("2")
    overlay.prepare("view", [2, 1], readonly=True)
    mount_all(overlay.mounts("view", [2, 1], readonly=True), target)
    assert (target / "a").read_text() == "1" and (target / "b").read_text() == "2"
    with pytest.raises(OSError) as caught:
        (target / "c").write_text("no")
    assert caught.value.errno == errno.EROFS


def test_an_overlay_view_on_one_parent_is_a_read_only_bind(overlay, target):
    overlay.prepare(1, [])
    (fs(overlay, 1) / "a").write_text("1")
    overlay.prepare("view", [1], readonly=True)
    mount_all(overlay.mounts("view", [1], readonly=True), target)
    assert (target / "a").read_text() == "1"
    with pytest.raises(OSError) as caught:
        (target / "a").write_text("no")
    assert caught.value.errno == errno.EROFS


def test_an_overlay_snapshot_or_layer_in_use_cannot_be_removed(overlay, target):
    overlay.prepare(1, [])
    overlay.prepare(2, [1])
    mount_all(overlay.mounts(2, [1], readonly=False), target)
    with pytest.raises(FailedPrecondition, match='snapshot id "2": in use by the overlay'):
        overlay.remove(2)
    with pytest.raises(FailedPrecondition, match='snapshot id "1": in use'):
        overlay.remove(1)
    unmount_all(target)
    overlay.remove(2)
    overlay.remove(1)
    assert overlay.ids() == set()


# -- native ---------------------------------------------------------------------


@needs_root
def test_native_prepare_copies_links_modes_owners_times_devices_and_xattrs(native):
    native.prepare(1, [])
    src = fs(native, 1)
    (src / "dir").mkdir(mode=0o750)
    (src / "dir" / "file").write_bytes(b"data")
    os.chown(src / "dir" / "file", 1234, 5678)  # before chmod: chown clears setuid
    os.chmod(src / "dir" / "file", 0o4755)
    (src / "ping").write_bytes(b"elf")
    os.chown(src / "ping", 1234, 5678)
    os.setxattr(src / "ping", "security.capability", CAP_NET_RAW)
    os.link(src / "dir" / "file", src / "hard")
    (src / "sym").symlink_to("dir/file")
    (src / "dangling").symlink_to("/nowhere")
    os.mkfifo(src / "fifo")
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.setxattr(src / "dir" / "file", "user.berth", b"kept")
    os.utime(src / "dir" / "file", ns=(1_000_000_000, 2_000_000_000))
    os.utime(src / "dir", ns=(3_000_000_000, 4_000_000_000))
    native.commit(1)
    native.prepare(2, [1])
    dst = fs(native, 2)
    f = os.lstat(dst / "dir" / "file")
    assert stat.S_IMODE(f.st_mode) == 0o4755 and (f.st_uid, f.st_gid) == (1234, 5678)
    assert f.st_mtime_ns == 2_000_000_000
    assert os.lstat(dst / "dir").st_mtime_ns == 4_000_000_000
    assert stat.S_IMODE(os.lstat(dst / "dir").st_mode) == 0o750
    assert os.lstat(dst / "hard").st_ino == f.st_ino and f.st_nlink == 2
    assert f.st_ino != os.lstat(src / "dir" / "file").st_ino
    assert os.readlink(dst / "sym") == "dir/file"
    assert os.readlink(dst / "dangling") == "/nowhere"
    assert stat.S_ISFIFO(os.lstat(dst / "fifo").st_mode)
    null = os.lstat(dst / "null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert os.getxattr(dst / "dir" / "file", "user.berth") == b"kept"
    # A file capability survives the copy's chown, which would clear it if set first.
    assert os.getxattr(dst / "ping", "security.capability") == CAP_NET_RAW
    assert os.lstat(dst / "ping").st_uid == 1234


def test_a_native_child_is_independent_of_its_parent(native):
    native.prepare(1, [])
    (fs(native, 1) / "f").write_text("parent")
    native.prepare(2, [1])
    (fs(native, 2) / "f").write_text("child")
    (fs(native, 2) / "g").write_text("new")
    assert (fs(native, 1) / "f").read_text() == "parent"
    assert not (fs(native, 1) / "g").exists()


def test_native_mounts_are_one_bind_of_the_own_tree(native):
    native.prepare(1, [])
    native.prepare(2, [1])
    own = str(fs(native, 2))
    assert native.mounts(2, [1], readonly=False) == [
        {"type": "bind", "source": own, "target": "", "options": ["rbind", "rw"]}
    ]
    assert native.mounts(2, [1], readonly=True)[0]["options"] == ["rbind", "ro"]


@needs_root
def test_a_native_view_is_read_only_and_a_mounted_snapshot_cannot_be_removed(native, target):
    native.prepare(1, [])
    (fs(native, 1) / "a").write_text("1")
    native.prepare("view", [1], readonly=True)
    mount_all(native.mounts("view", [1], readonly=True), target)
    assert (target / "a").read_text() == "1"
    with pytest.raises(OSError) as caught:
        (target / "a").write_text("no")
    assert caught.value.errno == errno.EROFS
    with pytest.raises(FailedPrecondition, match='snapshot id "view": in use by the bind mount'):
        native.remove("view")
    native.remove(1)  # the view holds its own copy
    unmount_all(target)
    native.remove("view")


def test_the_native_check_passes_and_leaves_nothing(native):
    native.check()
    assert NativeSnapshotter.supported(native.root)
    assert os.listdir(native.temp) == []
