"""The shim end to end: a real zygote forks real shims that run busybox through runc.

Each test spawns a shim for a task dir under a short ``/tmp/berth-shim-test-*``
directory, drives it with :class:`ShimClient`, and reads its exit events
from a unix datagram socket bound the way the daemon binds it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest

from runtime.runc import ContainerNotFound, Runc, RuncError
from runtime.shim.config import ShimConfig
from runtime.shim.events import EventSender
from runtime.shim.helper import call_in_child
from runtime.shim.process import exit_status_of
from runtime.shim.protocol import MAX_FRAME, FrameBuffer, frame
from runtime.shim.streams import Copier
from runtime.shim_client import ShimClient, read_exits, shim_running, shim_socket
from runtime.spec import default_spec
from runtime.zygote import ZygoteClient
from tests.e2e.conftest import requires_root_and_runc, unique_id
from wire.errors import FailedPrecondition, NotFound, Unavailable

NS = "shimtest"


# -- pure helpers (no root needed) ---------------------------------------------


def test_exit_status_is_the_code_or_128_plus_the_signal():
    assert exit_status_of(7 << 8) == 7
    assert exit_status_of(signal.SIGKILL) == 137
    assert exit_status_of(signal.SIGTERM) == 143


def test_read_exits_skips_a_torn_last_line(tmp_path):
    (tmp_path / "exits").write_text(
        '{"pid": 10, "exit_status": 3, "exited_at_ns": 5}\n{"pid": 11, "exit_st'
    )
    assert read_exits(tmp_path) == [{"pid": 10, "exit_status": 3, "exited_at_ns": 5}]
    assert read_exits(tmp_path / "missing") == []


def test_shim_config_survives_the_trip_to_the_zygote():
    config = ShimConfig("ns", "id", Path("/t"), "runc", Path("/r"), "ipc:///e")
    assert ShimConfig.from_map(config.to_map()) == config
    with pytest.raises(ValueError):
        ShimConfig.from_map({**config.to_map(), "extra": "x"})


def test_a_copier_moves_bytes_on_readiness_and_reports_end_of_file_once():
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    ends: list[bool] = []
    copier = Copier(src_r, dst_w, name="test", on_eof=lambda: ends.append(True))
    try:
        assert copier.interest() == [(src_r, False)]
        os.write(src_w, b"hello")
        copier.on_ready(src_r)
        assert copier.interest() == [(src_r, False), (dst_w, True)]
        copier.on_ready(dst_w)
        assert os.read(dst_r, 100) == b"hello"
        os.write(src_w, b" world")
        os.close(src_w)
        copier.drain(1.0)
        assert os.read(dst_r, 100) == b" world"
        assert ends == [True] and copier.done and copier.interest() == []
    finally:
        for fd in (src_r, dst_r, dst_w):
            os.close(fd)


def test_frames_are_cut_where_they_end_and_an_oversized_one_is_refused():
    buffer = FrameBuffer()
    data = frame({"op": "state", "seq": 1}) + frame({"op": "start", "seq": 2})
    buffer.feed(data[:3])
    assert buffer.next() is None
    buffer.feed(data[3:])
    assert msgpack.unpackb(buffer.next() or b"") == {"op": "state", "seq": 1}
    assert msgpack.unpackb(buffer.next() or b"") == {"op": "start", "seq": 2}
    assert buffer.next() is None
    buffer.feed((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(ValueError):
        buffer.next()


def _fail(exc: BaseException) -> None:
    raise exc


def test_a_call_in_a_child_returns_its_result_and_raises_its_error_as_the_same_class():
    assert call_in_child(lambda: {"pid": os.getpid()})["pid"] != os.getpid()
    with pytest.raises(ContainerNotFound) as not_found:
        call_in_child(_fail, ContainerNotFound("gone", command=["runc", "state"], exit_status=1))
    assert (not_found.value.message, not_found.value.exit_status) == ("gone", 1)
    assert not_found.value.command == ["runc", "state"]
    with pytest.raises(RuncError, match=r"^runc said no$"):
        call_in_child(_fail, RuncError("runc said no"))
    with pytest.raises(Unavailable, match="no runc"):
        call_in_child(_fail, Unavailable("no runc"))
    with pytest.raises(FileNotFoundError):
        call_in_child(os.stat, "/no/such/file")
    with pytest.raises(Exception, match="odd") as other:
        call_in_child(_fail, LookupError("odd"))
    assert type(other.value).__name__ == "LookupError"


def test_events_wait_for_a_daemon_that_is_not_listening_and_go_out_in_order_when_it_is(
    tmp_path,
):
    path = tmp_path / "events.sock"
    sender = EventSender(f"ipc://{path}")
    sender.publish({"pid": 1})
    sender.publish({"pid": 2})
    assert len(sender.pending) == 2 and sender.retry_after() is not None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        listener.bind(str(path))
        sender.flush(force=True)
        assert sender.pending == []
        got = [msgpack.unpackb(listener.recv(100)) for _ in range(2)]
        assert got == [{"pid": 1}, {"pid": 2}]
    finally:
        listener.close()
        sender.close()
    # A daemon that restarts binds a new socket at the same path.
    path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        listener.bind(str(path))
        sender.publish({"pid": 3})
        assert msgpack.unpackb(listener.recv(100)) == {"pid": 3}
    finally:
        listener.close()
        sender.close()


# -- fixtures --------------------------------------------------------------------


class Events:
    """Exit events from every shim of the module, kept until a test asks for them."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.seen: list[dict[str, Any]] = []

    def wait(self, pid: int, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.seen:
                if event["pid"] == pid:
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no event for pid {pid}; saw {self.seen}")
            if select.select([self.socket], [], [], remaining)[0]:
                self.seen.append(msgpack.unpackb(self.socket.recv(65536), raw=False))


@dataclass
class Shim:
    pid: int
    config: ShimConfig
    client: ShimClient

    @property
    def task_dir(self) -> Path:
        return self.config.task_dir


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    # Short, so every socket path fits in a unix address.
    path = Path(tempfile.mkdtemp(prefix="berth-shim-test-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def events(base: Path) -> Iterator[Events]:
    # Bound the way the daemon binds it (actors.shim_events): a unix datagram socket.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(f"{base}/events.sock")
    yield Events(sock)
    sock.close()


@pytest.fixture(scope="module")
def zygote() -> Iterator[ZygoteClient]:
    client = ZygoteClient.start()
    yield client
    client.close()


@pytest.fixture
def spawn(base: Path, zygote: ZygoteClient, events: Events) -> Iterator[Callable[..., Shim]]:
    shims: list[Shim] = []

    def spawn_shim(
        id: str | None = None,
        zygote_client: ZygoteClient = zygote,
        ns: str = NS,
        runc_binary: str = "runc",
    ) -> Shim:
        id = id or unique_id("shim")
        config = ShimConfig(
            namespace=ns,
            id=id,
            task_dir=base / "tasks" / ns / id,
            runc_binary=runc_binary,
            runc_root=base / "runc" / ns,
            events_address=f"ipc://{base}/events.sock",
        )
        pid = zygote_client.spawn(config)
        shim = Shim(pid, config, ShimClient(config.task_dir, timeout=15))
        shims.append(shim)
        return shim

    yield spawn_shim
    for shim in shims:
        if shim_alive(shim.pid):
            with contextlib.suppress(Exception):
                shim.client.call("kill", signal=9, all=True, pid=0)
            with contextlib.suppress(Exception):
                wait_until(functools.partial(stopped, shim))
            with contextlib.suppress(Exception):
                shim.client.call("delete")
        shim.client.close()


def stopped(shim: Shim) -> bool:
    return bool(shim.client.call("state")["status"] == "STOPPED")


def bundle_spec(args: list[str], rootfs: Path | str, **process: Any) -> bytes:
    spec = default_spec(args, str(rootfs))
    spec["process"].update(process)
    return json.dumps(spec).encode()


def create(shim: Shim, spec: bytes, **fields: Any) -> int:
    request = {"rootfs": [], "stdin": "", "stdout": "", "stderr": "", "terminal": False}
    request["checkpoint"] = ""
    request.update(fields)
    return int(shim.client.call("create", bundle_spec=spec, **request)["pid"])


def shim_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (nobody may reap it here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)


def mounts_under(path: Path) -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line for line in lines if str(path) in line]


def runc_ids(root: Path) -> list[str]:
    out = subprocess.run(
        ["runc", "--root", str(root), "list", "--format", "json"],
        capture_output=True,
        check=True,
    ).stdout
    return [c["id"] for c in json.loads(out or b"null") or []]


# -- end to end ----------------------------------------------------------------------


@requires_root_and_runc
def test_a_task_that_exits_7_is_recorded_reported_and_deleted_without_a_trace(
    spawn, events, busybox_rootfs, base
):
    shim = spawn()
    cmdline = Path(f"/proc/{shim.pid}/cmdline").read_bytes().rstrip(b"\0")
    assert cmdline == f"berth-shim {NS}/{shim.config.id}".encode()
    assert oct(shim_socket(shim.task_dir).stat().st_mode & 0o777) == "0o600"
    rootfs = shim.task_dir / "bundle" / "rootfs"
    mount = {"type": "bind", "source": str(busybox_rootfs), "target": "", "options": ["rbind"]}
    out = base / f"{shim.config.id}.log"
    spec = bundle_spec(["sh", "-c", "echo hi; exit 7"], rootfs)
    pid = create(shim, spec, rootfs=[mount], stdout=f"file://{out}")
    assert (shim.task_dir / "init.pid").read_text().strip() == str(pid)
    assert shim.client.call("state")["status"] == "CREATED"
    assert mounts_under(shim.task_dir)

    shim.client.call("start")
    event = events.wait(pid)

    assert event["type"] == "EXIT" and event["exit_status"] == 7
    assert event["namespace"] == NS and event["id"] == shim.config.id
    assert read_exits(shim.task_dir) == [
        {"pid": pid, "exit_status": 7, "exited_at_ns": event["exited_at_ns"]}
    ]
    state = shim.client.call("state")
    assert (state["status"], state["exit_status"], state["pid"]) == ("STOPPED", 7, pid)
    assert state["exited_at_ns"] == event["exited_at_ns"]
    with pytest.raises(NotFound):
        shim.client.call("kill", signal=15, all=False, pid=0)
    assert shim.client.call("delete") == {"exit_status": 7, "exited_at_ns": event["exited_at_ns"]}
    assert not shim.task_dir.exists()
    wait_until(lambda: not shim_alive(shim.pid))
    assert not mounts_under(shim.task_dir)
    assert shim.config.id not in runc_ids(shim.config.runc_root)
    assert out.read_text() == "hi\n"


@requires_root_and_runc
def test_sigterm_ends_a_task_with_143_and_sigkill_with_137(spawn, events, busybox_rootfs):
    term, kill = spawn(), spawn()
    spec = json.loads(bundle_spec(["sleep", "30"], busybox_rootfs))
    # Without its own pid namespace, sleep is not an init the kernel shields
    # from signals it has no handler for.
    namespaces = spec["linux"]["namespaces"]
    spec["linux"]["namespaces"] = [ns for ns in namespaces if ns["type"] != "pid"]
    term_pid = create(term, json.dumps(spec).encode())
    kill_pid = create(kill, bundle_spec(["sleep", "30"], busybox_rootfs))
    for shim in (term, kill):
        shim.client.call("start")
        assert shim.client.call("state")["status"] == "RUNNING"
        assert shim.client.call("ps")["pids"]

    term.client.call("kill", signal=signal.SIGTERM, all=False, pid=0)
    kill.client.call("kill", signal=signal.SIGKILL, all=False, pid=kill_pid)

    assert events.wait(term_pid)["exit_status"] == 143
    assert events.wait(kill_pid)["exit_status"] == 137
    assert term.client.call("delete")["exit_status"] == 143
    assert kill.client.call("delete")["exit_status"] == 137


@requires_root_and_runc
def test_exec_reports_its_own_exit_and_a_missing_binary_is_a_failed_precondition(
    spawn, events, busybox_rootfs
):
    shim = spawn()
    init = create(shim, bundle_spec(["sleep", "30"], busybox_rootfs))
    shim.client.call("start")
    env = ["PATH=/bin"]
    process = json.dumps({"args": ["sh", "-c", "exit 3"], "cwd": "/", "env": env}).encode()

    pid = shim.client.call("exec", process=process, stdin="", stdout="", stderr="", terminal=False)[
        "pid"
    ]

    assert pid != init
    assert events.wait(pid)["exit_status"] == 3
    assert shim.client.call("state")["execs"][0]["pid"] == pid
    assert shim.client.call("state")["execs"][0]["exit_status"] == 3
    with pytest.raises(NotFound):
        shim.client.call("kill", signal=9, all=False, pid=pid)
    with pytest.raises(FailedPrecondition, match="no-such-binary"):
        missing = json.dumps({"args": ["/no-such-binary"], "cwd": "/", "env": env}).encode()
        shim.client.call("exec", process=missing, stdin="", stdout="", stderr="", terminal=False)
    with pytest.raises(FailedPrecondition):
        shim.client.call("delete")  # still running
    shim.client.call("kill", signal=9, all=False, pid=0)
    assert events.wait(init)["exit_status"] == 137


def gated_runc(directory: Path, gate: Path, *, hold_exit: bool = False) -> Path:
    """A ``runc`` whose ``exec`` waits until ``gate`` exists, then runs the real one.

    With ``hold_exit`` it runs the real one first and waits for ``gate``
    before exiting with its status, so the exec'd process runs (and may
    exit) while the shim still waits for "runc".
    """
    real = shutil.which("runc")
    assert real is not None
    wrapper = directory / "runc"  # named runc, so the shim's runc shortcuts still apply
    directory.mkdir(parents=True, exist_ok=True)
    wait = f"n=0; while [ ! -e {gate} ] && [ $n -lt 2000 ]; do sleep 0.01; n=$((n+1)); done"
    on_exec = f'{real} "$@"; rc=$?; {wait}; exit $rc' if hold_exit else wait
    wrapper.write_text(
        f'#!/bin/sh\ncase " $* " in *" exec "*) {on_exec};; esac\nexec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def waiting_execs(wrapper: Path) -> int:
    """How many gated ``runc exec`` commands are running now."""
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if str(wrapper).encode() in argv and b"exec" in argv:
                    count += 1
    return count


@requires_root_and_runc
def test_execs_from_two_connections_run_at_once_and_the_shim_answers_while_they_start(
    spawn, events, busybox_rootfs, tmp_path
):
    gate = tmp_path / "gate"
    wrapper = gated_runc(tmp_path / "bin", gate)
    shim = spawn(runc_binary=str(wrapper))
    init = create(shim, bundle_spec(["sleep", "30"], busybox_rootfs))
    shim.client.call("start")
    results: dict[int, Any] = {}

    def run_exec(status: int) -> None:
        process = json.dumps({"args": ["sh", "-c", f"exit {status}"], "env": ["PATH=/bin"]})
        with contextlib.closing(ShimClient(shim.config.task_dir, timeout=30)) as client:
            try:
                results[status] = client.call(
                    "exec", process=process.encode(), stdin="", stdout="", stderr="", terminal=False
                )["pid"]
            except Exception as exc:  # reported by the assertion below
                results[status] = exc

    threads = [threading.Thread(target=run_exec, args=(status,)) for status in (4, 5)]
    for thread in threads:
        thread.start()
    try:
        # Both runc execs are under way at once, and the shim still answers.
        wait_until(lambda: waiting_execs(wrapper) == 2, timeout=10)
        assert shim.client.call("state")["status"] == "RUNNING"
        assert results == {}
    finally:
        gate.touch()
        for thread in threads:
            thread.join(30)
    assert all(isinstance(pid, int) for pid in results.values()), results
    assert len({results[4], results[5], init}) == 3
    assert events.wait(results[4])["exit_status"] == 4
    assert events.wait(results[5])["exit_status"] == 5
    # Only the init's exit goes to the exits file: no exec's is ever replayed.
    wait_until(lambda: len(shim.client.call("state")["execs"]) == 2)
    assert all(e["exited"] for e in shim.client.call("state")["execs"])
    assert {line["pid"] for line in read_exits(shim.config.task_dir)} <= {init}


@requires_root_and_runc
def test_an_exec_that_exits_before_runc_returns_still_gets_its_exit_reported(
    spawn, events, busybox_rootfs, tmp_path
):
    # runc's intermediate process exits first, so the exec'd process is the
    # shim's child, and can be reaped, before runc has said its pid.
    gate = tmp_path / "gate"
    wrapper = gated_runc(tmp_path / "bin", gate, hold_exit=True)
    shim = spawn(runc_binary=str(wrapper))
    create(shim, bundle_spec(["sleep", "30"], busybox_rootfs))
    shim.client.call("start")
    result: list[Any] = []
    process = json.dumps({"args": ["sh", "-c", "exit 6"], "env": ["PATH=/bin"]}).encode()
    thread = threading.Thread(
        target=lambda: result.append(
            shim.client.call(
                "exec", process=process, stdin="", stdout="", stderr="", terminal=False
            )
        )
    )
    thread.start()
    try:
        pid_file = shim.config.task_dir / "exec-1.pid"
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", timeout=10)
        pid = int(pid_file.read_text())
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=10)  # reaped by the shim
        assert result == []
    finally:
        gate.touch()
        thread.join(30)
    assert result[0]["pid"] == pid
    assert events.wait(pid)["exit_status"] == 6


@requires_root_and_runc
def test_a_create_that_fails_leaves_no_task_dir_no_shim_and_no_runc_state(spawn, busybox_rootfs):
    shim = spawn()
    with pytest.raises(FailedPrecondition, match="no-such-binary"):
        create(shim, bundle_spec(["/no-such-binary"], busybox_rootfs))
    assert not shim.task_dir.exists()
    wait_until(lambda: not shim_alive(shim.pid))
    assert shim.config.id not in runc_ids(shim.config.runc_root)


@requires_root_and_runc
def test_deleting_a_created_task_kills_its_init_with_status_137(spawn, events, busybox_rootfs):
    shim = spawn()
    pid = create(shim, bundle_spec(["true"], busybox_rootfs))
    assert shim.client.call("delete")["exit_status"] == 137
    assert events.wait(pid)["exit_status"] == 137
    wait_until(lambda: not shim_alive(shim.pid))


@requires_root_and_runc
def test_a_shim_outlives_its_zygote_and_a_dead_zygote_is_replaced(spawn, busybox_rootfs):
    zygote = ZygoteClient.start()
    try:
        shim = spawn(zygote_client=zygote)
        create(shim, bundle_spec(["sleep", "30"], busybox_rootfs))
        old = zygote.pid
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: not shim_alive(old))
        assert shim.client.call("state")["status"] == "CREATED"
        again = spawn(zygote_client=zygote)
        assert zygote.pid != old and shim_alive(again.pid)
    finally:
        zygote.close()


@requires_root_and_runc
def test_a_second_shim_for_the_same_task_dir_is_refused(spawn):
    first = spawn()
    with pytest.raises(Unavailable, match="another shim"):
        spawn(first.config.id)
    with pytest.raises(FailedPrecondition, match="not created"):
        first.client.call("state")
    assert shim_running(first.task_dir)


@requires_root_and_runc
def test_a_call_to_a_shim_that_died_is_unavailable_at_once(spawn, busybox_rootfs):
    shim = spawn()
    create(shim, bundle_spec(["sleep", "30"], busybox_rootfs))
    os.kill(shim.pid, signal.SIGKILL)
    wait_until(lambda: not shim_running(shim.task_dir))
    started = time.monotonic()
    with pytest.raises(Unavailable, match="not running"):
        shim.client.call("state")
    assert time.monotonic() - started < 1
    # What the daemon does for a dead shim; here, so nothing outlives the test.
    runc = Runc("runc", shim.config.runc_root)
    runc.delete(shim.config.id, force=True)


@requires_root_and_runc
def test_checkpoint_where_criu_cannot_run_is_unavailable_and_the_task_runs_on(
    spawn, busybox_rootfs, base
):
    reason = Runc().criu_available()
    if reason is None:
        pytest.skip("CRIU works on this host")
    shim = spawn()
    create(shim, bundle_spec(["sleep", "30"], busybox_rootfs))
    shim.client.call("start")
    with pytest.raises(Unavailable, match="CRIU"):
        shim.client.call("checkpoint", image_path=str(base / "ckpt"), exit=True)
    assert shim.client.call("state")["status"] == "RUNNING"


@requires_root_and_runc
def test_close_stdin_ends_the_input_of_cat_after_what_was_written(
    spawn, events, busybox_rootfs, base
):
    shim = spawn()
    fifo = base / f"{shim.config.id}.stdin"
    os.mkfifo(fifo)
    out = base / f"{shim.config.id}.out"
    pid = create(
        shim, bundle_spec(["cat"], busybox_rootfs), stdin=str(fifo), stdout=f"file://{out}"
    )
    shim.client.call("start")
    writer = os.open(fifo, os.O_WRONLY)
    try:
        os.write(writer, b"x")
        shim.client.call("close_stdin", pid=0)
        assert events.wait(pid)["exit_status"] == 0
    finally:
        os.close(writer)
    assert out.read_text() == "x"


@requires_root_and_runc
def test_a_terminal_task_sees_the_size_set_before_start(spawn, events, busybox_rootfs, base):
    shim = spawn()
    out = base / f"{shim.config.id}.tty"
    spec = bundle_spec(["sh", "-c", "stty size"], busybox_rootfs, terminal=True)
    pid = create(shim, spec, stdout=f"file://{out}", terminal=True)
    shim.client.call("pty", pid=0, width=100, height=40)
    shim.client.call("start")
    assert events.wait(pid)["exit_status"] == 0
    assert "40 100" in out.read_text()


@requires_root_and_runc
def test_an_exec_with_a_terminal_can_be_resized(spawn, events, busybox_rootfs, base):
    shim = spawn()
    init = create(shim, bundle_spec(["sleep", "30"], busybox_rootfs))
    shim.client.call("start")
    out = base / f"{shim.config.id}.exec.tty"
    args = ["sh", "-c", "sleep 0.3; stty size"]
    process = json.dumps({"args": args, "cwd": "/", "env": ["PATH=/bin"], "terminal": True})
    pid = shim.client.call(
        "exec", process=process.encode(), stdin="", stdout=f"file://{out}", stderr="", terminal=True
    )["pid"]
    shim.client.call("pty", pid=pid, width=90, height=30)
    assert events.wait(pid)["exit_status"] == 0
    assert "30 90" in out.read_text()
    shim.client.call("kill", signal=9, all=False, pid=0)
    assert events.wait(init)["exit_status"] == 137


@requires_root_and_runc
def test_a_task_dir_too_deep_for_a_unix_address_still_serves_and_gets_its_terminal(
    spawn, events, busybox_rootfs, base
):
    # Longest namespace and id the wire allows: the socket paths exceed 108 bytes.
    shim = spawn(id="i" * 76, ns="n" * 76)
    assert len(str(shim_socket(shim.task_dir))) > 108
    out = base / "deep.tty"
    spec = bundle_spec(["sh", "-c", "stty size"], busybox_rootfs, terminal=True)
    pid = create(shim, spec, stdout=f"file://{out}", terminal=True)
    shim.client.call("pty", pid=0, width=80, height=24)
    shim.client.call("start")
    assert events.wait(pid)["exit_status"] == 0
    assert "24 80" in out.read_text()
    shim.client.call("delete")
    assert not shim.task_dir.exists()


@requires_root_and_runc
def test_an_exit_while_no_daemon_listens_is_sent_once_one_does(zygote, busybox_rootfs, base):
    id = unique_id("late")
    address = base / f"{id}.events"
    config = ShimConfig(
        NS, id, base / "tasks" / NS / id, "runc", base / "runc" / NS, f"ipc://{address}"
    )
    zygote.spawn(config)
    client = ShimClient(config.task_dir, timeout=15)
    try:
        pid = create(Shim(0, config, client), bundle_spec(["sh", "-c", "exit 5"], busybox_rootfs))
        client.call("start")
        wait_until(lambda: bool(read_exits(config.task_dir)))
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            listener.bind(str(address))
            assert select.select([listener], [], [], 5)[0], "the shim did not send again"
            event = msgpack.unpackb(listener.recv(65536))
        finally:
            listener.close()
        assert (event["pid"], event["exit_status"], event["id"]) == (pid, 5, id)
        client.call("delete")
    finally:
        client.close()


@requires_root_and_runc
def test_memory_of_ten_idle_shims_is_printed(spawn, busybox_rootfs):
    shims = [spawn() for _ in range(10)]
    for shim in shims:
        create(shim, bundle_spec(["sleep", "30"], busybox_rootfs))
        shim.client.call("start")
    time.sleep(0.2)
    pss = [pss_kib(shim.pid) for shim in shims]
    print(
        f"\nshim PSS with 10 shims: mean {sum(pss) / len(pss) / 1024:.2f} MiB, "
        f"min {min(pss) / 1024:.2f}, max {max(pss) / 1024:.2f} (KiB: {pss})"
    )


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise AssertionError("no Pss line")
