"""The shim's routine log lines, written without the :mod:`logging` machinery.

A shim's first line through :mod:`logging` touches (and so copies out of
the zygote's shared memory) the logger, its handler, the formatter, the
text layer of ``sys.stderr`` and their code: about 0.2 MB of PSS per shim,
for good. :func:`info` writes the same line (``LOG_FORMAT`` of
:mod:`runtime.shim.server`) straight to fd 2, which is the task's
``shim.log``. Warnings and errors still go through :mod:`logging`: they are
rare, and tracebacks are worth the memory then.
"""

from __future__ import annotations

import os
import time

__all__ = ["info"]


def info(name: str, message: str) -> None:
    """Write ``message`` as an INFO line of logger ``name`` to stderr; never raises."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    line = f"{stamp},{int(now * 1000) % 1000:03d} berth[{os.getpid()}] INFO {name}: {message}\n"
    try:  # noqa: SIM105 (contextlib.suppress: more shared pages touched)
        os.write(2, line.encode(errors="replace"))
    except OSError:
        pass
