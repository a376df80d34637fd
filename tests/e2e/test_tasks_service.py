"""Every Tasks RPC against a real berthd running runc containers on busybox.

One daemon serves the whole module; each test uses container ids of its own
(:func:`unique_id`) and removes its tasks and containers in ``finally``
blocks, so a failing test leaves nothing running for the next. Events are
read on a raw DEALER socket (:class:`EventStream`) so a test knows exactly
when its subscription is live (the ``ready`` frame) before it acts.

Containers run on the session's busybox rootfs, named by the spec's absolute
``root.path``, unless a test gives ``Create.rootfs`` mounts (a read-only bind
of that rootfs), which the daemon mounts at the bundle's ``rootfs/``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

import berth
from berth.client import OCI_SPEC_TYPE_URL
from runtime.runc import Runc
from runtime.spec import DEFAULT_PATH, default_spec
from tests.e2e.conftest import requires_root_and_runc, unique_id
from tests.integration.conftest import DaemonProcess, make_daemon
from wire.codec import Timestamp, pack, unpack
from wire.errors import from_wire

pytestmark = requires_root_and_runc

NS = "default"
EVENTS = "containerd.v1.services.execution.Tasks/Events"
CALL_TIMEOUT = 20.0  # seconds a client call may take
WAIT = 10.0  # seconds to wait for a state change or an event
_stream_ids = itertools.count(1)


# --- helpers -----------------------------------------------------------------


class EventStream:
    """``Tasks/Events`` on a raw DEALER socket; live once the constructor returns.

    The constructor waits for the ``ready`` frame, after which nothing the
    namespace publishes is missed. Every event read is kept in ``seen``.
    """

    def __init__(self, address: str, namespace: str = NS, timeout: float = WAIT) -> None:
        self._sock = zmq.Context.instance().socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(address)
        self._id = f"events-{os.getpid()}-{next(_stream_ids)}"
        self.seen: list[dict[str, Any]] = []
        self.ended = False
        request = {"v": 1, "id": self._id, "method": EVENTS, "ns": namespace, "body": {}}
        self._sock.send_multipart([b"", pack(request)])
        frame = self._frame(timeout)
        if frame is None:
            self.close()
            raise AssertionError(f"no ready frame for Events within {timeout}s")
        if "error" in frame:
            self.close()
            raise from_wire(frame["error"])
        assert frame.get("ready") is True, frame

    def _frame(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self._sock.poll(max(1, int(left * 1000))):
                return None
            frame = unpack(self._sock.recv_multipart()[-1])
            if frame.get("id") == self._id:
                return frame  # type: ignore[no-any-return]
        return None

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None when none came within ``timeout`` seconds."""
        if self.ended:
            return None
        frame = self._frame(timeout)
        if frame is None:
            return None
        if "error" in frame or frame.get("end"):
            self.ended = True
            raise AssertionError(f"Events stream ended: {frame}")
        assert frame.get("more") is True, frame
        event: dict[str, Any] = frame["body"]
        self.seen.append(event)
        return event

    def wait_for(self, timeout: float = WAIT, **match: Any) -> dict[str, Any]:
        """The first event (seen already or next) whose fields equal ``match``."""
        for event in self.seen:
            if all(event.get(k) == v for k, v in match.items()):
                return event
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            event = self.next(left)
            if event is not None and all(event.get(k) == v for k, v in match.items()):
                return event
        raise AssertionError(f"no event {match} within {timeout}s; seen: {self.seen}")

    def drain(self, quiet: float = 0.3) -> None:
        """Read until no event comes for ``quiet`` seconds."""
        while self.next(quiet) is not None:
            pass

    def close(self) -> None:
        """Cancel the stream (best effort) and close the socket."""
        if not self._sock.closed:
            with contextlib.suppress(zmq.ZMQError):
                self._sock.send_multipart(
                    [b"", pack({"v": 1, "id": self._id, "cancel": True})], zmq.NOBLOCK
                )
            self._sock.close(linger=0)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FifoReader(threading.Thread):
    """Collects what is written to a FIFO; its read end is open once constructed."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        os.mkfifo(path)
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._data = bytearray()
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._halt.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            if chunk:
                with self._lock:
                    self._data += chunk
            else:
                time.sleep(0.05)  # no writer at the moment

    def text(self) -> str:
        with self._lock:
            return self._data.decode(errors="replace")

    def wait_for(self, needle: str, timeout: float = WAIT) -> str:
        """All the text so far, once ``needle`` is in it."""
        deadline = time.monotonic() + timeout
        while needle not in (text := self.text()):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{needle!r} not read from {self.path} in {timeout}s: {text!r}"
                )
            time.sleep(0.05)
        return text

    def close(self) -> None:
        self._halt.set()
        self.join(5)
        os.close(self._fd)


def make_spec(rootfs: Path, args: list[str], *, pid_ns: bool = True, **process: Any) -> dict:
    """A runc spec running ``args`` on ``rootfs`` (read-only: the rootfs is shared)."""
    spec = default_spec(args, str(rootfs))
    spec["root"]["readonly"] = True
    spec["process"].update(process)
    if not pid_ns:
        # Without a pid namespace the init is not pid 1 there, so a signal it
        # has no handler for takes its default action, as on the host.
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "pid"]
    return spec


def process(args: list[str]) -> dict[str, Any]:
    """An exec's OCI process: ``args`` with the default PATH, in ``/``."""
    return {"args": list(args), "cwd": "/", "env": [DEFAULT_PATH]}


def bind_rootfs(rootfs: Path) -> list[dict[str, Any]]:
    """``Create.rootfs``: the busybox rootfs, bind-mounted read-only."""
    return [{"type": "bind", "source": str(rootfs), "target": "", "options": ["rbind", "ro"]}]


def wait_status(client: berth.Client, cid: str, status: str, timeout: float = WAIT) -> dict:
    """Poll Info until the task is ``status``; the task."""
    deadline = time.monotonic() + timeout
    while True:
        task = client.tasks.info(cid)
        if task["status"] == status:
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task {cid} is {task['status']}, not {status}: {task}")
        time.sleep(0.05)


def remove(client: berth.Client, cid: str) -> None:
    """Best effort: kill and delete the task of ``cid``, then the container."""
    with contextlib.suppress(berth.BerthError):
        task = client.tasks.info(cid)
        if task["status"] == "PAUSED":
            with contextlib.suppress(berth.BerthError):
                client.tasks.resume(cid)
        if task["status"] in ("RUNNING", "PAUSED"):
            with contextlib.suppress(berth.BerthError):
                client.tasks.kill(cid, signal.SIGKILL, all=True)
            with contextlib.suppress(berth.BerthError, AssertionError):
                wait_status(client, cid, "STOPPED")
        client.tasks.delete(cid)
    with contextlib.suppress(berth.BerthError):
        client.containers.delete(cid)


def shim_pids(ns: str, cid: str) -> list[int]:
    """Pids of processes whose command line is ``berth-shim ... <ns>/<cid> ...``."""
    want = f"{ns}/{cid}"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        words = raw.replace(b"\0", b" ").decode(errors="replace").split()
        if any("berth-shim" in w for w in words) and want in words:
            found.append(int(entry))
    return found


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace."""
    prefix = str(path)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return points


def runc_ids(state: Path, ns: str = NS) -> list[str]:
    """Container ids in the daemon's runc root for ``ns``."""
    root = state / "runc" / ns
    if not root.exists():
        return []
    out = subprocess.run(
        ["runc", "--root", str(root), "list", "-q"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.split()


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie counts as exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


# --- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = make_daemon(tmp_path_factory.mktemp("tasks-service")).start()
    try:
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        # Anything a failed test left: its shims, then runc's containers.
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                    if b"berth-shim" in cmd and f"-{os.getpid()}-".encode() in cmd:
                        os.kill(int(entry), signal.SIGKILL)
        for ns_root in (d.state / "runc").glob("*"):
            for cid in runc_ids(d.state, ns_root.name):
                subprocess.run(
                    ["runc", "--root", str(ns_root), "delete", "--force", cid],
                    capture_output=True,
                    check=False,
                    timeout=30,
                )
        for task_dir in (d.state / "tasks").glob("*/*"):
            for point in reversed(mounts_under(task_dir)):
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", str(d.state)], check=False)


@pytest.fixture
def client(daemon: DaemonProcess) -> Iterator[berth.Client]:
    with berth.Client(daemon.address, timeout=CALL_TIMEOUT) as c:
        yield c


@pytest.fixture
def container(client: berth.Client, busybox_rootfs: Path) -> Iterator[Callable[..., str]]:
    """``container(args, **spec_options)``: a new container; removed after the test."""
    made: list[tuple[berth.Client, str]] = []

    def make(
        args: list[str], *, on: berth.Client | None = None, runtime: str = "", **options: Any
    ) -> str:
        c = on or client
        cid = unique_id("tsvc")
        c.containers.create(cid, spec=make_spec(busybox_rootfs, args, **options), runtime=runtime)
        made.append((c, cid))
        return cid

    try:
        yield make
    finally:
        for c, cid in reversed(made):
            remove(c, cid)


@pytest.fixture
def events(daemon: DaemonProcess) -> Iterator[EventStream]:
    with EventStream(daemon.address) as stream:
        yield stream


# --- lifecycle -----------------------------------------------------------------


def test_a_task_is_created_started_killed_and_deleted_with_its_exit_status(
    client: berth.Client, container: Callable[..., str], events: EventStream, daemon: DaemonProcess
) -> None:
    cid = container(["sleep", "60"])

    created = client.tasks.create(cid)
    assert created["container_id"] == cid
    pid = created["pid"]
    assert pid > 0
    task = client.tasks.info(cid)
    assert task["status"] == "CREATED"
    assert task["pid"] == pid
    assert task["id"] == task["container_id"] == cid
    assert task["exited_at"] is None
    assert cid in [t["id"] for t in client.tasks.list()]
    assert (daemon.state / "tasks" / NS / cid).is_dir()
    assert shim_pids(NS, cid), "no berth-shim process names this task"
    assert cid in runc_ids(daemon.state)

    client.tasks.start(cid)
    assert client.tasks.info(cid)["status"] == "RUNNING"
    assert alive(pid)

    client.tasks.kill(cid, signal.SIGKILL)
    exit_event = events.wait_for(type="EXIT", id=cid, pid=pid)
    assert exit_event["exit_status"] == 137
    task = client.tasks.info(cid)
    assert task["status"] == "STOPPED"
    assert task["exit_status"] == 137
    assert isinstance(task["exited_at"], Timestamp)
    assert [t["status"] for t in client.tasks.list() if t["id"] == cid] == ["STOPPED"]

    deleted = client.tasks.delete(cid)
    assert deleted["container_id"] == cid
    assert deleted["exit_status"] == 137
    assert deleted["exited_at"] == task["exited_at"]
    assert cid not in [t["id"] for t in client.tasks.list()]
    with pytest.raises(berth.NotFound):
        client.tasks.info(cid)
    client.containers.delete(cid)


def test_a_shell_that_exits_7_leaves_a_stopped_task_with_exit_status_7(
    client: berth.Client, container: Callable[..., str], events: EventStream
) -> None:
    cid = container(["sh", "-c", "exit 7"])
    pid = client.tasks.create(cid)["pid"]
    client.tasks.start(cid)
    assert events.wait_for(type="EXIT", id=cid)["exit_status"] == 7
    task = wait_status(client, cid, "STOPPED")
    assert task["pid"] == pid
    assert task["exit_status"] == 7
    assert client.tasks.delete(cid)["exit_status"] == 7


@pytest.mark.parametrize(
    ("sig", "expected"), [(0, 143), (signal.SIGTERM, 143), (signal.SIGKILL, 137)]
)
def test_a_task_killed_by_signal_n_exits_128_plus_n_and_signal_0_means_sigterm(
    client: berth.Client,
    container: Callable[..., str],
    events: EventStream,
    sig: int,
    expected: int,
) -> None:
    # In its own pid namespace the init is pid 1, which the kernel shields from
    # every signal it has no handler for except SIGKILL: a plain `sleep` would
    # ignore SIGTERM. Sharing the host's pid namespace gives signals their
    # default action.
    cid = container(["sleep", "60"], pid_ns=False)
    pid = client.tasks.create(cid)["pid"]
    client.tasks.start(cid)
    client.tasks.kill(cid, sig)
    assert events.wait_for(type="EXIT", id=cid, pid=pid)["exit_status"] == expected
    assert wait_status(client, cid, "STOPPED")["exit_status"] == expected
    assert client.tasks.delete(cid)["exit_status"] == expected


def test_deleting_a_created_task_kills_its_waiting_init_and_replies_137(
    client: berth.Client, container: Callable[..., str], events: EventStream, daemon: DaemonProcess
) -> None:
    cid = container(["sleep", "60"])
    pid = client.tasks.create(cid)["pid"]
    assert alive(pid)
    deleted = client.tasks.delete(cid)
    assert deleted["exit_status"] == 137
    assert isinstance(deleted["exited_at"], Timestamp)
    delete_event = events.wait_for(type="DELETE", id=cid)
    assert delete_event["exit_status"] == 137
    assert delete_event["pid"] == pid
    deadline = time.monotonic() + WAIT
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)
    assert not (daemon.state / "tasks" / NS / cid).exists()
    assert cid not in runc_ids(daemon.state)


# --- stdio ---------------------------------------------------------------------


def test_output_written_to_a_fifo_reaches_its_reader(
    client: berth.Client, container: Callable[..., str], tmp_path: Path, events: EventStream
) -> None:
    reader = FifoReader(tmp_path / "out")
    try:
        cid = container(["sh", "-c", "echo hello-fifo; echo to-stderr >&2"])
        client.tasks.create(cid, stdout=str(reader.path), stderr=str(reader.path))
        client.tasks.start(cid)
        events.wait_for(type="EXIT", id=cid)
        text = reader.wait_for("to-stderr")
        assert "hello-fifo" in text
    finally:
        reader.close()


def test_output_to_a_file_uri_is_appended_to_that_log_file(
    client: berth.Client, container: Callable[..., str], tmp_path: Path, events: EventStream
) -> None:
    log = tmp_path / "logs" / "out.log"  # its directory does not exist yet
    for n in (1, 2):
        cid = container(["sh", "-c", f"echo hello-file-{n}"])
        client.tasks.create(cid, stdout=f"file://{log}")
        client.tasks.start(cid)
        assert events.wait_for(type="EXIT", id=cid)["exit_status"] == 0
        client.tasks.delete(cid)
    deadline = time.monotonic() + WAIT
    while "hello-file-2" not in (text := log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert text.splitlines() == ["hello-file-1", "hello-file-2"]


@pytest.mark.parametrize("field", ["stdin", "stdout", "stderr"])
@pytest.mark.parametrize("kind", ["relative path", "missing path", "regular file"])
def test_a_stdio_that_is_not_a_fifo_or_file_uri_is_invalid_argument(
    client: berth.Client, container: Callable[..., str], tmp_path: Path, field: str, kind: str
) -> None:
    regular = tmp_path / "plain.txt"
    regular.write_text("")
    value = {
        "relative path": "logs/out.txt",
        "missing path": str(tmp_path / "no-such-fifo"),
        "regular file": str(regular),
    }[kind]
    cid = container(["true"])
    with pytest.raises(berth.InvalidArgument):
        client.tasks.create(cid, **{field: value})
    with pytest.raises(berth.NotFound):
        client.tasks.info(cid)


def test_close_stdin_gives_cat_its_end_of_file(
    client: berth.Client, container: Callable[..., str], tmp_path: Path, events: EventStream
) -> None:
    stdin = tmp_path / "in"
    os.mkfifo(stdin)
    reader = FifoReader(tmp_path / "out")
    try:
        cid = container(["cat"])
        pid = client.tasks.create(cid, stdin=str(stdin), stdout=str(reader.path))["pid"]
        client.tasks.start(cid)
        writer = os.open(stdin, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(writer, b"hello\n")
        finally:
            os.close(writer)
        reader.wait_for("hello")
        time.sleep(0.3)
        assert client.tasks.info(cid)["status"] == "RUNNING"  # cat still waits for input
        client.tasks.close_stdin(cid)
        exit_event = events.wait_for(type="EXIT", id=cid, pid=pid)
        assert exit_event["exit_status"] == 0
        assert reader.text() == "hello\n"
    finally:
        reader.close()


def test_a_terminal_task_sees_its_pty_resized(
    client: berth.Client, container: Callable[..., str], tmp_path: Path
) -> None:
    reader = FifoReader(tmp_path / "tty")
    try:
        cid = container(["sh", "-c", "while true; do stty size; sleep 0.2; done"])
        client.tasks.create(cid, stdout=str(reader.path), terminal=True)
        client.tasks.start(cid)
        client.tasks.pty(cid, width=100, height=40)
        reader.wait_for("40 100")
    finally:
        reader.close()


# --- exec, processes -------------------------------------------------------------


def test_an_exec_is_announced_and_its_exit_reported_with_its_own_pid(
    client: berth.Client, container: Callable[..., str], events: EventStream
) -> None:
    cid = container(["sleep", "60"])
    init = client.tasks.create(cid)["pid"]
    client.tasks.start(cid)
    pid = client.tasks.exec(cid, spec=process(["sh", "-c", "exit 3"]))["pid"]
    assert pid > 0
    assert pid != init
    events.wait_for(type="EXEC_ADDED", id=cid, pid=pid)
    assert events.wait_for(type="EXIT", id=cid, pid=pid)["exit_status"] == 3
    task = client.tasks.info(cid)
    assert task["status"] == "RUNNING"
    assert task["pid"] == init


def test_eight_concurrent_execs_into_one_task_each_get_their_pid_and_exit_in_order(
    daemon: DaemonProcess, client: berth.Client, container: Callable[..., str], events: EventStream
) -> None:
    cid = container(["sleep", "60"])
    client.tasks.create(cid)
    client.tasks.start(cid)
    count = 8
    start = threading.Barrier(count)
    pids: dict[int, int] = {}
    errors: list[str] = []

    def one(n: int) -> None:
        with berth.Client(daemon.address, timeout=CALL_TIMEOUT) as mine:
            start.wait(10)
            try:
                pid = mine.tasks.exec(cid, spec=process(["sh", "-c", f"exit {n}"]))["pid"]
            except berth.BerthError as exc:
                errors.append(f"exec {n}: {exc}")
                return
            pids[pid] = n

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CALL_TIMEOUT + 10)
    assert errors == []
    assert len(pids) == count, pids
    for pid, n in pids.items():
        assert events.wait_for(type="EXIT", id=cid, pid=pid)["exit_status"] == n
    mine = [e for e in events.seen if e.get("id") == cid]
    for pid in pids:
        kinds = [e["type"] for e in mine if e.get("pid") == pid]
        assert kinds == ["EXEC_ADDED", "EXIT"], (pid, kinds)
    assert client.tasks.info(cid)["status"] == "RUNNING"


def test_exec_on_a_stopped_task_is_failed_precondition(
    client: berth.Client, container: Callable[..., str], events: EventStream
) -> None:
    cid = container(["true"])
    client.tasks.create(cid)
    client.tasks.start(cid)
    events.wait_for(type="EXIT", id=cid)
    wait_status(client, cid, "STOPPED")
    with pytest.raises(berth.FailedPrecondition):
        client.tasks.exec(cid, spec=process(["true"]))


def test_exec_of_a_missing_binary_is_failed_precondition_with_runcs_text(
    client: berth.Client, container: Callable[..., str]
) -> None:
    cid = container(["sleep", "60"])
    client.tasks.create(cid)
    client.tasks.start(cid)
    with pytest.raises(berth.FailedPrecondition) as failed:
        client.tasks.exec(cid, spec=process(["/nope"]))
    message = failed.value.message
    assert "/nope" in message
    assert "no such file or directory" in message.lower()
    assert client.tasks.info(cid)["status"] == "RUNNING"


def test_processes_lists_the_init_pid(client: berth.Client, container: Callable[..., str]) -> None:
    cid = container(["sleep", "60"])
    pid = client.tasks.create(cid)["pid"]
    client.tasks.start(cid)
    processes = client.tasks.processes(cid)
    assert pid in [p["pid"] for p in processes]


# --- pause, resume ------------------------------------------------------------------


def test_pause_and_resume_move_the_task_and_publish_paused_and_resumed(
    client: berth.Client, container: Callable[..., str], events: EventStream
) -> None:
    cid = container(["sleep", "60"])
    pid = client.tasks.create(cid)["pid"]
    client.tasks.start(cid)
    client.tasks.pause(cid)
    assert client.tasks.info(cid)["status"] == "PAUSED"
    paused = events.wait_for(type="PAUSED", id=cid)
    assert paused["pid"] == pid
    state = Path(f"/proc/{pid}/status").read_text()
    assert re.search(r"^State:\s+[DS]", state, re.M), state  # frozen, not running
    with pytest.raises(berth.FailedPrecondition):
        client.tasks.delete(cid)  # PAUSED cannot be deleted either
    client.tasks.resume(cid)
    assert client.tasks.info(cid)["status"] == "RUNNING"
    resumed = events.wait_for(type="RESUMED", id=cid)
    assert resumed["seq"] > paused["seq"]


def test_resume_of_a_running_task_is_failed_precondition(
    client: berth.Client, container: Callable[..., str]
) -> None:
    cid = container(["sleep", "60"])
    client.tasks.create(cid)
    client.tasks.start(cid)
    with pytest.raises(berth.FailedPrecondition):
        client.tasks.resume(cid)
    assert client.tasks.info(cid)["status"] == "RUNNING"


def test_pause_of_a_stopped_task_is_failed_precondition(
    client: berth.Client, container: Callable[..., str], events: EventStream
) -> None:
    cid = container(["true"])
    client.tasks.create(cid)
    client.tasks.start(cid)
    events.wait_for(type="EXIT", id=cid)
    wait_status(client, cid, "STOPPED")
    with pytest.raises(berth.FailedPrecondition):
        client.tasks.pause(cid)
    assert client.tasks.info(cid)["status"] == "STOPPED"


# --- refusals -----------------------------------------------------------------------


def test_delete_of_a_running_task_is_failed_precondition(
    client: berth.Client, container: Callable[..., str]
) -> None:
    cid = container(["sleep", "60"])
    client.tasks.create(cid)
    client.tasks.start(cid)
    with pytest.raises(berth.FailedPrecondition):
        client.tasks.delete(cid)
    assert client.tasks.info(cid)["status"] == "RUNNING"


def test_deleting_a_container_that_has_a_task_is_failed_precondition(
    client: berth.Client, container: Callable[..., str]
) -> None:
    cid = container(["sleep", "60"])
    client.tasks.create(cid)
    with pytest.raises(berth.FailedPrecondition):
        client.containers.delete(cid)
    assert client.containers.get(cid)["id"] == cid
    assert client.tasks.info(cid)["status"] == "CREATED"


def test_a_second_task_for_a_container_already_exists(
    client: berth.Client, container: Callable[..., str]
) -> None:
    cid = container(["sleep", "60"])
    pid = client.tasks.create(cid)["pid"]
    with pytest.raises(berth.AlreadyExists):
        client.tasks.create(cid)
    assert client.tasks.info(cid)["pid"] == pid


def test_a_task_for_an_unknown_container_is_not_found(client: berth.Client) -> None:
    with pytest.raises(berth.NotFound):
        client.tasks.create(unique_id("tsvc-missing"))


def test_a_container_whose_runtime_is_unknown_gets_not_found(
    client: berth.Client, container: Callable[..., str]
) -> None:
    cid = container(["true"], runtime="nope")
    with pytest.raises(berth.NotFound) as failed:
        client.tasks.create(cid)
    assert "nope" in failed.value.message
    with pytest.raises(berth.NotFound):
        client.tasks.info(cid)


@pytest.mark.parametrize("case", ["not json", "no process.args", "relative root.path"])
def test_a_spec_that_is_not_usable_is_invalid_argument(
    client: berth.Client, busybox_rootfs: Path, daemon: DaemonProcess, case: str
) -> None:
    spec: dict[str, Any]
    if case == "not json":
        spec = {"type_url": OCI_SPEC_TYPE_URL, "value": b"not json"}
    else:
        spec = make_spec(busybox_rootfs, ["true"])
        if case == "no process.args":
            del spec["process"]["args"]
        else:
            spec["root"]["path"] = "rootfs"
    cid = unique_id("tsvc-spec")
    client.containers.create(cid, spec=spec)
    try:
        with pytest.raises(berth.InvalidArgument):
            client.tasks.create(cid)
        with pytest.raises(berth.NotFound):
            client.tasks.info(cid)
        assert not (daemon.state / "tasks" / NS / cid).exists()
    finally:
        remove(client, cid)


@pytest.mark.parametrize("sig", [65, 1000])
def test_a_signal_outside_1_to_64_is_invalid_argument(
    client: berth.Client, container: Callable[..., str], sig: int
) -> None:
    cid = container(["sleep", "60"])
    client.tasks.create(cid)
    client.tasks.start(cid)
    with pytest.raises(berth.InvalidArgument):
        client.tasks.kill(cid, sig)
    assert client.tasks.info(cid)["status"] == "RUNNING"


def test_kill_of_a_pid_that_is_not_in_the_task_is_not_found(
    client: berth.Client, container: Callable[..., str]
) -> None:
    cid = container(["sleep", "60"])
    client.tasks.create(cid)
    client.tasks.start(cid)
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(berth.NotFound):
            client.tasks.kill(cid, signal.SIGKILL, pid=bystander.pid)
        assert bystander.poll() is None, "the daemon signalled a process outside the task"
    finally:
        bystander.kill()
        bystander.wait(5)
    assert client.tasks.info(cid)["status"] == "RUNNING"


def test_kill_of_a_stopped_task_is_not_found(
    client: berth.Client, container: Callable[..., str], events: EventStream
) -> None:
    cid = container(["true"])
    client.tasks.create(cid)
    client.tasks.start(cid)
    events.wait_for(type="EXIT", id=cid)
    wait_status(client, cid, "STOPPED")
    with pytest.raises(berth.NotFound):
        client.tasks.kill(cid, signal.SIGKILL)


def test_a_missing_binary_fails_with_runcs_reason_leaves_nothing_and_a_fixed_retry_runs(
    client: berth.Client,
    busybox_rootfs: Path,
    daemon: DaemonProcess,
    tmp_path: Path,
    events: EventStream,
) -> None:
    cid = unique_id("tsvc-nope")
    task_dir = daemon.state / "tasks" / NS / cid
    client.containers.create(cid, spec=make_spec(busybox_rootfs, ["/nope"]))
    try:
        with pytest.raises(berth.FailedPrecondition) as failed:
            client.tasks.create(cid, rootfs=bind_rootfs(busybox_rootfs))
        message = failed.value.message
        assert "/nope" in message
        assert "no such file or directory" in message.lower()

        assert cid not in [t["id"] for t in client.tasks.list()]
        with pytest.raises(berth.NotFound):
            client.tasks.info(cid)
        assert not task_dir.exists()
        assert shim_pids(NS, cid) == []
        assert mounts_under(task_dir) == []
        assert cid not in runc_ids(daemon.state)

        client.containers.update(
            cid,
            spec=make_spec(busybox_rootfs, ["sh", "-c", "echo fixed"]),
            update_mask=["spec"],
        )
        log = tmp_path / "fixed.log"
        client.tasks.create(cid, rootfs=bind_rootfs(busybox_rootfs), stdout=f"file://{log}")
        assert mounts_under(task_dir), "the rootfs mount is not at the bundle"
        client.tasks.start(cid)
        assert events.wait_for(type="EXIT", id=cid)["exit_status"] == 0
        assert client.tasks.delete(cid)["exit_status"] == 0
        assert "fixed" in log.read_text()
        assert not task_dir.exists()
        assert mounts_under(task_dir) == []
        assert cid not in runc_ids(daemon.state)
    finally:
        remove(client, cid)


# --- events -------------------------------------------------------------------------


def test_one_tasks_events_come_in_order_with_increasing_seq_namespace_and_timestamp(
    client: berth.Client, container: Callable[..., str], events: EventStream
) -> None:
    cid = container(["sh", "-c", "exit 4"])
    pid = client.tasks.create(cid)["pid"]
    client.tasks.start(cid)
    events.wait_for(type="EXIT", id=cid)
    wait_status(client, cid, "STOPPED")
    client.tasks.delete(cid)
    events.wait_for(type="DELETE", id=cid)

    mine = [e for e in events.seen if e["id"] == cid]
    assert [e["type"] for e in mine] == ["CREATE", "START", "EXIT", "DELETE"]
    seqs = [e["seq"] for e in events.seen]
    assert all(a < b for a, b in itertools.pairwise(seqs)), seqs
    for event in mine:
        assert event["namespace"] == NS
        assert isinstance(event["timestamp"], Timestamp)
        assert event["pid"] == pid
    create, start, exit_, delete = mine
    assert create["exited_at"] is None
    assert start["exited_at"] is None
    assert exit_["exit_status"] == delete["exit_status"] == 4
    assert isinstance(exit_["exited_at"], Timestamp)
    assert delete["exited_at"] == exit_["exited_at"]
    stamps = [e["timestamp"].to_unix_nano() for e in mine]
    assert stamps == sorted(stamps)


def test_events_of_two_namespaces_do_not_mix(daemon: DaemonProcess, busybox_rootfs: Path) -> None:
    namespaces = [f"tsvc-a-{os.getpid()}", f"tsvc-b-{os.getpid()}"]
    clients = [berth.Client(daemon.address, namespace=n, timeout=CALL_TIMEOUT) for n in namespaces]
    streams = [EventStream(daemon.address, n) for n in namespaces]
    ids = [unique_id("tsvc-ns") for _ in namespaces]
    try:
        for c, cid in zip(clients, ids, strict=True):
            c.containers.create(cid, spec=make_spec(busybox_rootfs, ["true"]))
            c.tasks.create(cid)
            c.tasks.start(cid)
        for stream, cid in zip(streams, ids, strict=True):
            stream.wait_for(type="EXIT", id=cid)
            stream.drain()
        for stream, ns, cid in zip(streams, namespaces, ids, strict=True):
            assert {e["namespace"] for e in stream.seen} == {ns}
            assert {e["id"] for e in stream.seen} == {cid}
        with pytest.raises(berth.NotFound):
            clients[0].tasks.info(ids[1])
    finally:
        for stream in streams:
            stream.close()
        for c, cid in zip(clients, ids, strict=True):
            remove(c, cid)
            c.close()


# --- checkpoint ---------------------------------------------------------------------


CRIU_REASON = Runc().criu_available()


@pytest.mark.skipif(CRIU_REASON is None, reason="CRIU works on this host: no failure to see")
def test_checkpoint_is_unavailable_with_a_reason_and_the_task_keeps_running(
    client: berth.Client, container: Callable[..., str]
) -> None:
    cid = container(["sleep", "60"])
    client.tasks.create(cid)
    client.tasks.start(cid)
    with pytest.raises(berth.Unavailable) as failed:
        client.tasks.checkpoint(cid)
    assert failed.value.message.strip()
    assert client.tasks.info(cid)["status"] == "RUNNING"


@pytest.mark.skipif(CRIU_REASON is not None, reason=f"CRIU cannot run on this host: {CRIU_REASON}")
def test_a_checkpoint_is_a_sha256_blob_and_restores_into_a_new_task(
    client: berth.Client, container: Callable[..., str], daemon: DaemonProcess
) -> None:
    source = container(["sleep", "60"], pid_ns=True)
    client.tasks.create(source)
    client.tasks.start(source)
    [descriptor] = client.tasks.checkpoint(source)
    assert descriptor["digest"].startswith("sha256:")
    blob = daemon.root / "content" / "blobs" / "sha256" / descriptor["digest"][7:]
    assert blob.stat().st_size == descriptor["size"]
    assert client.tasks.info(source)["status"] == "RUNNING"
    target = container(["sleep", "60"], pid_ns=True)
    client.tasks.create(target, checkpoint=descriptor)
    client.tasks.start(target)
    assert client.tasks.info(target)["status"] == "RUNNING"


def test_a_task_killed_by_the_oom_killer_publishes_oom_before_its_exit(
    client: berth.Client, busybox_rootfs: Path, events: EventStream
) -> None:
    cid = unique_id("oom")
    spec = make_spec(busybox_rootfs, ["sh", "-c", 'a=x; while :; do a="$a$a"; done'])
    limit = 16 * 1024 * 1024
    spec["linux"]["resources"] = {"memory": {"limit": limit, "swap": limit}}
    client.containers.create(cid, spec=spec)
    try:
        pid = client.tasks.create(cid)["pid"]
        client.tasks.start(cid)
        exit_event = events.wait_for(type="EXIT", id=cid, pid=pid)
        assert exit_event["exit_status"] == 137
        oom = [e for e in events.seen if e["type"] == "OOM" and e["id"] == cid]
        assert oom, "no OOM event before the EXIT"
        assert oom[0]["seq"] < exit_event["seq"]
        assert oom[0]["pid"] == pid
    finally:
        remove(client, cid)
