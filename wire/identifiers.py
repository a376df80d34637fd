"""Identifier and label rules shared by every service.

An identifier (container id, namespace) is the whole string matching
``[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*``, at most 76 characters. Each
repetition starts with a separator, so the pattern cannot backtrack; the
length is checked first anyway.
"""

from __future__ import annotations

import re

from wire.errors import InvalidArgument

__all__ = ["MAX_IDENTIFIER", "MAX_LABEL", "check_identifier", "check_labels"]

MAX_IDENTIFIER = 76
MAX_LABEL = 4096
_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")


def check_identifier(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid identifier, else raise InvalidArgument."""
    if not value:
        raise InvalidArgument(f"{kind}: identifier must not be empty")
    if len(value) > MAX_IDENTIFIER:
        raise InvalidArgument(
            f'{kind} "{value[:20]}...": identifier is longer than {MAX_IDENTIFIER} characters'
        )
    # fullmatch, not match + "$": "$" would accept a trailing newline.
    if _IDENTIFIER.fullmatch(value) is None:
        raise InvalidArgument(
            f"{kind} {value!r}: identifier must match [A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*"
        )
    return value


def check_labels(owner: str, labels: dict[str, str]) -> dict[str, str]:
    """Validated labels with empty-valued entries dropped, as containerd does."""
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not key:
            raise InvalidArgument(f"{owner}: label key must not be empty")
        size = len(key.encode()) + len(value.encode())
        if size > MAX_LABEL:
            raise InvalidArgument(
                f'{owner}: label "{key[:40]}": key and value are {size} bytes, '
                f"over the limit of {MAX_LABEL}"
            )
        if value:
            out[key] = value
    return out
