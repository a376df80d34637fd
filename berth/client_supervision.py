"""The client's ``supervision`` group: ``berth.v1.Supervision`` (docs/protocol.md §6.7.3).

Each container's restart policy, desired state, supervision state, restart
count, next restart, last exits and health, as the daemon keeps them::

    with berth.Client() as client:
        sv = client.supervision.get("web")
        print(sv["state"], sv["restart_count"], (sv["health"] or {}).get("status"))

The policy and health check themselves are container labels; see
:func:`berth.restart_labels` and :func:`berth.health_labels`.
"""

from __future__ import annotations

from operator import itemgetter
from typing import cast

from berth.client_base import Done, Group, Map, MapIter, MapList, Rpc

__all__ = ["Supervision"]

_SUPERVISION = "berth.v1.Supervision/"


class Supervision(Group[Map, MapList, Done, MapIter]):
    """``berth.v1.Supervision``: what supervision knows of each container.

    A Supervision is a dict: ``container_id``, ``policy`` (``"on-failure:3"``,
    ``"no"``), ``desired`` (``"running"`` | ``"stopped"``), ``state``
    (``BACKOFF``, ``FAILED``, or the task's: ``CREATED``, ``RUNNING``,
    ``PAUSED``, ``PAUSING``, ``STOPPED``), ``reason``, ``restart_count``,
    ``next_restart_at`` (a Timestamp or None), ``last_exits`` (``[{exit_status,
    exited_at, oom}]``, oldest first) and ``health`` (None, or ``{status,
    failing_streak, log: [{start, end, exit_code, output}]}``).
    """

    def get(self, container_id: str) -> Map:
        """``Get``: the container's Supervision; :class:`~wire.errors.NotFound` if none."""
        body = {"container_id": container_id}
        return cast(Map, self._unary(Rpc(_SUPERVISION + "Get", body, itemgetter("supervision"))))

    def list(self) -> MapList:
        """``List``: the Supervision of every container of the namespace, in id order."""
        return cast(MapList, self._unary(Rpc(_SUPERVISION + "List", {}, itemgetter("supervision"))))
