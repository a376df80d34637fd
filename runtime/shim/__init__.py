"""The shim: one ``berth-shim`` process per task, forked by the zygote.

- :mod:`runtime.shim.config` -- :class:`ShimConfig`, what a shim is given;
- :mod:`runtime.shim.server` -- :func:`run_shim`: the process, its sockets, its loop;
- :mod:`runtime.shim.protocol` -- the framing of requests and the event datagrams;
- :mod:`runtime.shim.events` -- sending exits to the daemon, keeping what it cannot take;
- :mod:`runtime.shim.helper` -- each runc command in a short-lived child;
- :mod:`runtime.shim.lines` -- routine log lines without :mod:`logging`;
- :mod:`runtime.shim.task` -- the ops on the task (create, start, kill, ...);
- :mod:`runtime.shim.launch` -- starting a process with its stdio wired;
- :mod:`runtime.shim.process` -- the process table, reaping, the exits file;
- :mod:`runtime.shim.streams` -- the non-blocking byte copies and the pty.

The daemon side is :mod:`runtime.zygote` (forks shims),
:mod:`runtime.shim_client` (talks to one) and :mod:`actors.shim_events`
(receives their events). No zmq here: a shim's memory (PSS, at most 2.9 MB
as containerd's Go shim) is the budget every module of this package keeps to.
"""

from __future__ import annotations

from runtime.shim.config import ShimConfig

__all__ = ["ShimConfig"]
