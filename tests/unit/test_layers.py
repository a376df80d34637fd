"""Applying image layers: OCI semantics, and hostile layers writing nothing."""

from __future__ import annotations

import contextlib
import functools
import gzip as gzip_module
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from runtime.layers import AppliedLayer, apply_layer, layer_diff_id, resolve_in_root
from runtime.rootfs import APPLETS, BUSYBOX
from tests.image_archives import (
    HOSTILE_LAYERS,
    Entry,
    Layer,
    busybox_layer,
    device_entry,
    dir_entry,
    fifo_entry,
    file_entry,
    hardlink_entry,
    hostile_layer,
    layer,
    multi_layers,
    opaque_entry,
    symlink_entry,
    tar_bytes,
    whiteout_entry,
)
from wire.errors import FailedPrecondition, InvalidArgument, NotFound

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod)")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


def apply(root: Path, lay: Layer, **kwargs: Any) -> AppliedLayer:
    return apply_layer(root, lambda: io.BytesIO(lay.blob), **kwargs)


def tree(root: Path) -> dict[str, tuple[int, bytes | str | None]]:
    """Every path below ``root`` with its mode and content (file bytes, link target)."""
    found: dict[str, tuple[int, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            content: bytes | str | None = None
            if stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                content = path.read_bytes()
            found[str(path.relative_to(root))] = (st.st_mode, content)
    return found


def test_a_busybox_layer_unpacks_into_the_tree_of_make_busybox_rootfs(root: Path) -> None:
    lay = busybox_layer()
    applied = apply(root, lay)
    assert applied.diff_id == lay.diff_id == f"sha256:{hashlib.sha256(lay.tar).hexdigest()}"
    assert applied.size == len(lay.tar)
    assert (root / "bin/busybox").read_bytes() == BUSYBOX.read_bytes()
    assert stat.S_IMODE((root / "bin/busybox").stat().st_mode) == 0o755
    for applet in APPLETS:
        assert os.readlink(root / "bin" / applet) == "busybox"
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert (root / "etc/passwd").read_text() == "root:x:0:0:root:/root:/bin/sh\n"


def test_a_gzip_layer_gives_the_diff_id_of_its_uncompressed_tar(root: Path) -> None:
    lay = busybox_layer(gzip=True)
    assert lay.blob[:2] == b"\x1f\x8b"
    assert apply(root, lay).diff_id == lay.diff_id == busybox_layer().diff_id
    assert (root / "bin/busybox").read_bytes() == BUSYBOX.read_bytes()


def test_a_layer_is_read_from_a_path_as_well_as_from_an_opener(tmp_path: Path, root: Path) -> None:
    (tmp_path / "layer.tar.gz").write_bytes(busybox_layer(gzip=True).blob)
    assert apply_layer(root, tmp_path / "layer.tar.gz").diff_id == busybox_layer().diff_id
    assert layer_diff_id(str(tmp_path / "layer.tar.gz")) == busybox_layer().diff_id


@pytest.mark.parametrize("gzip", [False, True])
def test_an_upper_layer_adds_whites_out_and_makes_a_directory_opaque(
    root: Path, gzip: bool
) -> None:
    base, upper = multi_layers(gzip)
    apply(root, base)
    assert (root / "etc/motd").exists() and (root / "opt/old/sub/b").exists()
    applied = apply(root, upper)
    assert applied.whiteouts == 2
    assert (root / "etc/hello").read_bytes() == b"hello\n"
    assert not (root / "etc/motd").exists()
    assert sorted(os.listdir(root / "opt/old")) == ["c"]
    assert (root / "opt/keep").read_bytes() == b"keep\n"
    assert (root / "etc/passwd").exists()


def test_a_whiteout_removes_a_file_of_a_lower_layer(root: Path) -> None:
    apply(root, layer([file_entry("etc/motd", b"x"), file_entry("etc/issue", b"y")]))
    apply(root, layer([whiteout_entry("etc/motd")]))
    assert sorted(os.listdir(root / "etc")) == ["issue"]


def test_a_whiteout_removes_a_whole_directory_tree(root: Path) -> None:
    apply(root, layer([file_entry("var/cache/a/b", b"x"), symlink_entry("var/cache/l", "/")]))
    apply(root, layer([whiteout_entry("var/cache")]))
    assert os.listdir(root / "var") == []


def test_a_whiteout_does_not_remove_an_entry_of_the_same_layer(root: Path) -> None:
    apply(root, layer([file_entry("a", b"lower"), file_entry("d/lower", b"x")]))
    apply(root, layer([file_entry("a", b"upper"), whiteout_entry("a")]))
    apply(root, layer([dir_entry("d"), file_entry("d/upper"), whiteout_entry("d")]))
    assert (root / "a").read_bytes() == b"upper"
    assert os.listdir(root / "d") == ["upper"]  # the lower d is hidden, this layer's d kept


def test_an_opaque_marker_after_its_directorys_entries_keeps_them(root: Path) -> None:
    apply(root, layer([file_entry("d/lower1"), file_entry("d/sub/lower2")]))
    apply(root, layer([file_entry("d/new"), file_entry("d/sub/new2"), opaque_entry("d")]))
    assert sorted(os.listdir(root / "d")) == ["new", "sub"]
    assert os.listdir(root / "d/sub") == ["new2"]


def test_whiteout_files_are_never_written(root: Path) -> None:
    apply(root, layer([dir_entry("d"), opaque_entry("d"), whiteout_entry("d/missing")]))
    assert os.listdir(root / "d") == []


def test_a_hard_link_shares_the_inode_of_its_target(root: Path) -> None:
    apply(root, layer([file_entry("bin/tool", b"tool", 0o755)]))
    apply(
        root, layer([hardlink_entry("bin/tool2", "bin/tool"), hardlink_entry("t3", "./bin/tool")])
    )
    assert os.path.samefile(root / "bin/tool", root / "bin/tool2")
    assert (root / "bin/tool").stat().st_nlink == 3


@ROOT_ONLY
def test_ownership_mode_and_mtimes_are_applied_directories_after_their_contents(
    root: Path,
) -> None:
    apply(
        root,
        layer(
            [
                dir_entry("srv", 0o750, uid=7, gid=8, mtime=1000),
                file_entry("srv/setuid", b"x", 0o4755, uid=1234, gid=5678, mtime=2000),
                symlink_entry("srv/link", "setuid"),
            ]
        ),
    )
    st = (root / "srv/setuid").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o4755)
    assert st.st_mtime == 2000
    st = (root / "srv").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime) == (7, 8, 0o750, 1000)


def test_xattrs_from_pax_headers_are_applied(root: Path) -> None:
    pax = {"SCHILY.xattr.user.berth": "yes", "SCHILY.xattr.trusted.overlay.opaque": "y"}
    apply(root, layer([file_entry("f", b"x", pax_headers=pax)]))
    try:
        assert os.getxattr(root / "f", "user.berth") == b"yes"
    except OSError:
        pytest.skip("no user xattrs on this filesystem")
    assert "trusted.overlay.opaque" not in os.listxattr(root / "f")


@ROOT_ONLY
def test_fifos_are_made_and_device_nodes_only_when_allowed(root: Path) -> None:
    apply(root, layer([fifo_entry("run/fifo")]))
    assert stat.S_ISFIFO((root / "run/fifo").lstat().st_mode)
    apply(root, layer([device_entry("dev/null", 1, 3)]), allow_devices=True)
    st = (root / "dev/null").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


def test_an_entry_replaces_an_existing_path_of_another_type(root: Path) -> None:
    apply(root, layer([file_entry("a/x", b"x"), file_entry("b", b"b"), symlink_entry("c", "a")]))
    apply(root, layer([file_entry("a", b"now a file"), dir_entry("b"), dir_entry("c")]))
    assert (root / "a").read_bytes() == b"now a file"
    assert (root / "b").is_dir() and (root / "c").is_dir() and not (root / "c").is_symlink()


def test_a_file_replacing_a_symlink_is_not_written_through_it(tmp_path: Path, root: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    apply(root, layer([symlink_entry("etc/shadow", str(outside))]))
    apply(root, layer([file_entry("etc/shadow", b"overwritten")]))
    assert outside.read_bytes() == b"precious"
    assert (root / "etc/shadow").read_bytes() == b"overwritten"


def test_a_symlink_already_in_the_target_is_followed_inside_the_root(
    tmp_path: Path, root: Path
) -> None:
    apply(root, layer([dir_entry("run"), symlink_entry("var/run", "/run")]))
    apply(root, layer([symlink_entry("up", "../../../..")]))
    target = tmp_path / "escaped"
    apply(root, layer([file_entry("var/run/pid", b"1"), file_entry(f"up{target}", b"x")]))
    assert (root / "run/pid").read_bytes() == b"1"
    assert not target.exists()
    assert (root / str(target).lstrip("/")).read_bytes() == b"x"


@pytest.mark.parametrize("kind", sorted(HOSTILE_LAYERS))
def test_a_hostile_layer_is_refused_naming_the_entry_and_writes_nothing(
    tmp_path: Path, root: Path, kind: str
) -> None:
    apply(root, layer([file_entry("etc/keep", b"lower")]))
    before = tree(root)
    with pytest.raises(InvalidArgument) as caught:
        apply(root, hostile_layer(kind, gzip=True), label="sha256:ab12")
    bad_entry = HOSTILE_LAYERS[kind][-1][0].name
    assert caught.value.message.startswith(f'layer sha256:ab12: entry "{bad_entry}": ')
    assert tree(root) == before
    assert not Path("/tmp/berth-escaped").exists()


def test_a_hard_link_to_a_missing_file_or_a_directory_is_refused(root: Path) -> None:
    for target in ("nowhere", "etc"):
        with pytest.raises(InvalidArgument, match="hard link to"):
            apply(root, layer([dir_entry("etc"), hardlink_entry("x", target)]))
        assert os.listdir(root) == []


def test_an_entry_below_a_file_is_refused(root: Path) -> None:
    apply(root, layer([file_entry("etc", b"a file")]))
    with pytest.raises(InvalidArgument, match='parent "etc" is not a directory'):
        apply(root, layer([file_entry("ok"), file_entry("etc/passwd", b"x")]))
    assert sorted(os.listdir(root)) == ["etc"]


def test_a_missing_target_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        apply(tmp_path / "absent", busybox_layer())


def test_an_unsupported_entry_type_is_refused(root: Path) -> None:
    info = tarfile.TarInfo("volume")
    info.type = b"V"
    with pytest.raises(InvalidArgument, match="unsupported entry type"):
        apply(root, Layer(tar_bytes([file_entry("ok"), (info, None)])))
    assert os.listdir(root) == []


@pytest.mark.parametrize("gzip", [False, True])
def test_a_truncated_layer_is_refused_and_writes_nothing(root: Path, gzip: bool) -> None:
    blob = busybox_layer(gzip).blob
    with pytest.raises(InvalidArgument, match="layer"):
        apply_layer(root, lambda: io.BytesIO(blob[: len(blob) // 2]))
    assert os.listdir(root) == []


def test_data_that_is_not_a_tar_is_refused(root: Path) -> None:
    with pytest.raises(InvalidArgument, match="not a tar archive"):
        apply_layer(root, lambda: io.BytesIO(b"no tar here\n" * 100))


def test_an_empty_stream_is_an_empty_layer(root: Path) -> None:
    applied = apply_layer(root, lambda: io.BytesIO(b""))
    assert applied.diff_id == f"sha256:{hashlib.sha256(b'').hexdigest()}"
    assert applied.entries == 0


def test_an_unexpected_diff_id_is_refused_before_anything_is_written(root: Path) -> None:
    with pytest.raises(InvalidArgument, match="does not match the expected"):
        apply(root, busybox_layer(), expected_diff_id="sha256:" + "0" * 64)
    assert os.listdir(root) == []
    assert apply(root, busybox_layer(), expected_diff_id=busybox_layer().diff_id)


def spool_files(spool: Path) -> list[str]:
    """What this process has open in ``spool`` (an unnamed file shows as deleted)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(f"{spool}/"):
                found.append(target)
    return found


@pytest.mark.parametrize(
    "kind", ["applied", "hostile", "truncated", "damaged-gzip", "not-a-tar", "diff-id"]
)
def test_the_layer_is_read_once_spooled_in_spool_dir_and_the_spool_gone_however_it_ends(
    tmp_path: Path, root: Path, kind: str
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    blob = busybox_layer(gzip=True).blob
    if kind == "hostile":
        blob = hostile_layer("symlink-escape", gzip=True).blob
    elif kind == "truncated":
        blob = blob[: len(blob) // 2]
    elif kind == "damaged-gzip":
        blob = blob[:-8] + bytes(b ^ 0xFF for b in blob[-8:])  # CRC and length
    elif kind == "not-a-tar":
        blob = b"no tar here\n" * 100
    while_read: list[str] = []

    def opener() -> io.BytesIO:
        while_read.extend(spool_files(spool))
        return io.BytesIO(blob)

    expected = "sha256:" + "0" * 64 if kind == "diff-id" else None
    if kind == "applied":
        apply_layer(root, opener, spool_dir=spool)
        assert (root / "bin/busybox").read_bytes() == BUSYBOX.read_bytes()
    else:
        with pytest.raises(InvalidArgument):
            apply_layer(root, opener, spool_dir=spool, expected_diff_id=expected)
        assert os.listdir(root) == []
    assert len(while_read) == 1  # the layer was opened once, the spool there, unnamed
    assert spool_files(spool) == []
    assert os.listdir(spool) == []


def test_a_spool_dir_that_is_missing_fails_before_the_layer_is_read(
    tmp_path: Path, root: Path
) -> None:
    opened: list[int] = []

    def opener() -> io.BytesIO:
        opened.append(1)
        return io.BytesIO(busybox_layer().blob)

    with pytest.raises(FailedPrecondition, match="no spool in"):
        apply_layer(root, opener, spool_dir=tmp_path / "absent")
    assert opened == [] and os.listdir(root) == []


def full_tree(root: Path) -> dict[str, tuple[int, bytes | str | None, int, int, int, int, int]]:
    """``tree`` with owners, mtimes, link counts and device numbers."""
    found = {}
    for name, (mode, content) in tree(root).items():
        st = (root / name).lstat()
        found[name] = (mode, content, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_nlink,
                       st.st_rdev)  # fmt: skip
    return found


def varied_entries() -> list[Entry]:
    """Entries of every kind, file data from empty to past the spool's chunks."""
    big = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit: spans 1 MiB chunks
    entries = [
        dir_entry("srv", 0o750, mtime=1000, uid=7, gid=8),
        file_entry("srv/empty", b"", 0o600, mtime=1001),
        file_entry("srv/big", big, 0o644, mtime=1002, uid=1234, gid=5678),
        file_entry("srv/setuid", b"x", 0o4755, mtime=1003),
        symlink_entry("srv/link", "big"),
        hardlink_entry("srv/hard", "srv/big"),
        fifo_entry("srv/fifo"),
        dir_entry("srv/many", 0o755, mtime=1004),
    ]
    entries += [file_entry(f"srv/many/f{i}", b"%d" % i * i, mtime=1005 + i) for i in range(300)]
    return entries


def test_a_gzip_layer_applies_exactly_as_its_plain_tar_and_as_tarfile_reads_it(
    tmp_path: Path,
) -> None:
    tar = tar_bytes(varied_entries())
    one = gzip_module.compress(tar, mtime=0)
    # Two gzip members with zero padding between and after, as gzip itself reads.
    two = gzip_module.compress(tar[:7000], mtime=0) + b"\0" * 5
    two += gzip_module.compress(tar[7000:], mtime=0) + b"\0" * 3
    trees = []
    for i, blob in enumerate([tar, one, two]):
        target = tmp_path / f"root{i}"
        target.mkdir()
        applied = apply_layer(target, functools.partial(io.BytesIO, blob))
        assert applied.diff_id == f"sha256:{hashlib.sha256(tar).hexdigest()}"
        assert (applied.size, applied.entries) == (len(tar), len(varied_entries()))
        trees.append(full_tree(target))
    assert trees[0] == trees[1] == trees[2]
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        for m in tf:
            mode, content, uid, gid, mtime, _, _ = trees[0][m.name]
            if m.islnk():  # the inode of its target, which is checked
                continue
            assert stat.S_IMODE(mode) == (0o777 if m.issym() else m.mode), m.name
            if m.isreg():
                data = tf.extractfile(m)
                assert data is not None and content == data.read(), m.name
            if m.issym():
                assert content == m.linkname
            else:
                assert mtime == m.mtime * 1_000_000_000, m.name
            if os.geteuid() == 0:
                assert (uid, gid) == (m.uid, m.gid), m.name
    assert trees[0]["srv/hard"] == trees[0]["srv/big"]
    assert trees[0]["srv/big"][5] == 2


def test_data_after_the_end_of_the_archive_is_hashed_not_applied(root: Path) -> None:
    tar = tar_bytes([file_entry("a", b"1")]) + b"\0" * 4096 + b"trailing"
    applied = apply_layer(root, lambda: io.BytesIO(gzip_module.compress(tar)))
    assert applied.diff_id == f"sha256:{hashlib.sha256(tar).hexdigest()}"
    assert applied.size == len(tar)
    assert os.listdir(root) == ["a"]


def sparse_entry(name: str, stored: bytes, sparse_map: str, size: int) -> Entry:
    """A GNU sparse file (PAX format 0.1): ``stored`` spread by ``sparse_map``."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.pax_headers = len(stored), 0o644, {
        "GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.name": name,
        "GNU.sparse.size": str(size), "GNU.sparse.map": sparse_map,
    }  # fmt: skip
    return info, stored


def test_a_sparse_file_is_written_with_its_holes(root: Path) -> None:
    apply(root, layer([sparse_entry("s", b"helloabc", "0,5,1000,3", 1003), file_entry("z", b"z")]))
    assert (root / "s").read_bytes() == b"hello" + b"\0" * 995 + b"abc"
    assert (root / "z").read_bytes() == b"z"


def test_a_sparse_map_beyond_the_entrys_data_is_refused(root: Path) -> None:
    entries = [sparse_entry("s", b"helloabc", "0,5,1000,600", 1600), file_entry("z", b"z")]
    with pytest.raises(InvalidArgument, match="sparse map beyond"):
        apply(root, layer(entries, gzip=True))
    assert os.listdir(root) == []


def test_resolve_in_root_reads_symlinks_as_inside_a_chroot(root: Path) -> None:
    (root / "real/dir").mkdir(parents=True)
    (root / "abs").symlink_to("/real")
    (root / "climb").symlink_to("../../../../real/dir")
    (root / "loop").symlink_to("loop")
    assert resolve_in_root(root, "abs/dir/x") == str(root / "real/dir/x")
    assert resolve_in_root(root, "climb") == str(root / "real/dir")
    assert resolve_in_root(root, "../../etc/passwd") == str(root / "etc/passwd")
    assert resolve_in_root(root, "missing/../abs") == str(root / "real")
    with pytest.raises(InvalidArgument, match="too many levels"):
        resolve_in_root(root, "loop/x")
