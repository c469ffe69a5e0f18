"""Resilience benchmark (issue 7): a static policy against the tuning loop's accepted suggestions.

The chain demo mesh (gateway -> auth, orders (x2) -> pricing -> rates -> ledger; every journey
reaches the leaf `ledger` once). The demo apps have no capacity limit of their own, so the leaf
gets one: one worker serving a request at a time for `--leaf-ms` (`/_demo/fault` `serial_ms`, a
FIFO queue without limit, like a busy single-threaded server), i.e. ~1000/leaf_ms requests/s.
Steps:

1. capacity: 1000/leaf_ms by construction (one worker); a short load ramp on the default
   policies checks it (the last step before p99 knees: > 2x the lightest step's and +50 ms);
2. phase A (fresh `meshlens up` + mesh): the static policy (3 attempts on 5xx/connect/reset,
   1 s per try, 3 s per call, no budget, at every hop) published via the control plane; base
   load (0.7x capacity), then the fault on the leaf (+200 ms latency and 30 % HTTP 500 on top of
   its service time) under 1.5x capacity, then recovery at base load;
3. the tuning loop (its own fresh up + mesh, static policy): warm-up with a load ramp up to
   capacity (so the concurrency rule sees a knee), `POST /api/v1/suggestions/refresh`, accept
   every proposed suggestion with `mode: enforce`, wait until the sidecars run the new
   versions, read the resulting documents; then phase B on a fresh up + mesh with those
   documents: the same base/fault/recovery (so a warm-up that overloaded the leaf does not
   leave phase B with its backlog);
4. per phase (pre-fault, fault, recovery) and policy: goodput (successful journeys per 1-s
   bucket of their start, mean), p99 journey latency (journeys started in the phase, failed
   ones included), error rate, and retry amplification from the sidecars' stored CLIENT spans
   (one per attempt, `meshlens.attempt`): attempts sent / logical calls per hop, and attempts
   sent to the leaf per journey started (end to end); recovery = the first second after the
   fault's end from which goodput stays >= 95 % of the pre-fault goodput
   (bench/resilience_metrics.py); then the goals.

    .venv/bin/python bench/resilience.py [--short] [--leaf-ms 100] [--keep DIR]

`--short`: 20 s fault, 15 s recovery, shorter ramps; the full run has the issue's 60 s fault and
30 s recovery. Everything listens on 127.0.0.1; every child is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.resilience_metrics import Amplification, amplification, goodput_buckets, read_attempts
from bench.resilience_metrics import recovery_s as recovery_from
from demo.faults import AppFaults
from demo.loadgen import percentile
from demo.mesh import NAMESPACE, ControlPlane, Mesh
from demo.policies import sidecar_config
from demo.supervisor import UpProcess
from demo.topology import Topology, get_topology

TOPOLOGY = "chain"
LEAF = "ledger"
CP_API = "/api/v1/controlplane"
_HTTP = aiohttp.ClientTimeout(total=10)
_JOURNEY_TIMEOUT = aiohttp.ClientTimeout(total=10)
_MAX_IN_FLIGHT = 200


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


@dataclass(slots=True)
class Load:
    """Open-loop journeys at a settable rate; records (end time, latency s, ok) per journey."""

    topology: Topology
    url: str
    rate: float
    seed: int = 7
    samples: list[tuple[float, float, bool]] = field(default_factory=list)
    shed: int = 0
    in_flight: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed)
        journeys = self.topology.journeys
        weights = [j.weight for j in journeys]
        connector = aiohttp.TCPConnector(limit=_MAX_IN_FLIGHT)
        async with aiohttp.ClientSession(timeout=_JOURNEY_TIMEOUT, connector=connector) as s:
            async with asyncio.TaskGroup() as group:
                due = time.monotonic()
                while not stop.is_set():
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(min(delay, 0.2))
                        continue
                    due += 1.0 / self.rate
                    if self.in_flight >= _MAX_IN_FLIGHT:
                        self.shed += 1
                        continue
                    journey = rng.choices(journeys, weights=weights)[0]
                    group.create_task(self._one(s, journey.method, self.url + journey.path))

    async def _one(self, session: aiohttp.ClientSession, method: str, url: str) -> None:
        self.in_flight += 1
        began = time.monotonic()
        ok = False
        try:
            async with session.request(method, url) as response:
                await response.read()
                ok = response.status < 500
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        finally:
            self.in_flight -= 1
            now = time.monotonic()
            self.samples.append((now, now - began, ok))

    def between(self, t0: float, t1: float) -> list[tuple[float, float, bool]]:
        return [s for s in self.samples if t0 <= s[0] < t1]


def goodput(samples: list[tuple[float, float, bool]], seconds: float) -> float:
    return sum(ok for _, _, ok in samples) / seconds if seconds > 0 else 0.0


def p99_ms(samples: list[tuple[float, float, bool]]) -> float:
    return percentile([lat * 1000.0 for _, lat, _ in samples], 99)


def knee_capacity(steps: list[tuple[float, float, float]]) -> float:
    """The last ramp rate before p99 knees (> 2x the lightest step's p99 and > +50 ms)."""
    if not steps:
        raise ValueError("no ramp steps")
    light = steps[0][1]
    capacity = steps[0][0]
    for rate, p99, _ in steps[1:]:
        if p99 > max(2 * light, light + 50):
            break
        capacity = rate
    return capacity


class Stack:
    """A fresh `meshlens up` (embedded store in its own dir) and the chain mesh on it."""

    def __init__(self, work: Path, leaf_ms: float) -> None:
        self.topology = get_topology(TOPOLOGY)
        self.data = work
        self.leaf_ms = leaf_ms
        services = [f"{NAMESPACE}/{s.name}" for s in self.topology.services]
        self.up = UpProcess(work, 0, work / "demo" / "logs", bootstrap_services=services)
        self.mesh: Mesh | None = None
        self.cp: ControlPlane | None = None

    async def start(self) -> None:
        await self.up.start()
        url = self.up.addresses.get("analytics http")
        token_file = self.data / "tokens" / "operator.token"
        if url is None or not token_file.exists():
            raise RuntimeError("meshlens up has no analytics/control plane (needed here)")
        token = token_file.read_text(encoding="utf-8").strip()
        self.cp = ControlPlane(url, token, self.data / "tokens" / "bootstrap")
        self.mesh = Mesh(self.topology, self.data / "demo", self.up.collector_url, 1, self.cp)
        await self.mesh.start()
        await self.leaf_faults(AppFaults(serial_ms=self.leaf_ms))

    async def stop(self) -> None:
        if self.mesh is not None:
            await self.mesh.stop()
        await self.up.stop()

    @property
    def headers(self) -> dict[str, str]:
        assert self.cp is not None
        return {"authorization": f"Bearer {self.cp.operator_token}"}

    @property
    def entry(self) -> str:
        assert self.mesh is not None
        return self.mesh.entry_urls()[0]

    async def leaf_faults(self, faults: AppFaults) -> None:
        """Set on every leaf instance (the serial worker's queue does not delay this endpoint)."""
        assert self.mesh is not None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for name in self.mesh.instances_of(LEAF):
                url = f"http://127.0.0.1:{self.mesh.instances[name].app_port}/_demo/fault"
                async with session.post(url, json=faults.to_json()) as response:
                    if response.status != 200:
                        raise RuntimeError(f"{name}: fault refused: {await response.text()}")

    def static_documents(self) -> dict[str, dict[str, Any]]:
        """3 attempts (5xx, connect failure, reset; no budget), 1 s per try at every hop."""
        docs: dict[str, dict[str, Any]] = {}
        for svc in self.topology.services:
            doc = sidecar_config(self.topology, svc.name, {})
            doc["routes"] = [
                {
                    "name": f"static-{callee}",
                    "match": {"hosts": [callee]},
                    "destinations": [{"upstream": callee}],
                    "timeout": {"request_s": 3.0, "per_try_s": 1.0},
                    "retry": {
                        "attempts": 3,
                        "on": ["5xx", "connect-failure", "reset"],
                        "budget": None,
                    },
                }
                for callee in self.topology.callees(svc.name)
            ]
            docs[svc.name] = doc
        return docs

    async def publish(self, docs: dict[str, dict[str, Any]], reason: str) -> None:
        """PUT every document through the control plane; wait until every sidecar runs it."""
        assert self.cp is not None
        versions: dict[str, int] = {}
        async with aiohttp.ClientSession(timeout=_HTTP, headers=self.headers) as session:
            for service, doc in docs.items():
                body = {"document": doc, "reason": reason}
                url = f"{self.cp.url}{CP_API}/policies/{service}"
                async with session.put(url, json=body) as response:
                    if response.status not in (200, 201):
                        raise RuntimeError(f"{service}: {response.status} {await response.text()}")
                    versions[service] = int((await response.json())["version"])
        await self.wait_versions(versions)

    async def _policies(self) -> dict[str, dict[str, Any]]:
        """The control plane's policy record (version, document, ...) of every service."""
        assert self.cp is not None
        out: dict[str, dict[str, Any]] = {}
        async with aiohttp.ClientSession(timeout=_HTTP, headers=self.headers) as session:
            for svc in self.topology.services:
                url = f"{self.cp.url}{CP_API}/policies/{svc.name}"
                async with session.get(url) as response:
                    if response.status == 200:
                        out[svc.name] = dict(await response.json())
        return out

    async def documents(self) -> dict[str, dict[str, Any]]:
        """The current policy document of every service."""
        return {name: dict(p["document"]) for name, p in (await self._policies()).items()}

    async def current_versions(self) -> dict[str, int]:
        return {name: int(p["version"]) for name, p in (await self._policies()).items()}

    async def wait_versions(self, versions: dict[str, int], timeout_s: float = 30.0) -> None:
        assert self.mesh is not None
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
            for inst in self.mesh.instances.values():
                want = str(versions.get(inst.service, ""))
                while want:
                    async with session.get(f"http://127.0.0.1:{inst.admin_port}/config") as r:
                        doc = await r.json(content_type=None)
                    if str(doc.get("version")) == want:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{inst.name} never ran policy v{want}")
                    await asyncio.sleep(0.2)

    @property
    def store_dir(self) -> Path:
        return self.data / "clickhouse"

    async def accept_suggestions(self) -> list[str]:
        assert self.cp is not None
        api = f"{self.cp.url}/api/v1/suggestions"
        accepted: list[str] = []
        async with aiohttp.ClientSession(timeout=_HTTP, headers=self.headers) as session:
            async with session.post(f"{api}/refresh") as response:
                log(f"refresh: {response.status} {await response.text()}")
            async with session.get(api, params={"state": "proposed", "limit": "200"}) as r:
                rows = (await r.json())["suggestions"]
            for row in rows:
                if row["target"] == "none":
                    log(f"finding {row['kind']} {row['caller']}: {row.get('summary', '')}")
                    continue  # informational (chain checks): nothing to accept
                body = {"mode": "enforce", "reason": "bench: accept all"}
                async with session.post(f"{api}/{row['id']}/accept", json=body) as response:
                    what = f"{row['kind']} {row['caller']}->{row.get('upstream')}"
                    if response.status == 200:
                        accepted.append(what)
                        change = json.dumps(row.get("change"), sort_keys=True)
                        log(f"accepted {what}: {row.get('summary', '')} {change}")
                    else:
                        log(f"not accepted {what}: {response.status} {await response.text()}")
        return accepted


async def hold(load: Load, rate: float, seconds: float) -> None:
    load.rate = rate
    await asyncio.sleep(seconds)


async def ramp(load: Load, rates: list[float], step_s: float) -> list[tuple[float, float, float]]:
    """(rate, p99 ms, goodput) per step."""
    out = []
    for rate in rates:
        load.rate = rate
        t0 = time.monotonic()
        await asyncio.sleep(step_s)
        window = load.between(t0 + 1.0, time.monotonic())
        out.append((rate, p99_ms(window), goodput(window, step_s - 1.0)))
        log(f"  ramp {rate:5.1f}/s: p99 {out[-1][1]:6.0f} ms, goodput {out[-1][2]:5.1f}/s")
    return out


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase of one policy's run (monotonic times of the load generator)."""

    name: str
    t0: float
    t1: float
    rate: float


@dataclass(slots=True)
class Result:
    name: str
    phases: list[Phase]
    samples: list[tuple[float, float, bool]]
    amplification: dict[str, Amplification] = field(default_factory=dict)

    def phase(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)

    def ended(self, phase: Phase) -> list[tuple[float, float, bool]]:
        return [s for s in self.samples if phase.t0 <= s[0] < phase.t1]

    def started(self, phase: Phase) -> list[tuple[float, float, bool]]:
        return [s for s in self.samples if phase.t0 <= s[0] - s[1] < phase.t1]

    def buckets(self, phase: Phase) -> list[int]:
        return goodput_buckets(self.samples, phase.t0, phase.t1)

    def goodput(self, phase: Phase) -> float:
        b = self.buckets(phase)
        return sum(b) / len(b) if b else 0.0

    def p99_ms(self, phase: Phase) -> float:
        return p99_ms(self.started(phase))

    def errors(self, phase: Phase) -> float:
        started = self.started(phase)
        return sum(not ok for *_, ok in started) / len(started) if started else 0.0

    def recovery_s(self) -> float | None:
        return recovery_from(self.buckets(self.phase("recovery")), self.goodput(self.phase("pre")))


async def fault_run(stack: Stack, load: Load, name: str, args: Any, capacity: float) -> Result:
    base, high = 0.7 * capacity, 1.5 * capacity
    await hold(load, base, args.base_s)
    pre = Phase("pre", time.monotonic() - args.base_s + 2, time.monotonic(), base)
    log(f"[{name}] FAULT on {LEAF}: +200 ms, 30 % HTTP 500, at {high:.1f} journeys/s")
    await stack.leaf_faults(AppFaults(latency_ms=200, error_rate=0.3, serial_ms=stack.leaf_ms))
    t0 = time.monotonic()
    load.rate = high
    await asyncio.sleep(args.fault_s)
    await stack.leaf_faults(AppFaults(serial_ms=stack.leaf_ms))
    load.rate = base
    t1 = time.monotonic()
    log(f"[{name}] fault cleared after {t1 - t0:.1f} s; recovery at {base:.1f} journeys/s")
    await asyncio.sleep(args.recovery_s)
    t2 = time.monotonic()
    await asyncio.sleep(_JOURNEY_TIMEOUT.total or 10)  # journeys started in the window finish
    phases = [pre, Phase("fault", t0, t1, high), Phase("recovery", t1, t2, base)]
    return Result(name, phases, list(load.samples))


async def measure_spans(stack: Stack, result: Result, wall_offset: float) -> None:
    """Amplification per phase from the stopped stack's stored sidecar spans."""
    for phase in result.phases:
        rows = await read_attempts(stack.store_dir, phase.t0 + wall_offset, phase.t1 + wall_offset)
        journeys = len(result.started(phase))
        result.amplification[phase.name] = amplification(rows, LEAF, journeys)


async def started(root: Path, name: str, leaf_ms: float, tries: int = 3) -> Stack:
    """A started stack; a start that fails (the demo picks free ports before its children bind
    them, and a busy machine's outgoing connections can take one meanwhile) is retried in a
    fresh directory."""
    for n in range(1, tries + 1):
        stack = Stack(root / (name if n == 1 else f"{name}-{n}"), leaf_ms)
        log(f"[{name}] starting meshlens up + chain mesh ...")
        try:
            await stack.start()
            return stack
        except RuntimeError as exc:
            await stack.stop()
            if n == tries:
                raise
            log(f"[{name}] start failed ({str(exc).splitlines()[0]}); again")
    raise AssertionError("unreachable")


async def learn(root: Path, args: Any, capacity: float) -> tuple[dict[str, Any], list[str]]:
    """The tuning loop on its own stack: static policy, warm-up ramp, refresh, accept every
    suggestion (`enforce`), wait until the sidecars run it; returns the resulting documents.

    The fault run then starts from a fresh stack with these documents: the warm-up goes up to
    capacity under the static policy's unbudgeted retries, and on a noisy machine that can
    leave the leaf with a backlog of abandoned requests (its queue has no bound), which would be
    measured as the suggested policy's pre-fault state."""
    stack = await started(root, "warmup", args.leaf_ms)
    stop = asyncio.Event()
    try:
        await stack.publish(stack.static_documents(), "bench: static policy")
        load = Load(stack.topology, stack.entry, 1.0)
        task = asyncio.create_task(load.run(stop))
        log("[warmup] static policy running; warm-up ramp for the tuning rules")
        # Up to capacity (a saturated step shows the concurrency rule its knee), not beyond: a
        # long overload under the static policy's unbudgeted retries teaches a sick "normal".
        await ramp(load, [capacity * f for f in (0.4, 0.7, 0.85, 1.0)], args.warm_step_s)
        await hold(load, 0.7 * capacity, 6)  # spans reach the store
        before = await stack.current_versions()
        accepted = await stack.accept_suggestions()
        after = await stack.current_versions()
        changed = {k: v for k, v in after.items() if before.get(k) != v}
        await stack.wait_versions(changed, 60.0)
        log(f"[warmup] {len(accepted)} suggestions enforced; versions running: {changed}")
        docs = await stack.documents()
        stop.set()
        await task
    finally:
        stop.set()
        await stack.stop()
    return docs, accepted


async def run_policy(
    root: Path, args: Any, name: str, capacity: float, docs: dict[str, Any] | None = None
) -> tuple[Result, float]:
    """One fresh stack: the static policy, or `docs`; then base, fault, recovery."""
    wall_offset = time.time() - time.monotonic()
    stack = await started(root, name, args.leaf_ms)
    stop = asyncio.Event()
    try:
        load = Load(stack.topology, stack.entry, 1.0)
        task = asyncio.create_task(load.run(stop))
        if capacity <= 0:
            # The leaf's capacity is 1000/leaf_ms by construction (one worker). The ramp's
            # p99 knee is only a check: on shared cores it read 8/s, and once 3/s, for 10/s.
            capacity = 1000.0 / args.leaf_ms
            log(f"capacity check ramp (leaf {args.leaf_ms:.0f} ms/request: {capacity:.1f}/s)")
            rates = [capacity * f for f in (0.3, 0.6, 0.8, 1.0, 1.2)]
            knee = knee_capacity(await ramp(load, rates, args.step_s))
            log(f"capacity {capacity:.1f} journeys/s; measured p99 knee at {knee:.1f}/s")
            await hold(load, 0.5 * capacity, 3)
        if docs is None:
            await stack.publish(stack.static_documents(), "bench: static policy")
        else:
            await stack.publish(docs, "bench: the static policy + the accepted suggestions")
        log(f"[{name}] policy running on every sidecar")
        result = await fault_run(stack, load, name, args, capacity)
        stop.set()
        await task
    finally:
        stop.set()
        await stack.stop()
    await measure_spans(stack, result, wall_offset)
    return result, capacity


async def main_async(args: Any) -> int:
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="meshlens-resil-"))
    try:
        static, capacity = await run_policy(root, args, "static", 0.0)
        docs, accepted = await learn(root, args, capacity)
        tuned, _ = await run_policy(root, args, "suggested", capacity, docs)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print_table([static, tuned], capacity, args, accepted)
    return 0


def _x(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def print_phases(results: list[Result]) -> None:
    print(
        "| policy | phase | offered /s | goodput /s | p99 ms | errors | amplification all hops "
        "| worst hop | leaf attempts / journey |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for ph in r.phases:
            amp = r.amplification.get(ph.name)
            cells = [_x(amp.all_hops), _x(amp.worst_hop), _x(amp.end_to_end)] if amp else ["-"] * 3
            print(
                f"| {r.name} | {ph.name} | {ph.rate:.1f} | {r.goodput(ph):.2f} | "
                f"{r.p99_ms(ph):.0f} | {r.errors(ph):.1%} | " + " | ".join(cells) + " |"
            )


def print_hops(results: list[Result]) -> None:
    hops = sorted({h for r in results for h in r.amplification["fault"].per_hop})
    print("| hop (in fault) | " + " | ".join(f"{r.name} sent/calls" for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for caller, upstream in hops:
        cells = []
        for r in results:
            sent, calls = r.amplification["fault"].per_hop.get((caller, upstream), (0, 0))
            cells.append(f"{sent}/{calls} = {_x(sent / calls if calls else math.nan)}")
        print(f"| {caller} -> {upstream} | " + " | ".join(cells) + " |")


def print_table(results: list[Result], capacity: float, args: Any, accepted: list[str]) -> None:
    static, tuned = results
    fault_s, fault_t = static.phase("fault"), tuned.phase("fault")
    fmt_rec: Callable[[float | None], str] = lambda r: "never" if r is None else f"{r:.0f} s"  # noqa: E731
    print()
    print(
        f"leaf {LEAF}: {args.leaf_ms:.0f} ms/request (one worker), capacity ~{capacity:.1f} "
        f"journeys/s; fault {args.fault_s:.0f} s at {1.5 * capacity:.1f}/s; recovery window "
        f"{args.recovery_s:.0f} s at {0.7 * capacity:.1f}/s"
    )
    print(f"accepted suggestions ({len(accepted)}): {', '.join(accepted) or 'none'}")
    print()
    print_phases(results)
    print()
    for r in results:
        fault, recovery = r.buckets(r.phase("fault")), r.buckets(r.phase("recovery"))
        print(f"{r.name}: ok journeys per second (by start) in fault {fault}, after it {recovery}")
    print()
    print_hops(results)
    print()
    print("| metric | static | suggested | ratio | goal | met |")
    print("|---|---|---|---|---|---|")
    g_s, g_t = static.goodput(fault_s), tuned.goodput(fault_t)
    g_ratio = g_t / g_s if g_s else float("inf")
    print(
        f"| goodput in fault (ok journeys/s) | {g_s:.2f} | {g_t:.2f} | "
        f"{g_ratio:.2f}x | >= 3x | {'yes' if g_ratio >= 3 else 'NO'} |"
    )
    p_s, p_t = static.p99_ms(fault_s), tuned.p99_ms(fault_t)
    p_ratio = p_t / p_s if p_s else float("nan")
    print(
        f"| p99 in fault (ms) | {p_s:.0f} | {p_t:.0f} | {p_ratio:.2f}x | "
        f"<= 0.5x | {'yes' if p_ratio <= 0.5 else 'NO'} |"
    )
    a_s, a_t = static.amplification["fault"], tuned.amplification["fault"]
    worst = max(a_t.worst_hop, a_t.end_to_end)
    print(
        f"| retry amplification in fault, worst hop | {_x(a_s.worst_hop)} | {_x(a_t.worst_hop)} "
        f"| - | <= 1.1x | {'yes' if a_t.worst_hop <= 1.1 else 'NO'} |"
    )
    print(
        f"| retry amplification in fault, leaf attempts / journey | {_x(a_s.end_to_end)} | "
        f"{_x(a_t.end_to_end)} | - | <= 1.1x | {'yes' if a_t.end_to_end <= 1.1 else 'NO'} |"
    )
    rec_t = tuned.recovery_s()
    rec_ok = rec_t is not None and rec_t <= 15
    print(
        f"| time to 95 % goodput after the fault | {fmt_rec(static.recovery_s())} | "
        f"{fmt_rec(rec_t)} | - | <= 15 s | {'yes' if rec_ok else 'NO'} |"
    )
    print(
        f"| journey error rate in fault | {static.errors(fault_s):.1%} | "
        f"{tuned.errors(fault_t):.1%} | - | - | - |"
    )
    print(
        f"| pre-fault goodput (ok journeys/s) | {static.goodput(static.phase('pre')):.2f} | "
        f"{tuned.goodput(tuned.phase('pre')):.2f} | - | - | - |"
    )
    met = g_ratio >= 3 and p_ratio <= 0.5 and worst <= 1.1 and rec_ok
    print(json.dumps({"capacity": capacity, "all_goals_met": met}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--short", action="store_true", help="~4 min version (20 s fault)")
    parser.add_argument(
        "--leaf-ms", type=float, default=100.0, help="leaf service time per request (ms)"
    )
    parser.add_argument("--keep", default="", help="keep the data dirs (and logs) here")
    args = parser.parse_args(argv)
    if args.leaf_ms <= 0:
        parser.error("--leaf-ms must be > 0")
    args.fault_s, args.recovery_s = (20.0, 15.0) if args.short else (60.0, 30.0)
    args.base_s = 8.0 if args.short else 15.0
    args.step_s = 4.0 if args.short else 8.0
    args.warm_step_s = 8.0 if args.short else 20.0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
