"""``berth events`` and ``client.events.subscribe`` against a real daemon, across its restart.

A module daemon serves the console tests (containers made and deleted
through the client, the log read back through the CLI, one-shot and
followed on a pty); each restart test runs its own daemon and stops it
(SIGTERM, or SIGKILL) mid-subscription, then starts it again on the same
root and address, as :mod:`tests.e2e.test_tasks_reliability` does.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import berth
from tests.e2e.conftest import requires_root_and_runc
from tests.integration.cli_driver import ROOT, spawn_berth
from tests.integration.cli_driver import berth as run_berth
from tests.integration.conftest import DaemonProcess, make_daemon

pytestmark = requires_root_and_runc

NO_HISTORY = Path("/dev/null")  # one-shot commands keep none
SPEC = {"process": {"args": ["true"]}, "root": {"path": "/nonexistent"}}
CALL_TIMEOUT = 30.0
_ids = itertools.count()


def new_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def stop_and_clean(d: DaemonProcess) -> None:
    if d.proc is not None and d.proc.poll() is None:
        d.stop()
    subprocess.run(["rm", "-rf", str(d.state)], check=False)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = make_daemon(tmp_path_factory.mktemp("console-events")).start()
    try:
        yield d
    finally:
        stop_and_clean(d)


@pytest.fixture
def own_daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A daemon of the test's own, which it may stop and start again."""
    d = make_daemon(tmp_path).start()
    try:
        yield d
    finally:
        stop_and_clean(d)


def create_and_delete(address: str, cid: str) -> None:
    with berth.Client(address, timeout=CALL_TIMEOUT) as client:
        client.containers.create(cid, spec=SPEC)
        client.containers.delete(cid)


def follow_json(
    address: str, *args: str, until: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """``berth events --json ARGS`` read up to the event ``until`` accepts, then Ctrl-C."""

    proc = subprocess.Popen(
        [sys.executable, "-m", "berth.cli", "-a", address, "events", "--json", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(json.loads(line))
            if until(seen[-1]):
                break
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return seen


def test_events_since_0_json_replays_a_create_and_delete_with_consecutive_seqs(
    daemon: DaemonProcess,
) -> None:
    cid = new_id("evlog")
    create_and_delete(daemon.address, cid)
    seen = follow_json(
        daemon.address,
        "--since",
        "0",
        until=lambda e: e["id"] == cid and e["topic"] == "/containers/delete",
    )
    ours = [e for e in seen if e["id"] == cid]
    assert [e["topic"] for e in ours] == ["/containers/create", "/containers/delete"]
    assert ours[1]["seq"] == ours[0]["seq"] + 1
    assert ours[0]["payload"]["id"] == cid and ours[0]["type"] == "CREATE"
    assert ours[1]["payload"] == {"id": cid} and ours[1]["type"] == "DELETE"
    assert ours[0]["namespace"] == "default" and ours[0]["timestamp"].endswith("Z")
    seqs = [e["seq"] for e in seen]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a gap or a repeat in the replay"

    info = run_berth(daemon.address, "events", "info")
    assert info.code == 0, info.err
    figures = {k: int(v) for k, v in info.fields().items()}
    assert set(figures) == {"oldest_seq", "latest_seq", "count", "bytes"}
    assert figures["oldest_seq"] <= ours[0]["seq"] and figures["latest_seq"] >= ours[1]["seq"]
    assert figures["count"] >= 2 and figures["bytes"] > 0
    as_json = run_berth(daemon.address, "--json", "events", "info").json()
    assert as_json["latest_seq"] >= ours[1]["seq"]


def test_events_since_a_seq_shows_lines_after_it_and_a_filter_selects(
    daemon: DaemonProcess,
) -> None:
    with berth.Client(daemon.address, timeout=CALL_TIMEOUT) as client:
        before = client.events.info()["latest_seq"]
    cid = new_id("evline")
    create_and_delete(daemon.address, cid)
    shown = run_berth(
        daemon.address, "events", "--since", str(before), "--filter", f"id=={cid}", "-n", "2"
    )
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    assert len(lines) == 2
    create, delete = (line.split() for line in lines)
    assert create[0] == str(before + 1) and delete[0] == str(before + 2)
    assert create[2:5] == ["default", "/containers/create", cid]
    assert delete[2:5] == ["default", "/containers/delete", cid]
    assert f"id={cid}" in lines[1]


def test_events_follows_from_now_on_until_ctrl_c(daemon: DaemonProcess) -> None:
    cid = new_id("evlive")
    child = spawn_berth(daemon.address, "events", "--filter", f"id=={cid}", history=NO_HISTORY)
    try:
        child.expect_exact("following the event log from seq")  # subscribed
        create_and_delete(daemon.address, cid)
        child.expect(rf"\d+ \S+Z default /containers/create {cid}")
        child.expect(rf"\d+ \S+Z default /containers/delete {cid}")
        child.sendintr()
        child.expect(pexpect_eof())
        child.close()
        assert child.exitstatus == 0
    finally:
        child.close(force=True)


def test_out_of_range_and_a_bad_filter_are_one_line_errors(daemon: DaemonProcess) -> None:
    beyond = run_berth(daemon.address, "events", "--since", "999999999")
    assert beyond.code == 1 and beyond.err.startswith("berth: OUT_OF_RANGE: after_seq 999999999")
    bad = run_berth(daemon.address, "events", "--filter", "topic==")
    assert bad.code == 1 and bad.err.startswith("berth: INVALID_ARGUMENT: filter")


def pexpect_eof() -> Any:
    import pexpect

    return pexpect.EOF


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_subscription_survives_a_daemon_restart_with_no_duplicate_and_no_gap(
    own_daemon: DaemonProcess, how: str
) -> None:
    d = own_daemon
    with berth.Client(d.address, timeout=CALL_TIMEOUT) as client:
        client.containers.create(new_id("warm"), spec=SPEC)  # the namespace is in the log
        start = client.events.info()["latest_seq"]
        # SIGKILL ends nothing on the wire: the silence is what tells, so keep it short.
        events = client.events.subscribe(after_seq=start, idle_timeout=6.0)
        before = new_id("before")
        client.containers.create(before, spec=SPEC)
        first = next(events)
        assert (first["seq"], first["topic"], first["id"]) == (
            start + 1,
            "/containers/create",
            before,
        )
        assert events.seq == start + 1

        d.stop(getattr(signal, how))
        d.start()

        after = new_id("after")
        # The same client: its socket reconnects by itself.
        client.containers.create(after, spec=SPEC)
        client.containers.delete(after)
        rest = [next(events) for _ in range(2)]
        events.close()
    assert [(e["topic"], e["id"]) for e in rest] == [
        ("/containers/create", after),
        ("/containers/delete", after),
    ]
    assert [e["seq"] for e in rest] == [start + 2, start + 3], "a duplicate or a gap"
    assert events.seq == start + 3
