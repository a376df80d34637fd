"""berth: a container supervisor with containerd's container model, driven over ZeroMQ.

The public client API: :class:`Client`, :class:`AsyncClient`, :func:`oci_spec_any`
and the error classes, the same ones the daemon raises (``berth.NotFound is
wire.errors.NotFound``).
"""

from __future__ import annotations

from berth.client import AsyncClient, Client, oci_spec_any
from wire.errors import (
    AlreadyExists,
    BerthError,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "BerthError",
    "Client",
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
    "oci_spec_any",
]

__version__ = "0.1.0"
