"""Run every benchmark script in bench/ in turn: `python -m bench [NAME ...]`.

Each script is a standalone program printing its figures next to a baseline from the same run;
a failing script is reported and the others still run. The exit code is 1 if any failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts(names: list[str]) -> list[Path]:
    found = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_"))
    if names:
        found = [p for p in found if p.stem in names]
    return found


def main(argv: list[str]) -> int:
    failed = []
    for script in scripts(argv):
        print(f"=== bench/{script.name}", flush=True)
        started = time.monotonic()
        code = subprocess.run(
            [sys.executable, str(script)], cwd=HERE.parent, check=False
        ).returncode
        print(
            f"=== bench/{script.name}: exit {code} in {time.monotonic() - started:.0f}s\n",
            flush=True,
        )
        if code != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
