"""A Reply for calls the daemon makes to itself (a restart's delete, create, start)."""

from __future__ import annotations

import threading
from typing import Any

from wire.codec import unpack
from wire.errors import BerthError, DeadlineExceeded, Internal
from wire.reply import Outbox, Reply

__all__ = ["LocalReply"]


class LocalReply(Reply):
    """Keeps the answer instead of sending it; :meth:`result` waits for it."""

    __slots__ = ("_answered", "_body", "_error")

    def __init__(self, what: str) -> None:
        super().__init__(_NOWHERE, 0, [], 0, method=what)
        self._answered = threading.Event()
        self._body: dict[str, Any] | None = None
        self._error: BaseException | None = None

    def ok_packed(self, body: bytes) -> None:
        if not self.done:
            self.done = True
            self._body = unpack(body)
            self._answered.set()

    def fail(self, exc: BaseException) -> None:
        if not self.done:
            self.done = True
            self._error = exc
            self._answered.set()

    def _send(self, kind: int, payload: bytes) -> None:
        pass  # ready and stream frames: nobody listens

    def result(self, timeout: float) -> dict[str, Any]:
        """The reply body; raises the error it failed with (BerthError) or DeadlineExceeded."""
        if not self._answered.wait(timeout):
            raise DeadlineExceeded(f"{self.method}: no answer within {timeout:.0f} s")
        if self._error is not None:
            if isinstance(self._error, BerthError):
                raise self._error
            raise Internal(f"{self.method}: {type(self._error).__name__}: {self._error}")
        assert self._body is not None
        return self._body


_NOWHERE = Outbox()
