"""The zygote: a single-threaded, pre-imported process that forks shims.

Forking the threaded daemon is unsafe (a lock held by another thread stays
held in the child forever), and starting a fresh interpreter per shim costs
time and memory. So the daemon starts one ``python -m runtime.zygote`` with
pipes on its stdin and stdout; the zygote imports the shim and its
dependencies once, freezes the garbage collector's view of them (so the
children's collections do not touch, and unshare, those pages), fills the
free slots of its memory pools (so the objects a shim makes go to fresh
pages of its own instead of copying shared ones: about 0.1 MB per shim,
see :func:`_fill_pools`) and forks a shim per request. Between forks it does
as little as it can: every page it writes then is shared no more between
the shims forked before and after (refilling the pools before each fork, for
one, cost 1.5 MB per shim). Each shim is the zygote's own child, forked
once (a double fork, with the zygote waiting for the middle process to
exit, cost 4 ms more per task create): the zygote reaps its shims as they
exit, from a SIGCHLD handler, and when the zygote goes (with its daemon)
they are re-parented to the nearest subreaper or init and keep running,
in sessions of their own.

Protocol on the pipes: each message is a 4-byte big-endian length and one
msgpack map. Request ``{"config": ShimConfig.to_map()}``; reply
``{"pid": shim_pid}`` once the shim has bound its socket, or
``{"error": str}``.

The zygote dies with the daemon: it exits at end of file on its request
pipe, and ``PR_SET_PDEATHSIG`` kills it if the daemon dies first. The kernel
sends that signal when the *thread* that started the zygote exits, so
:meth:`ZygoteClient.start` belongs on a long-lived thread (the daemon's main
thread); :meth:`ZygoteClient.spawn` restarts a zygote that has died anyway.
Shims never die with it: each runs in its own session.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal.signal without its enums
import dataclasses
import gc
import logging
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, NoReturn

import msgpack
from setproctitle import setproctitle

from runtime.shim.config import ShimConfig
from runtime.shim.events import EventSender
from runtime.shim.helper import ForkingRunc, fork
from runtime.shim.protocol import FrameBuffer, frame
from runtime.shim.server import (
    PR_SET_PDEATHSIG,
    ShimServer,
    configure_logging,
    prctl,
    run_shim,
)
from runtime.shim.task import Task
from wire.errors import Unavailable

__all__ = ["READY_TIMEOUT", "ZygoteClient", "main", "read_message", "write_message"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
_MAX_MESSAGE = 1 << 20
# How long a new shim may take to bind its socket.
READY_TIMEOUT = 10.0
# How long the client waits for the zygote's reply (a bit more than the above).
_REPLY_TIMEOUT = READY_TIMEOUT + 5.0


class ZygoteGone(Exception):
    """The zygote process has exited or its pipe is closed."""


def write_message(fd: int, message: dict[str, Any]) -> None:
    """Write one length-prefixed msgpack map to ``fd``."""
    data = msgpack.packb(message, use_bin_type=True)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def read_message(fd: int, timeout: float | None = None) -> Any:
    """Read one length-prefixed msgpack object; ``ZygoteGone`` at end of file.

    ``TimeoutError`` if ``timeout`` seconds pass first.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if size > _MAX_MESSAGE:
        raise ZygoteGone(f"message of {size} bytes is too large")
    return msgpack.unpackb(_read_exact(fd, size, deadline), raw=False)


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    data = b""
    while len(data) < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("no reply in time")
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise ZygoteGone("end of file")
        data += chunk
    return data


# -- the zygote process ------------------------------------------------------


def main() -> None:
    """Entry point of ``python -m runtime.zygote [--parent-pid PID]``."""
    requests, replies = os.dup(0), os.dup(1)
    # Keep the protocol pipes away from 0 and 1, so a stray print cannot
    # corrupt them: stdin reads nothing, stdout goes where stderr goes.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if "--parent-pid" in sys.argv and os.getppid() != int(sys.argv[-1]):
        sys.exit(0)  # the daemon died before PDEATHSIG was armed
    setproctitle("berth-zygote")
    # Configured here, once, and a first line written: the shims share the
    # handler and the caches its first use fills instead of each making its own.
    configure_logging()
    log.info("zygote ready (pid %d)", os.getpid())
    _rehearse()
    # Everything so far is shared with every shim: collect once, then move it
    # out of the collector's reach so no child's collection writes to it.
    gc.collect()
    _fill_pools()
    gc.freeze()
    signal.signal(signal.SIGCHLD, _reap_shims)
    serve(requests, replies)


# Python 3.11 quickens a code object after 8 calls (or 8 turns of a loop in
# it) and then specializes its instructions as they run: both write into the
# code object. A few more turns than that leave the code specialized.
_REHEARSALS = 16


def _rehearse() -> None:
    """Run, before the freeze, the code a shim runs many times, and the zygote's own.

    What the shim runs often (pathlib's parsing, the loop's per-turn calls
    on the task, the events and the frames) would otherwise be quickened and
    specialized in every shim, each copying the pages of those code objects;
    what the zygote runs per request (the pipe protocol, ``ShimConfig``'s
    map form) would be, in the zygote, after the first shims were forked,
    which then kept the old pages. Done here, on a scratch task directory
    with nothing started, the specialized code is shared by all: about
    250 KiB less private memory per shim. Nothing here forks, signals or
    keeps a file open.
    """
    scratch = Path(tempfile.mkdtemp(prefix="berth-zygote-"))
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        for turn in range(_REHEARSALS):
            fields = ShimConfig(
                namespace="rehearsal",
                id=f"r{turn}",
                task_dir=scratch / "tasks" / f"r{turn}",
                runc_binary="/nonexistent/runc",
                runc_root=scratch / "runc",
                events_address=f"ipc://{scratch}/events.sock",
            ).to_map()
            write_message(write_end, {"config": fields})
            config = ShimConfig.from_map(read_message(read_end)["config"])
            # What run_shim and ShimServer do with it.
            config = dataclasses.replace(
                config, task_dir=config.task_dir.absolute(), runc_root=config.runc_root.absolute()
            )
            if not config.task_dir.exists():
                config.task_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            events = EventSender(config.events_address)
            runc = ForkingRunc(config.runc_binary, config.runc_root, log_dir=config.task_dir)
            task = Task(config, runc, events.publish)
            server = ShimServer.__new__(ShimServer)
            server.config, server.task, server.events = config, task, events
            server.connections, server._deferred, server._deferred_fds = {}, {}, set()
            server._resume, server._oom, server._oom_tried = set(), None, False
            # The loop's turn, without a socket or a child (the zygote has none
            # yet, so reaping finds nothing).
            _ = [c for p in task.table.all() for c in p.copiers]
            events.fileno()
            events.retry_after()
            task.next_deadline()
            server._oom_watch()
            task.reap()
            events.flush()
            server._settle()
            buffer = FrameBuffer()
            buffer.feed(frame({"op": "state", "seq": turn}))
            payload = buffer.next()
            buffer.next()
            if payload is not None:
                msgpack.unpackb(payload, raw=False)
            msgpack.packb({"pid": turn}, use_bin_type=True)
            _ = config.name
            os.close(task._dir_fd)
    finally:
        os.close(read_end)
        os.close(write_end)
        shutil.rmtree(scratch, ignore_errors=True)


def _reap_shims(signum: int, frame: object) -> None:
    """Reap every shim that has exited (the zygote has no other children)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# Objects that fill the free slots of the zygote's half-used memory pools
# (see _fill_pools); they live as long as the zygote.
_PADDING: list[list[object]] = []


def _fill_pools() -> None:
    """Fill every free slot of pymalloc's pools in use, so shims allocate elsewhere.

    A shim's new objects would otherwise land in the free slots scattered
    through the zygote's pools, each one copying a whole shared page into
    the shim; with the slots taken, they go to fresh pools, packed together.
    The free slots per size class come from ``sys._debugmallocstats()``
    (CPython's pymalloc); anything unexpected there and nothing is done.
    """
    for _ in range(3):  # the padding lists themselves take slots
        wanted = _free_slots()
        if not wanted:
            return
        padding: list[object] = [None] * sum(count for _, count in wanted)
        index = 0
        for size, count in wanted:
            for _ in range(count):
                # An object of exactly ``size`` bytes: bare object 16, float
                # 32 (24 rounded up), bytes 33 + n (rounded up to 16).
                if size <= 16:
                    padding[index] = object()
                elif size <= 32:
                    padding[index] = float(index)
                else:
                    padding[index] = bytes(size - 33)
                index += 1
        _PADDING.append(padding)


def _free_slots() -> list[tuple[int, int]]:
    """``(block size, free blocks)`` of each pymalloc size class with free blocks."""
    debug_stats = getattr(sys, "_debugmallocstats", None)
    if debug_stats is None:
        return []
    fd = os.memfd_create("mallocstats", os.MFD_CLOEXEC)
    saved = os.dup(2)
    try:
        sys.stderr.flush()
        os.dup2(fd, 2)
        try:
            debug_stats()
        finally:
            os.dup2(saved, 2)
        os.lseek(fd, 0, os.SEEK_SET)
        text = b""
        while chunk := os.read(fd, 65536):
            text += chunk
    finally:
        os.close(saved)
        os.close(fd)
    # The table: "class  size  num pools  blocks in use  avail blocks".
    slots = []
    for line in text.decode(errors="replace").splitlines():
        fields = line.split()
        if len(fields) == 5 and all(field.isdigit() for field in fields):
            size, avail = int(fields[1]), int(fields[4])
            if avail and 16 <= size <= 512 and size % 16 == 0:
                slots.append((size, avail))
    return slots


def serve(requests: int, replies: int) -> None:
    """Answer spawn requests until the request pipe closes."""
    while True:
        try:
            request = read_message(requests)
        except ZygoteGone:
            return
        fields = request.get("config") if isinstance(request, dict) else None
        try:
            config = ShimConfig.from_map(fields)
        except ValueError as exc:
            write_message(replies, {"error": str(exc)})
            continue
        write_message(replies, spawn(config))


def spawn(config: ShimConfig) -> dict[str, Any]:
    """Fork a shim for ``config``; its pid once it is ready, or an error."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    try:
        child = fork()
    except OSError as exc:
        os.close(ready_r)
        os.close(ready_w)
        return {"error": f"shim {config.name}: fork failed: {exc}"}
    if child == 0:
        _become_shim(config, ready_r, ready_w)
    os.close(ready_w)
    try:
        return _read_ready(ready_r, config)
    finally:
        os.close(ready_r)


def _read_ready(ready_r: int, config: ShimConfig) -> dict[str, Any]:
    """The shim's start-up report: everything written before the pipe closed."""
    data = b""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([ready_r], [], [], remaining)[0]:
            return {"error": f"shim {config.name}: did not start within {READY_TIMEOUT}s"}
        chunk = os.read(ready_r, 4096)
        if not chunk:
            break
        data += chunk
    try:
        report = msgpack.unpackb(data, raw=False)
    except Exception:
        report = None
    if isinstance(report, dict) and isinstance(report.get("pid"), int):
        return {"pid": report["pid"]}
    if isinstance(report, dict) and isinstance(report.get("error"), str):
        return {"error": report["error"]}
    return {"error": f"shim {config.name}: exited before binding its socket"}


def _become_shim(config: ShimConfig, ready_r: int, ready_w: int) -> NoReturn:
    """In the zygote's child: become the shim."""
    try:
        os.close(ready_r)
        # _signal's, not signal's: no enum conversions run in the shim.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            _signal.signal(signum, _signal.SIG_DFL)
        # SIGPIPE stays ignored (Python's default): a write to a stdout FIFO
        # whose reader left must fail with EPIPE, not kill the shim.
        prctl(PR_SET_PDEATHSIG, 0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, ready_w)
        os.closerange(ready_w + 1, os.sysconf("SC_OPEN_MAX"))
        run_shim(config, ready_fd=ready_w)
    except BaseException as exc:
        try:
            message = {"error": f"shim {config.name}: {exc}"}
            os.write(ready_w, msgpack.packb(message, use_bin_type=True))
        finally:
            os._exit(1)


# -- the daemon's side ---------------------------------------------------------


class ZygoteClient:
    """The daemon's handle on its zygote; :meth:`spawn` may be called from any thread."""

    def __init__(self, python: str) -> None:
        self.python = python
        self._lock = threading.Lock()
        self._process = self._launch()

    @classmethod
    def start(cls, python: str = sys.executable) -> ZygoteClient:
        """Start a zygote with interpreter ``python`` (from a long-lived thread; see above)."""
        return cls(python)

    @property
    def pid(self) -> int:
        """The zygote's pid (it changes when a dead zygote is replaced)."""
        return self._process.pid

    def spawn(self, config: ShimConfig) -> int:
        """Start a shim for ``config``; its pid, once its socket is bound.

        Restarts a dead zygote once; raises :class:`Unavailable` when the
        shim cannot be started.
        """
        with self._lock:
            try:
                return self._spawn(config)
            except ZygoteGone:
                log.warning("zygote %d is gone; starting a new one", self._process.pid)
                self._replace()
            try:
                return self._spawn(config)
            except ZygoteGone as exc:
                raise Unavailable(f"shim {config.name}: the zygote died ({exc})") from None

    def close(self) -> None:
        """Stop the zygote (end of file on its pipe); shims keep running."""
        with self._lock:
            _stop(self._process)

    def _spawn(self, config: ShimConfig) -> int:
        stdin, stdout = _pipes(self._process)
        if self._process.poll() is not None:
            raise ZygoteGone(f"exited with status {self._process.returncode}")
        try:
            write_message(stdin.fileno(), {"config": config.to_map()})
            reply = read_message(stdout.fileno(), timeout=_REPLY_TIMEOUT)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ZygoteGone(str(exc)) from None
        except TimeoutError:
            # A zygote that does not answer is no use: replace it next time.
            self._process.kill()
            raise Unavailable(f"shim {config.name}: the zygote did not answer") from None
        if isinstance(reply, dict) and isinstance(reply.get("pid"), int):
            return int(reply["pid"])
        error = reply.get("error") if isinstance(reply, dict) else None
        raise Unavailable(str(error or f"shim {config.name}: malformed zygote reply {reply!r}"))

    def _replace(self) -> None:
        _stop(self._process)
        self._process = self._launch()

    def _launch(self) -> subprocess.Popen[bytes]:
        # The checkout's root first on the path, so the zygote imports the
        # same runtime package as the daemon even when it is not installed.
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        argv = [self.python, "-m", "runtime.zygote", "--parent-pid", str(os.getpid())]
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd="/", close_fds=True
        )


def _pipes(process: subprocess.Popen[bytes]) -> tuple[IO[bytes], IO[bytes]]:
    if process.stdin is None or process.stdout is None:
        raise ZygoteGone("no pipes")
    return process.stdin, process.stdout


def _stop(process: subprocess.Popen[bytes]) -> None:
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


if __name__ == "__main__":
    main()
