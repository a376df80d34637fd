"""berth: a container supervisor with containerd's container model, driven over ZeroMQ.

The public client API: :class:`Client`, :class:`AsyncClient`, :func:`oci_spec_any`,
:func:`restart_labels` and :func:`health_labels` (a container's supervision
labels), and the error classes, the same ones the daemon raises
(``berth.NotFound is wire.errors.NotFound``).
"""

from __future__ import annotations

from berth.client import AsyncClient, Client, oci_spec_any
from berth.supervision_labels import health_labels, restart_labels
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
    "health_labels",
    "oci_spec_any",
    "restart_labels",
]

__version__ = "0.1.0"
