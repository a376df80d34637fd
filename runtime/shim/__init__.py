"""The shim: one ``berth-shim`` process per task, forked by the zygote.

- :mod:`runtime.shim.config` -- :class:`ShimConfig`, what a shim is given;
- :mod:`runtime.shim.server` -- :func:`run_shim`: the process, its sockets, its loop;
- :mod:`runtime.shim.task` -- the ops on the task (create, start, kill, ...);
- :mod:`runtime.shim.launch` -- starting a process with its stdio wired;
- :mod:`runtime.shim.process` -- the process table, reaping, the exits file;
- :mod:`runtime.shim.streams` -- the non-blocking byte copies and the pty.

The daemon side is :mod:`runtime.zygote` (forks shims) and
:mod:`runtime.shim_client` (talks to one).
"""

from __future__ import annotations

from runtime.shim.config import ShimConfig

__all__ = ["ShimConfig"]
