"""``berth-bench exec``: an exec storm into running tasks.

``--tasks`` tasks (default 4) run ``sleep 600`` in namespace
``bench-exec``; then, at each client count, every client execs ``true``
into one of them (client i into task i mod M), back to back or at
``--rate``, and waits for that process's exit (berth: its ``EXIT`` event
on the worker's own subscription; containerd: ``Tasks/Wait``, then
``DeleteProcess``). One call is Exec + its exit observed.

Correctness: every exec's exit must be observed, with status 0; a breach
makes the run exit 1. With ``--compare containerd`` each phase runs
against containerd right after berth, with the same clients; with
``--client-shape both``, in each shape (processes, then threads) in turn.
"""

from __future__ import annotations

import argparse

from bench.load import RunOptions
from bench.options import at_least_one
from bench.session import Session, run_load_scenario
from bench.task_ops import TaskParams, exec_op
from bench.task_setup import RunningTasks, check_exits, clear_namespace, scratch_rootfs

__all__ = ["NAMESPACE", "add_arguments", "run"]

NAMESPACE = "bench-exec"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this scenario only (bench.cli adds the common ones)."""
    parser.add_argument(
        "--tasks",
        type=at_least_one,
        default=4,
        metavar="M",
        help="running tasks the clients exec into (default 4)",
    )


def _measure(session: Session, tasks: int) -> None:
    with scratch_rootfs(session.options.workdir) as rootfs:
        running = RunningTasks(session, NAMESPACE, rootfs)
        try:
            ids = {}
            for backend in session.backends:
                if left := clear_namespace(session, backend, NAMESPACE):
                    session.outcome.notes.append(f"{backend}: removed {len(left)} leftover(s)")
                ids[backend] = running.start(backend, tasks)
            for clients in session.options.clients:
                for shape in session.shapes:
                    for backend in session.backends:
                        params = [
                            TaskParams(NAMESPACE, str(rootfs), task=ids[backend][i % tasks])
                            for i in range(clients)
                        ]
                        session.phase(
                            "exec", clients, exec_op, params, backend=backend, shape=shape
                        )
                        when = f"exec at {clients}"
                        check_exits(session, backend, NAMESPACE, clients, when, shape)
        finally:
            running.stop_all()


def run(options: RunOptions, args: argparse.Namespace) -> int:
    """Run the scenario; 0, or 1 on a correctness breach or an aborted run."""
    tasks: int = args.tasks
    return run_load_scenario(
        "exec",
        options,
        lambda session: _measure(session, tasks),
        namespaces=(NAMESPACE,),
        config={"tasks": tasks, "process": "true"},
        clean="every exec's exit was observed, with status 0",
    )
