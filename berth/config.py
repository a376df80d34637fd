"""The daemon's configuration: flags over an optional TOML file over defaults.

Addresses: ``--address`` flags, else the file's ``addresses``, else
``BERTH_ADDRESS``, else ``ipc://<state>/berth.sock``.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "DaemonConfig", "load_config", "parser"]

DEFAULT_ROOT = Path("/var/lib/berth")
DEFAULT_STATE = Path("/run/berth")
DEFAULT_RUNTIMES = {"linux": "runc", "io.containerd.runc.v2": "runc"}


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and the problem."""


@dataclass(frozen=True)
class DaemonConfig:
    """Everything ``berthd`` is told, resolved and checked."""

    root: Path = DEFAULT_ROOT
    state: Path = DEFAULT_STATE
    addresses: tuple[str, ...] = ()
    log_level: str = "info"
    max_payload: int = 16 * 1024 * 1024
    max_streams: int = 1024
    socket_group: str = ""
    curve_dir: Path | None = None
    container_idle_seconds: float = 30.0
    # The actors of a task, and of its container, are stopped after this
    # long without a message, while the task runs (its handle stays).
    task_idle_seconds: float = 2.0
    runtimes: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_RUNTIMES))
    # "overlayfs" falls back to "native" (logged) where overlayfs cannot mount.
    snapshotter: str = "overlayfs"
    # An active snapshot no container uses survives collections this long.
    gc_grace_seconds: float = 600.0
    # Events past either limit are trimmed from the log, oldest first.
    event_retention_count: int = 1_000_000
    event_retention_seconds: float = 7 * 24 * 3600.0

    @property
    def curve(self) -> Path:
        """Where the CURVE key pair and client allow-list live."""
        return self.curve_dir or self.root / "curve"


def parser() -> argparse.ArgumentParser:
    """The ``berthd`` command line."""
    p = argparse.ArgumentParser(prog="berthd", description="berth container supervisor daemon")
    p.add_argument("--root", type=Path, help=f"durable state (default {DEFAULT_ROOT})")
    p.add_argument("--state", type=Path, help=f"runtime state (default {DEFAULT_STATE})")
    p.add_argument(
        "--address",
        action="append",
        dest="addresses",
        help="address to bind (repeatable); default $BERTH_ADDRESS, else ipc://<state>/berth.sock",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--config", type=Path, help="TOML configuration file")
    return p


_TYPES: dict[str, type] = {
    "root": str,
    "state": str,
    "addresses": list,
    "log_level": str,
    "max_payload": int,
    "max_streams": int,
    "socket_group": (str, int),  # type: ignore[dict-item]  # a name or a gid
    "curve_dir": str,
    "container_idle_seconds": float,
    "task_idle_seconds": float,
    "runtimes": dict,
    "snapshotter": str,
    "gc_grace_seconds": float,
    "event_retention_count": int,
    "event_retention_seconds": float,
}
SNAPSHOTTERS = ("overlayfs", "native")


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: {exc}") from exc
    known = {f.name for f in fields(DaemonConfig)}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"config {path}: unknown key {key!r}")
        expected = _TYPES[key]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            data[key] = value
        if not isinstance(value, expected) or isinstance(value, bool):
            name = getattr(expected, "__name__", "str or int")
            raise ConfigError(f"config {path}: {key} must be a {name}")
    return data


def load_config(argv: list[str] | None = None, env: dict[str, str] | None = None) -> DaemonConfig:
    """Resolve flags, file, environment and defaults into one config."""
    env = dict(os.environ) if env is None else env
    args = parser().parse_args(argv)
    data = _from_file(args.config) if args.config else {}
    root = Path(args.root or data.get("root") or DEFAULT_ROOT)
    state = Path(args.state or data.get("state") or DEFAULT_STATE)
    addresses = (
        args.addresses
        or data.get("addresses")
        or ([env["BERTH_ADDRESS"]] if env.get("BERTH_ADDRESS") else None)
        or [f"ipc://{state}/berth.sock"]
    )
    if not all(isinstance(a, str) for a in addresses):
        raise ConfigError("addresses must be strings")
    runtimes = dict(DEFAULT_RUNTIMES)
    runtimes.update(data.get("runtimes", {}))
    max_payload = data.get("max_payload", DaemonConfig.max_payload)
    max_streams = data.get("max_streams", DaemonConfig.max_streams)
    if max_payload <= 0 or max_streams <= 0:
        raise ConfigError("max_payload and max_streams must be positive")
    snapshotter = data.get("snapshotter", DaemonConfig.snapshotter)
    if snapshotter not in SNAPSHOTTERS:
        raise ConfigError(f"snapshotter must be one of {', '.join(SNAPSHOTTERS)}")
    grace = data.get("gc_grace_seconds", DaemonConfig.gc_grace_seconds)
    if grace < 0:
        raise ConfigError("gc_grace_seconds must not be negative")
    task_idle = data.get("task_idle_seconds", DaemonConfig.task_idle_seconds)
    if task_idle <= 0:
        raise ConfigError("task_idle_seconds must be positive")
    keep_count = data.get("event_retention_count", DaemonConfig.event_retention_count)
    keep_seconds = data.get("event_retention_seconds", DaemonConfig.event_retention_seconds)
    if keep_count < 1 or keep_seconds <= 0:
        raise ConfigError(
            "event_retention_count must be at least 1 and event_retention_seconds positive"
        )
    return DaemonConfig(
        root=root.absolute(),
        state=state.absolute(),
        addresses=tuple(addresses),
        log_level=args.log_level or data.get("log_level", "info"),
        max_payload=max_payload,
        max_streams=max_streams,
        socket_group=str(data.get("socket_group", "")),
        curve_dir=Path(data["curve_dir"]) if data.get("curve_dir") else None,
        container_idle_seconds=data.get("container_idle_seconds", 30.0),
        task_idle_seconds=task_idle,
        runtimes=runtimes,
        snapshotter=snapshotter,
        gc_grace_seconds=grace,
        event_retention_count=keep_count,
        event_retention_seconds=keep_seconds,
    )
