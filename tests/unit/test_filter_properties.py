"""Property tests of wire.filter: it never crashes, and quoting round-trips."""

from __future__ import annotations

import re
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


# A reference recogniser written from the grammar in wire.filter's docstring
# (containerd's), for text with no backslashes: the parser must accept exactly
# what it accepts. Whitespace is ASCII only, where str.isspace and \s agree.
_WS = r"[ \t\n]*"
_QUOTED = r'"[^"\\\n]*"'
_FIELD = rf"(?:{_QUOTED}|[A-Za-z0-9_]+)"
_PATH = rf"{_FIELD}(?:{_WS}\.{_WS}{_FIELD})*"
# Operator characters are read greedily, so an unquoted value cannot begin with one.
_VALUE = rf'(?:{_QUOTED}|[^\s,"=!~][^\s,]*)'
_REGEX_VALUE = rf'(?:{_QUOTED}|/[^/\\\n]*/|\|[^|\\\n]*\||[^\s,"=!~/|][^\s,]*)'
_SELECTOR = rf"{_PATH}(?:{_WS}(?:(?:==|!=){_WS}{_VALUE}|~={_WS}{_REGEX_VALUE}))?"
_GRAMMAR = re.compile(rf"{_WS}(?:{_SELECTOR}{_WS}(?:,{_WS}{_SELECTOR}{_WS})*)?")

# One or more characters of every class the grammar tells apart: field
# characters, the separators, operators, quotes, whitespace, the hyphen and
# other punctuation, and non-ASCII letters. No RE2 metacharacter that could
# make a "~=" value a bad pattern, which is grammatical yet still refused.
CLASSES = 'aZ09_-.,=!~"/| \t\n@:é'


def grammar_accepts(text: str) -> bool:
    return _GRAMMAR.fullmatch(text) is not None


def parser_accepts(text: str) -> bool:
    try:
        parse_filter(text)
    except InvalidArgument:
        return False
    return True


fragments = st.sampled_from(
    ["labels", "id", "a-b", '"x.y"', '"', ".", ",", "==", "!=", "~=", "=", "/a/", "|b|", " "]
)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=CLASSES, max_size=24))
def test_parser_accepts_exactly_the_grammar_on_every_character_class(text: str) -> None:
    assert parser_accepts(text) is grammar_accepts(text), text


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.one_of(fragments, st.text(alphabet=CLASSES, max_size=3)), max_size=10))
def test_parser_accepts_exactly_the_grammar_on_token_soup(parts: list[str]) -> None:
    text = "".join(parts)
    assert parser_accepts(text) is grammar_accepts(text), text
