"""The shim's events to the daemon: datagrams on a connected unix socket.

:class:`EventSender` keeps the events it could not deliver yet, oldest
first, and the shim's loop calls :meth:`EventSender.flush` on every turn:

- no daemon (its socket is missing, or nobody reads it: ``ENOENT``,
  ``ECONNREFUSED``): the events wait, and the loop retries after
  ``retry_after()`` seconds (0.5 s, doubling up to 10 s), so a daemon that
  comes back gets them, in order;
- the daemon's queue is full (``EAGAIN``): the loop polls the socket for
  ``POLLOUT``, which on a connected unix datagram socket means the daemon's
  queue has room again;
- a daemon that restarted: the old connection is refused, so the socket is
  connected again to the new one on the next attempt.

At most ``MAX_PENDING`` events wait; past that the oldest are dropped (they
are in the exits file, which the daemon reads when it starts). A shim that
exits tries once more and drops what is left.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

import msgpack

__all__ = ["MAX_PENDING", "EventSender"]

MAX_PENDING = 10_000
_RETRY_FIRST = 0.5
_RETRY_MAX = 10.0


class EventSender:
    """Events for the daemon at unix socket ``address`` (``ipc://`` prefix optional)."""

    def __init__(self, address: str) -> None:
        self.path = address.removeprefix("ipc://")
        self.pending: list[bytes] = []
        self.socket: socket.socket | None = None
        # Set when the daemon's queue was full: wait for POLLOUT on the socket.
        self.blocked = False
        self._retry_at = 0.0
        self._backoff = _RETRY_FIRST

    def publish(self, event: dict[str, Any]) -> None:
        """Queue one event and try to send what is queued; never blocks."""
        self.pending.append(msgpack.packb(event, use_bin_type=True))
        if len(self.pending) > MAX_PENDING:
            del self.pending[: len(self.pending) - MAX_PENDING]
        self.flush(force=True)

    def retry_after(self) -> float | None:
        """Seconds until the next attempt is due when undelivered events wait, else None."""
        if not self.pending or self.blocked:
            return None
        return max(0.0, self._retry_at - time.monotonic())

    def flush(self, force: bool = False) -> None:
        """Send queued events, oldest first, until done or the daemon cannot take more."""
        if not self.pending or (not force and time.monotonic() < self._retry_at):
            return
        self.blocked = False
        while self.pending:
            sock = self.socket or self._connect()
            if sock is None:
                return self._later()
            try:
                sock.send(self.pending[0], socket.MSG_DONTWAIT)
            except BlockingIOError:
                self.blocked = True
                return None
            except OSError as exc:
                self.close()
                if exc.errno in (errno.ECONNREFUSED, errno.ENOTCONN, errno.ECONNRESET):
                    # The daemon we were connected to is gone; a new one may
                    # listen at the same path already: one more try, then later.
                    if self._connect() is None:
                        return self._later()
                    continue
                return self._later()
            del self.pending[0]
        self._backoff = _RETRY_FIRST
        return None

    def close(self) -> None:
        """Close the socket (the queue stays)."""
        if self.socket is not None:
            self.socket.close()
            self.socket = None
            self.blocked = False

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            return None
        self.socket = sock
        return sock

    def _later(self) -> None:
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, _RETRY_MAX)
        return None

    def fileno(self) -> int | None:
        """The socket to poll for ``POLLOUT`` while :attr:`blocked`."""
        return self.socket.fileno() if self.socket is not None and self.blocked else None
