"""The runc driver against a fake ``runc`` on PATH: argv, stdio, errors, timeouts."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runtime.runc import ContainerNotFound, Runc, RuncError
from wire.errors import Unavailable

# The fake runc records its argv (and, for exec, the process file) and obeys
# FAKE_RUNC_* variables: fail with a JSON log line, write stderr, sleep,
# print some output, write a pid file.
FAKE_RUNC = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys, time
    argv = sys.argv[1:]
    record = {{"argv": argv, "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd"))}}
    if "--process" in argv:
        with open(argv[argv.index("--process") + 1]) as f:
            record["process"] = json.load(f)
    with open(os.environ["FAKE_RUNC_RECORD"], "a") as f:
        f.write(json.dumps(record) + "\\n")
    log = argv[argv.index("--log") + 1]
    def log_line(level, msg):
        with open(log, "a") as f:
            f.write(json.dumps({{"level": level, "msg": msg, "time": "2024-01-01T00:00:00Z"}}))
            f.write("\\n")
    time.sleep(float(os.environ.get("FAKE_RUNC_SLEEP", "0")))
    if "--pid-file" in argv:
        with open(argv[argv.index("--pid-file") + 1], "w") as f:
            f.write(os.environ.get("FAKE_RUNC_PID", "4242"))
    sys.stdout.write(os.environ.get("FAKE_RUNC_STDOUT", ""))
    sys.stdout.flush()
    sys.stderr.write(os.environ.get("FAKE_RUNC_STDERR", ""))
    sys.stderr.flush()
    if "FAKE_RUNC_FAIL" in os.environ:
        log_line("info", "an earlier line")
        log_line("error", "an earlier error")
        log.endswith(".json") and open(log, "a").write("not json\\n")
        log_line("error", os.environ["FAKE_RUNC_FAIL"])
        log_line("debug", "a later debug line")
    sys.exit(int(os.environ.get("FAKE_RUNC_EXIT", "1" if "FAKE_RUNC_FAIL" in os.environ else "0")))
    """
)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake runc (and criu) first on PATH; yields a reader of the recorded calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "runc"
    script.write_text(FAKE_RUNC.format(python=sys.executable))
    script.chmod(0o755)
    record = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_RUNC_RECORD", str(record))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    class Fake:
        bin = bin_dir

        @staticmethod
        def calls() -> list[dict[str, Any]]:
            return [json.loads(line) for line in record.read_text().splitlines()]

        @staticmethod
        def argv() -> list[str]:
            argv: list[str] = Fake.calls()[-1]["argv"]
            return argv

    return Fake


@pytest.fixture
def runc(tmp_path):
    return Runc(root=tmp_path / "state", log_dir=tmp_path / "logs")


def test_every_call_names_root_and_a_json_log(fake, runc, tmp_path):
    runc.start("web")
    argv = fake.argv()
    assert argv[:2] == ["--root", str(tmp_path / "state")]
    assert argv[2] == "--log" and Path(argv[3]).parent == tmp_path / "logs"
    assert argv[4:] == ["--log-format", "json", "start", "web"]


def test_the_log_file_is_removed_after_each_call(fake, runc, tmp_path, monkeypatch):
    runc.start("web")
    monkeypatch.setenv("FAKE_RUNC_FAIL", "boom")
    with pytest.raises(RuncError):
        runc.start("web")
    assert list((tmp_path / "logs").iterdir()) == []


def test_create_passes_bundle_and_pid_file_and_returns_the_pid(fake, runc, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_RUNC_PID", "31337")
    pid_file = tmp_path / "init.pid"
    with open(os.devnull, "rb") as null_in, open(os.devnull, "wb") as null_out:
        pid = runc.create(
            "web",
            tmp_path / "bundle",
            pid_file=pid_file,
            stdin=null_in.fileno(),
            stdout=null_out.fileno(),
            stderr=null_out.fileno(),
        )
    assert pid == 31337
    assert fake.argv()[6:] == [
        "create",
        "--bundle",
        str(tmp_path / "bundle"),
        "--pid-file",
        str(pid_file),
        "web",
    ]


def test_create_hands_over_exactly_the_given_stdio(fake, runc, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_RUNC_STDOUT", "to-out")
    monkeypatch.setenv("FAKE_RUNC_STDERR", "to-err")
    out, err = tmp_path / "out", tmp_path / "err"
    stray_r, stray_w = os.pipe()
    os.set_inheritable(stray_w, True)
    try:
        with open(os.devnull, "rb") as i, open(out, "wb") as o, open(err, "wb") as e:
            runc.create(
                "web",
                tmp_path,
                pid_file=tmp_path / "pid",
                stdin=i.fileno(),
                stdout=o.fileno(),
                stderr=e.fileno(),
                console_socket=tmp_path / "console.sock",
            )
    finally:
        os.close(stray_r)
        os.close(stray_w)
    assert out.read_text() == "to-out" and err.read_text() == "to-err"
    # 0, 1, 2 and the one listdir reads /proc/self/fd with: nothing of ours leaks.
    assert set(fake.calls()[-1]["fds"]) <= {0, 1, 2, 3}
    assert fake.argv()[-3:] == ["--console-socket", str(tmp_path / "console.sock"), "web"]


def test_kill_sends_the_signal_number_and_all_when_asked(fake, runc):
    runc.kill("web", 9)
    assert fake.argv()[6:] == ["kill", "web", "9"]
    runc.kill("web", 15, all=True)
    assert fake.argv()[6:] == ["kill", "--all", "web", "15"]


def test_delete_forces_only_when_asked(fake, runc):
    runc.delete("web")
    assert fake.argv()[6:] == ["delete", "web"]
    runc.delete("web", force=True)
    assert fake.argv()[6:] == ["delete", "--force", "web"]


def test_pause_and_resume(fake, runc):
    runc.pause("web")
    assert fake.argv()[6:] == ["pause", "web"]
    runc.resume("web")
    assert fake.argv()[6:] == ["resume", "web"]


def test_exec_writes_the_process_next_to_the_pid_file_and_removes_it(fake, runc, tmp_path):
    process = {"args": ["sh", "-c", "exit 3"], "cwd": "/", "terminal": False}
    pid_file = tmp_path / "exec" / "e1.pid"
    pid_file.parent.mkdir()
    pid = runc.exec("web", process, pid_file=pid_file, stdin=0, stdout=1, stderr=2)
    assert pid == 4242
    call = fake.calls()[-1]
    argv = call["argv"][6:]
    assert argv[:4] == ["exec", "--detach", "--pid-file", str(pid_file)]
    assert argv[4] == "--process" and Path(argv[5]).parent == pid_file.parent
    assert argv[-1] == "web"
    assert call["process"] == process
    assert sorted(p.name for p in pid_file.parent.iterdir()) == ["e1.pid"]


def test_state_ps_and_list_parse_runc_json(fake, runc, monkeypatch):
    monkeypatch.setenv("FAKE_RUNC_STDOUT", '{"id": "web", "pid": 12, "status": "running"}')
    assert runc.state("web")["status"] == "running"
    monkeypatch.setenv("FAKE_RUNC_STDOUT", "[12, 15]")
    assert runc.ps("web") == [12, 15]
    assert fake.argv()[6:] == ["ps", "--format", "json", "web"]
    monkeypatch.setenv("FAKE_RUNC_STDOUT", '[{"id": "web", "pid": 12}]')
    assert runc.list() == [{"id": "web", "pid": 12}]
    assert fake.argv()[6:] == ["list", "--format", "json"]


def test_runc_null_output_means_an_empty_list(fake, runc, monkeypatch):
    monkeypatch.setenv("FAKE_RUNC_STDOUT", "null")
    assert runc.list() == []
    assert runc.ps("web") == []


def test_an_error_carries_the_last_error_line_of_the_json_log(fake, runc, monkeypatch):
    text = 'runc create failed: unable to start container process: exec: "nope": not found'
    monkeypatch.setenv("FAKE_RUNC_FAIL", text)
    monkeypatch.setenv("FAKE_RUNC_STDERR", "stderr text is only the fallback")
    with pytest.raises(RuncError) as info:
        runc.start("web")
    assert info.value.message == text
    assert info.value.args[0] == text
    assert info.value.exit_status == 1
    assert "start" in info.value.command


def test_without_a_log_line_the_error_is_runc_stderr(fake, runc, monkeypatch):
    monkeypatch.setenv("FAKE_RUNC_EXIT", "2")
    monkeypatch.setenv("FAKE_RUNC_STDERR", "  flag provided but not defined: -x\n")
    with pytest.raises(RuncError, match=r"^flag provided but not defined: -x$"):
        runc.pause("web")


def test_without_any_text_the_error_names_command_and_status(fake, runc, monkeypatch):
    monkeypatch.setenv("FAKE_RUNC_EXIT", "3")
    with pytest.raises(RuncError, match=r"^runc resume exited with status 3$"):
        runc.resume("web")


def test_a_missing_container_is_container_not_found(fake, runc, monkeypatch):
    monkeypatch.setenv("FAKE_RUNC_FAIL", "container does not exist")
    with pytest.raises(ContainerNotFound, match="container does not exist"):
        runc.state("ghost")


def test_a_runc_that_hangs_times_out(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_RUNC_SLEEP", "10")
    runc = Runc(root=tmp_path / "state", timeout=0.5)
    with pytest.raises(RuncError, match=r"^runc kill timed out$"):
        runc.kill("web", 15)


def test_a_missing_runc_binary_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Unavailable, match='runtime binary "runc" not found'):
        Runc(root=tmp_path).start("web")
    with pytest.raises(Unavailable, match='runtime binary "/no/such/runc" not found'):
        Runc("/no/such/runc", root=tmp_path).state("web")


def test_checkpoint_maps_each_option_to_its_flag(fake, runc, tmp_path):
    runc.checkpoint("web", tmp_path / "img", tmp_path / "work", leave_running=False)
    assert fake.argv()[6:] == [
        "checkpoint",
        "--image-path",
        str(tmp_path / "img"),
        "--work-path",
        str(tmp_path / "work"),
        "web",
    ]
    runc.checkpoint(
        "web",
        tmp_path / "img",
        tmp_path / "work",
        allow_tcp=True,
        allow_unix_sockets=True,
        allow_terminal=True,
        file_locks=True,
        empty_namespaces=["network"],
    )
    flags = fake.argv()[11:]
    assert flags == [
        "--leave-running",
        "--tcp-established",
        "--ext-unix-sk",
        "--shell-job",
        "--file-locks",
        "--empty-ns",
        "network",
        "web",
    ]


def test_a_failed_checkpoint_adds_criu_own_errors(fake, runc, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "dump.log").write_text("(0.1) info\n(0.2) Error (criu/vdso.c:381): vdso: bad\n")
    monkeypatch.setenv("FAKE_RUNC_FAIL", "criu failed: type DUMP errno 0")
    with pytest.raises(RuncError) as info:
        runc.checkpoint("web", tmp_path / "img", work)
    assert info.value.message.startswith("criu failed: type DUMP errno 0; ")
    assert "vdso: bad" in info.value.message


def test_restore_is_detached_and_returns_the_pid(fake, runc, tmp_path):
    pid = runc.restore(
        "web",
        tmp_path / "bundle",
        tmp_path / "img",
        tmp_path / "work",
        pid_file=tmp_path / "pid",
        stdin=0,
        stdout=1,
        stderr=2,
    )
    assert pid == 4242
    argv = fake.argv()[6:]
    assert argv[:3] == ["restore", "--detach", "--bundle"]
    assert "--image-path" in argv and "--work-path" in argv and argv[-1] == "web"


def write_criu(bin_dir: Path, body: str) -> None:
    criu = bin_dir / "criu"
    criu.write_text(f"#!/bin/sh\n{body}\n")
    criu.chmod(0o755)


def test_criu_available_reports_criu_own_reason(fake, runc):
    write_criu(fake.bin, 'echo "Error: vdso: Unexpected rt vDSO area bounds" >&2; exit 1')
    assert Runc(criu=str(fake.bin / "criu")).criu_available() == (
        "Error: vdso: Unexpected rt vDSO area bounds"
    )


def test_criu_available_is_none_when_check_passes(fake):
    write_criu(fake.bin, 'echo "Looks good."; exit 0')
    assert Runc(criu=str(fake.bin / "criu")).criu_available() is None


def test_criu_missing_is_a_reason(tmp_path):
    reason = Runc(criu=str(tmp_path / "criu")).criu_available()
    assert reason is not None and "criu not installed" in reason
