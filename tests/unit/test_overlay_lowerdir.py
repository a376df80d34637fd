"""Fitting an overlay's lowerdir into mount(2)'s page: compaction and reading it back."""

from __future__ import annotations

import os

from runtime.overlay_lowerdir import (
    MAX_MOUNT_DATA,
    compact_lowerdir,
    data_size,
    overlay_layers,
)

# Longer than /var/lib/berth/snapshots/overlayfs/snapshots, as a test root is.
HOME = "/var/lib/berth-with-a-long-root-name/snapshots/overlayfs/snapshots"


def chain_options(depth: int, *, home: str = HOME, upper: int | None = None) -> list[str]:
    """The options the overlay snapshotter gives ``depth`` layers, nearest first."""
    lowers = ":".join(f"{home}/{i}/fs" for i in range(depth, 0, -1))
    options = [f"lowerdir={lowers}"]
    if upper is not None:
        options += [f"upperdir={home}/{upper}/fs", f"workdir={home}/{upper}/work"]
    return options


def test_options_that_fit_in_a_page_are_kept_as_they_are():
    for options in (chain_options(2), chain_options(40, upper=41), ["size=64m", "mode=755"]):
        assert data_size(options) <= MAX_MOUNT_DATA
        assert compact_lowerdir(options) == ("", options)


def test_a_lowerdir_too_long_for_a_page_is_made_relative_to_the_layers_directory():
    options = chain_options(128, upper=129)
    assert data_size(options) > MAX_MOUNT_DATA

    directory, compacted = compact_lowerdir(options)

    assert directory == HOME
    assert data_size(compacted) <= MAX_MOUNT_DATA
    lowers = compacted[0].removeprefix("lowerdir=").split(":")
    assert lowers[:2] == ["128/fs", "127/fs"] and lowers[-1] == "1/fs", "same order"
    original = options[0].removeprefix("lowerdir=").split(":")
    assert [os.path.join(directory, p) for p in lowers] == original
    assert compacted[1:] == options[1:], "upperdir and workdir stay absolute"


def test_overlayfs_s_deepest_stack_fits_once_relative():
    directory, compacted = compact_lowerdir(chain_options(500, upper=501))
    assert directory == HOME and data_size(compacted) <= MAX_MOUNT_DATA


def test_the_page_is_the_limit_not_a_margin_below_it():
    options = chain_options(128)
    size = data_size(options)
    assert compact_lowerdir(options, limit=size) == ("", options)
    assert compact_lowerdir(options, limit=size - 1)[0] == HOME


def test_data_only_layers_keep_their_empty_separator():
    options = [f"lowerdir={HOME}/3/fs:{HOME}/2/fs::{HOME}/1/fs"]
    assert compact_lowerdir(options, limit=10) == (HOME, ["lowerdir=3/fs:2/fs::1/fs"])


def test_a_layer_that_is_the_common_directory_itself_is_named_from_its_parent():
    options = [f"lowerdir={HOME}:{HOME}/2/fs", "index=off"]
    directory, compacted = compact_lowerdir(options, limit=10)
    assert directory == os.path.dirname(HOME)
    assert compacted == ["lowerdir=snapshots:snapshots/2/fs", "index=off"]


def test_what_compaction_cannot_shorten_is_left_for_the_caller_to_refuse():
    relative = ["lowerdir=a/fs:b/fs"]
    only_root_shared = ["lowerdir=/a/1/fs:/b/2/fs"]
    one_layer = [f"lowerdir={HOME}/1/fs"]
    no_lowerdir = [f"upperdir={HOME}/1/fs"]
    for options in (relative, only_root_shared, one_layer, no_lowerdir):
        assert compact_lowerdir(options, limit=5) == ("", options)


def test_overlay_layers_reads_relative_lowers_from_the_source_directory():
    directory, compacted = compact_lowerdir(chain_options(3, upper=4), limit=10)
    layers = overlay_layers(directory, ",".join(["rw", *compacted, "uuid=on"]))
    assert layers == [
        f"{HOME}/3/fs",
        f"{HOME}/2/fs",
        f"{HOME}/1/fs",
        f"{HOME}/4/fs",
        f"{HOME}/4/work",
    ]


def test_overlay_layers_skips_relative_lowers_it_cannot_place_and_reads_fsconfig_ones():
    assert overlay_layers("overlay", "rw,lowerdir=3/fs:/abs/2/fs,upperdir=/abs/4/fs") == [
        "/abs/2/fs",
        "/abs/4/fs",
    ]
    assert overlay_layers("none", "rw,lowerdir+=/abs/1/fs,lowerdir+=/abs/2/fs,index=off") == [
        "/abs/1/fs",
        "/abs/2/fs",
    ]
