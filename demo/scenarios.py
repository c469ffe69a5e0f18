"""Named, repeatable scenarios (topology, load, one fault, timing) and the evaluation's case loop.

A scenario name is `topology/kind[/service[/instance]]` (or an alias in `ALIASES`); the seed picks
an unnamed target and jitters the fault's start, so (name, seed, duration) fixes the whole plan.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from demo.faults import FaultKind, FaultSpec, default_params
from demo.topology import Topology, get_topology

__all__ = ["ALIASES", "Scenario", "demo_schedule", "evaluation_cases", "parse_scenario"]

ALIASES: dict[str, str] = {
    "quick": "shop/latency/payment",
    "slow-dependency": "shop/latency/inventory",
    "error-burst": "shop/error_burst/payment",
    "abort": "shop/abort/payment",
    "crash-failover": "shop/crash/catalog/catalog-2",
    "cpu-starved": "shop/cpu/shipping",
    "resets": "shop/reset/cart",
    "chain-latency": "chain/latency/rates",
}


@dataclass(frozen=True, slots=True)
class Scenario:
    """One case: the topology, a fault on a target, the seed, the load and its length."""

    topology: str
    kind: FaultKind
    service: str
    instance: str | None
    seed: int
    duration_s: float = 40.0
    rate_per_s: float = 12.0

    def __post_init__(self) -> None:
        topology = get_topology(self.topology)
        service = topology.service(self.service)  # KeyError names the unknown service
        if self.instance is not None and self.instance not in service.instance_ids():
            raise ValueError(f"{self.service} has no instance {self.instance!r}")
        if self.kind is FaultKind.ABORT and not topology.callers(self.service):
            raise ValueError(f"abort is injected by callers' sidecars; {self.service} has none")
        if self.duration_s < 8:
            raise ValueError(f"duration must be >= 8 s, got {self.duration_s}")

    @property
    def name(self) -> str:
        parts = [self.topology, str(self.kind), self.service]
        return "/".join(parts + ([self.instance] if self.instance else []))

    def fault(self) -> FaultSpec:
        """The fault: it starts after 30-40 % of the run (seeded) and lasts 35 % of it."""
        rng = random.Random(f"{self.name}#{self.seed}")
        start_s = round(self.duration_s * rng.uniform(0.30, 0.40), 1)
        return FaultSpec(
            kind=self.kind,
            service=self.service,
            instance=self.instance,
            start_s=start_s,
            duration_s=round(self.duration_s * 0.35, 1),
            params=default_params(self.kind),
        )


def _targets(topology: Topology, kind: FaultKind) -> list[str]:
    """Services a fault of `kind` may hit: not the entry (users would only see it fail)."""
    names = [s.name for s in topology.services if s.name != topology.entry]
    if kind is FaultKind.ABORT:
        names = [n for n in names if topology.callers(n)]
    return names


def _crash_instance(topology: Topology, service: str, seed: int) -> str:
    ids = topology.service(service).instance_ids()
    return ids[random.Random(f"{service}#{seed}").randrange(len(ids))]


def parse_scenario(
    text: str, seed: int, duration_s: float = 40.0, rate_per_s: float = 12.0
) -> Scenario:
    """`topology/kind[/service[/instance]]` or an alias; ValueError explains a bad name."""
    parts = ALIASES.get(text, text).split("/")
    if not 2 <= len(parts) <= 4:
        raise ValueError(
            f"scenario {text!r}: expected topology/kind[/service[/instance]] or one of "
            f"{', '.join(ALIASES)}"
        )
    topology = get_topology(parts[0])
    try:
        kind = FaultKind(parts[1])
    except ValueError:
        raise ValueError(
            f"unknown fault kind {parts[1]!r}; known: {', '.join(k.value for k in FaultKind)}"
        ) from None
    if len(parts) >= 3:
        service = parts[2]
        if service not in {s.name for s in topology.services}:
            raise ValueError(f"topology {topology.name} has no service {service!r}")
    else:
        targets = _targets(topology, kind)
        service = targets[random.Random(f"{topology.name}/{kind}#{seed}").randrange(len(targets))]
    instance = parts[3] if len(parts) == 4 else None
    if kind is FaultKind.CRASH and instance is None:
        instance = _crash_instance(topology, service, seed)
    return Scenario(topology.name, kind, service, instance, seed, duration_s, rate_per_s)


def evaluation_cases(
    topologies: Iterable[str] = ("shop", "chain"),
    kinds: Iterable[FaultKind] = tuple(FaultKind),
    seeds: Sequence[int] = (1,),
    duration_s: float = 40.0,
) -> list[Scenario]:
    """Every (topology, fault kind, target service, seed): the root-cause evaluation's cases."""
    cases = []
    for name, kind in itertools.product(topologies, kinds):
        topology = get_topology(name)
        for service, seed in itertools.product(_targets(topology, kind), seeds):
            instance = _crash_instance(topology, service, seed) if kind is FaultKind.CRASH else None
            cases.append(Scenario(name, kind, service, instance, seed, duration_s))
    return cases


def demo_schedule(topology: Topology, fault_s: float = 20.0) -> list[FaultSpec]:
    """The interactive demo's cycle: one fault of each kind, on a fitting target."""
    plan = _SHOP_PLAN if topology.name == "shop" else _generic_plan(topology)
    return [
        FaultSpec(kind, service, instance, duration_s=fault_s, params=default_params(kind))
        for kind, service, instance in plan
    ]


_SHOP_PLAN: list[tuple[FaultKind, str, str | None]] = [
    (FaultKind.LATENCY, "inventory", None),  # a slow shared dependency
    (FaultKind.ERROR_BURST, "payment", None),
    (FaultKind.CRASH, "catalog", "catalog-2"),  # failover to catalog-1, outlier ejection
    (FaultKind.CPU, "shipping", None),
    (FaultKind.RESET, "cart", None),
    (FaultKind.ABORT, "payment", None),
]


def _generic_plan(topology: Topology) -> list[tuple[FaultKind, str, str | None]]:
    plan: list[tuple[FaultKind, str, str | None]] = []
    for n, kind in enumerate(FaultKind):
        targets = _targets(topology, kind)
        service = targets[n % len(targets)]
        instance = _crash_instance(topology, service, 0) if kind is FaultKind.CRASH else None
        plan.append((kind, service, instance))
    return plan
