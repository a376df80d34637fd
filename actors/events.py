"""The event bus: ordered fan-out of task events to ``Events`` subscribers.

Every event gets a ``seq`` that increases strictly, also across daemon
restarts: the bus reserves seqs in blocks, durably, through the metadata
actor (one write per :data:`SEQ_BLOCK` events), and a restarted daemon
starts after the last reserved block. The gap a restart leaves tells a
client it may have missed events while the daemon was down.

Fan-out never waits for a subscriber: frames go to the front end's
outbox, and the front end drops a client that stops reading; a cancelled
or dropped subscription is forgotten on the next event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from actors.supervision import SupervisedActor
from wire.codec import pack, timestamp_or_nil
from wire.errors import Unavailable
from wire.reply import Reply

__all__ = ["SEQ_BLOCK", "EventBus", "Publish", "Subscribe"]

log = logging.getLogger(__name__)

SEQ_BLOCK = 1000


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Open an Events stream for a namespace; ``ready`` once it is live."""

    ns: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class Publish:
    """A task event, published after whatever it reports is committed."""

    ns: str
    container_id: str
    type: str
    pid: int = 0
    exit_status: int = 0
    exited_at_ns: int = 0


class EventBus(SupervisedActor):
    """Assigns seqs and fans events out to the namespace's subscribers."""

    name = "events"

    def __init__(
        self,
        supervisor: pykka.ActorRef[Any] | None,
        first_seq: int,
        reserve: Callable[[int, Callable[[], None]], None],
    ) -> None:
        super().__init__(supervisor)
        self._next = first_seq
        self._reserved = first_seq
        self._reserve = reserve
        self._subscribers: dict[str, list[Reply]] = {}
        self.published = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Publish):
            self._publish(message)
        elif isinstance(message, Subscribe):
            self._subscribers.setdefault(message.ns, []).append(message.reply)
            message.reply.ready()
        else:
            log.warning("event bus: unexpected message %r", message)
        return None

    def _take_seq(self) -> int:
        if self._next >= self._reserved:
            done = threading.Event()
            upto = self._next + SEQ_BLOCK
            # The metadata actor never asks back, so waiting here is safe.
            self._reserve(upto, done.set)
            if not done.wait(30):
                raise Unavailable("event bus: could not reserve event seqs")
            self._reserved = upto
        seq = self._next
        self._next += 1
        return seq

    def _publish(self, event: Publish) -> None:
        seq = self._take_seq()
        now = time.time_ns()
        body = pack(
            {
                "id": event.container_id,
                "type": event.type,
                "pid": event.pid,
                "exit_status": event.exit_status,
                "exited_at": timestamp_or_nil(event.exited_at_ns)
                if event.type in ("EXIT", "DELETE") and event.exited_at_ns
                else None,
                "namespace": event.ns,
                "timestamp": timestamp_or_nil(now),
                "seq": seq,
            }
        )
        self.published += 1
        log.debug(
            "event %s %s/%s pid=%d seq=%d", event.type, event.ns, event.container_id, event.pid, seq
        )
        subscribers = self._subscribers.get(event.ns)
        if not subscribers:
            return
        live = [r for r in subscribers if not r.cancelled and not r.done]
        for reply in live:
            reply.more_packed(body)
        self._subscribers[event.ns] = live
