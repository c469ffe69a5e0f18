"""`meshlens demo`: the embedded mesh plus a demo application, its load and a fault schedule.

`meshlens demo` runs until Ctrl-C with a fault cycle; `meshlens demo --scenario NAME --seed N
--duration S` runs one repeatable scenario and writes its ground truth (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from demo.faults import FaultKind
from demo.runner import RunOptions, run
from demo.scenarios import ALIASES, evaluation_cases, parse_scenario
from demo.topology import TOPOLOGIES

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the `demo` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo", help="run the mesh with a demo shop, load and faults (embedded store)"
    )
    parser.add_argument("--data", default=".meshlens", help="data directory (default ./.meshlens)")
    parser.add_argument("--topology", default="shop", choices=sorted(TOPOLOGIES))
    parser.add_argument("--rate", type=_positive, default=12.0, help="journeys per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--http-port", type=int, default=8686, help="analytics / UI port")
    parser.add_argument(
        "--scenario",
        default=None,
        help=f"topology/kind[/service[/instance]] or one of: {', '.join(ALIASES)}",
    )
    parser.add_argument("--duration", type=_positive, default=40.0, help="scenario seconds")
    parser.add_argument("--ground-truth", default=None, help="where to write the JSON")
    parser.add_argument("--fault-gap", type=_positive, default=20.0, help="quiet seconds")
    parser.add_argument("--fault-duration", type=_positive, default=20.0, help="seconds per fault")
    parser.add_argument("--no-faults", action="store_true", help="load only")
    parser.add_argument(
        "--mtls",
        choices=("off", "permissive", "strict"),
        default="off",
        help="sidecars' inbound mTLS mode (certificates from the control plane; strict keeps"
        " the entry service permissive for the users' plaintext)",
    )
    parser.add_argument(
        "--list-scenarios", action="store_true", help="print the evaluation cases and exit"
    )
    parser.set_defaults(run=_run)


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _run(args: argparse.Namespace) -> int:
    if args.list_scenarios:
        for case in evaluation_cases(kinds=tuple(FaultKind)):
            print(case.name)
        return 0
    try:
        scenario = (
            parse_scenario(args.scenario, args.seed, args.duration, args.rate)
            if args.scenario
            else None
        )
        options = RunOptions(
            data_dir=Path(args.data).resolve(),
            topology=args.topology,
            rate_per_s=args.rate,
            seed=args.seed,
            http_port=args.http_port,
            scenario=scenario,
            ground_truth_path=Path(args.ground_truth) if args.ground_truth else None,
            fault_gap_s=args.fault_gap,
            fault_s=args.fault_duration,
            faults=not args.no_faults,
            mtls=args.mtls,
        )
    except (ValueError, KeyError) as exc:
        print(f"meshlens demo: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_main(options))


async def _main(options: RunOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await run(options, stop)
    except RuntimeError as exc:  # a child failed to start; its log tail is in the message
        print(f"meshlens demo: {exc}", file=sys.stderr)
        return 1
    return 0
