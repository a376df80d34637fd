"""OCI spec loading and bundle rewriting; the wire's stdio rules (no root needed)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from runtime.spec import bundle_spec, default_spec, load_process, load_spec
from runtime.stdio import check_stdio, open_stdio
from wire.errors import InvalidArgument


def spec_bytes(**overrides: object) -> bytes:
    spec = default_spec(["sh"], "/rootfs")
    spec.update(overrides)
    return json.dumps(spec).encode()


# -- load_spec -----------------------------------------------------------------


def test_a_default_spec_loads_unchanged():
    spec = default_spec(["sleep", "1"], "/abs/rootfs")
    assert load_spec(json.dumps(spec).encode(), owner="task web") == spec


@pytest.mark.parametrize("value", [b"", b"{", b"not json", b"\xff\xfe", b"[1, 2]", b'"s"', b"3"])
def test_a_spec_that_is_not_a_json_object_is_invalid_oci_json(value):
    with pytest.raises(InvalidArgument, match=r'task "web": spec is not valid OCI JSON: '):
        load_spec(value, owner='task "web"')


def test_a_deeply_nested_spec_is_invalid_not_a_crash():
    with pytest.raises(InvalidArgument, match="not valid OCI JSON"):
        load_spec(b"[" * 200_000, owner="t")


def test_a_spec_without_process_names_process():
    with pytest.raises(InvalidArgument, match="missing process"):
        load_spec(b'{"root": {"path": "/r"}}', owner="t")


@pytest.mark.parametrize(
    "process", [{}, {"args": []}, {"args": "sh"}, {"args": [1]}, {"args": [""]}]
)
def test_a_spec_without_usable_process_args_names_process_args(process):
    with pytest.raises(InvalidArgument, match=r"process\.args"):
        load_spec(spec_bytes(process=process), owner="t")


@pytest.mark.parametrize("root", [None, {}, {"readonly": True}])
def test_a_spec_without_root_path_names_root_path(root):
    value = json.loads(spec_bytes())
    if root is None:
        del value["root"]
    else:
        value["root"] = root
    with pytest.raises(InvalidArgument, match=r"root\.path"):
        load_spec(json.dumps(value).encode(), owner="t")


def test_a_non_string_root_path_is_refused():
    with pytest.raises(InvalidArgument, match=r"root\.path"):
        load_spec(spec_bytes(root={"path": 3}), owner="t")


# -- load_process --------------------------------------------------------------


def test_an_exec_process_gets_defaults_for_cwd_env_user_and_terminal():
    process = load_process(b'{"args": ["sh", "-c", "exit 3"]}', owner="exec e1")
    assert process == {
        "args": ["sh", "-c", "exit 3"],
        "cwd": "/",
        "env": [],
        "user": {"uid": 0, "gid": 0},
        "terminal": False,
    }


def test_an_exec_process_keeps_what_it_gives():
    given = {"args": ["ls"], "cwd": "/tmp", "env": ["A=1"], "user": {"uid": 5, "gid": 6}}
    process = load_process(json.dumps(given).encode(), owner="e")
    assert process["cwd"] == "/tmp" and process["env"] == ["A=1"]
    assert process["user"] == {"uid": 5, "gid": 6}


@pytest.mark.parametrize(
    "value, match",
    [
        (b"[]", "not valid OCI Process JSON"),
        (b"{", "not valid OCI Process JSON"),
        (b"{}", "args is missing"),
        (b'{"args": []}', "args must be a non-empty list"),
        (b'{"args": ["sh"], "cwd": "tmp"}', "cwd must be an absolute path"),
        (b'{"args": ["sh"], "env": "A=1"}', "env must be a list"),
        (b'{"args": ["sh"], "terminal": "yes"}', "terminal must be a boolean"),
    ],
)
def test_a_bad_exec_process_is_invalid_argument(value, match):
    with pytest.raises(InvalidArgument, match=match):
        load_process(value, owner="exec e1")


# -- bundle_spec ---------------------------------------------------------------


def test_bundle_spec_points_root_at_the_mounted_rootfs_and_sets_terminal(tmp_path):
    spec = default_spec(["sh"], "relative")
    out = bundle_spec(spec, rootfs=tmp_path / "rootfs", terminal=True)
    assert out["root"]["path"] == str(tmp_path / "rootfs")
    assert out["process"]["terminal"] is True
    # A copy: the stored spec is untouched.
    assert spec["root"]["path"] == "relative"
    assert spec["process"]["terminal"] is False


def test_bundle_spec_keeps_an_absolute_root_path_without_rootfs():
    out = bundle_spec(default_spec(["sh"], "/srv/root"), rootfs=None, terminal=False)
    assert out["root"]["path"] == "/srv/root"
    assert out["process"]["terminal"] is False


@pytest.mark.parametrize("path", ["rootfs", "./rootfs", ""])
def test_bundle_spec_refuses_a_relative_root_path_without_rootfs(path):
    with pytest.raises(InvalidArgument, match="absolute"):
        bundle_spec(default_spec(["sh"], path), rootfs=None, terminal=False)


def test_default_spec_mirrors_runc_spec_where_berth_relies_on_it():
    spec = default_spec(["sh", "-c", "true"], "/r")
    assert spec["process"]["args"] == ["sh", "-c", "true"]
    assert spec["process"]["cwd"] == "/"
    assert spec["process"]["noNewPrivileges"] is True
    assert any(e.startswith("PATH=") for e in spec["process"]["env"])
    assert spec["root"] == {"path": "/r", "readonly": False}
    kinds = {ns["type"] for ns in spec["linux"]["namespaces"]}
    assert kinds == {"pid", "ipc", "uts", "mount", "network"}
    destinations = [m["destination"] for m in spec["mounts"]]
    assert destinations == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"]
    assert "ro" in spec["mounts"][-1]["options"]
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]
    assert "/proc/sys" in spec["linux"]["readonlyPaths"]


# -- check_stdio ---------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "out.fifo"
    os.mkfifo(path)
    return path


def test_empty_stdio_is_allowed():
    check_stdio("", field="stdout", owner="t")


def test_an_existing_fifo_is_allowed(fifo):
    check_stdio(str(fifo), field="stdout", owner="t")


def test_a_file_url_with_an_absolute_path_is_allowed_even_if_missing(tmp_path):
    check_stdio(f"file://{tmp_path}/logs/out.log", field="stdout", owner="t")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda tmp: "out.fifo", "must be an absolute path"),
        (lambda tmp: f"{tmp}/missing.fifo", "no such FIFO"),
        (lambda tmp: "file://relative/out.log", "absolute path"),
        (lambda tmp: "file://", "absolute path"),
        (lambda tmp: f"file://{tmp}", "is a directory"),
        (lambda tmp: f"binary://{tmp}/logger", "only FIFO paths and file://"),
        (lambda tmp: f"{tmp}/bad\0path", "NUL"),
    ],
)
def test_a_bad_stdio_target_is_invalid_argument_naming_the_field(tmp_path, make, match):
    with pytest.raises(InvalidArgument, match=match) as info:
        check_stdio(make(tmp_path), field="stderr", owner='task "web"')
    assert "stderr" in info.value.message and 'task "web"' in info.value.message


def test_a_regular_file_without_file_scheme_is_refused(tmp_path):
    log = tmp_path / "out.log"
    log.write_text("")
    with pytest.raises(InvalidArgument, match="not a FIFO") as info:
        check_stdio(str(log), field="stdout", owner="t")
    assert "file://" in info.value.message


def test_a_directory_path_is_not_a_fifo(tmp_path):
    with pytest.raises(InvalidArgument, match="not a FIFO"):
        check_stdio(str(tmp_path), field="stdin", owner="t")


# -- open_stdio ----------------------------------------------------------------


def test_empty_stdio_opens_dev_null():
    fds = open_stdio("", "", "")
    try:
        for fd in (fds.stdin, fds.stdout, fds.stderr):
            assert os.path.samestat(os.fstat(fd), os.stat(os.devnull))
            assert not os.get_inheritable(fd)
    finally:
        fds.close()


def test_fifos_open_without_a_peer_and_carry_what_the_container_writes(tmp_path):
    paths = {name: tmp_path / f"{name}.fifo" for name in ("stdin", "stdout", "stderr")}
    for path in paths.values():
        os.mkfifo(path)
    # No reader or writer exists yet: none of these opens may block.
    fds = open_stdio(str(paths["stdin"]), str(paths["stdout"]), str(paths["stderr"]))
    try:
        assert stat.S_ISFIFO(os.fstat(fds.stdout).st_mode)
        # stdin ends up blocking, so the container's reads wait for input.
        assert os.get_blocking(fds.stdin)
        reader = os.open(paths["stdout"], os.O_RDONLY | os.O_NONBLOCK)
        os.write(fds.stdout, b"hi\n")
        assert os.read(reader, 10) == b"hi\n"
        os.close(reader)
        writer = os.open(paths["stdin"], os.O_WRONLY | os.O_NONBLOCK)
        os.write(writer, b"in\n")
        assert os.read(fds.stdin, 10) == b"in\n"
        os.close(writer)
    finally:
        fds.close()


def test_a_file_url_appends_creating_file_and_directory(tmp_path):
    log = tmp_path / "logs" / "out.log"
    url = f"file://{log}"
    for text in (b"one\n", b"two\n"):
        fds = open_stdio("", url, url)
        try:
            os.write(fds.stdout, text)
        finally:
            fds.close()
    assert log.read_bytes() == b"one\ntwo\n"
    assert stat.S_IMODE(log.stat().st_mode) & 0o644 == stat.S_IMODE(log.stat().st_mode)


def test_closing_stdio_twice_is_harmless():
    fds = open_stdio("", "", "")
    fds.close()
    fds.close()
    assert (fds.stdin, fds.stdout, fds.stderr) == (-1, -1, -1)
