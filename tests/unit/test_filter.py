"""Example tests of wire.filter: containerd's filter language for Containers/List."""

from __future__ import annotations

import time
from typing import Any

import pytest

from wire.errors import InvalidArgument
from wire.filter import Selector, container_fields, parse_filter


def container(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": "web-1",
        "image": "docker.io/library/nginx:1.25",
        "runtime": "io.containerd.runc.v2",
        "rootfs": "/var/lib/berth/rootfs/web-1",
        "labels": {"tier": "front", "a.b": "dotted", "example.com/tier": "edge", "empty": ""},
    }
    record.update(overrides)
    return record


def matches(text: str, record: dict[str, Any] | None = None) -> bool:
    return parse_filter(text).match(container_fields(container() if record is None else record))


def parse_error(text: str) -> str:
    with pytest.raises(InvalidArgument) as info:
        parse_filter(text)
    message = info.value.message
    assert message.startswith("filter [")
    return message


def test_empty_filter_matches_everything() -> None:
    f = parse_filter("")
    assert f.is_empty
    assert f.match(container_fields({}))
    assert f.match(container_fields(container()))


def test_whitespace_only_filter_matches_everything() -> None:
    f = parse_filter(" \t\n ")
    assert f.is_empty
    assert f.match(container_fields(container()))


def test_a_filter_with_selectors_is_not_empty() -> None:
    assert not parse_filter("id").is_empty


def test_equal_needs_the_field_present_and_equal() -> None:
    assert matches("id==web-1")
    assert not matches("id==web-2")
    assert not matches("labels.missing==front")


def test_not_equal_holds_when_the_field_is_absent() -> None:
    assert matches("labels.missing!=front")
    assert matches('labels.missing!=""')


def test_not_equal_holds_when_the_value_differs_and_fails_when_equal() -> None:
    assert matches("id!=web-2")
    assert not matches("id!=web-1")


def test_presence_selector_needs_the_field_present() -> None:
    assert matches("labels.tier")
    assert matches("image")
    assert not matches("labels.missing")


def test_an_empty_scalar_field_counts_as_absent_like_containerd() -> None:
    record = container(image="")
    assert not matches("image", record)
    assert not matches('image==""', record)
    assert matches('image!=""', record)


def test_a_label_set_to_the_empty_string_is_present() -> None:
    assert matches("labels.empty")
    assert matches('labels.empty==""')
    assert not matches('labels.empty!=""')


def test_regex_search_is_unanchored() -> None:
    assert matches("image~=nginx")
    assert matches("id~=^web-[0-9]+$")
    assert not matches("id~=^db")


def test_regex_never_matches_an_absent_field() -> None:
    assert not matches("labels.missing~=.*")
    assert not matches('labels.missing~=""')


def test_raw_regex_values_keep_backslashes_literally() -> None:
    assert matches(r"id~=^web-\d+$")


def test_slash_quoted_regex_value() -> None:
    f = parse_filter("id~=/^web-[0-9]/")
    assert f.selectors == (Selector(("id",), "~=", "^web-[0-9]"),)
    assert matches("id~=/^web-[0-9]/")
    assert matches(r"id~=/^web-\\d/")


def test_pipe_quoted_regex_value_may_hold_commas_and_spaces() -> None:
    record = container(labels={"note": "a, b"})
    assert matches("labels.note~=|^a, b$|", record)
    assert parse_filter(r"id~=|a\|b|").selectors[0].value == "a|b"


def test_slash_and_pipe_are_plain_characters_in_equality_values() -> None:
    assert matches("rootfs==/var/lib/berth/rootfs/web-1")
    assert parse_filter("labels.x==|a|").selectors[0].value == "|a|"


def test_multiple_selectors_are_all_required() -> None:
    assert matches("id==web-1,labels.tier==front,image")
    assert not matches("id==web-1,labels.tier==back")
    assert not matches("labels.missing,id==web-1")


def test_quoted_field_names_may_hold_dots_and_slashes() -> None:
    f = parse_filter('labels."example.com/tier"==edge')
    assert f.selectors == (Selector(("labels", "example.com/tier"), "==", "edge"),)
    assert matches('labels."example.com/tier"==edge')


def test_label_path_segments_are_joined_with_dots() -> None:
    assert matches("labels.a.b==dotted")
    assert matches('labels."a".b==dotted')
    assert matches('labels."a.b"==dotted')
    assert not matches("labels.a")


def test_bare_labels_names_the_empty_label_key_as_containerd_does() -> None:
    assert not matches("labels")
    assert matches("labels==x", container(labels={"": "x"}))


def test_field_names_hold_underscores_and_need_quotes_for_hyphens() -> None:
    record = container(labels={"app-name": "web", "app_name": "web2"})
    assert matches('labels."app-name"==web,labels.app_name==web2', record)


@pytest.mark.parametrize("text", ["labels.-x==y", "labels.app-name==web", "-", "a.b-c"])
def test_a_hyphen_in_an_unquoted_field_is_a_syntax_error_as_in_the_grammar(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"filter \[.*>\|-\|<"):
        parse_filter(text)


@pytest.mark.parametrize("text", ["id== =x", "id==\t!x", "labels.a~= ~x"])
def test_an_unquoted_value_never_begins_with_an_operator_character(text: str) -> None:
    with pytest.raises(InvalidArgument, match="expected a value"):
        parse_filter(text)


def test_unknown_field_paths_are_absent() -> None:
    assert not matches("name")
    assert not matches("id.extra")
    assert matches("status!=running")


def test_records_without_labels_have_no_labels() -> None:
    record = {"id": "x"}
    assert not matches("labels.tier", record)
    assert matches("labels.tier!=front", record)


@pytest.mark.parametrize(
    ("quoted", "decoded"),
    [
        (r'"a\"b"', 'a"b'),
        (r'"a\\b"', "a\\b"),
        (r'"\a\b\f\n\r\t\v"', "\a\b\f\n\r\t\v"),
        (r'"\x41\101"', "AA"),
        (r'"\u00e9\U0001F600"', "\u00e9\U0001f600"),
        (r'"\xc3\xa9"', "\u00e9"),  # Go's \x escapes are bytes of UTF-8
        (r'"caf\303\251"', "caf\u00e9"),
        ('"too complex, yo"', "too complex, yo"),
        ('""', ""),
    ],
)
def test_escapes_in_quoted_values_are_decoded(quoted: str, decoded: str) -> None:
    assert parse_filter(f"labels.x=={quoted}").selectors[0].value == decoded
    assert parse_filter(f"labels.{quoted}").selectors[0].fieldpath == ("labels", decoded)


def test_quoted_value_matches_a_label_holding_it() -> None:
    record = container(labels={"msg": 'say "hi", world'})
    assert matches(r'labels.msg=="say \"hi\", world"', record)


def test_bytes_that_are_not_utf8_match_no_label() -> None:
    assert not matches(r'labels.x=="\xff"', container(labels={"x": "\xff"}))


def test_raw_values_may_hold_equals_signs_and_punctuation() -> None:
    record = container(labels={"x": "a=b.c:d/e@f"})
    assert matches("labels.x==a=b.c:d/e@f", record)
    assert matches("image==docker.io/library/nginx:1.25")


def test_whitespace_between_tokens_is_ignored() -> None:
    assert matches(' id == web-1 ,\tlabels . tier != back , labels . "a.b" ')
    assert matches("image ~= /nginx/ ")


@pytest.mark.parametrize(
    ("text", "position", "problem"),
    [
        ('labels."a', 7, "unterminated quoted string"),
        ('labels."a\nb"', 7, "unterminated quoted string"),
        ("id~=/abc", 4, "unterminated quoted string"),
        ("id==", 4, "expected a value"),
        ("id==,id", 4, "expected a value"),
        ("id==web-1,", 10, "expected a field"),
        ("id,,image", 3, "expected a field"),
        (",id", 0, "expected a field"),
        ("labels.", 7, "expected a field"),
        ("labels.?x", 7, "expected a field"),
        ("id=web-1", 2, "unsupported operator '='"),
        ("id===web-1", 2, "unsupported operator '==='"),
        ("id!web-1", 2, "unsupported operator '!'"),
        ("id >= 3", 3, "expected an operator"),
        ("labels x", 7, "expected an operator"),
        (r'labels."\q"', 8, r"invalid escape \q"),
        (r'labels."\x4"', 8, r"invalid escape \x"),
        (r'labels."\u12"', 8, r"invalid escape \u"),
        (r'labels."\400"', 8, r"invalid escape \400"),
        (r'labels."\U00110000"', 8, r"invalid escape \U00110000"),
        (r'labels."\/"', 8, r"invalid escape \/"),
        (r"id~=/\d/", 5, r"invalid escape \d"),
        ('labels."a"b==c', 10, "expected an operator"),
        ("id==a b", 6, "unexpected 'b'"),
        ('id=="a"b', 7, "unexpected 'b'"),
        ("labels.|a|==b", 7, "unexpected '|'"),
    ],
)
def test_syntax_errors_are_invalid_argument_naming_the_position(
    text: str, position: int, problem: str
) -> None:
    message = parse_error(text)
    assert problem in message
    assert f"position {position}" in message


def test_error_message_marks_the_offending_character() -> None:
    assert parse_error('labels."a >= b') == (
        'filter [labels. >|"|< a >= b]: unterminated quoted string at position 7;'
        ' no closing " on the line'
    )


def test_error_at_the_end_shows_the_whole_input() -> None:
    assert parse_error("id==web-1,").startswith(
        "filter [id==web-1,]: expected a field at end of filter (position 10)"
    )


def test_error_message_for_a_huge_filter_stays_short() -> None:
    message = parse_error("a" * 100_000 + " b")
    assert len(message) < 400
    assert "position 100001" in message


def test_backreference_rejected_by_re2_is_invalid_argument() -> None:
    message = parse_error(r"labels.x~=(a)\1")
    assert "invalid regular expression at position 10" in message
    assert r"\1" in message


def test_unparseable_regex_is_invalid_argument() -> None:
    assert "invalid regular expression" in parse_error("id~=[a-")
    assert "invalid regular expression" in parse_error('id~="(?P<x"')


def test_regex_that_is_not_utf8_is_invalid_argument() -> None:
    assert "not valid UTF-8" in parse_error(r'id~="\xff"')


def test_pathological_regex_runs_in_linear_time() -> None:
    f = parse_filter("labels.x~=((a+)+)+$")
    lookup = container_fields({"labels": {"x": "a" * 100_000 + "b"}})
    started = time.perf_counter()
    assert f.match(lookup) is False
    assert time.perf_counter() - started < 1.0


def test_selectors_expose_what_was_parsed() -> None:
    f = parse_filter('labels."k 1"==v,id~=/x/,image')
    assert f.selectors == (
        Selector(("labels", "k 1"), "==", "v"),
        Selector(("id",), "~=", "x"),
        Selector(("image",)),
    )
    assert f.text == 'labels."k 1"==v,id~=/x/,image'


def test_container_fields_looks_up_scalars_and_labels() -> None:
    lookup = container_fields(container())
    assert lookup(("id",)) == "web-1"
    assert lookup(("runtime",)) == "io.containerd.runc.v2"
    assert lookup(("rootfs",)) == "/var/lib/berth/rootfs/web-1"
    assert lookup(("labels", "a", "b")) == "dotted"
    assert lookup(("labels", "missing")) is None
    assert lookup(("labels",)) is None
    assert lookup(("runtime", "name")) is None
    assert lookup(()) is None


def test_one_filter_evaluates_many_containers_quickly() -> None:
    f = parse_filter("labels.tier==front,image~=nginx,id!=web-0")
    records = [container(id=f"web-{i}") for i in range(20_000)]
    started = time.perf_counter()
    hits = sum(f.match(container_fields(r)) for r in records)
    elapsed = time.perf_counter() - started
    assert hits == 19_999
    assert elapsed < 2.0
