"""``berth`` with real runc tasks: ``run`` one-shot, and the console through a real pty.

One daemon serves the module, with the busybox image imported once. The
console is driven with pexpect as a person would: it types, presses Tab,
Ctrl-C and Ctrl-D, resizes the terminal, and reads the screen's bytes.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import requires_root_and_runc
from tests.image_archives import busybox_layer, oci_archive
from tests.integration.cli_driver import (
    PROMPT,
    Result,
    berth,
    plain,
    spawn_berth,
    spawn_console,
)
from tests.integration.conftest import DaemonProcess, make_daemon

pexpect = pytest.importorskip("pexpect")

pytestmark = requires_root_and_runc

IMAGE = "busybox:test"
NO_HISTORY = Path("/dev/null")  # one-shot commands keep none
_ids = itertools.count()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = make_daemon(tmp_path_factory.mktemp("console")).start()
    archive = tmp_path_factory.mktemp("archive") / "busybox.tar"
    oci_archive(archive, [busybox_layer()], name=IMAGE)
    try:
        imported = berth(d.address, "images", "import", str(archive))
        assert imported.code == 0, imported.err
        yield d
    finally:
        _remove_everything(d)
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        subprocess.run(["rm", "-rf", str(d.state)], check=False)


def _remove_everything(d: DaemonProcess) -> None:
    """What a failed test left: tasks killed and deleted, containers deleted."""
    if d.proc is None or d.proc.poll() is not None:
        return
    for task in berth(d.address, "--json", "tasks", "ls").json() or []:
        berth(d.address, "tasks", "rm", "-f", task["id"])
    for container in berth(d.address, "--json", "containers", "ls").json() or []:
        berth(d.address, "containers", "rm", container["id"])


@pytest.fixture
def console(daemon: DaemonProcess, tmp_path: Path) -> Iterator[Any]:
    child = spawn_console(daemon.address, tmp_path / "history")
    try:
        yield child
    finally:
        child.close(force=True)


def new_id(prefix: str = "con") -> str:
    return f"{prefix}-{next(_ids)}"


def ok(daemon: DaemonProcess, *args: str) -> Result:
    result = berth(daemon.address, *args)
    assert (result.code, result.err) == (0, ""), (args, result)
    return result


def container_ids(daemon: DaemonProcess) -> set[str]:
    return {c["id"] for c in ok(daemon, "--json", "containers", "ls").json()}


def expect_prompt_back(child: Any) -> None:
    """The prompt is shown again and takes a command."""
    child.expect_exact(PROMPT)
    child.sendline("version")
    child.expect_exact("server: 0.1.0")
    child.expect_exact(PROMPT)


# --- one-shot run and tasks ---------------------------------------------------------


def test_run_rm_prints_the_output_exits_with_the_status_and_leaves_nothing(
    daemon: DaemonProcess,
) -> None:
    cid = new_id("run")
    result = berth(
        daemon.address, "run", "--rm", IMAGE, cid, "sh", "-c", "echo out; echo err >&2; exit 3"
    )
    assert (result.code, result.out, result.err) == (3, "out\n", "err\n")
    assert cid not in container_ids(daemon)
    assert cid not in {s["name"] for s in ok(daemon, "--json", "snapshots", "ls").json()}
    assert ok(daemon, "--json", "tasks", "ls").json() == []


def test_run_passes_stdin_env_and_cwd_and_keeps_the_container_without_rm(
    daemon: DaemonProcess,
) -> None:
    cid = new_id("run")
    result = berth(
        daemon.address,
        "run", "--env", "GREETING=hi", "--cwd", "/etc", "--label", "kind=test",
        IMAGE, cid, "sh", "-c", 'read line; echo "$GREETING $line $(pwd)"',
        stdin="typed\n",
    )  # fmt: skip
    assert (result.code, result.out) == (0, "hi typed /etc\n")
    info = ok(daemon, "--json", "containers", "info", cid).json()
    assert info["labels"] == {"kind": "test"}
    assert ok(daemon, "--json", "tasks", "ls").json() == []  # run deletes its task
    ok(daemon, "containers", "rm", cid)


def test_run_without_a_command_runs_the_images_with_its_environment(
    daemon: DaemonProcess,
) -> None:
    cid = new_id("run")
    # The image's config says Cmd ["/bin/sh"], Env ["PATH=/bin"].
    result = berth(daemon.address, "run", "--rm", IMAGE, cid, stdin='echo "$PATH $(pwd)"\n')
    assert (result.code, result.out, result.err) == (0, "/bin /\n", "")


def test_tasks_start_runs_a_created_container_attached(daemon: DaemonProcess) -> None:
    cid = new_id("start")
    ok(daemon, "containers", "create", IMAGE, cid, "sh", "-c", "echo started; exit 2")
    result = berth(daemon.address, "tasks", "start", cid)
    assert (result.code, result.out) == (2, "started\n")
    assert ok(daemon, "--json", "tasks", "ls").json() == []  # deleted at its end, as ctr does
    ok(daemon, "containers", "rm", cid)


def test_a_detached_task_is_listed_exec_killed_and_removed(daemon: DaemonProcess) -> None:
    cid = new_id("bg")
    ok(daemon, "run", "-d", IMAGE, cid, "sleep", "60")
    [task] = ok(daemon, "--json", "tasks", "ls").json()
    assert (task["id"], task["status"]) == (cid, "RUNNING")
    assert [cid, str(task["pid"]), "RUNNING"] in [r[:3] for r in ok(daemon, "tasks", "ls").rows()]
    assert str(task["pid"]) in ok(daemon, "tasks", "ps", cid).out

    execd = berth(daemon.address, "tasks", "exec", cid, "sh", "-c", "echo inside; exit 4")
    assert (execd.code, execd.out) == (4, "inside\n")

    ok(daemon, "tasks", "pause", cid)
    assert ok(daemon, "tasks", "info", cid).fields()["status"] == "PAUSED"
    ok(daemon, "tasks", "resume", cid)
    busy = berth(daemon.address, "tasks", "rm", cid)
    assert busy.code == 1
    assert busy.err.startswith("berth: FAILED_PRECONDITION: ")
    ok(daemon, "tasks", "kill", "-s", "KILL", cid)
    deadline = time.monotonic() + 10
    while ok(daemon, "tasks", "info", "--json", cid).json()["status"] != "STOPPED":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert ok(daemon, "--json", "tasks", "rm", cid).json()[0]["exit_status"] == 137
    ok(daemon, "containers", "rm", cid)


# --- the console --------------------------------------------------------------------


def test_tab_lists_the_live_container_ids(daemon: DaemonProcess, console: Any) -> None:
    ids = [f"pick-{name}-{next(_ids)}" for name in ("alpha", "bravo")]
    for cid in ids:
        ok(daemon, "containers", "create", IMAGE, cid, "true")
    try:
        console.send("containers info pick-")
        console.send("\t")
        console.expect_exact(ids[0])
        console.expect_exact(ids[1])
        console.send("\x03")  # Ctrl-C drops the line
        expect_prompt_back(console)
    finally:
        ok(daemon, "containers", "rm", *ids)


def test_run_rm_in_the_console_shows_the_output(daemon: DaemonProcess, console: Any) -> None:
    cid = new_id("crun")
    console.sendline(f"run --rm {IMAGE} {cid} sh -c 'echo from-$((6*7))'")
    console.expect_exact("from-42")
    expect_prompt_back(console)
    assert cid not in container_ids(daemon)


def test_a_bad_command_prints_one_error_line_and_the_prompt_comes_back(console: Any) -> None:
    console.sendline("containers bogus")
    console.expect(r"berth: usage: containers: unknown command 'bogus'[^\n]*\n")
    console.expect_exact(PROMPT)
    assert plain(console.before).strip() == ""  # nothing else was printed
    console.sendline("containers info no-such-container")
    console.expect_exact('berth: NOT_FOUND: container "no-such-container": not found')
    assert "Traceback" not in console.before
    expect_prompt_back(console)


def test_history_survives_a_restart_of_the_console(daemon: DaemonProcess, tmp_path: Path) -> None:
    history = tmp_path / "history"
    first = spawn_console(daemon.address, history)
    first.sendline("containers ls --filter labels.remembered==yes")
    first.expect_exact("ID  IMAGE")
    first.expect_exact(PROMPT)
    first.sendeof()
    first.expect(pexpect.EOF)
    first.close()
    assert first.exitstatus == 0

    second = spawn_console(daemon.address, history)
    try:
        second.send("\x1b[A")  # up arrow: the last line of the previous console
        second.expect_exact("labels.remembered==yes")
        second.send("\r")
        second.expect_exact("ID  IMAGE")
        second.expect_exact(PROMPT)
    finally:
        second.close(force=True)


def test_events_shows_a_tasks_start_and_exit_until_ctrl_c(
    daemon: DaemonProcess, console: Any
) -> None:
    cid = new_id("ev")
    console.sendline("tasks events")
    console.expect_exact("following the events of namespace default")  # subscribed
    ran = berth(daemon.address, "run", "--rm", IMAGE, cid, "sh", "-c", "exit 2")
    assert ran.code == 2
    console.expect(rf"START\s+{cid}\s+pid=\d+")
    console.expect(rf"EXIT\s+{cid}\s+pid=\d+ exit_status=2")
    console.send("\x03")
    expect_prompt_back(console)


def test_run_t_sh_echoes_input_and_sees_the_terminal_resized(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    child = spawn_console(daemon.address, tmp_path / "history", rows=24, cols=80)
    cid = new_id("tty")
    try:
        child.sendline(f"run --rm -t {IMAGE} {cid} sh")
        child.expect_exact("/ # ")
        child.sendline("echo typed-$((6*7))")
        child.expect_exact("typed-42")
        child.sendline("stty size")
        child.expect_exact("24 80")
        child.setwinsize(37, 101)
        # SIGWINCH -> berth -> Tasks/Pty -> the shim: asked until it has arrived.
        for _ in range(50):
            child.sendline("stty size")
            if child.expect(["37 101", "24 80"]) == 0:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the task's terminal was not resized")
        child.sendline("exit 5")
        expect_prompt_back(child)  # the terminal is back in the console's hands
    finally:
        child.close(force=True)
    assert cid not in container_ids(daemon)


def test_one_shot_run_t_exits_with_the_shells_status(daemon: DaemonProcess) -> None:
    cid = new_id("tty")
    child = spawn_berth(daemon.address, "run", "--rm", "-t", IMAGE, cid, "sh", history=NO_HISTORY)
    child.expect_exact("/ # ")
    child.sendline("exit 6")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 6


def test_sigterm_during_run_t_restores_the_terminal_and_cleans_up(
    daemon: DaemonProcess,
) -> None:
    cid = new_id("term")
    child = spawn_berth(daemon.address, "run", "--rm", "-t", IMAGE, cid, "sh", history=NO_HISTORY)
    child.expect_exact("/ # ")
    assert not termios.tcgetattr(child.child_fd)[3] & termios.ICANON  # raw
    child.kill(signal.SIGTERM)
    child.expect(pexpect.EOF)
    assert termios.tcgetattr(child.child_fd)[3] & termios.ICANON  # cooked again
    child.close()
    assert child.exitstatus == 128 + signal.SIGTERM
    assert cid not in container_ids(daemon)
    assert ok(daemon, "--json", "tasks", "ls").json() == []


def test_tasks_attach_reaches_a_detached_terminal_task(daemon: DaemonProcess) -> None:
    cid = new_id("att")
    ok(daemon, "run", "-d", "-t", IMAGE, cid, "sh")
    try:
        child = spawn_berth(daemon.address, "tasks", "attach", cid, history=NO_HISTORY)
        child.sendline("echo attached-$((3*3))")
        child.expect_exact("attached-9")
        child.send("\x1d")  # Ctrl-] detaches
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        assert ok(daemon, "--json", "tasks", "info", cid).json()["status"] == "RUNNING"

        child = spawn_berth(daemon.address, "tasks", "attach", cid, history=NO_HISTORY)
        child.sendline("exit 9")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 9
    finally:
        berth(daemon.address, "tasks", "rm", "-f", cid)
        berth(daemon.address, "containers", "rm", cid)


def test_a_lost_daemon_is_reported_and_the_console_reconnects(tmp_path: Path) -> None:
    d = make_daemon(tmp_path).start()
    try:
        child = spawn_console(d.address, tmp_path / "history")
        try:
            d.stop()
            child.sendline("containers ls")
            child.expect(r"berth: UNAVAILABLE: lost the connection to berthd at [^\n]*reconnecting")
            child.expect_exact(PROMPT)
            d.start()
            child.sendline("containers ls")
            child.expect_exact("berth: reconnected to berthd at ")
            child.expect_exact("ID  IMAGE")
            expect_prompt_back(child)
            assert "Traceback" not in plain(child.before)
        finally:
            child.close(force=True)
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        subprocess.run(["rm", "-rf", str(d.state)], check=False)
