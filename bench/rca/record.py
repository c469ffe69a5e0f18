"""Record the root-cause corpus: demo scenario runs, each into its own directory, sequentially.

    python bench/rca/record.py DIR [--seed 1] [--duration 25] [--nofault 2] [--only N]

Runs every case of `demo.scenarios.evaluation_cases` (66 per seed: 6 fault kinds x 2 topologies)
as `meshlens demo --scenario NAME --seed S --duration D`, writing DIR/<case>/clickhouse (the spans)
and DIR/<case>/truth.json (the ground truth: load start, fault start/end, target). Cases are
interleaved over kinds and topologies, so a partial corpus still covers every kind. `--nofault K`
adds K fault-free runs per topology (load only, stopped with SIGINT after D seconds), which the
evaluation uses to count false positives. A case whose truth.json exists is skipped (resumable).
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from demo.scenarios import Scenario, evaluation_cases


def _interleaved(cases: list[Scenario]) -> list[Scenario]:
    """Round-robin over (topology, kind) groups so any prefix covers every fault kind."""
    groups: dict[tuple[str, str], list[Scenario]] = {}
    for case in cases:
        groups.setdefault((case.topology, str(case.kind)), []).append(case)
    out: list[Scenario] = []
    for batch in itertools.zip_longest(*groups.values()):
        out.extend(c for c in batch if c is not None)
    return out


def _demo(run_dir: Path, args: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "meshlens_cli", "--log-level", "WARNING", "demo",
        *args, "--data", str(run_dir), "--ground-truth", str(run_dir / "truth.json"),
        "--http-port", "0",
    ]  # fmt: skip


def record_case(into: Path, case: Scenario) -> int:
    run_dir = into / f"{case.name.replace('/', '-')}-s{case.seed}"
    if (run_dir / "truth.json").is_file():
        return 0
    run_dir.mkdir(parents=True, exist_ok=True)
    command = _demo(
        run_dir,
        ["--scenario", case.name, "--seed", str(case.seed), "--duration", str(case.duration_s)],
    )
    with (run_dir / "demo.log").open("w") as log:
        done = subprocess.run(command, stdout=log, stderr=log, timeout=600, check=False)
    return done.returncode


def record_nofault(
    into: Path, topology: str, index: int, duration_s: float, *, seed: int | None = None
) -> int:
    """A fault-free run of `topology` (load seed `seed`, default 100 + index)."""
    run_dir = into / f"{topology}-nofault-{index}"
    if (run_dir / "truth.json").is_file():
        return 0
    run_dir.mkdir(parents=True, exist_ok=True)
    load_seed = 100 + index if seed is None else seed
    command = _demo(run_dir, ["--topology", topology, "--no-faults", "--seed", str(load_seed)])
    with (run_dir / "demo.log").open("w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 600
            # Load starts after the mesh is up; the log says so. Then run `duration_s` more.
            while time.monotonic() < deadline and proc.poll() is None:
                if "mesh ready" in (run_dir / "demo.log").read_text(errors="replace"):
                    break
                time.sleep(0.5)
            time.sleep(duration_s)
            proc.send_signal(signal.SIGINT)
            return proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--seed", type=int, action="append")
    parser.add_argument("--duration", type=float, default=25.0)
    parser.add_argument("--nofault", type=int, default=2, help="fault-free runs per topology")
    parser.add_argument("--only", type=int, default=0, help="record at most N fault cases")
    args = parser.parse_args(argv)
    cases = _interleaved(evaluation_cases(seeds=args.seed or [1], duration_s=args.duration))
    if args.only:
        cases = cases[: args.only]
    plan: list[Scenario | tuple[str, int]] = list(cases)
    # Fault-free runs early (after the first 12 cases) so even a cut-short corpus has them.
    for i in range(args.nofault):
        for topology in ("shop", "chain"):
            plan.insert(min(12, len(plan)), (topology, i))
    args.dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for n, item in enumerate(plan, 1):
        started = time.monotonic()
        if isinstance(item, Scenario):
            code, name = record_case(args.dir, item), item.name
        else:
            topology, index = item
            code = record_nofault(args.dir, topology, index, args.duration)
            name = f"{topology} nofault {index}"
        failed += code != 0
        print(
            f"[{n}/{len(plan)}] {name}: exit {code} ({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    print(f"done: {len(plan) - failed} recorded, {failed} failed; pid {os.getpid()}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
