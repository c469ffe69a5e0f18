"""The `meshlens` command: one CLI whose subcommands each package registers in its `cli.py`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

__all__ = ["build_parser", "main", "raise_fd_limit"]

# Which module registers which subcommand. Each module has `register(subparsers)`, adding its
# subcommands with `set_defaults(run=fn)` where fn(args) -> int is the exit code. Only the module
# of the command being run is imported: a sidecar process must not pay for analytics' imports.
COMMANDS: dict[str, str] = {
    "collector": "collector.cli",
    "up": "collector.cli",
    "sidecar": "sidecar.cli",
    "inject": "sidecar.inject",
    "analytics": "analytics.cli",
    "import": "analytics.offline",
    "analyze": "analytics.offline",
    "demo": "demo.cli",
    "dashboards": "dashboards.cli",
}


def _modules_for(argv: Sequence[str]) -> list[str]:
    """The modules to import: the chosen command's, or every one (for help and errors)."""
    command = next((a for a in argv if a in COMMANDS), None)
    if command is not None:
        return [COMMANDS[command]]
    return list(dict.fromkeys(COMMANDS.values()))


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshlens", description="meshlens: an observability-first service mesh"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _modules_for(argv):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that part of meshlens is not built yet
            raise
        module.register(subparsers)
    return parser


# The soft open-files limit raised to when the hard limit is unlimited
# (Linux refuses more than fs.nr_open, 1,048,576 by default).
FD_LIMIT_CAP = 1 << 20


def raise_fd_limit() -> None:
    """Raise the soft open-files limit to the hard one, as Go's runtime does for every program
    since 1.19 (where there are such limits).

    The sidecar holds a descriptor per downstream and per pooled upstream connection, the
    collector one per sidecar connection. With the usual soft limit of 1,024 (hard 524,288
    under systemd, 1,048,576 in Docker) the sidecar's listeners reset every connection past it
    and nothing was logged: libuv accepts and closes what it cannot keep. The sidecar's /stats
    shows the limit and the descriptors open."""
    try:
        import resource
    except ImportError:  # (not on every platform)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FD_LIMIT_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # (kept as it was: a container may forbid it)
            pass


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 2
    from collector.logs import configure_logging

    configure_logging(args.log_level)
    raise_fd_limit()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
