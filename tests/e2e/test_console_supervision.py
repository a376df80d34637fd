"""``berth run --restart/--health-*``, ``tasks ls``'s columns and ``berth supervision``, real runc.

One daemon serves the module, with the busybox image imported once, as in
:mod:`tests.e2e.test_console`. Each test runs its containers detached
(a restarting task needs ``-d``) and removes them at the end.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import berth
from tests.e2e.conftest import requires_root_and_runc
from tests.image_archives import busybox_layer, oci_archive
from tests.integration.cli_driver import Result, spawn_console
from tests.integration.cli_driver import berth as run_berth
from tests.integration.conftest import DaemonProcess, make_daemon

pytestmark = requires_root_and_runc

IMAGE = "busybox:test"
_ids = itertools.count()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = make_daemon(tmp_path_factory.mktemp("console-supervision")).start()
    archive = tmp_path_factory.mktemp("archive") / "busybox.tar"
    oci_archive(archive, [busybox_layer()], name=IMAGE)
    try:
        imported = run_berth(d.address, "images", "import", str(archive))
        assert imported.code == 0, imported.err
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            for task in run_berth(d.address, "--json", "tasks", "ls").json() or []:
                run_berth(d.address, "tasks", "rm", "-f", task["id"])
            for container in run_berth(d.address, "--json", "containers", "ls").json() or []:
                run_berth(d.address, "containers", "rm", container["id"])
            d.stop()
        subprocess.run(["rm", "-rf", str(d.state)], check=False)


def new_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def ok(daemon: DaemonProcess, *args: str) -> Result:
    result = run_berth(daemon.address, *args)
    assert (result.code, result.err) == (0, ""), (args, result)
    return result


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``check()``'s first truthy value, tried every 50 ms for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"not within {timeout}s"
            return value
        time.sleep(0.05)


def remove(daemon: DaemonProcess, cid: str) -> None:
    run_berth(daemon.address, "tasks", "rm", "-f", cid)
    ok(daemon, "containers", "rm", cid)


def column(result: Result, task: str, name: str) -> str:
    """The cell of ``tasks ls``'s column ``name`` in ``task``'s row."""
    header, *rows = result.rows()
    assert name in header, header
    (row,) = [r for r in rows if r[0] == task]
    return row[header.index(name)]


def test_on_failure_2_restarts_twice_then_the_container_is_failed(daemon: DaemonProcess) -> None:
    cid = new_id("crash")
    ok(daemon, "run", "-d", "--restart", "on-failure:2", "--restart-backoff", "20ms",
       IMAGE, cid, "sh", "-c", "exit 1")  # fmt: skip
    try:

        def failed() -> dict[str, str] | None:
            fields = ok(daemon, "supervision", cid).fields()
            return fields if fields["state"] == "FAILED" else None

        fields = eventually(failed)
        assert fields["container_id"] == cid
        assert fields["policy"] == "on-failure:2"
        assert fields["desired"] == "running"
        assert fields["restart_count"] == "2"
        assert fields["reason"] == "on-failure: 2 restarts reached"
        assert fields["next_restart_at"] == "-"
        as_json = ok(daemon, "--json", "supervision", cid).json()
        assert [e["exit_status"] for e in as_json["last_exits"]] == [1, 1, 1]
        assert as_json["health"] is None and as_json["next_restart_at"] is None

        listed = ok(daemon, "tasks", "ls")
        assert column(listed, cid, "STATUS") == "STOPPED"
        assert column(listed, cid, "EXIT") == "1"
        assert column(listed, cid, "RESTARTS") == "2"
        assert column(listed, cid, "HEALTH") == "-"

        header, *rows = ok(daemon, "sv").rows()
        assert header[:5] == ["CONTAINER", "POLICY", "DESIRED", "STATE", "RESTARTS"]
        assert [cid, "on-failure:2", "running", "FAILED", "2"] in [r[:5] for r in rows]
    finally:
        remove(daemon, cid)


def test_a_health_cmd_makes_the_task_healthy_and_tasks_ls_shows_it(daemon: DaemonProcess) -> None:
    cid = new_id("healthy")
    ok(daemon, "run", "-d", "--health-cmd", "true", "--health-interval", "200ms",
       IMAGE, cid, "sleep", "60")  # fmt: skip
    try:
        eventually(lambda: column(ok(daemon, "tasks", "ls"), cid, "HEALTH") == "healthy", 5.0)
        listed = ok(daemon, "tasks", "ls")
        assert column(listed, cid, "STATUS") == "RUNNING"
        assert column(listed, cid, "RESTARTS") == "-"  # no policy
        shown = ok(daemon, "supervision", cid)
        fields = shown.fields()
        assert (fields["policy"], fields["state"], fields["health"]) == ("no", "RUNNING", "healthy")
        assert fields["failing_streak"] == "0"
        assert "health log:" in shown.out
        log = ok(daemon, "--json", "sv", cid).json()["health"]["log"]
        assert log and all(r["exit_code"] == 0 for r in log)
        labels = ok(daemon, "--json", "containers", "info", cid).json()["labels"]
        assert labels == {"berth.io/health.cmd": "true", "berth.io/health.interval": "200ms"}
    finally:
        remove(daemon, cid)


def test_the_flags_become_labels_the_daemon_accepts_and_the_client_reads_them_back(
    daemon: DaemonProcess,
) -> None:
    cid = new_id("flags")
    ok(daemon, "containers", "create", "--restart", "always", "--restart-backoff", "1s",
       "--restart-backoff-max", "5s", "--health-cmd", "test -d /", "--health-timeout", "2s",
       "--health-retries", "2", "--health-start-period", "1s", "--health-start-interval", "500ms",
       "--health-on-failure", "restart", IMAGE, cid, "sleep", "60")  # fmt: skip
    try:
        labels = ok(daemon, "--json", "containers", "info", cid).json()["labels"]
        assert labels == {
            **berth.restart_labels("always", backoff_base="1s", backoff_max="5s"),
            **berth.health_labels(
                "test -d /",
                timeout=2,
                retries=2,
                start_period=1.0,
                start_interval=0.5,
                on_failure="restart",
            ),
        }
        with berth.Client(daemon.address) as client:
            sv = client.supervision.get(cid)
            assert (sv["policy"], sv["state"], sv["restart_count"]) == ("always", "STOPPED", 0)
            assert cid in [s["container_id"] for s in client.supervision.list()]
            with pytest.raises(berth.NotFound):
                client.supervision.get("no-such-container")

        async def read_async() -> tuple[dict[str, Any], list[dict[str, Any]]]:
            async with berth.AsyncClient(daemon.address) as client:
                return await client.supervision.get(cid), await client.supervision.list()

        one, every = asyncio.run(read_async())
        assert one["container_id"] == cid and cid in [s["container_id"] for s in every]
    finally:
        ok(daemon, "containers", "rm", cid)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--restart", "sometimes"], "run: --restart: "),
        (["-d", "--restart", "always", "--restart-backoff", "fast"], "run: --restart-backoff: "),
        (["-d", "--restart-backoff", "1s"], "run: --restart-backoff needs --restart"),
        (["--health-interval", "1s"], "run: --health-interval needs --health-cmd"),
        (["--health-cmd", "true", "--health-interval", "10ms"], "run: --health-interval: "),
        (["--restart", "always"], "run: --restart needs -d"),
        (["--health-cmd", "true", "--health-on-failure", "restart"], "run: --health-on-failure"),
    ],
)
def test_bad_or_lone_flags_are_usage_errors_and_create_nothing(
    daemon: DaemonProcess, args: list[str], message: str
) -> None:
    cid = new_id("bad")
    result = run_berth(daemon.address, "run", *args, IMAGE, cid, "true")
    assert result.code == 2, result
    assert result.err.startswith(f"berth: usage: {message}"), result.err
    assert cid not in {c["id"] for c in ok(daemon, "--json", "containers", "ls").json()}


def test_the_console_completes_supervision_and_its_container(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    cid = new_id("complete")
    ok(daemon, "containers", "create", "--restart", "always", IMAGE, cid, "true")
    child = spawn_console(daemon.address, tmp_path / "history")
    try:
        child.send("supervi\t")
        child.expect_exact("sion")  # the rest of the command's name
        child.send(f" {cid[:-1]}\t")
        child.send("\r")
        child.expect(rf"container_id:\s+{cid}\s")  # Tab completed the id
        child.expect(r"policy:\s+always")
        child.expect(r"state:\s+STOPPED")
    finally:
        child.close(force=True)
        ok(daemon, "containers", "rm", cid)
