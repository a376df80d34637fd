"""Property tests of wire.filter: it never crashes, and quoting round-trips."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wire.errors import InvalidArgument
from wire.filter import container_fields, parse_filter

# Characters that mean something to the grammar, so random text reaches deep
# into the parser instead of failing on the first character.
GRAMMAR = 'labelsidmg.,=!~"/|\\ \t\nxuU0179aAfF()[]+*?^$'


def go_quote(text: str) -> str:
    """``text`` as a double-quoted filter string, escaping like Go's strconv.Quote."""
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def check_parse(text: str) -> None:
    try:
        parse_filter(text)
    except InvalidArgument as exc:
        assert exc.message.startswith("filter [")


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parse_filter_raises_only_invalid_argument_on_arbitrary_text(text: str) -> None:
    check_parse(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=GRAMMAR, max_size=40))
def test_parse_filter_raises_only_invalid_argument_on_grammar_soup(text: str) -> None:
    check_parse(text)


@settings(max_examples=200, deadline=None)
@given(key=st.text(), value=st.text(), other=st.text())
def test_quoted_label_filter_matches_exactly_that_label(key: str, value: str, other: str) -> None:
    f = parse_filter(f"labels.{go_quote(key)}=={go_quote(value)}")
    assert f.match(container_fields({"labels": {key: value}}))
    if other != value:
        assert not f.match(container_fields({"labels": {key: other}}))
    assert not f.match(container_fields({"labels": {key + "x": value}}))


@settings(max_examples=200, deadline=None)
@given(key=st.text(), value=st.text())
def test_quoted_label_presence_holds_whatever_the_value(key: str, value: str) -> None:
    f = parse_filter(f"labels.{go_quote(key)}")
    assert f.match(container_fields({"labels": {key: value}}))


records = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["", "web-1", "db"]),
        "image": st.sampled_from(["", "nginx", "web-1"]),
        "labels": st.dictionaries(st.sampled_from(["a", "b", "a.b", ""]), st.text(max_size=3)),
    },
)
paths = st.sampled_from(["id", "image", "rootfs", "labels.a", "labels.a.b", "labels", "other"])


@settings(max_examples=200, deadline=None)
@given(record=records, path=paths, value=st.text(max_size=3))
def test_not_equal_is_the_negation_of_equal(record: dict[str, Any], path: str, value: str) -> None:
    lookup = container_fields(record)
    equal = parse_filter(f"{path}=={go_quote(value)}")
    not_equal = parse_filter(f"{path}!={go_quote(value)}")
    assert not_equal.match(lookup) is not equal.match(lookup)


@settings(max_examples=200, deadline=None)
# Surrogates are left out: Go (and so the parser) reads an escaped one as U+FFFD.
@given(
    value=st.text(
        alphabet=st.characters(exclude_categories=["Cs"], exclude_characters=',"/|=!~'),
        min_size=1,
    )
)
def test_unquoted_value_without_spaces_equals_its_quoted_form(value: str) -> None:
    raw = "".join(value.split())
    if not raw:
        return
    unquoted = parse_filter(f"labels.x=={raw}")
    quoted = parse_filter(f"labels.x=={go_quote(raw)}")
    assert unquoted.selectors == quoted.selectors
