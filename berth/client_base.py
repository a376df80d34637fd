"""The machinery under :mod:`berth.client`: call descriptions, invokers, and the group base.

A group method describes its call as an :class:`Rpc` (method, body, and how
to pick the useful part out of the reply) and hands it to an *invoker*:
the sync one performs the call and returns the value, the async one
returns a coroutine (or an async generator for a stream).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from wire.transport import AsyncTransport, SyncTransport

__all__ = [
    "DEFAULT",
    "AsyncInvoker",
    "Body",
    "Done",
    "Group",
    "Invoker",
    "Map",
    "MapIter",
    "MapList",
    "Rpc",
    "SyncInvoker",
    "Timeout",
    "nothing",
    "whole",
]

Body = dict[str, Any]


class Default(enum.Enum):
    """Marks an argument left to the client's own setting."""

    TIMEOUT = "timeout"

    def __repr__(self) -> str:
        return "<the client's timeout>"


DEFAULT = Default.TIMEOUT
Timeout = float | None | Default


def whole(reply: Body) -> Body:
    return reply


def nothing(reply: Body) -> None:
    return None


@dataclass(frozen=True)
class Rpc:
    """One call as the group classes describe it, for an invoker to perform."""

    method: str
    body: Body
    extract: Callable[[Body], Any] = whole
    namespace: str | None = None
    timeout: Timeout = DEFAULT
    # A stream's bound on the wait for each frame (None: only ``timeout``).
    idle_timeout: float | None = None


class Invoker(Protocol):
    namespace: str
    timeout: float | None

    def unary(self, rpc: Rpc) -> Any: ...

    def stream(self, rpc: Rpc) -> Any: ...


class InvokerBase:
    """Client-level defaults, applied to each call that does not override them."""

    def __init__(self, namespace: str, timeout: float | None) -> None:
        self.namespace = namespace
        self.timeout = timeout

    def _options(self, rpc: Rpc) -> tuple[str, float | None]:
        timeout = self.timeout if rpc.timeout is DEFAULT else rpc.timeout
        return rpc.namespace or self.namespace, timeout


class SyncInvoker(InvokerBase):
    def __init__(self, transport: SyncTransport, namespace: str, timeout: float | None) -> None:
        super().__init__(namespace, timeout)
        self.transport = transport

    def unary(self, rpc: Rpc) -> Any:
        ns, timeout = self._options(rpc)
        return rpc.extract(self.transport.call(rpc.method, rpc.body, namespace=ns, timeout=timeout))

    def stream(self, rpc: Rpc) -> Generator[Any, None, None]:
        # Eager: the call returns once the stream is in place, so a caller
        # that subscribes to Events and then acts misses nothing.
        ns, timeout = self._options(rpc)
        return self.transport.open_stream(
            rpc.method,
            rpc.body,
            namespace=ns,
            timeout=timeout,
            extract=rpc.extract,
            idle_timeout=rpc.idle_timeout,
        )


class AsyncInvoker(InvokerBase):
    def __init__(self, transport: AsyncTransport, namespace: str, timeout: float | None) -> None:
        super().__init__(namespace, timeout)
        self.transport = transport

    async def unary(self, rpc: Rpc) -> Any:
        ns, timeout = self._options(rpc)
        reply = await self.transport.call(rpc.method, rpc.body, namespace=ns, timeout=timeout)
        return rpc.extract(reply)

    def stream(self, rpc: Rpc) -> AsyncGenerator[Any, None]:
        ns, timeout = self._options(rpc)
        return self.transport.stream(
            rpc.method,
            rpc.body,
            namespace=ns,
            timeout=timeout,
            extract=rpc.extract,
            idle_timeout=rpc.idle_timeout,
        )


# What a call returns, per client: for Client the value itself, for
# AsyncClient a coroutine of it (or an async generator for a stream).
Map = TypeVar("Map")  # one message, as a dict
MapList = TypeVar("MapList")  # a list of them
Done = TypeVar("Done")  # nothing
MapIter = TypeVar("MapIter")  # a stream of messages


class Group(Generic[Map, MapList, Done, MapIter]):
    """A service's RPCs; each builds an :class:`Rpc` and hands it to the invoker."""

    def __init__(self, invoker: Invoker) -> None:
        self._invoker = invoker

    def _unary(self, rpc: Rpc) -> Any:
        return self._invoker.unary(rpc)

    def _stream(self, rpc: Rpc) -> Any:
        return self._invoker.stream(rpc)
