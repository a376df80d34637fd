"""Registry authentication: ``WWW-Authenticate`` challenges and bearer tokens.

The distribution token flow: a request answered ``401`` carries
``WWW-Authenticate: Bearer realm="...",service="...",scope="..."``; the
client GETs the realm with ``service`` and ``scope`` (with basic credentials
when it has them) and retries with ``Authorization: Bearer <token>``. Tokens
are kept per (realm, service, scope) until ``expires_in`` (60 s when the
token server does not say) has passed.

:func:`parse_challenges` is pure; :class:`TokenCache` takes a clock so its
expiry is tested without waiting.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Challenge", "TokenCache", "basic_header", "parse_challenges"]

DEFAULT_EXPIRES_IN = 60.0  # seconds, as the distribution token spec says
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True)
class Challenge:
    """One challenge: its scheme (lower case) and its parameters (keys lower case)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def basic_header(username: str, password: str) -> str:
    """The ``Authorization`` value for basic auth."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def parse_challenges(header: str) -> list[Challenge]:
    """Every challenge in a ``WWW-Authenticate`` value (RFC 7235 §4.1).

    ``Bearer realm="https://a/token",scope="repository:x:pull,push", Basic realm="r"``
    gives two challenges; quoted values may hold commas and ``\\"`` escapes.
    Anything unparsable ends the parse with what was read so far.
    """
    out: list[Challenge] = []
    pos, n = 0, len(header)

    def skip(chars: str) -> None:
        nonlocal pos
        while pos < n and header[pos] in chars:
            pos += 1

    while pos < n:
        skip(" \t,")
        m = _TOKEN.match(header, pos)
        if not m:
            break
        challenge = Challenge(m.group().lower())
        out.append(challenge)
        pos = m.end()
        skip(" \t")
        while pos < n:
            start = pos
            m = _TOKEN.match(header, pos)
            if not m:
                break
            after = m.end()
            rest = header[after:].lstrip(" \t")
            if not rest.startswith("=") or rest.startswith("=="):
                if not challenge.params and _TOKEN68.fullmatch(
                    header[start:].split(",")[0].strip()
                ):
                    pos = header.find(",", start)  # token68 (e.g. a Negotiate blob): not kept
                    pos = n if pos < 0 else pos
                    continue
                pos = start  # the next challenge's scheme
                break
            key = m.group().lower()
            pos = after + (len(header[after:]) - len(rest)) + 1
            skip(" \t")
            value, pos = _value(header, pos)
            challenge.params[key] = value
            skip(" \t")
            if pos < n and header[pos] == ",":
                pos += 1
                skip(" \t,")
        # loop: next challenge
    return out


def _value(header: str, pos: int) -> tuple[str, int]:
    """A token or quoted-string at ``pos``: (value, position after it)."""
    if pos < len(header) and header[pos] == '"':
        chars: list[str] = []
        pos += 1
        while pos < len(header) and header[pos] != '"':
            if header[pos] == "\\" and pos + 1 < len(header):
                pos += 1
            chars.append(header[pos])
            pos += 1
        return "".join(chars), pos + 1
    m = _TOKEN.match(header, pos)
    return (m.group(), m.end()) if m else ("", pos)


class TokenCache:
    """Bearer tokens by (realm, service, scope), each until its expiry passes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}

    def get(self, key: tuple[str, str, str]) -> str | None:
        entry = self._tokens.get(key)
        if entry is None:
            return None
        token, expires = entry
        if self._clock() >= expires:
            del self._tokens[key]
            return None
        return token

    def for_scope(self, scope: str) -> str | None:
        """A live token for ``scope`` from any realm (sent before any challenge)."""
        for key in list(self._tokens):
            if key[2] == scope and (token := self.get(key)):
                return token
        return None

    def put(self, key: tuple[str, str, str], token: str, expires_in: float | None) -> None:
        life = expires_in if expires_in and expires_in > 0 else DEFAULT_EXPIRES_IN
        self._tokens[key] = (token, self._clock() + life)
