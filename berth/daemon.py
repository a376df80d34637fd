"""``berthd``: compose the store, the actors and the front end, and run them.

Start-up: configuration, the root lock (a second daemon on the same root
exits 1 at once), the metadata store, the supervisor and its children,
then the sockets. Stop (SIGTERM/SIGINT): refuse new requests, let every
write already sent commit and be acknowledged, flush replies, close.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import pykka
import zmq
from setproctitle import setproctitle

from actors.containers import ContainerActors
from actors.content_reader import ContentReader
from actors.event_log import LoggedEvent
from actors.events import Committed, EventBus, Listeners, Trimmed
from actors.gc import Collect, Collector, Sweep
from actors.health_monitor import HealthBoard, HealthMonitor
from actors.importer import ImportActor, clear_scratch
from actors.leases import Leases
from actors.metadata import MetadataActor, TrimEvents
from actors.reader import ReaderActor
from actors.reconcile import reconcile_tasks
from actors.restart_monitor import Reconciled, RestartMonitor, SupervisionHooks
from actors.shim_events import ShimEvents
from actors.snapshot_records import recorded_ids
from actors.snapshots import SnapshotActor
from actors.storage import SnapshotIds, Storage
from actors.store import Store, StoreError
from actors.supervision import Directory, StartChild, Supervisor
from actors.task_runtime import TaskRuntime
from berth.config import ConfigError, DaemonConfig, load_config
from berth.services.containers import ContainersService
from berth.services.content import ContentService
from berth.services.events import EventsService
from berth.services.image_import import ImportService
from berth.services.images import ImagesService
from berth.services.snapshots import SnapshotsService
from berth.services.supervision import SupervisionService
from berth.services.tasks import TasksService
from berth.services.version import VersionService
from runtime.content import ContentStore
from runtime.malloc import limit_arenas, release_freed_memory
from runtime.snapshotters import pick_snapshotter
from runtime.zygote import ZygoteClient
from wire.errors import Unavailable
from wire.frontend import FrontEnd, Route
from wire.listen import Listener, ListenError, bind

__all__ = ["Daemon", "main"]

log = logging.getLogger(__name__)


class StartError(Exception):
    """The daemon cannot start; the message says why."""


def _lock_root(root: Path) -> int:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = root / "berthd.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StartError(
            f"root {root} is in use by another berthd (pid {holder}); "
            "two daemons on one root would corrupt it"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


_TRIM_SECONDS = 10.0  # how often the event log is trimmed to its retention

# glibc's arenas berthd's threads share (see runtime.malloc).
_ARENAS = 2


class Daemon:
    """A running berthd: everything it started, in the order to stop it."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self._lock_fd = _lock_root(config.root)
        config.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self.store = Store(config.root / "meta")
        except StoreError as exc:
            os.close(self._lock_fd)
            raise StartError(str(exc)) from exc
        try:
            self.snapshotter = pick_snapshotter(config.snapshotter, config.root)
            self.store.bind_snapshotter(self.snapshotter.name)
        except StoreError as exc:
            self.store.close()
            os.close(self._lock_fd)
            raise StartError(str(exc)) from exc
        self.directory = Directory()
        self.supervisor = Supervisor.start(self.directory)
        store = self.store
        directory = self.directory

        def sweep() -> None:
            # After a commit that left files no record names.
            with contextlib.suppress(Unavailable):
                directory.tell("gc", Sweep())

        listeners = Listeners()

        def publish(events: list[LoggedEvent]) -> None:
            # After each commit, in the metadata actor's thread; only to a bus with subscribers.
            if listeners.active:
                with contextlib.suppress(Unavailable):
                    directory.tell("events", Committed(events))

        # The bus first: it reads the log's latest seq before anything commits.
        self._start_child("events", lambda sup: EventBus.start(sup, store, listeners))

        def trimmed(upto: int) -> None:
            with contextlib.suppress(Unavailable):
                directory.tell("events", Trimmed(upto))

        self._start_child(
            "metadata", lambda sup: MetadataActor.start(sup, store, sweep, publish, trimmed)
        )
        self._start_child("reader", lambda sup: ReaderActor.start(sup, store))
        self._start_images(config)
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        events_address = f"ipc://{config.state}/shim-events.sock"
        self.zygote = ZygoteClient.start()
        self.task_runtime = TaskRuntime(
            config.state,
            self.zygote,
            config.runtimes,
            events_address,
            self.content,
            self.leases,
        )
        self.containers = ContainerActors(
            self.directory,
            self.supervisor,
            idle_seconds=config.container_idle_seconds,
            task_idle_seconds=config.task_idle_seconds,
            runtime=self.task_runtime,
        )
        # Before the reconcile: exits it finds are decided by the restart policies.
        containers = self.containers
        self._start_child(
            "restarts", lambda sup: RestartMonitor.start(sup, store, directory, containers)
        )
        board = self.health = HealthBoard()
        self._start_child(
            "health",
            lambda sup: HealthMonitor.start(sup, store, directory, containers, config.state, board),
        )
        self.containers.tasks.supervision = SupervisionHooks(store, directory)
        self.shim_events = ShimEvents(self.context, events_address, self.containers)
        self.containers.watch = self.shim_events.watch
        self.shim_events.start()
        adopted = reconcile_tasks(store, self.containers)
        if adopted:
            log.info("reconciled %d task(s) left by the previous daemon", adopted)
        self.directory.tell("restarts", Reconciled())
        self._stopped = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="reaper", daemon=True)
        self._reaper.start()
        try:
            self.listener: Listener = bind(
                self.context,
                list(config.addresses),
                curve_dir=config.curve,
                socket_group=config.socket_group or None,
            )
        except ListenError as exc:
            self._stop_actors()
            self.shim_events.stop()
            self.zygote.close()
            raise StartError(str(exc)) from exc
        self.frontend = FrontEnd(
            self.listener.sockets,
            self.routes(),
            max_payload=config.max_payload,
            max_streams=config.max_streams,
        )

    def _start_child(self, name: str, factory: Any) -> None:
        self.supervisor.ask(StartChild(name, factory))

    def _start_images(self, config: DaemonConfig) -> None:
        """Content store, snapshotter and the actors of snapshots, imports and GC."""
        store, directory = self.store, self.directory
        content = self.content = ContentStore(config.root)
        snapshotter = self.snapshotter
        leases = self.leases = Leases()
        # Left by a crash: nothing runs yet, so every ingest, tmp/ entry and
        # unpack mount is stale (a mounted orphan could not be swept).
        content.clean_ingests(0)
        scratch = config.state / "unpack"
        clear_scratch(scratch)
        snapshotter.clean_temp()
        with store.read() as txn:
            recorded = recorded_ids(txn, store)
        ids = SnapshotIds(snapshotter.ids() | recorded)
        storage = Storage(store, directory, snapshotter, content, leases, ids)
        grace = config.gc_grace_seconds
        self._start_child("snapshots", lambda sup: SnapshotActor.start(sup, storage))
        self._start_child("importer", lambda sup: ImportActor.start(sup, storage, scratch))
        self._start_child("gc", lambda sup: Collector.start(sup, storage, grace))
        self._start_child("content-reader", lambda sup: ContentReader.start(sup, store, content))
        # What a crash left half done (an import, a delete) goes now.
        directory.tell("gc", Collect())

    def routes(self) -> dict[str, Route]:
        """The method table: every RPC the daemon serves, by name."""
        table: dict[str, Route] = {}
        table.update(ContainersService(self.store, self.directory, self.containers).routes())
        table.update(
            TasksService(
                self.store,
                self.directory,
                self.containers,
                self.config.runtimes,
                self.config.state,
                self.content,
                self.snapshotter,
            ).routes()
        )
        table.update(
            SnapshotsService(self.store, self.directory, self.snapshotter, self.content).routes()
        )
        table.update(ImportService(self.directory).routes())
        table.update(ContentService(self.store, self.content, self.directory).routes())
        table.update(ImagesService(self.store, self.directory).routes())
        table.update(VersionService().routes())
        table.update(EventsService(self.store, self.directory).routes())
        table.update(SupervisionService(self.store, self.containers, self.health.get).routes())
        return table

    def start(self) -> None:
        """Start serving."""
        self.frontend.start()
        log.info(
            "berthd serving on %s (root %s)", ", ".join(self.config.addresses), self.config.root
        )

    def _reap(self) -> None:
        # Often enough for the shorter idle time: a task's actors are reaped
        # after task_idle_seconds, while its task keeps running.
        idle = min(self.config.container_idle_seconds, self.config.task_idle_seconds)
        interval = max(0.25, idle / 2)
        reaped = 0
        trim_at = 0.0
        while not self._stopped.wait(interval):
            # The actors told to stop last time have exited by now, and
            # freed what they held: give those pages back.
            if reaped:
                release_freed_memory()
            reaped = self.containers.reap()
            if time.monotonic() >= trim_at:
                trim_at = time.monotonic() + _TRIM_SECONDS
                self._trim_events()

    def _trim_events(self) -> None:
        config = self.config
        with contextlib.suppress(Unavailable):
            self.directory.tell(
                "metadata",
                TrimEvents(config.event_retention_count, config.event_retention_seconds),
            )

    def stop(self) -> None:
        """Refuse new work, finish what was sent, close everything."""
        log.info("berthd stopping")
        self.frontend.refuse_new()
        self._stopped.set()
        self._stop_actors()
        self.frontend.stop()
        self.shim_events.stop()
        self.zygote.close()
        self.listener.close_auth()
        self.context.term()
        self.store.close()
        os.close(self._lock_fd)
        log.info("berthd stopped")

    def _stop_actors(self) -> None:
        self.containers.stop_all()
        # The supervisor stops its children in turn; the metadata actor's
        # stop queues behind the writes already sent, which commit first.
        self.supervisor.stop(block=True, timeout=30)
        pykka.ActorRegistry.stop_all(block=True, timeout=10)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``berthd``."""
    limit_arenas(_ARENAS)
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"berthd: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    setproctitle("berthd")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon = Daemon(config)
    except StartError as exc:
        log.error("%s", exc)
        sys.exit(1)
    daemon.start()
    # Short waits: the kernel may deliver SIGTERM to any thread, and then
    # the handler runs only when the main thread next executes bytecode; a
    # long wait would sleep through it (seen as a daemon ignoring SIGTERM).
    while not stop.wait(0.5):
        pass
    daemon.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
