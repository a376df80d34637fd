"""Binding the daemon's ROUTER sockets, with the transport's security rules.

- ``ipc://`` sockets share one ROUTER. The socket file is created mode
  0600 (the umask is tightened around the bind, so there is no window
  where it is wider), or 0660 owned by ``socket_group`` when configured.
- ``tcp://`` addresses get their own ROUTER with CURVE: the server key
  pair lives in ``curve_dir`` (made on first use), and a ZAP handler
  admits only the client keys listed in ``curve_dir/clients.allow``, read
  on each connection so edits apply to new peers. A tcp address without
  an allow-list is refused: berth never serves plain-text tcp.
"""

from __future__ import annotations

import grp
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

__all__ = ["ListenError", "Listener", "bind"]

log = logging.getLogger(__name__)

ALLOW_FILE = "clients.allow"
PUBLIC_FILE = "server.public"
SECRET_FILE = "server.secret"


# Frames ZeroMQ queues per client before a send would block (EAGAIN): the
# front end then keeps them itself, in order, up to its own limit, and a
# stream's auto-credit stops, so a client that stops reading costs bounded
# memory (docs/protocol.md §6.6). Set before bind: a listening socket's
# connections take its options then, and ignore a later change.
SEND_HWM = 64


def _router(ctx: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.SNDHWM, SEND_HWM)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    return sock


class ListenError(Exception):
    """An address cannot be served; the message says why and what to do."""


@dataclass
class Listener:
    """The bound sockets, and the authenticator to stop with them."""

    sockets: list[zmq.Socket[bytes]]
    authenticator: ThreadAuthenticator | None = None

    def close_auth(self) -> None:
        """Stop the ZAP handler (the front end closes the sockets)."""
        if self.authenticator is not None:
            self.authenticator.stop()


class _AllowList:
    """ZAP credentials provider reading the allow-list file on each handshake."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def callback(self, domain: str, key: bytes) -> bool:
        with self._lock:
            try:
                lines = self.path.read_text().splitlines()
            except OSError as exc:
                log.error("CURVE allow-list %s unreadable: %s", self.path, exc)
                return False
        allowed = {
            line.strip().encode()
            for line in lines
            if line.strip() and not line.strip().startswith("#")
        }
        z85 = zmq.utils.z85.encode(key) if len(key) == 32 else key
        if z85 in allowed:
            return True
        log.warning("CURVE client %s refused: not in %s", z85.decode(), self.path)
        return False


def _server_keys(curve_dir: Path) -> tuple[bytes, bytes]:
    public, secret = curve_dir / PUBLIC_FILE, curve_dir / SECRET_FILE
    if public.exists() and secret.exists():
        return public.read_bytes().strip(), secret.read_bytes().strip()
    curve_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pub, sec = zmq.curve_keypair()
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(sec + b"\n")
    public.write_bytes(pub + b"\n")
    log.info("generated CURVE server key pair in %s", curve_dir)
    return pub, sec


def _bind_ipc(sock: zmq.Socket[bytes], address: str, socket_group: str | None) -> None:
    path = Path(address.removeprefix("ipc://"))
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = os.umask(0o177)
    try:
        sock.bind(address)
    finally:
        os.umask(old)
    if socket_group:
        gid = int(socket_group) if socket_group.isdigit() else grp.getgrnam(socket_group).gr_gid
        os.chown(path, -1, gid)
        os.chmod(path, 0o660)
    else:
        os.chmod(path, 0o600)


def bind(
    ctx: zmq.Context[zmq.Socket[bytes]],
    addresses: list[str],
    *,
    curve_dir: Path,
    socket_group: str | None = None,
) -> Listener:
    """Bind every address; raise :class:`ListenError` for one that cannot be served."""
    ipc = [a for a in addresses if a.startswith("ipc://")]
    tcp = [a for a in addresses if a.startswith("tcp://")]
    other = [a for a in addresses if a not in ipc and a not in tcp]
    if other:
        raise ListenError(f"address {other[0]!r}: only ipc:// and tcp:// are supported")
    allow = curve_dir / ALLOW_FILE
    if tcp and not allow.is_file():
        raise ListenError(
            f"address {tcp[0]!r}: tcp is served only with CURVE security, and the client "
            f"allow-list {allow} does not exist (create it with one Z85 public key per line)"
        )
    sockets: list[zmq.Socket[bytes]] = []
    listener = Listener(sockets)
    # Keys first: once the ipc socket exists, everything a client may look
    # for (the server's public key included) must be there.
    keys = _server_keys(curve_dir) if tcp else None
    try:
        if ipc:
            sock = _router(ctx)
            sockets.append(sock)
            for address in ipc:
                _bind_ipc(sock, address, socket_group)
        if keys is not None:
            public, secret = keys
            auth = ThreadAuthenticator(ctx, log=logging.getLogger("berth.zap"))
            auth.start()
            auth.configure_curve_callback("*", credentials_provider=_AllowList(allow))
            listener.authenticator = auth
            sock = _router(ctx)
            sockets.append(sock)
            sock.curve_server = True
            sock.curve_publickey = public
            sock.curve_secretkey = secret
            for address in tcp:
                sock.bind(address)
    except (zmq.ZMQError, OSError, KeyError) as exc:
        for sock in sockets:
            sock.close(linger=0)
        listener.close_auth()
        raise ListenError(f"cannot bind {addresses}: {exc}") from exc
    return listener
