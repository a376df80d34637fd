"""containerd.v1.Version."""

from __future__ import annotations

from berth.version import VERSION, revision
from wire.frontend import Request, Route
from wire.messages import EMPTY

__all__ = ["VersionService"]


class VersionService:
    """Version {} -> {version, revision}."""

    def routes(self) -> dict[str, Route]:
        """This service's entries of the method table."""
        return {"containerd.v1.Version/Version": Route(self.version)}

    def version(self, request: Request) -> None:
        """The daemon's version and source revision."""
        EMPTY.decode(request.body)
        request.reply.ok({"version": VERSION, "revision": revision()})
