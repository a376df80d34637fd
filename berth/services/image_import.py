"""berth.v1.Images/Import and berth.v1.GC/Run: handed to the import and collector actors."""

from __future__ import annotations

import os

from actors.gc import Collect
from actors.image_records import check_image_name
from actors.importer import ImportImages
from actors.supervision import Directory
from wire.errors import InvalidArgument, NotFound
from wire.frontend import Request, Route
from wire.snapshot_messages import GC_RUN, IMPORT_IMAGES

__all__ = ["ImportService"]


class ImportService:
    """Handlers of Import and GC/Run; they hold no state of their own."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    def routes(self) -> dict[str, Route]:
        """This service's entries of the method table."""
        return {
            "berth.v1.Images/Import": Route(self.import_images),
            "berth.v1.GC/Run": Route(self.gc_run),
        }

    def import_images(self, request: Request) -> None:
        """Import {path, name} -> {images}: an archive on the daemon's host."""
        body = IMPORT_IMAGES.decode(request.body)
        path = body["path"]
        if not path or not os.path.isabs(path) or "\x00" in path:
            raise InvalidArgument(f'import path "{path}": must be an absolute path')
        if not os.path.exists(path):
            raise NotFound(f'import path "{path}": not found')
        if os.path.isdir(path):
            raise InvalidArgument(f'import path "{path}": is a directory, not an archive')
        name = check_image_name(body["name"]) if body["name"] else ""
        self.directory.tell("importer", ImportImages(request.ns, path, name, request.reply))

    def gc_run(self, request: Request) -> None:
        """Run {} -> {snapshots, content}: a full collection, now."""
        GC_RUN.decode(request.body)
        self.directory.tell("gc", Collect(request.reply))
