"""Request validation against message schemas."""

from __future__ import annotations

import msgpack
import pytest

from wire.errors import InvalidArgument
from wire.messages import CREATE_CONTAINER, GET_CONTAINER, UPDATE_CONTAINER
from wire.schema import BOOL, INT64, UINT32, UINT64, Enum, Message, Repeated

SPEC = {"type_url": "t", "value": b"{}"}


def test_absent_fields_get_their_proto3_defaults():
    body = CREATE_CONTAINER.decode({"container": {"id": "web"}})
    assert body["container"] == {
        "id": "web",
        "labels": {},
        "image": "",
        "runtime": "",
        "spec": None,
        "rootfs": "",
        "created_at": None,
        "updated_at": None,
    }


def test_an_absent_body_is_the_empty_message():
    assert GET_CONTAINER.decode(None) == {"id": ""}


def test_an_unknown_field_is_refused_by_its_path():
    with pytest.raises(InvalidArgument, match=r'"container\.bogus": unknown field'):
        CREATE_CONTAINER.decode({"container": {"id": "x", "bogus": 1}})


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"id": 1}, "id"),
        ({"id": b"web"}, "id"),
        ({"id": None}, "id"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_field(body, path):
    with pytest.raises(InvalidArgument, match=f'"{path}": expected str'):
        GET_CONTAINER.decode(body)


def test_labels_must_map_str_to_str():
    with pytest.raises(InvalidArgument, match=r"labels\.a"):
        CREATE_CONTAINER.decode({"container": {"labels": {"a": 1}}})
    with pytest.raises(InvalidArgument, match="labels"):
        CREATE_CONTAINER.decode({"container": {"labels": {1: "a"}}})
    with pytest.raises(InvalidArgument, match="labels"):
        CREATE_CONTAINER.decode({"container": {"labels": ["a"]}})


def test_an_any_needs_a_str_type_url_and_bin_value():
    with pytest.raises(InvalidArgument, match=r"spec\.value.*expected bin"):
        CREATE_CONTAINER.decode({"container": {"spec": {"type_url": "t", "value": "{}"}}})
    assert CREATE_CONTAINER.decode({"container": {"spec": SPEC}})["container"]["spec"] == SPEC


def test_created_at_and_updated_at_are_accepted_and_ignored_on_input():
    ts = msgpack.Timestamp(1, 0)
    body = CREATE_CONTAINER.decode({"container": {"created_at": ts, "updated_at": ts}})
    assert body["container"]["created_at"] is None


def test_a_field_mask_is_a_map_of_paths():
    body = UPDATE_CONTAINER.decode({"container": {"id": "a"}, "update_mask": {"paths": ["x"]}})
    assert body["update_mask"] == {"paths": ["x"]}
    with pytest.raises(InvalidArgument, match=r"update_mask\.paths\[0\]"):
        UPDATE_CONTAINER.decode({"update_mask": {"paths": [1]}})


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        (UINT32, [0, 2**32 - 1], [-1, 2**32, True, 1.0]),
        (INT64, [-(2**63), 2**63 - 1], [2**63, False]),
        (UINT64, [0, 2**64 - 1], [-1]),
    ],
)
def test_integers_are_range_checked_for_their_proto_type(kind, good, bad):
    msg = Message("T", {"n": kind})
    for value in good:
        assert msg.decode({"n": value}) == {"n": value}
    for value in bad:
        with pytest.raises(InvalidArgument, match='"n"'):
            msg.decode({"n": value})


def test_a_bool_field_takes_only_msgpack_bools():
    msg = Message("T", {"b": BOOL})
    assert msg.decode({"b": True}) == {"b": True}
    with pytest.raises(InvalidArgument):
        msg.decode({"b": 1})


def test_an_enum_is_carried_by_name():
    msg = Message("T", {"s": Enum("Status", ["UNKNOWN", "RUNNING"])})
    assert msg.decode({"s": "RUNNING"}) == {"s": "RUNNING"}
    assert msg.decode({}) == {"s": "UNKNOWN"}
    with pytest.raises(InvalidArgument, match="not one of"):
        msg.decode({"s": "FLYING"})


def test_two_members_of_a_oneof_are_refused():
    msg = Message("Kill", {"all": BOOL, "pid": UINT32}, oneofs={"pid_or_all": ("all", "pid")})
    assert msg.decode({"pid": 3})["pid"] == 3
    with pytest.raises(InvalidArgument, match="pid_or_all"):
        msg.decode({"all": True, "pid": 3})


def test_a_repeated_field_checks_every_item():
    msg = Message("T", {"xs": Repeated(UINT32)})
    with pytest.raises(InvalidArgument, match=r"xs\[1\]"):
        msg.decode({"xs": [1, -1]})
