"""OCI runtime specs: the checks the wire promises, the bundle rewrite, a default spec.

A task's spec arrives as the JSON bytes of an ``Any``
(``types.containerd.io/opencontainers/runtime-spec/1/Spec``); an exec's as an
OCI Process (``.../runtime-spec/1/Process``). Only what berth itself relies on
is checked here (``process.args``, ``root.path``, ``cwd``); everything else is
runc's to judge, and its refusal comes back with runc's own text.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from wire.errors import InvalidArgument

__all__ = ["bundle_spec", "default_spec", "load_process", "load_spec"]

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The capability set `runc spec` gives: enough for a shell, nothing more.
DEFAULT_CAPABILITIES = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def load_spec(value: bytes, *, owner: str) -> dict[str, Any]:
    """The spec as a dict, checked to have ``process.args`` and ``root.path``."""
    spec = _load_object(value, owner=owner, what="spec", schema="OCI")
    process = spec.get("process")
    if not isinstance(process, dict):
        raise InvalidArgument(f"{owner}: spec is missing process (an object with args)")
    _check_args(process.get("args"), owner=owner, where="spec process.args")
    root = spec.get("root")
    if not isinstance(root, dict) or "path" not in root:
        raise InvalidArgument(f"{owner}: spec is missing root.path")
    if not isinstance(root["path"], str):
        raise InvalidArgument(f"{owner}: spec root.path must be a string")
    return spec


def load_process(value: bytes, *, owner: str) -> dict[str, Any]:
    """An exec's OCI Process as a dict: ``args`` checked, ``cwd`` defaulted to ``/``."""
    process = _load_object(value, owner=owner, what="process", schema="OCI Process")
    _check_args(process.get("args"), owner=owner, where="process args")
    cwd = process.get("cwd") or "/"
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise InvalidArgument(f"{owner}: process cwd must be an absolute path, got {cwd!r}")
    process["cwd"] = cwd
    env = process.setdefault("env", [])
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise InvalidArgument(f"{owner}: process env must be a list of strings")
    user = process.setdefault("user", {"uid": 0, "gid": 0})
    if not isinstance(user, dict):
        raise InvalidArgument(f"{owner}: process user must be an object")
    terminal = process.setdefault("terminal", False)
    if not isinstance(terminal, bool):
        raise InvalidArgument(f"{owner}: process terminal must be a boolean")
    return process


def bundle_spec(
    spec: dict[str, Any], *, rootfs: Path | None, terminal: bool, owner: str = "task"
) -> dict[str, Any]:
    """A copy of ``spec`` for the bundle: ``root.path`` and ``process.terminal`` set.

    With ``rootfs`` (the bundle's mounted ``rootfs/``) the root points there;
    without, the spec's own ``root.path`` is used as is and must be absolute,
    since a relative one would resolve against a bundle that holds no rootfs.
    """
    out = copy.deepcopy(spec)
    root = out.setdefault("root", {})
    if rootfs is not None:
        root["path"] = str(rootfs)
    elif not isinstance(root.get("path"), str) or not root["path"].startswith("/"):
        raise InvalidArgument(
            f"{owner}: spec root.path {root.get('path')!r} must be an absolute path "
            "when no rootfs mounts are given"
        )
    out.setdefault("process", {})["terminal"] = terminal
    return out


def default_spec(args: list[str], rootfs: str) -> dict[str, Any]:
    """A minimal spec runc accepts, mirroring ``runc spec`` (no terminal, writable root)."""
    caps = list(DEFAULT_CAPABILITIES)
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": [DEFAULT_PATH, "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": list(caps),
                "permitted": list(caps),
                "ambient": list(caps),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": "berth",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": [
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"},
                {"type": "network"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
            ],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    }


def _load_object(value: bytes, *, owner: str, what: str, schema: str) -> dict[str, Any]:
    try:
        loaded = json.loads(value)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad JSON and bad UTF-8; RecursionError a deeply
        # nested document, which must not escape as an internal error.
        detail = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise InvalidArgument(f"{owner}: {what} is not valid {schema} JSON: {detail}") from None
    if not isinstance(loaded, dict):
        raise InvalidArgument(
            f"{owner}: {what} is not valid {schema} JSON: "
            f"expected an object, got {type(loaded).__name__}"
        )
    return loaded


def _check_args(args: object, *, owner: str, where: str) -> None:
    if args is None:
        raise InvalidArgument(f"{owner}: {where} is missing")
    if (
        not isinstance(args, list)
        or not args
        or not all(isinstance(a, str) for a in args)
        or not args[0]
    ):
        raise InvalidArgument(f"{owner}: {where} must be a non-empty list of strings")
