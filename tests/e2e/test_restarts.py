"""Restart policies on real tasks: restarts on exit, backoff, requested stops, daemon restarts."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import berth
from tests.e2e.conftest import requires_root_and_runc
from tests.e2e.test_tasks_reliability import Berthd
from tests.e2e.test_tasks_service import make_spec, wait_status

pytestmark = requires_root_and_runc

POLICY = "containerd.io/restart.policy"
FAST = {"berth.io/restart.backoff-base": "20ms", "berth.io/restart.backoff-max": "200ms"}
WAIT = 30.0


@pytest.fixture
def berthd(tmp_path: Path) -> Iterator[Berthd]:
    b = Berthd(tmp_path)
    b.d.start()
    try:
        yield b
    finally:
        b.teardown()


def latest(client: berth.Client) -> int:
    seq: int = client.call("berth.v1.Events/Info", {})["latest_seq"]
    return seq


def events_until(
    client: berth.Client, after: int, cid: str, done: Any, timeout: float = WAIT
) -> list[dict[str, Any]]:
    """The container's events after ``after`` until ``done(events)`` is true."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    stream = client.stream(
        "berth.v1.Events/Subscribe", {"after_seq": after, "filter": f"id=={cid}"}
    )
    try:
        for frame in stream:
            seen.extend(frame["events"])
            if done(seen):
                return seen
            if time.monotonic() > deadline:
                break
    finally:
        stream.close()
    raise AssertionError(f"{cid}: gave up waiting; saw {[e['topic'] for e in seen]}")


def topics(events: list[dict[str, Any]]) -> list[str]:
    return [e["topic"] for e in events]


def supervised(
    client: berth.Client, cid: str, root: Path, args: list[str], labels: dict[str, str]
) -> int:
    """Create and start a supervised task; the seq before its task's create."""
    client.containers.create(cid, spec=make_spec(root, args), labels=labels)
    mark = latest(client)
    client.tasks.create(cid)
    client.tasks.start(cid)
    return mark


def test_on_failure_3_restarts_exactly_three_times_then_gives_up(
    berthd: Berthd, busybox_rootfs: Path
) -> None:
    cid = berthd.new_id("rs-onfail")
    with berthd.client() as client:
        start = supervised(
            client, cid, busybox_rootfs, ["sh", "-c", "exit 1"], {POLICY: "on-failure:3", **FAST}
        )
        seen = events_until(client, start, cid, lambda ev: "/tasks/gave-up" in topics(ev))
        assert topics(seen).count("/tasks/restarted") == 3
        assert topics(seen).count("/tasks/exit") == 4
        assert topics(seen).count("/tasks/restart-scheduled") == 3
        gave_up = seen[-1]["payload"]
        assert gave_up["restart_count"] == 3 and "3 restarts" in gave_up["reason"]
        task = wait_status(client, cid, "STOPPED")
        assert task["exit_status"] == 1
        client.tasks.delete(cid)
        client.containers.delete(cid)


def logged_since(client: berth.Client, after: int, cid: str) -> list[dict[str, Any]]:
    """The container's events from ``after`` to the latest seq now."""
    upto = latest(client)
    if upto <= after:
        return []
    seen: list[dict[str, Any]] = []
    stream = client.stream(
        "berth.v1.Events/Subscribe", {"after_seq": after, "filter": f"id=={cid}"}
    )
    try:
        for frame in stream:
            seen.extend(frame["events"])
            if frame["seq"] >= upto:
                return seen
    finally:
        stream.close()
    return seen


def test_always_restarts_a_clean_exit_and_a_kill_through_the_api_stops_it(
    berthd: Berthd, busybox_rootfs: Path
) -> None:
    cid = berthd.new_id("rs-always")
    with berthd.client() as client:
        start = latest(client)
        args = ["sh", "-c", "sleep 0.3"]
        supervised(client, cid, busybox_rootfs, args, {POLICY: "always", **FAST})
        seen = events_until(
            client, start, cid, lambda ev: topics(ev).count("/tasks/restarted") >= 2
        )
        assert all(e["payload"]["exit_status"] == 0 for e in seen if e["topic"] == "/tasks/exit")
        client.tasks.kill(cid, signal.SIGKILL)
        mark = latest(client)
        wait_status(client, cid, "STOPPED")
        time.sleep(1.0)  # ten times the first backoff step
        after = logged_since(client, mark, cid)
        assert "/tasks/restart-scheduled" not in topics(after), topics(after)
        assert "/tasks/restarted" not in topics(after), topics(after)
        assert client.tasks.info(cid)["status"] == "STOPPED"
        client.tasks.delete(cid)
        client.containers.delete(cid)
