"""The `meshlens` command: one CLI whose subcommands each package registers in its `cli.py`."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence

__all__ = ["build_parser", "main"]

# Each module has `register(subparsers)`, adding its subcommands with `set_defaults(run=fn)`
# where fn(args) -> int is the exit code.
_COMMAND_MODULES = ("collector.cli", "sidecar.cli", "analytics.cli", "dashboards.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshlens", description="meshlens: an observability-first service mesh"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 2
    from collector.logs import configure_logging

    configure_logging(args.log_level)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
