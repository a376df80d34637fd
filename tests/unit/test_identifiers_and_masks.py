"""Identifier and label rules; field-mask paths and their application."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.errors import InvalidArgument
from wire.fieldmask import apply_container_mask, check_container_paths
from wire.identifiers import check_identifier, check_labels


@pytest.mark.parametrize("good", ["a", "web", "a.b-c_d", "A1", "x" * 76, "1-2.3_4"])
def test_valid_identifiers_pass(good):
    assert check_identifier("container", good) == good


@pytest.mark.parametrize(
    "bad", ["", "-a", "a-", "a..b", "a b", "x" * 77, "web\n", "é", "a/b", "_a", "a__b"]
)
def test_invalid_identifiers_are_refused_naming_the_kind(bad):
    with pytest.raises(InvalidArgument, match="container"):
        check_identifier("container", bad)


@given(st.text(max_size=90))
def test_identifier_check_accepts_exactly_the_grammar(text):
    import re

    valid = len(text) <= 76 and re.fullmatch(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*", text)
    try:
        assert check_identifier("namespace", text) == text
        assert valid
    except InvalidArgument:
        assert not valid


def test_labels_with_empty_values_are_dropped():
    assert check_labels("c", {"a": "1", "b": ""}) == {"a": "1"}


def test_a_label_over_4096_bytes_is_refused():
    check_labels("c", {"k": "v" * 4095})
    with pytest.raises(InvalidArgument, match="4096"):
        check_labels("c", {"k": "v" * 4096})
    with pytest.raises(InvalidArgument, match="4096"):
        check_labels("c", {"k": "é" * 2048})  # bytes, not characters


def test_an_empty_label_key_is_refused():
    with pytest.raises(InvalidArgument, match="key"):
        check_labels("c", {"": "v"})


@pytest.mark.parametrize("path", ["id", "created_at", "labelsx", "labels.", "spec.value", ""])
def test_mask_paths_outside_the_mutable_fields_are_refused(path):
    with pytest.raises(InvalidArgument):
        check_container_paths("web", [path])


def test_mask_paths_of_mutable_fields_pass():
    check_container_paths("web", ["labels", "labels.a.b", "image", "runtime", "spec", "rootfs"])


CURRENT = {
    "id": "web",
    "labels": {"a": "1", "b": "2"},
    "image": "img",
    "runtime": "linux",
    "spec": {"type_url": "t", "value": b"1"},
    "rootfs": "snap",
}
UPDATE = {
    "id": "web",
    "labels": {"a": "9", "c": "3"},
    "image": "",
    "runtime": "",
    "spec": None,
    "rootfs": "other",
}


def test_an_empty_mask_replaces_every_mutable_field():
    out = apply_container_mask(CURRENT, UPDATE, [])
    assert out["labels"] == {"a": "9", "c": "3"}
    assert out["image"] == "" and out["spec"] is None and out["rootfs"] == "other"


def test_a_label_path_sets_or_deletes_one_key():
    out = apply_container_mask(CURRENT, UPDATE, ["labels.a", "labels.b"])
    assert out["labels"] == {"a": "9"}
    assert CURRENT["labels"] == {"a": "1", "b": "2"}, "the stored record is not mutated"


def test_a_field_path_replaces_only_that_field():
    out = apply_container_mask(CURRENT, UPDATE, ["rootfs"])
    assert out["rootfs"] == "other"
    assert out["image"] == "img" and out["labels"] == CURRENT["labels"]
