"""The one-shot ``berth`` command against a real daemon: tables, ``--json``, exit codes.

One daemon serves the module (each test uses ids of its own); an image
built from the static busybox is imported into it once, so containers can
be created (no task runs here: that is e2e's, with runc).
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image_archives import busybox_layer, oci_archive
from tests.integration.cli_driver import Result, berth
from tests.integration.conftest import DaemonProcess, make_daemon

IMAGE = "busybox:test"
STORED = "docker.io/library/busybox:test"  # IMAGE as imports record it, normalised
_ids = itertools.count()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = make_daemon(tmp_path_factory.mktemp("cli")).start()
    try:
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        subprocess.run(["rm", "-rf", str(d.state)], check=False)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("archive") / "busybox.tar"
    oci_archive(path, [busybox_layer()], name=IMAGE)
    return path


@pytest.fixture(scope="module")
def image(daemon: DaemonProcess, archive: Path) -> str:
    result = berth(daemon.address, "images", "import", str(archive))
    assert result.code == 0, result.err
    return IMAGE


def run(daemon: DaemonProcess, *args: str) -> Result:
    return berth(daemon.address, *args)


def ok(daemon: DaemonProcess, *args: str) -> Result:
    result = berth(daemon.address, *args)
    assert (result.code, result.err) == (0, ""), (args, result)
    return result


def new_id(prefix: str = "cli") -> str:
    return f"{prefix}-{next(_ids)}"


def one_error_line(result: Result) -> str:
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    return lines[0]


# --- version, help, usage ------------------------------------------------------------


def test_version_prints_both_versions_as_a_table_and_as_json(daemon: DaemonProcess) -> None:
    assert "server: 0.1.0" in ok(daemon, "version").out
    data = ok(daemon, "--json", "version").json()
    assert data["server"]["version"] == data["client"]["version"] == "0.1.0"


def test_help_for_a_command_is_the_same_text_as_its_help_flag(daemon: DaemonProcess) -> None:
    by_help = ok(daemon, "help", "containers", "ls").out
    assert by_help == ok(daemon, "containers", "ls", "--help").out
    assert "List containers" in by_help
    assert "--filter" in by_help
    overview = ok(daemon, "--help").out
    for name in ("containers ls", "tasks pty-resize", "snapshots usage", "run", "events", "gc"):
        assert name in overview


@pytest.mark.parametrize(
    "args",
    [
        ["bogus"],
        ["containers"],
        ["containers", "bogus"],
        ["containers", "info"],
        ["tasks", "kill", "-s", "NOSUCHSIGNAL", "x"],
        ["tasks", "pty-resize", "x", "wide", "10"],
        ["containers", "update", "x"],
        ["--no-such-option", "version"],
    ],
)
def test_a_usage_error_exits_2_with_one_line(daemon: DaemonProcess, args: list[str]) -> None:
    result = run(daemon, *args)
    assert result.code == 2
    assert one_error_line(result).startswith("berth: usage: ")
    assert result.out == ""


def test_an_unreachable_daemon_is_one_unavailable_line_at_once(tmp_path: Path) -> None:
    result = berth(f"ipc://{tmp_path}/nothing.sock", "containers", "ls")
    assert result.code == 1
    assert one_error_line(result).startswith("berth: UNAVAILABLE: berthd at ipc://")


# --- containers ----------------------------------------------------------------------


def test_containers_create_ls_info_label_update_rm_as_tables_and_json(
    daemon: DaemonProcess, image: str
) -> None:
    cid = new_id()
    created = ok(daemon, "containers", "create", "--label", "tier=web", image, cid, "sh", "-c", "x")
    assert created.fields()["id"] == cid

    rows = ok(daemon, "containers", "ls").rows()
    assert rows[0] == ["ID", "IMAGE", "RUNTIME", "LABELS", "CREATED"]
    # `containers create busybox:test` finds and names the normalised image
    assert [cid, STORED, "linux", "tier=web"] in [row[:4] for row in rows[1:]]

    listed = {c["id"]: c for c in ok(daemon, "containers", "ls", "--json").json()}
    assert listed[cid]["labels"] == {"tier": "web"}
    assert listed[cid]["rootfs"] == cid
    assert listed[cid]["spec"]["value"]["process"]["args"] == ["sh", "-c", "x"]
    assert listed[cid]["spec"]["value"]["root"]["path"] == "rootfs"

    ok(daemon, "containers", "label", cid, "tier=db", "owner=me")
    quiet = ok(daemon, "containers", "ls", "-q", "--filter", "labels.tier==db").out.split()
    assert cid in quiet
    assert cid not in ok(daemon, "containers", "ls", "-q", "--filter", "labels.tier==web").out

    updated = ok(daemon, "--json", "containers", "update", "--label", "owner=", cid).json()
    assert updated["labels"] == {"tier": "db"}
    info = ok(daemon, "containers", "info", "--json", cid).json()
    assert info["labels"] == {"tier": "db"}
    assert info["created_at"].endswith("Z")

    assert ok(daemon, "containers", "rm", cid).out.split() == [cid]
    gone = run(daemon, "containers", "info", cid)
    assert gone.code == 1
    assert one_error_line(gone) == f'berth: NOT_FOUND: container "{cid}": not found'


def test_creating_an_existing_container_is_already_exists(
    daemon: DaemonProcess, image: str
) -> None:
    cid = new_id()
    ok(daemon, "containers", "create", image, cid, "true")
    again = run(daemon, "containers", "create", image, cid, "true")
    assert again.code == 1
    assert one_error_line(again) == f'berth: ALREADY_EXISTS: container "{cid}": already exists'
    ok(daemon, "containers", "rm", cid)


def test_a_bad_filter_is_invalid_argument_saying_where(daemon: DaemonProcess) -> None:
    result = run(daemon, "containers", "ls", "--filter", 'labels."a')
    assert result.code == 1
    assert one_error_line(result).startswith("berth: INVALID_ARGUMENT: ")


def test_rm_of_several_reports_each_failure_and_deletes_the_rest(
    daemon: DaemonProcess, image: str
) -> None:
    cid = new_id()
    ok(daemon, "containers", "create", image, cid, "true")
    result = run(daemon, "containers", "rm", "missing-one", cid)
    assert result.code == 1
    assert one_error_line(result) == 'berth: NOT_FOUND: container "missing-one": not found'
    assert result.out.split() == [cid]


def test_namespace_option_scopes_every_command(daemon: DaemonProcess, image: str) -> None:
    cid = new_id()
    ok(daemon, "containers", "create", image, cid, "true")
    assert ok(daemon, "-n", "elsewhere", "--json", "containers", "ls").json() == []
    missing = run(daemon, "-n", "elsewhere", "containers", "info", cid)
    assert missing.code == 1
    ok(daemon, "containers", "rm", cid)


# --- tasks without runc: errors only ---------------------------------------------


def test_tasks_of_a_missing_container_are_not_found(daemon: DaemonProcess) -> None:
    assert ok(daemon, "tasks", "ls").rows() == [["TASK", "PID", "STATUS", "EXIT", "EXITED"]]
    assert ok(daemon, "--json", "tasks", "ls").json() == []
    for args in (["tasks", "info", "ghost"], ["tasks", "kill", "ghost"], ["tasks", "rm", "ghost"]):
        result = run(daemon, *args)
        assert result.code == 1, args
        assert one_error_line(result).startswith("berth: NOT_FOUND: "), args


# --- images, snapshots, content, gc ---------------------------------------------------


def test_snapshots_ls_info_usage_show_the_image_layer_and_a_container_snapshot(
    daemon: DaemonProcess, image: str
) -> None:
    cid = new_id()
    ok(daemon, "containers", "create", image, cid, "true")
    snapshots = {s["name"]: s for s in ok(daemon, "--json", "snapshots", "ls").json()}
    assert snapshots[cid]["kind"] == "ACTIVE"
    layer = snapshots[cid]["parent"]
    assert snapshots[layer]["kind"] == "COMMITTED"
    assert [cid, layer, "ACTIVE"] in ok(daemon, "snapshots", "ls").rows()

    assert ok(daemon, "snapshots", "info", cid).fields()["parent"] == layer
    usage = ok(daemon, "--json", "snapshots", "usage", layer).json()
    assert usage[0]["key"] == layer
    assert usage[0]["size"] > 100_000  # the busybox binary

    busy = run(daemon, "snapshots", "rm", cid)
    assert busy.code == 1
    assert one_error_line(busy).startswith("berth: FAILED_PRECONDITION: ")
    ok(daemon, "containers", "rm", cid)
    assert cid not in {s["name"] for s in ok(daemon, "--json", "snapshots", "ls").json()}


def test_images_import_prints_the_imported_image(daemon: DaemonProcess, archive: Path) -> None:
    result = ok(daemon, "-n", "imports", "images", "import", "--name", "other:1", str(archive))
    rows = result.rows()
    assert rows[0] == ["NAME", "DIGEST", "SIZE", "CREATED"]
    assert rows[1][0] == "docker.io/library/other:1"
    assert rows[1][1].startswith("sha256:")
    data = ok(daemon, "-n", "imports", "--json", "images", "import", str(archive)).json()
    assert [i["name"] for i in data] == [STORED]


def test_images_ls_and_rm(daemon: DaemonProcess, archive: Path) -> None:
    ok(daemon, "-n", "imgls", "images", "import", str(archive))
    listed = run(daemon, "-n", "imgls", "--json", "images", "ls")
    if "UNIMPLEMENTED" in listed.err:
        pytest.skip("this daemon does not serve containerd.v1.Images yet")
    assert [i["name"] for i in listed.json()] == [STORED]
    assert ok(daemon, "-n", "imgls", "images", "ls").rows()[1][0] == STORED
    assert ok(daemon, "-n", "imgls", "images", "rm", IMAGE).out.split() == [IMAGE]
    assert ok(daemon, "-n", "imgls", "--json", "images", "ls").json() == []


def test_content_ls_lists_the_image_blobs(daemon: DaemonProcess, archive: Path) -> None:
    ok(daemon, "-n", "blobs", "images", "import", str(archive))
    listed = run(daemon, "-n", "blobs", "--json", "content", "ls")
    if "UNIMPLEMENTED" in listed.err:
        pytest.skip("this daemon does not serve containerd.v1.Content yet")
    digests = [b["digest"] for b in listed.json()]
    assert len(digests) == 3  # manifest, config, layer
    assert busybox_layer().digest in digests
    assert ok(daemon, "-n", "blobs", "content", "ls").rows()[0] == ["DIGEST", "SIZE", "COMMITTED"]


def test_gc_reports_what_it_removed(daemon: DaemonProcess) -> None:
    data = ok(daemon, "--json", "gc").json()
    assert set(data) == {"snapshots", "content"}
    assert ok(daemon, "gc").code == 0


# --- the console's completion, on a fake daemon -----------------------------------


def completions(text: str) -> list[str]:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from berth.console.completion import CommandCompleter
    from berth.console.context import Session

    live = {"container": ["web", "db"], "task": ["web"], "image": ["busybox:1"]}
    completer = CommandCompleter(Session("ipc:///nonexistent"), lambda s, kind: live[kind])
    found = completer.get_completions(Document(text), CompleteEvent(completion_requested=True))
    return [c.text for c in found]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cont", ["containers", "content"]),
        ("containers l", ["label", "ls"]),
        ("containers info ", ["db", "web"]),
        ("containers rm web ", ["db", "web"]),  # ID... repeats
        ("tasks kill ", ["web"]),
        ("tasks kill -s K", ["KILL"]),
        ("tasks kill --pid ", []),  # a pid is no id
        ("run --rm ", ["busybox:1"]),
        ("run busybox:1 ", []),  # the new container's id is the user's to choose
        ("containers ls --f", ["--filter"]),
        ("help tasks p", ["pause", "ps", "pty-resize"]),
        ("use ", []),
    ],
)
def test_completion_offers_commands_flags_and_live_ids_by_position(
    text: str, expected: list[str]
) -> None:
    assert completions(text) == expected
