"""berth's one error hierarchy, each class carrying its wire code.

::

    BerthError                       (INTERNAL unless a subclass says otherwise)
    ├── InvalidArgument              INVALID_ARGUMENT
    ├── NotFound                     NOT_FOUND
    ├── AlreadyExists                ALREADY_EXISTS
    ├── FailedPrecondition           FAILED_PRECONDITION
    ├── Unimplemented                UNIMPLEMENTED
    ├── Unavailable                  UNAVAILABLE
    ├── ResourceExhausted            RESOURCE_EXHAUSTED
    ├── DeadlineExceeded             DEADLINE_EXCEEDED
    ├── OutOfRange                   OUT_OF_RANGE
    ├── Unauthenticated              UNAUTHENTICATED
    ├── PermissionDenied             PERMISSION_DENIED
    └── Internal                     INTERNAL

The daemon raises these and maps them to an error frame exactly once
(:func:`to_wire`); the client turns an error frame back into the same class
(:func:`from_wire`), so ``except berth.NotFound`` works on both sides.
Messages name the object and what was wrong: ``container "web": not found``.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "CODES",
    "AlreadyExists",
    "BerthError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "from_wire",
    "to_wire",
]


class BerthError(Exception):
    """Base of every error berth reports; ``code`` is its gRPC status name."""

    code: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(BerthError):
    """Malformed frame or body, wrong type, bad identifier, filter or mask."""

    code = "INVALID_ARGUMENT"


class NotFound(BerthError):
    """The named object does not exist in this namespace."""

    code = "NOT_FOUND"


class AlreadyExists(BerthError):
    """Create of an existing id."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(BerthError):
    """The object is in the wrong state for the operation."""

    code = "FAILED_PRECONDITION"


class Unimplemented(BerthError):
    """Unknown method."""

    code = "UNIMPLEMENTED"


class Unavailable(BerthError):
    """Daemon shutting down, or a runtime binary or kernel feature missing."""

    code = "UNAVAILABLE"


class ResourceExhausted(BerthError):
    """Payload too large, or too many open streams."""

    code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(BerthError):
    """The request's ``timeout_ms`` passed."""

    code = "DEADLINE_EXCEEDED"


class Unauthenticated(BerthError):
    """Transport security could not identify the peer."""

    code = "UNAUTHENTICATED"


class PermissionDenied(BerthError):
    """Transport security refused the peer."""

    code = "PERMISSION_DENIED"


class OutOfRange(BerthError):
    """A position outside what exists: an event seq trimmed or not yet given."""

    code = "OUT_OF_RANGE"


class Internal(BerthError):
    """A bug; the daemon logs the traceback, the wire carries only the message."""

    code = "INTERNAL"


CODES: dict[str, type[BerthError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Unimplemented,
        Unavailable,
        ResourceExhausted,
        DeadlineExceeded,
        OutOfRange,
        Unauthenticated,
        PermissionDenied,
        Internal,
    )
}


def to_wire(exc: BaseException) -> dict[str, Any]:
    """The ``error`` map of a reply for ``exc``; anything not ours is INTERNAL."""
    if isinstance(exc, BerthError):
        return {"code": exc.code, "message": exc.message}
    return {"code": "INTERNAL", "message": f"internal error: {type(exc).__name__}"}


def from_wire(error: Any) -> BerthError:
    """The exception for an ``error`` map received from the daemon."""
    if not isinstance(error, dict):
        return Internal(f"malformed error frame: {error!r}")
    code = error.get("code")
    message = error.get("message")
    cls = CODES.get(code, BerthError) if isinstance(code, str) else BerthError
    exc = cls(message if isinstance(message, str) else repr(message))
    if cls is BerthError and isinstance(code, str):
        exc.code = code  # type: ignore[misc]  # keep a code this client does not know
    return exc
