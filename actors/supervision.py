"""The supervisor tree: restart a crashed child, log why, never leave a request unanswered.

Every long-lived actor is a :class:`SupervisedActor`. Requests reach actors
as messages carrying a :class:`~wire.reply.Reply`; when an actor dies of an
unexpected exception, :meth:`SupervisedActor.on_failure` answers every
request it still holds (its own pending work, then whatever is left in its
mailbox) with an error, and tells the :class:`Supervisor`, which logs the
reason and starts a fresh instance under the same name. Handlers find the
current instance through the :class:`Directory`, so a restart is invisible
to them except for the failed requests.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pykka

from wire.errors import BerthError, Internal, Unavailable
from wire.reply import Reply

__all__ = ["ChildFailed", "Directory", "StartChild", "StopChild", "SupervisedActor", "Supervisor"]

log = logging.getLogger(__name__)

_MAX_RESTARTS = 5  # within _RESTART_WINDOW seconds; past it the child stays down
_RESTART_WINDOW = 10.0


@dataclass(frozen=True, slots=True)
class ChildFailed:
    """Notification from a child that died: its name and why."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class StartChild:
    """Request (``ask``): start a named child and restart it whenever it crashes."""

    name: str
    factory: Callable[[pykka.ActorRef[Any]], pykka.ActorRef[Any]]


@dataclass(frozen=True, slots=True)
class StopChild:
    """Request (``ask``): stop a named child for good."""

    name: str


class Directory:
    """Name -> current actor ref; read by handlers from any thread."""

    def __init__(self) -> None:
        self._refs: dict[str, pykka.ActorRef[Any]] = {}
        self._lock = threading.Lock()

    def set(self, name: str, ref: pykka.ActorRef[Any] | None) -> None:
        """Record the live instance of ``name`` (or that there is none)."""
        with self._lock:
            if ref is None:
                self._refs.pop(name, None)
            else:
                self._refs[name] = ref

    def tell(self, name: str, message: Any) -> None:
        """Send ``message`` to the live ``name``; Unavailable when there is none."""
        ref = self._refs.get(name)
        if ref is None:
            raise Unavailable(f"{name}: not running")
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            raise Unavailable(f"{name}: restarting; retry") from None

    def get(self, name: str) -> pykka.ActorRef[Any] | None:
        """The live instance of ``name``, if any."""
        return self._refs.get(name)


class SupervisedActor(pykka.ThreadingActor):
    """An actor whose failure is reported to its supervisor and answered to its clients."""

    #: the name the directory and the thread know it by
    name: str = "actor"
    # Stopping is explicit (daemon shutdown); a stray actor thread must
    # never keep the process alive after main() returns.
    use_daemon_thread = True

    def __init__(self, supervisor: pykka.ActorRef[Any] | None) -> None:
        super().__init__()
        self.supervisor = supervisor

    def on_start(self) -> None:
        threading.current_thread().name = self.name

    def pending_replies(self) -> list[Reply]:
        """Replies of requests this actor took but has not answered (override)."""
        return []

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        reason = f"{exception_type.__name__ if exception_type else 'failure'}: {exception_value}"
        error: BerthError = Internal(f"{self.name} failed ({reason}); the request was not applied")
        for reply in self.pending_replies():
            reply.fail(error)
        unanswered = Unavailable(f"{self.name} failed before handling the request; retry")
        while True:
            try:
                envelope = self.actor_inbox.get_nowait()  # type: ignore[attr-defined]
            except queue.Empty:
                break
            pending = getattr(envelope.message, "reply", None)
            if isinstance(pending, Reply):
                pending.fail(unanswered)
        if self.supervisor is not None:
            self.supervisor.tell(ChildFailed(self.name, reason))


Factory = Callable[[pykka.ActorRef[Any]], pykka.ActorRef[Any]]


class Supervisor(pykka.ThreadingActor):
    """The root actor: starts named children and restarts any that crash."""

    use_daemon_thread = True

    def __init__(self, directory: Directory) -> None:
        super().__init__()
        self.directory = directory
        self._factories: dict[str, Factory] = {}
        self._restarts: dict[str, list[float]] = {}

    def on_start(self) -> None:
        threading.current_thread().name = "supervisor"

    def start_child(self, name: str, factory: Factory) -> pykka.ActorRef[Any]:
        """Start ``name`` now and keep its factory for restarts (called with ``ask``)."""
        self._factories[name] = factory
        ref = factory(self.actor_ref)
        self.directory.set(name, ref)
        return ref

    def stop_child(self, name: str) -> None:
        """Stop ``name`` for good; it is not restarted."""
        self._factories.pop(name, None)
        ref = self.directory.get(name)
        self.directory.set(name, None)
        if ref is not None:
            ref.stop(block=True)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, StartChild):
            return self.start_child(message.name, message.factory)
        if isinstance(message, StopChild):
            return self.stop_child(message.name)
        if isinstance(message, ChildFailed):
            self._restart(message)
            return None
        log.warning("supervisor: unexpected message %r", message)
        return None

    def _restart(self, failed: ChildFailed) -> None:
        log.error("actor %s crashed (%s); restarting it", failed.name, failed.reason)
        factory = self._factories.get(failed.name)
        if factory is None:
            self.directory.set(failed.name, None)
            return
        now = time.monotonic()
        recent = [t for t in self._restarts.get(failed.name, []) if now - t < _RESTART_WINDOW]
        if len(recent) >= _MAX_RESTARTS:
            log.critical(
                "actor %s crashed %d times in %.0f s; leaving it stopped",
                failed.name,
                len(recent),
                _RESTART_WINDOW,
            )
            self.directory.set(failed.name, None)
            return
        recent.append(now)
        self._restarts[failed.name] = recent
        self.directory.set(failed.name, factory(self.actor_ref))

    def on_stop(self) -> None:
        for name in list(self._factories):
            self.stop_child(name)
