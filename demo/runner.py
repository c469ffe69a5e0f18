"""Runs the demo: `meshlens up`, the mesh, the load and the faults; writes the ground truth.

Interactive (`scenario` None): a fault cycle until Ctrl-C. Scenario: one planned fault, a fixed
duration, then a clean teardown and the ground-truth JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from demo.faults import FaultInjector, FaultSpec
from demo.loadgen import LoadGenerator, Progress
from demo.mesh import NAMESPACE, ControlPlane, Mesh
from demo.scenarios import Scenario, demo_schedule
from demo.supervisor import UpProcess
from demo.topology import Topology, get_topology

__all__ = ["RunOptions", "ground_truth", "run"]


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What to run; `scenario` None is the interactive demo (its own topology, rate, seed)."""

    data_dir: Path
    topology: str = "shop"
    rate_per_s: float = 12.0
    seed: int = 1
    http_port: int | None = 8686
    scenario: Scenario | None = None
    ground_truth_path: Path | None = None
    fault_gap_s: float = 20.0
    fault_s: float = 20.0
    faults: bool = True
    mtls: str = "off"  # the sidecars' --mtls; needs the control plane (it issues certificates)

    def __post_init__(self) -> None:
        if self.fault_gap_s <= 0 or self.fault_s <= 0:
            raise ValueError("fault gap and duration must be > 0")


_CLEAR_LINE = "\r\x1b[K"
_MAX_FAULTS = 10_000  # the interactive cycle is bounded (days at the default pace)


class _Console:
    """Progress lines (rewritten in place on a terminal) and announcements (kept)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self.note = ""

    def progress(self, progress: Progress) -> None:
        line = progress.line(self.note)
        self._out.write(f"{_CLEAR_LINE}{line}" if self._tty else f"{line}\n")
        self._out.flush()

    def announce(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        clear = _CLEAR_LINE if self._tty else ""
        self._out.write(f"{clear}{stamp} {text}\n")
        self._out.flush()


async def run(options: RunOptions, stop: asyncio.Event, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Run until `stop` (or the scenario's end); returns the ground truth (also written)."""
    scenario = options.scenario
    topology = get_topology(scenario.topology if scenario else options.topology)
    seed = scenario.seed if scenario else options.seed
    rate = scenario.rate_per_s if scenario else options.rate_per_s
    work = options.data_dir / "demo"
    shutil.rmtree(work / "logs", ignore_errors=True)
    console = _Console(out)
    started_ns = time.time_ns()
    http_port = options.http_port if importlib.util.find_spec("analytics.up") else None
    services = [f"{NAMESPACE}/{s.name}" for s in topology.services]
    up = UpProcess(options.data_dir, http_port, work / "logs", bootstrap_services=services)
    mesh: Mesh | None = None
    injector: FaultInjector | None = None
    load: LoadGenerator | None = None
    load_started_ns = 0
    try:
        console.announce(f"starting meshlens up (data {options.data_dir}) ...")
        await up.start()
        mesh = _make_mesh(options, topology, seed, work, up, console)
        count = len(mesh.instances)
        console.announce(f"starting {topology.name}: {count} instances, each app + sidecar ...")
        await mesh.start()
        _print_intro(console, topology, mesh, up, scenario)
        injector = FaultInjector(mesh, console.announce)
        load = LoadGenerator(topology, mesh.entry_urls(), rate, console.progress, seed=seed)
        load_started_ns = time.time_ns()
        await _drive(options, scenario, topology, stop, load, injector, console)
    finally:
        console.announce("stopping: apps, sidecars, then meshlens up (flushing spans) ...")
        if mesh is not None:
            await mesh.stop()
        await up.stop()
    truth = ground_truth(
        topology, scenario, seed, rate, started_ns, load_started_ns, time.time_ns(),
        injector, load, mesh,
    )  # fmt: skip
    path = options.ground_truth_path or _default_truth_path(work, scenario, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(truth, indent=2), encoding="utf-8")
    console.announce(f"ground truth written to {path}")
    return truth


async def _drive(
    options: RunOptions,
    scenario: Scenario | None,
    topology: Topology,
    stop: asyncio.Event,
    load: LoadGenerator,
    injector: FaultInjector,
    console: _Console,
) -> None:
    load_stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(load.run(load_stop))
        if scenario is not None:
            faults = group.create_task(_one_fault(scenario.fault(), injector, console))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), scenario.duration_s)
        else:
            cycle = demo_schedule(topology, options.fault_s) if options.faults else []
            faults = group.create_task(_cycle(cycle, options.fault_gap_s, injector, console))
            await stop.wait()
        faults.cancel()  # an active fault is cleared (and recorded) by the injector
        with contextlib.suppress(asyncio.CancelledError):
            await faults
        load_stop.set()


async def _one_fault(spec: FaultSpec, injector: FaultInjector, console: _Console) -> None:
    await asyncio.sleep(spec.start_s)
    await _inject(spec, injector, console)


async def _cycle(
    cycle: list[FaultSpec], gap_s: float, injector: FaultInjector, console: _Console
) -> None:
    for spec in itertools.islice(itertools.cycle(cycle), _MAX_FAULTS):
        await asyncio.sleep(gap_s)
        await _inject(spec, injector, console)


async def _inject(spec: FaultSpec, injector: FaultInjector, console: _Console) -> None:
    console.note = f"fault: {spec.kind} on {spec.instance or spec.service}"
    try:
        await injector.inject(spec)
    finally:
        console.note = ""


def _make_mesh(
    options: RunOptions, topology: Topology, seed: int, work: Path, up: UpProcess, console: _Console
) -> Mesh:
    data_dir = options.data_dir
    for name, address in up.addresses.items():
        console.announce(f"{name} listening on {address}")
    control_plane = _control_plane(data_dir, up)
    if control_plane is None:
        console.announce("no control plane in `meshlens up`: sidecars use static policy files")
    else:
        console.announce(f"control plane at {control_plane.url}: sidecars register and watch")
        token_file = data_dir / "tokens" / "operator.token"
        console.announce(f"operator token (UI and API login) in {token_file}")
    mtls = options.mtls if control_plane is not None else "off"
    if mtls != "off":
        console.announce(f"sidecars: --mtls {mtls}, certificates from the control plane")
    return Mesh(topology, work, up.collector_url, seed=seed, control_plane=control_plane, mtls=mtls)


def _print_intro(
    console: _Console, topology: Topology, mesh: Mesh, up: UpProcess, scenario: Scenario | None
) -> None:
    edges = ", ".join(f"{a}->{b}" for a, b in sorted(topology.edges()))
    console.announce(f"mesh ready: {len(mesh.instances)} instances; call graph: {edges}")
    console.announce(f"users enter at {', '.join(mesh.entry_urls())} ({topology.entry})")
    ui = next((a for n, a in up.addresses.items() if "otlp" not in n), None)
    if ui is not None:
        console.announce(f"open {ui} : the service map, traces, anomalies and root causes")
        console.announce(f"API: {ui}/api/v1/services/map, Jaeger: {ui}/jaeger (bearer token)")
    else:
        console.announce("no analytics in `meshlens up` yet: spans go to the store only")
    if scenario is not None:
        console.announce(
            f"scenario {scenario.name} seed {scenario.seed}, {scenario.duration_s:.0f} s"
        )


def _control_plane(data_dir: Path, up: UpProcess) -> ControlPlane | None:
    """The control plane `up` serves, if any, with the operator token it generated."""
    url = up.addresses.get("analytics http")
    token_file = data_dir / "tokens" / "operator.token"
    if url is None or not token_file.exists():
        return None  # no analytics, or operator tokens configured by env (not ours to read)
    token = token_file.read_text(encoding="utf-8").strip()
    return ControlPlane(url, token, data_dir / "tokens" / "bootstrap")


def _default_truth_path(work: Path, scenario: Scenario | None, seed: int) -> Path:
    name = scenario.name.replace("/", "-") if scenario else "interactive"
    return work / "ground-truth" / f"{name}-seed{seed}.json"


def ground_truth(
    topology: Topology,
    scenario: Scenario | None,
    seed: int,
    rate: float,
    started_ns: int,
    load_started_ns: int,
    ended_ns: int,
    injector: FaultInjector | None,
    load: LoadGenerator | None,
    mesh: Mesh | None,
) -> dict[str, Any]:
    """What ran, what was injected where and when: the analytics evaluation's labels."""
    return {
        "scenario": scenario.name if scenario else None,
        "topology": topology.name,
        "seed": seed,
        "rate_per_s": rate,
        "duration_s": scenario.duration_s if scenario else None,
        "started_ns": started_ns,
        "load_started_ns": load_started_ns,
        "ended_ns": ended_ns,
        "services": {s.name: list(s.instance_ids()) for s in topology.services},
        "edges": sorted([a, b] for a, b in topology.edges()),
        "policies_via": ("control-plane" if mesh.control_plane else "files") if mesh else None,
        "faults": [r.to_json() for r in injector.records] if injector else [],
        "journeys": {
            name: {"total": c[0], "failed": c[1]}
            for name, c in (load.by_journey if load else {}).items()
        },
        "instances": {
            i.name: {"service": i.service, "app_port": i.app_port, "inbound_port": i.inbound_port}
            for i in (mesh.instances.values() if mesh else [])
        },
    }
