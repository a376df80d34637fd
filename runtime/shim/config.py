"""The shim's one configuration object, and its plain-map form for the zygote.

The daemon decides every path a shim uses; the shim derives nothing from its
environment. ``runc_root`` is passed to ``runc --root`` as is and ``id`` is the
runc container id, so the daemon keeps one runc root per namespace (as
containerd does with ``/run/containerd/runc/<ns>``): two namespaces may hold
the same container id.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["ShimConfig"]


@dataclass(frozen=True)
class ShimConfig:
    """What one ``berth-shim`` process needs to run one task.

    - ``namespace``, ``id``: the task's namespace and container id (also the
      runc container id).
    - ``task_dir``: ``<state>/tasks/<ns>/<id>``; the shim creates it if
      missing and removes it when the task is deleted. It holds
      ``shim.sock``, ``bundle/``, ``init.pid``, ``exits`` and ``shim.log``.
    - ``runc_binary``, ``runc_root``: the OCI runtime and its ``--root``.
    - ``events_address``: ``ipc://<path>`` of the daemon's unix datagram
      socket for shim events (see :mod:`runtime.shim.protocol`).
    """

    namespace: str
    id: str
    task_dir: Path
    runc_binary: str
    runc_root: Path
    events_address: str

    @property
    def name(self) -> str:
        """``<ns>/<id>``, the way log lines and errors name this task."""
        return f"{self.namespace}/{self.id}"

    def to_map(self) -> dict[str, str]:
        """The config as a map of strings, to send to the zygote."""
        return {key: str(value) for key, value in asdict(self).items()}

    @classmethod
    def from_map(cls, fields: Any) -> ShimConfig:
        """The config from :meth:`to_map`'s form; ``ValueError`` if it is not that."""
        if not isinstance(fields, dict):
            raise ValueError(f"shim config must be a map, not {type(fields).__name__}")
        names = ("namespace", "id", "task_dir", "runc_binary", "runc_root", "events_address")
        bad = sorted(name for name in names if not isinstance(fields.get(name), str))
        unknown = sorted(str(key) for key in fields if key not in names)
        if bad or unknown:
            raise ValueError(f"shim config: bad or missing fields {bad}, unknown fields {unknown}")
        return cls(
            namespace=fields["namespace"],
            id=fields["id"],
            task_dir=Path(fields["task_dir"]),
            runc_binary=fields["runc_binary"],
            runc_root=Path(fields["runc_root"]),
            events_address=fields["events_address"],
        )
