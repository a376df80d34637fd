"""Container actors: one per container while something about it is in flight.

A :class:`ContainerActor` serializes the operations that involve one
container's runtime (task create, start, kill, delete, ...), so two of them
can never interleave. Metadata-only calls do not need one (the metadata
actor's transactions serialize them), and a million stored containers must
not mean a million threads, so :class:`ContainerActors` starts an actor on
the first message for a container and stops it once it has been idle (no
message in flight, no task to watch) for ``idle_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from actors.metadata import DeleteContainer
from actors.supervision import Directory, SupervisedActor
from wire.errors import Unavailable

__all__ = ["ContainerActor", "ContainerActors", "Forget"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Forget:
    """Internal: the container is gone; the actor may stop at once."""


class ContainerActor(SupervisedActor):
    """Serializes one container's operations."""

    def __init__(
        self,
        supervisor: pykka.ActorRef[Any] | None,
        ns: str,
        container_id: str,
        directory: Directory,
        finished: Callable[[tuple[str, str]], None],
    ) -> None:
        super().__init__(supervisor)
        self.ns = ns
        self.container_id = container_id
        self.name = f"container:{ns}/{container_id}"
        self.directory = directory
        self._finished = finished

    def on_receive(self, message: Any) -> Any:
        try:
            if isinstance(message, DeleteContainer):
                self._delete(message)
            else:
                log.warning("%s: unexpected message %r", self.name, message)
        finally:
            self._finished((self.ns, self.container_id))
        return None

    def _delete(self, message: DeleteContainer) -> None:
        # Wait for the commit so the next operation on this container sees
        # its result; the metadata actor never asks back, so this cannot
        # deadlock.
        committed = threading.Event()
        try:
            self.directory.tell(
                "metadata",
                DeleteContainer(
                    message.ns, message.id, message.reply, lambda _result: committed.set()
                ),
            )
        except Unavailable as exc:
            message.reply.fail(exc)
            return
        if not committed.wait(60):
            log.error("%s: delete not committed within 60 s", self.name)


class ContainerActors:
    """Starts container actors on demand and stops idle ones."""

    def __init__(
        self,
        directory: Directory,
        supervisor: pykka.ActorRef[Any] | None,
        *,
        idle_seconds: float = 30.0,
    ) -> None:
        self.directory = directory
        self.supervisor = supervisor
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        # (ns, id) -> [ref, messages in flight, last activity (monotonic)]
        self._actors: dict[tuple[str, str], list[Any]] = {}

    def __len__(self) -> int:
        return len(self._actors)

    def alive(self, ns: str, container_id: str) -> bool:
        """Whether the container has an actor now."""
        return (ns, container_id) in self._actors

    def tell(self, ns: str, container_id: str, message: Any, *, start: bool = True) -> bool:
        """Send ``message`` to the container's actor, starting it if ``start``.

        Returns False (and sends nothing) when the container has no actor
        and ``start`` is False.
        """
        key = (ns, container_id)
        with self._lock:
            entry = self._actors.get(key)
            if entry is None:
                if not start:
                    return False
                ref = ContainerActor.start(
                    self.supervisor, ns, container_id, self.directory, self._finished
                )
                entry = [ref, 0, time.monotonic()]
                self._actors[key] = entry
            entry[1] += 1
            entry[2] = time.monotonic()
            entry[0].tell(message)
        return True

    def _finished(self, key: tuple[str, str]) -> None:
        with self._lock:
            entry = self._actors.get(key)
            if entry is not None:
                entry[1] -= 1
                entry[2] = time.monotonic()

    def reap(self, now: float | None = None) -> int:
        """Stop the actors idle for ``idle_seconds``; returns how many."""
        now = time.monotonic() if now is None else now
        stopped = []
        with self._lock:
            for key, (ref, in_flight, last) in list(self._actors.items()):
                if in_flight == 0 and now - last >= self.idle_seconds:
                    del self._actors[key]
                    stopped.append(ref)
        for ref in stopped:
            ref.stop(block=False)
        return len(stopped)

    def stop_all(self) -> None:
        """Stop every container actor (daemon shutdown), after its queued work."""
        with self._lock:
            refs = [entry[0] for entry in self._actors.values()]
            self._actors.clear()
        for ref in refs:
            ref.stop(block=True, timeout=10)
