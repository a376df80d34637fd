"""berthd as a process: crash safety, shutdown, the root lock, socket security."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time

import pytest
import zmq

import berth
from tests.integration.conftest import make_daemon

SPEC = {"process": {"args": ["true"]}, "root": {"path": "/"}}


def _writer(address, prefix, acked, stop):
    with berth.Client(address, timeout=3) as client:
        i = 0
        while not stop.is_set():
            cid = f"{prefix}-{i}"
            try:
                client.containers.create(cid, spec=SPEC, labels={"n": str(i)})
            except (berth.BerthError, zmq.ZMQError):
                return
            acked.append(cid)
            i += 1


def test_every_acknowledged_create_survives_a_sigkill_during_8_concurrent_writers(tmp_path):
    d = make_daemon(tmp_path).start()
    acked: list[str] = []
    stop = threading.Event()
    writers = [
        threading.Thread(target=_writer, args=(d.address, f"w{n}", acked, stop)) for n in range(8)
    ]
    for w in writers:
        w.start()
    deadline = time.monotonic() + 10
    while len(acked) < 400 and time.monotonic() < deadline:
        time.sleep(0.01)
    d.kill()  # mid-stream: writes are in flight right now
    stop.set()
    for w in writers:
        w.join(10)
    snapshot = list(acked)
    assert len(snapshot) >= 400
    d.start()
    try:
        with berth.Client(d.address) as client:
            stored = {c["id"]: c for c in client.containers.list()}
            missing = [cid for cid in snapshot if cid not in stored]
            assert missing == [], f"{len(missing)} acknowledged creates lost"
            for cid, c in stored.items():
                # Nothing half-written: every stored record is whole.
                assert c["labels"]["n"] == cid.rsplit("-", 1)[1]
                assert c["spec"]["type_url"].endswith("runtime-spec/1/Spec")
                assert c["created_at"] is not None
            client.containers.create("after-restart", spec=SPEC)
    finally:
        d.stop()


def test_sigterm_finishes_in_flight_writes_and_exits_0(tmp_path):
    d = make_daemon(tmp_path).start()
    acked: list[str] = []
    stop = threading.Event()
    writers = [
        threading.Thread(target=_writer, args=(d.address, f"t{n}", acked, stop)) for n in range(4)
    ]
    for w in writers:
        w.start()
    while len(acked) < 100:
        time.sleep(0.01)
    assert d.stop() == 0
    stop.set()
    for w in writers:
        w.join(10)
    d.start()
    try:
        with berth.Client(d.address) as client:
            stored = {c["id"] for c in client.containers.list()}
        assert set(acked) <= stored
    finally:
        assert d.stop() == 0


def test_a_second_daemon_on_the_same_root_exits_non_zero_with_a_clear_message(daemon, tmp_path):
    second = make_daemon(tmp_path)
    second.root = daemon.root
    second.start(wait=False)
    assert second.proc is not None
    assert second.proc.wait(20) == 1
    assert "in use by another berthd" in second.log_text()
    with berth.Client(daemon.address) as client:
        assert client.version()["version"] == berth.__version__


def test_the_ipc_socket_is_owner_only_and_the_process_is_titled_berthd(daemon):
    sock = daemon.address.removeprefix("ipc://")
    mode = stat.S_IMODE(os.stat(sock).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(daemon.state).st_mode) == 0o700
    assert daemon.proc is not None
    with open(f"/proc/{daemon.proc.pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0].startswith(b"berthd")


def test_a_plain_text_tcp_address_is_refused_at_start_up(tmp_path):
    d = make_daemon(tmp_path, "--address", "tcp://127.0.0.1:0")
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(20) == 1
    assert "CURVE" in d.log_text()


def test_a_bad_config_file_is_refused_with_exit_2(tmp_path):
    config = tmp_path / "berthd.toml"
    config.write_text("max_streams = 'many'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "berth.daemon", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 2
    assert "max_streams" in proc.stderr


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tcp_serves_curve_clients_on_the_allow_list_and_no_one_else(tmp_path):
    allowed_pub, allowed_sec = zmq.curve_keypair()
    stranger_pub, stranger_sec = zmq.curve_keypair()
    curve = tmp_path / "root" / "curve"
    curve.mkdir(parents=True)
    (curve / "clients.allow").write_text(f"# test client\n{allowed_pub.decode()}\n")
    tcp = f"tcp://127.0.0.1:{_free_port()}"
    d = make_daemon(tmp_path, "--address", tcp).start()
    try:
        server_key = (curve / "server.public").read_bytes().strip()
        assert stat.S_IMODE(os.stat(curve / "server.secret").st_mode) == 0o600
        with berth.Client(
            tcp, timeout=5, server_public_key=server_key, client_keypair=(allowed_pub, allowed_sec)
        ) as client:
            assert client.version()["version"] == berth.__version__
        with (
            berth.Client(
                tcp,
                timeout=1,
                server_public_key=server_key,
                client_keypair=(stranger_pub, stranger_sec),
            ) as client,
            pytest.raises(berth.DeadlineExceeded),
        ):
            client.version()
        # A plain-text client gets nothing either.
        with berth.Client(tcp, timeout=1) as client, pytest.raises(berth.DeadlineExceeded):
            client.version()
    finally:
        d.stop()


def test_sigterm_delivered_to_a_worker_thread_still_stops_the_daemon(tmp_path):
    """Regression: SIGTERM landing on a non-main thread left berthd running."""
    import ctypes
    import signal

    d = make_daemon(tmp_path).start()
    assert d.proc is not None
    with berth.Client(d.address, timeout=5) as client:
        client.version()  # every thread is up
    tids = sorted(int(t) for t in os.listdir(f"/proc/{d.proc.pid}/task"))
    worker = next(t for t in tids if t != d.proc.pid)
    libc = ctypes.CDLL(None, use_errno=True)
    sys_tgkill = 234  # x86_64
    try:
        assert libc.syscall(sys_tgkill, d.proc.pid, worker, signal.SIGTERM) == 0
        assert d.proc.wait(10) == 0
    finally:
        if d.proc.poll() is None:
            d.kill()


def test_a_root_whose_snapshots_belong_to_another_snapshotter_is_refused(tmp_path):
    d = make_daemon(tmp_path).start()
    with berth.Client(d.address) as client:
        client.snapshots.prepare("scratch")
    assert d.stop() == 0
    if not (d.root / "snapshots" / "overlayfs" / "snapshots").is_dir():
        pytest.skip("overlayfs cannot mount here, so there is no other snapshotter to switch to")
    config = tmp_path / "native.toml"
    config.write_text('snapshotter = "native"\n')
    again = make_daemon(tmp_path, "--config", str(config))
    again.start(wait=False)
    assert again.proc is not None
    assert again.proc.wait(20) == 1
    assert 'set snapshotter = "overlayfs"' in again.log_text()
