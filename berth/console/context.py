"""The console's connection to berthd, and what one command invocation sees.

A :class:`Session` lives as long as the process (one-shot) or the console:
it holds the address, the namespace (``use`` changes it) and one
:class:`~berth.client.Client`, made on first use and replaced when the
connection is lost. A :class:`Context` is handed to each command's handler:
the session plus that invocation's output choice (``--json``).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from berth.client import Client
from wire.client_core import resolve_address
from wire.errors import DeadlineExceeded, PermissionDenied, Unavailable
from wire.identifiers import check_identifier

__all__ = ["DEFAULT_TIMEOUT", "PROBE_TIMEOUT", "Context", "Session", "connection_lost"]

DEFAULT_TIMEOUT = 30.0
# How long the console waits for the daemon to answer its liveness probe.
PROBE_TIMEOUT = 3.0


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the daemon went away (rather than refusing a request)."""
    return isinstance(exc, Unavailable | DeadlineExceeded)


@dataclass
class Session:
    """Where the daemon is, which namespace, and the client connected to it."""

    address: str
    namespace: str = "default"
    json: bool = False
    timeout: float | None = DEFAULT_TIMEOUT
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    _client: Client | None = field(default=None, repr=False)

    @classmethod
    def from_options(
        cls, address: str | None, namespace: str | None, json: bool, timeout: float | None
    ) -> Session:
        """A session on ``address`` (else $BERTH_ADDRESS, else the default socket)."""
        ns = namespace or os.environ.get("BERTH_NAMESPACE") or "default"
        return cls(resolve_address(address), ns, json, timeout)

    @property
    def client(self) -> Client:
        """The session's client, connected on first use."""
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def new_client(self, timeout: float | None = None) -> Client:
        """Another connection to the daemon, for a thread of its own."""
        self.check_listening()
        return Client(
            self.address,
            namespace=self.namespace,
            timeout=self.timeout if timeout is None else timeout,
        )

    @property
    def ipc_path(self) -> Path | None:
        """The socket file of an ``ipc://`` address."""
        return Path(self.address[len("ipc://") :]) if self.address.startswith("ipc://") else None

    def check_listening(self) -> None:
        """For an ipc address, fail at once unless a process listens on the socket.

        ZeroMQ would queue a request to a missing or dead socket and wait the
        whole timeout; a plain connect tells in a moment. (berthd sees a peer
        that leaves before its handshake, which it ignores.)
        """
        path = self.ipc_path
        if path is None:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(PROBE_TIMEOUT)
            try:
                sock.connect(str(path))
            except FileNotFoundError:
                raise Unavailable(
                    f"berthd at {self.address}: no socket at {path} (is berthd running?)"
                ) from None
            except ConnectionRefusedError:
                raise Unavailable(
                    f"berthd at {self.address}: connection refused (is berthd running?)"
                ) from None
            except PermissionError:
                raise PermissionDenied(
                    f"berthd at {self.address}: {path}: permission denied"
                ) from None
            except OSError as exc:
                raise Unavailable(f"berthd at {self.address}: {exc.strerror or exc}") from None

    def use(self, namespace: str) -> None:
        """Switch the namespace of later commands; InvalidArgument for a bad name."""
        self.namespace = check_identifier("namespace", namespace)
        self.disconnect()

    def disconnect(self) -> None:
        """Drop the client; the next command connects afresh."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def probe(self) -> None:
        """Ask the daemon for its version, briefly; raises when it does not answer."""
        self.check_listening()
        self.client.call("containerd.v1.Version/Version", {}, timeout=PROBE_TIMEOUT)

    def fifo_dir(self, container_id: str) -> Path:
        """Where ``berth run`` keeps the stdio FIFOs of ``container_id``'s task.

        Beside an ipc socket (the daemon's state directory, as containerd keeps
        ``/run/containerd/fifo``), so ``tasks attach`` of a later process finds
        them; the daemon runs on this host, since it reaches us over ipc.
        """
        path = self.ipc_path
        base = path.parent if path is not None else Path(tempfile.gettempdir()) / "berth"
        return base / "fifo" / self.namespace / container_id


@dataclass
class Context:
    """What a handler gets: the session and this invocation's output choice."""

    session: Session
    json: bool = False

    @property
    def client(self) -> Client:
        return self.session.client

    @property
    def out(self) -> TextIO:
        return self.session.out

    @property
    def err(self) -> TextIO:
        return self.session.err

    @property
    def namespace(self) -> str:
        return self.session.namespace
