r"""containerd's filter language, as taken by ``containerd.v1.Containers/List.filter``.

::

    selectors := selector ("," selector)*      all must hold
    selector  := fieldpath [operator value]    no operator: the field is present
    fieldpath := field ("." field)*
    field     := quoted | [A-Za-z0-9_]+
    operator  := "==" | "!=" | "~="
    value     := quoted | [^\s,]+             "~=" values may also be /quoted/ or |quoted|
    quoted    := "..." with Go escapes: \a \b \f \n \r \t \v \\ \" \NNN \xNN \uNNNN
                 and \UNNNNNNNN; \xNN and \NNN are bytes of UTF-8

Whitespace between tokens is ignored; an empty or blank filter matches everything.
Operator characters are read greedily and an unquoted value never begins with
one (``id===x`` and ``id== =x`` are bad operators, as in containerd's scanner);
quote such a value (``id=="=x"``). A field is ``[A-Za-z0-9_]+`` exactly as the
grammar says and as containerd 1.6 scans it (``labels.app-name`` is a syntax
error: quote it, ``labels."app-name"``); containerd 1.7 later admitted ``-``.
``==`` needs the field present and equal, ``!=`` holds when it is absent or
differs, and ``~=`` is an unanchored RE2 search of a present field: RE2 runs in
linear time, so no filter can stall the daemon. Every bad filter is
:class:`~wire.errors.InvalidArgument` whose message marks the offending
character the way containerd does: ``filter [labels. >|"|< a]: ...``.

As in containerd, ``/.../`` and ``|...|`` take the same escapes as ``"..."``
(with their own quote escapable instead of ``"``), so a regex escape such as
``\d`` must be doubled there (``/\\d+/``) or written in an unquoted value
(``id~=^web-\d+$``), where backslashes are literal.

Where berth departs from containerd, it accepts more or reads more plainly:

* a blank filter matches everything (containerd rejects it);
* ``!=`` is exactly the negation of ``==`` (containerd's ``labels.x!=""`` is
  false when ``x`` is absent), and ``~=`` never matches an absent field
  (containerd searches ``""`` for it, so ``labels.x~=^$`` matched);
* an ``==``/``!=`` value may begin with ``/`` or ``|`` (``rootfs==/var/lib/x``),
  which containerd rejects as a misplaced quote;
* positions count characters, not UTF-8 bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from operator import eq, is_not, ne
from typing import Any, TypeAlias

import re2

from wire.errors import InvalidArgument

__all__ = ["FieldLookup", "Filter", "Selector", "container_fields", "parse_filter"]

FieldLookup: TypeAlias = Callable[[tuple[str, ...]], str | None]
"""Maps a field path to the field's value, or ``None`` when the field is absent."""

_Test: TypeAlias = Callable[[str | None], bool]

_FIELD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_OPERATOR_CHARS = frozenset("=!~")
_OPERATORS = frozenset({"==", "!=", "~="})
_REGEX_QUOTES = frozenset("/|")
_HEX = frozenset("0123456789abcdefABCDEF")
_OCTAL = frozenset("01234567")
_SIMPLE_ESCAPES = {
    name: c.encode() for name, c in zip("abfnrtv\\", "\a\b\f\n\r\t\v\\", strict=True)
}
_HEX_ESCAPE_DIGITS = {"x": 2, "u": 4, "U": 8}
_ESCAPES = r"\a \b \f \n \r \t \v \\ \NNN \xNN \uNNNN \UNNNNNNNN or an escaped quote"
_CONTEXT = 60  # characters of input shown on each side of an error marker

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # RE2 would print every rejected pattern to stderr
_RE2_OPTIONS.never_capture = True  # only "does it match" is asked; spans are wasted work

_SCALAR_FIELDS = frozenset({"id", "image", "runtime", "rootfs"})


@dataclass(frozen=True, slots=True)
class Selector:
    """One ``fieldpath [operator value]`` term; ``operator`` is ``""`` for a presence test."""

    fieldpath: tuple[str, ...]
    operator: str = ""
    value: str = ""


class Filter:
    """A parsed filter; match() tells whether an object satisfies all selectors.

    Build one with :func:`parse_filter`.
    """

    __slots__ = ("_tests", "selectors", "text")

    def __init__(self, text: str, terms: tuple[tuple[Selector, _Test], ...]) -> None:
        self.text = text
        self.selectors = tuple(selector for selector, _ in terms)
        # Pairs of (path, test) so match() does one lookup and one call per selector.
        self._tests = tuple((selector.fieldpath, test) for selector, test in terms)

    def match(self, lookup: FieldLookup) -> bool:
        """Whether the object behind ``lookup`` satisfies every selector."""
        # A plain loop, not all(...): this runs per container and a generator costs.
        for path, test in self._tests:  # noqa: SIM110
            if not test(lookup(path)):
                return False
        return True

    @property
    def is_empty(self) -> bool:
        """True when the filter has no selectors and so matches everything."""
        return not self._tests

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"


def parse_filter(text: str) -> Filter:
    """Parse ``text``; any syntax error or bad regular expression is InvalidArgument."""
    if not text.strip():
        return Filter(text, ())
    return Filter(text, tuple(_Parser(text).selectors()))


def container_fields(record: Mapping[str, Any]) -> FieldLookup:
    """Lookup for a container dict with keys id, image, runtime, rootfs (str) and labels.

    ``labels`` is a ``dict[str, str]``.

    As in containerd's container adaptor, an empty ``id``, ``image``,
    ``runtime`` or ``rootfs`` is absent (so ``image==""`` never matches and the
    bare ``image`` selector means "has an image"), while a label set to ``""`` is
    present. ``labels.<k1>.<k2>...`` names the label ``"<k1>.<k2>..."``; bare
    ``labels`` names the label ``""``, because containerd joins the empty rest
    of the path. Any other path, including ``id.x``, is absent.
    """
    labels = record.get("labels")
    if not isinstance(labels, dict) or not labels:
        labels = None

    def lookup(path: tuple[str, ...]) -> str | None:
        head = path[0] if path else ""
        if head == "labels":
            if labels is None:
                return None
            value = labels.get(".".join(path[1:]))
            return value if isinstance(value, str) else None
        if len(path) == 1 and head in _SCALAR_FIELDS:
            value = record.get(head)
            return value if isinstance(value, str) and value else None
        return None

    return lookup


def _regex_test(regex: Any, value: str | None) -> bool:
    if value is None:
        return False
    try:
        return regex.search(value) is not None
    except UnicodeEncodeError:
        # A lone surrogate cannot reach RE2 as UTF-8; Go reads bad bytes as U+FFFD.
        clean = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return regex.search(clean) is not None


class _Parser:
    """Recursive descent over ``text``; ``pos`` is the next unread character."""

    __slots__ = ("end", "pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.end = len(text)

    def fail(self, pos: int, problem: str, hint: str = "") -> InvalidArgument:
        """The error for ``problem`` at ``pos``, showing the input marked there."""
        text = self.text
        hint = f"; {hint}" if hint else ""
        before = text[max(0, pos - _CONTEXT) : pos]
        if pos > _CONTEXT:
            before = "..." + before
        if pos >= self.end:
            return InvalidArgument(
                f"filter [{before}]: {problem} at end of filter (position {pos}){hint}"
            )
        after = text[pos + 1 : pos + 1 + _CONTEXT]
        if pos + 1 + _CONTEXT < self.end:
            after += "..."
        return InvalidArgument(
            f"filter [{before} >|{text[pos]}|< {after}]: {problem} at position {pos}{hint}"
        )

    def peek(self) -> str:
        """Skip whitespace and return the next character, or ``""`` at the end."""
        text, pos, end = self.text, self.pos, self.end
        while pos < end and text[pos].isspace():
            pos += 1
        self.pos = pos
        return text[pos] if pos < end else ""

    def selectors(self) -> list[tuple[Selector, _Test]]:
        terms = [self.selector()]
        while (char := self.peek()) == ",":
            self.pos += 1
            terms.append(self.selector())
        if char:
            raise self.fail(self.pos, f"unexpected {char!r}", "expected ',' or end of filter")
        return terms

    def selector(self) -> tuple[Selector, _Test]:
        path = [self.field()]
        while self.peek() == ".":
            self.pos += 1
            path.append(self.field())
        fieldpath = tuple(path)

        char = self.peek()
        if char in ("", ","):
            return Selector(fieldpath), partial(is_not, None)
        if char not in _OPERATOR_CHARS:
            hint = "use '==', '!=' or '~='"
            if self.text[self.pos - 1] in _FIELD_CHARS:
                # "labels.app-name": the name runs on past what a field may hold.
                hint += '; a field is [A-Za-z0-9_]+, quote any other name (labels."a-b")'
            raise self.fail(self.pos, "expected an operator", hint)

        start = self.pos
        # Operator characters are taken greedily, as containerd does, so that
        # "id===x" is a bad operator rather than the value "=x".
        while self.pos < self.end and self.text[self.pos] in _OPERATOR_CHARS:
            self.pos += 1
        operator = self.text[start : self.pos]
        if operator not in _OPERATORS:
            raise self.fail(start, f"unsupported operator {operator!r}", "use '==', '!=' or '~='")

        value_pos = self.pos
        value = self.value(operator)
        selector = Selector(fieldpath, operator, value)
        if operator == "==":
            return selector, partial(eq, value)
        if operator == "!=":
            return selector, partial(ne, value)
        return selector, partial(_regex_test, self.regex(value, value_pos))

    def field(self) -> str:
        char = self.peek()
        if char == '"':
            return self.quoted()
        if char in _REGEX_QUOTES:
            raise self.fail(
                self.pos, f"unexpected {char!r}", "'/' and '|' quote only '~=' values; use '\"'"
            )
        start = pos = self.pos
        while pos < self.end and self.text[pos] in _FIELD_CHARS:
            pos += 1
        if pos == start:
            raise self.fail(start, "expected a field", "a field is [A-Za-z0-9_]+ or quoted")
        self.pos = pos
        return self.text[start:pos]

    def value(self, operator: str) -> str:
        char = self.peek()
        if char in ("", ","):
            raise self.fail(self.pos, "expected a value", "a value is [^\\s,]+ or quoted")
        if char == '"' or (operator == "~=" and char in _REGEX_QUOTES):
            return self.quoted()
        if char in _OPERATOR_CHARS:
            # containerd's scanner reads "id== =x" as a second operator.
            raise self.fail(
                self.pos, "expected a value", f"quote a value that begins with {char!r}"
            )
        text, start, end = self.text, self.pos, self.end
        pos = start
        while pos < end and text[pos] != "," and not text[pos].isspace():
            pos += 1
        self.pos = pos
        return text[start:pos]

    def quoted(self) -> str:
        """Read a quoted string starting at ``pos``, with Go's escapes."""
        text, start, end = self.text, self.pos, self.end
        quote = text[start]
        pos = run = start + 1
        # Escapes are decoded to UTF-8 bytes because Go's \xNN and \NNN escapes
        # produce bytes: "\xc3\xa9" is "é", exactly as containerd reads it.
        decoded: bytearray | None = None
        while True:
            if pos >= end or text[pos] == "\n":
                raise self.fail(
                    start, "unterminated quoted string", f"no closing {quote} on the line"
                )
            char = text[pos]
            if char == quote:
                break
            if char != "\\":
                pos += 1
                continue
            if decoded is None:
                decoded = bytearray()
            decoded += text[run:pos].encode("utf-8", "surrogatepass")
            pos = run = self.escape(pos, quote, decoded)
        self.pos = pos + 1
        if decoded is None:
            return text[start + 1 : pos]
        decoded += text[run:pos].encode("utf-8", "surrogatepass")
        # Bytes that do not form UTF-8 survive as lone surrogates, which equal no
        # real label, just as Go's invalid strings do.
        return decoded.decode("utf-8", "surrogateescape")

    def escape(self, pos: int, quote: str, out: bytearray) -> int:
        """Decode the escape whose backslash is at ``pos``; return the position after it."""
        text = self.text
        kind = text[pos + 1] if pos + 1 < self.end else ""
        if not kind:
            raise self.fail(pos, "unterminated quoted string", "it ends in a backslash")
        if kind in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[kind]
            return pos + 2
        if kind == quote:
            out += quote.encode()
            return pos + 2
        if kind in _HEX_ESCAPE_DIGITS:
            count = _HEX_ESCAPE_DIGITS[kind]
            digits = text[pos + 2 : pos + 2 + count]
            if len(digits) < count or not _HEX.issuperset(digits):
                raise self.fail(pos, f"invalid escape \\{kind}", f"it needs {count} hex digits")
            code = int(digits, 16)
            if kind == "x":
                out.append(code)
            elif code > 0x10FFFF:
                raise self.fail(pos, f"invalid escape \\{kind}{digits}", "beyond U+10FFFF")
            else:
                # Go encodes a surrogate code point as U+FFFD rather than failing.
                out += chr(0xFFFD if 0xD800 <= code <= 0xDFFF else code).encode()
            return pos + 2 + count
        if kind in _OCTAL:
            digits = text[pos + 1 : pos + 4]
            if len(digits) < 3 or not _OCTAL.issuperset(digits) or int(digits, 8) > 0o377:
                raise self.fail(
                    pos, f"invalid escape \\{digits}", "octal needs 3 digits up to \\377"
                )
            out.append(int(digits, 8))
            return pos + 4
        shown = kind if kind.isprintable() else repr(kind)
        raise self.fail(
            pos, f"invalid escape \\{shown}", f"inside {quote}...{quote} use {_ESCAPES}"
        )

    def regex(self, pattern: str, pos: int) -> Any:
        try:
            return re2.compile(pattern, _RE2_OPTIONS)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else ""
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            raise self.fail(pos, "invalid regular expression", f"RE2 says: {reason}") from None
        except UnicodeEncodeError:
            raise self.fail(pos, "invalid regular expression", "it is not valid UTF-8") from None
