"""``berth-bench``: load scenarios against berthd, one subcommand each.

Every scenario gets the same common options (target, clients, load and
its pace, side by side with containerd, progress, plots, report) as a
:class:`~bench.load.RunOptions`, plus its own, and returns the process's
exit code. A scenario on the load engine writes only its phases and
checks as ``measure(session)`` and hands it to
:func:`bench.session.run_load_scenario` (see :mod:`bench.execs`); to add
one, write a module with ``add_arguments(parser)`` and
``run(options, args) -> int`` and add one :class:`Scenario` row to
:data:`SCENARIOS`::

    berth-bench containers                      # spawn a berthd, 1 and 16 clients
    berth-bench exec --clients 1,4 --rate 50    # open loop: 50 execs/s
    berth-bench mixed --compare containerd --containerd-address unix:///run/containerd/containerd.sock
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import (
    containers,
    containers_ab,
    events,
    events_replay,
    execs,
    images,
    mixed,
    progress,
    restarts,
    tasks,
)
from bench.load import CLIENT_SHAPES, Load, RunOptions

__all__ = ["SCENARIOS", "Scenario", "build_parser", "main"]


def _any_options(args: argparse.Namespace) -> str | None:
    return None


def _shape_needs_churn(args: argparse.Namespace) -> str | None:
    """``tasks`` and ``images`` load with many clients only in their ``--churn`` phases."""
    if args.client_shape != "processes" and not args.churn:
        return (
            f"--client-shape {args.client_shape} applies to the --churn phases only"
            " (the rest is one client, one call at a time); add --churn"
        )
    return None


@dataclass(frozen=True)
class Scenario:
    """A subcommand: its name, one-line help, its own options, and how to run it.

    ``refuse`` says why a combination of options cannot be honoured (the
    command then exits 2), or None.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[RunOptions, argparse.Namespace], int]
    refuse: Callable[[argparse.Namespace], str | None] = _any_options


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "containers",
        "Containers service: create, get, update, list, delete; scale and memory checks",
        containers.add_arguments,
        containers.run,
    ),
    Scenario(
        "containers-ab",
        "Containers create/update/delete on this checkout's berthd and another tree's"
        " (--berthd-tree), alternating",
        containers_ab.add_arguments,
        containers_ab.run,
    ),
    Scenario(
        "tasks",
        "Tasks service: lifecycle, exec, exit -> event latency and shim memory, beside raw runc",
        tasks.add_arguments,
        tasks.run,
        _shape_needs_churn,
    ),
    Scenario(
        "exec",
        "Exec storm: clients exec `true` into running tasks and wait for each exit",
        execs.add_arguments,
        execs.run,
    ),
    Scenario(
        "events",
        "Event fan-out: M subscribers while clients churn task lifecycles",
        events.add_arguments,
        events.run,
    ),
    Scenario(
        "events-replay",
        "Event log replay: fill a fresh berthd's log (Images/Put), then time Events/Subscribe"
        " from the oldest event to the latest",
        events_replay.add_arguments,
        events_replay.run,
    ),
    Scenario(
        "mixed",
        "A weighted mix of container, task, exec and snapshot calls at once",
        mixed.add_arguments,
        mixed.run,
    ),
    Scenario(
        "restarts",
        "Supervision: crash -> replacement task running beside Docker and containerd's restart"
        " monitor; daemon CPU per restart; health-check overhead",
        restarts.add_arguments,
        restarts.run,
    ),
    Scenario(
        "images",
        "Images: import + unpack of a ~100 MB archive beside ctr images import; "
        "snapshot Prepare + Remove latency",
        images.add_arguments,
        images.run,
        _shape_needs_churn,
    ),
)


def client_counts(text: str) -> tuple[int, ...]:
    """Parse ``--clients``: a comma-separated list of positive ints, e.g. ``1,16``."""
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of client counts: {text!r}") from None
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError(f"client counts must be >= 1: {text!r}")
    return counts


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def _add_common(parser: argparse.ArgumentParser, name: str) -> None:
    target = parser.add_argument_group("target")
    target.add_argument(
        "--address",
        help="address of a running berthd (default: spawn one on a fresh temporary root)",
    )
    target.add_argument(
        "--workdir", help="where a spawned berthd's temporary directory goes (default /tmp)"
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--clients",
        type=client_counts,
        default=(1, 16),
        help="concurrent closed-loop clients, one process each (see --client-shape); a list"
        " runs each count (default 1,16)",
    )
    load.add_argument(
        "--client-shape",
        choices=CLIENT_SHAPES,
        default="processes",
        help="processes: each client its own process (default); threads: all clients threads"
        " of one process, each its own connection, as an application embeds the client;"
        " both: every phase in each shape, one after the other",
    )
    load.add_argument(
        "--duration",
        type=_positive_float,
        default=3.0,
        metavar="SECONDS",
        help="measured time per phase (default 3)",
    )
    load.add_argument(
        "--ops",
        type=_positive_int,
        metavar="N",
        help="measured calls per phase, split among the clients, instead of --duration",
    )
    load.add_argument(
        "--warmup",
        type=_positive_float,
        default=0.5,
        metavar="SECONDS",
        help="unmeasured time at the start of each phase (default 0.5)",
    )
    load.add_argument(
        "--rate",
        type=_positive_float,
        metavar="CALLS_PER_S",
        help="open loop: this many calls/s over all clients, latency measured from when each"
        " call was due (no coordinated omission); default: closed loop",
    )
    load.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="per-call timeout of the load clients, sent as timeout_ms; 0: none (default 30)",
    )
    compare = parser.add_argument_group("side by side")
    compare.add_argument(
        "--compare",
        choices=["containerd"],
        help="run every phase against containerd too (gRPC; needs berth[compare])",
    )
    compare.add_argument(
        "--containerd-address",
        metavar="SOCKET",
        help="containerd's socket (default unix:///run/containerd/containerd.sock)",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--progress",
        action="store_true",
        help="show the live progress line on stderr even when it is not a terminal",
    )
    output.add_argument(
        "--plots",
        type=Path,
        metavar="DIR",
        help="write PNG plots of latency percentiles and throughput over time (matplotlib)",
    )
    output.add_argument(
        "--json",
        type=Path,
        default=Path(f"bench-report-{name}.json"),
        metavar="PATH",
        help=f"the JSON report (default bench-report-{name}.json)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``berth-bench`` command line: one subcommand per scenario."""
    parser = argparse.ArgumentParser(
        prog="berth-bench",
        description="Benchmarks of berthd. Each scenario prints a table and writes a JSON report.",
    )
    sub = parser.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    for scenario in SCENARIOS:
        one = sub.add_parser(scenario.name, help=scenario.help, description=scenario.help)
        _add_common(one, scenario.name)
        scenario.add_arguments(one)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``berth-bench``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    scenario = next(s for s in SCENARIOS if s.name == args.scenario)
    if (why := scenario.refuse(args)) is not None:
        parser.error(f"{scenario.name}: {why}")  # exits 2
    progress.configure(args.progress)
    options = RunOptions(
        address=args.address,
        clients=args.clients,
        load=Load(duration=args.duration, warmup=args.warmup, ops=args.ops, rate=args.rate),
        json_path=args.json,
        timeout=args.timeout or None,
        workdir=args.workdir,
        plots=args.plots,
        compare=args.compare,
        containerd_address=args.containerd_address,
        client_shape=args.client_shape,
    )
    sys.exit(scenario.run(options, args))


if __name__ == "__main__":
    main()
