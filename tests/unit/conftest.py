"""Shared unit-test helpers: a reply that records what it was sent."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from actors.store import Store
from wire.codec import unpack
from wire.reply import Outbox, Reply


class RecordingReply(Reply):
    """A Reply whose frames are decoded and kept instead of sent."""

    __slots__ = ("answered", "frames")

    def __init__(self, outbox: Outbox, request_id: Any = 1) -> None:
        super().__init__(outbox, 0, [b"peer"], request_id)
        self.frames: list[dict[str, Any]] = []
        self.answered = threading.Event()

    def _send(self, kind: int, payload: bytes) -> None:
        if self.done:
            return
        if kind == 3:
            self.done = True
        self.frames.append(unpack(payload))
        if self.done:
            self.answered.set()

    def result(self, timeout: float = 5.0) -> dict[str, Any]:
        """The terminal frame, waiting for it."""
        assert self.answered.wait(timeout), "no reply"
        return self.frames[-1]


@pytest.fixture
def outbox():
    box = Outbox()
    yield box
    box.close()


@pytest.fixture
def reply_factory(outbox):
    def make(request_id: Any = 1) -> RecordingReply:
        return RecordingReply(outbox, request_id)

    return make


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "meta", map_size=64 * 1024 * 1024)
    yield s
    s.close()
