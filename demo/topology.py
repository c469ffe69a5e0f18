"""Demo topologies as data: services, instances, operations and the calls each one makes.

An operation does some local work, then runs its call stages in order; the calls inside one
stage run in parallel (fan-out). Journeys are what a user does at the entry service.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CHAIN",
    "SHOP",
    "TOPOLOGIES",
    "Call",
    "Journey",
    "Operation",
    "Service",
    "Topology",
    "get_topology",
]


@dataclass(frozen=True, slots=True)
class Call:
    """One outgoing call: `method` `path` on `service` (through the caller's sidecar)."""

    service: str
    path: str
    method: str = "GET"


@dataclass(frozen=True, slots=True)
class Operation:
    """An endpoint of a service: local work (mean and jitter), its own error rate, its calls."""

    path: str
    method: str = "GET"
    work_ms: float = 2.0
    jitter_ms: float = 1.0
    error_rate: float = 0.0
    stages: tuple[tuple[Call, ...], ...] = ()

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"operation path must start with '/', got {self.path!r}")
        if self.work_ms < 0 or self.jitter_ms < 0:
            raise ValueError(f"{self.path}: work_ms and jitter_ms must be >= 0")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"{self.path}: error_rate must be in [0, 1], got {self.error_rate}")

    @property
    def calls(self) -> tuple[Call, ...]:
        return tuple(call for stage in self.stages for call in stage)


@dataclass(frozen=True, slots=True)
class Service:
    """A service of the demo: its name, how many instances run, its operations."""

    name: str
    operations: tuple[Operation, ...]
    instances: int = 1

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise ValueError(f"{self.name}: instances must be >= 1, got {self.instances}")
        keys = [(op.method, op.path) for op in self.operations]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.name}: duplicate operation")

    def operation(self, method: str, path: str) -> Operation | None:
        for op in self.operations:
            if op.method == method and op.path == path:
                return op
        return None

    def instance_ids(self) -> tuple[str, ...]:
        """Instance names, `<service>-<n>` from 1."""
        return tuple(f"{self.name}-{n}" for n in range(1, self.instances + 1))


@dataclass(frozen=True, slots=True)
class Journey:
    """A user journey: a request to the entry service, drawn with relative `weight`."""

    name: str
    path: str
    method: str = "GET"
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Topology:
    """A whole demo application; validated on construction (calls resolve, no cycles)."""

    name: str
    entry: str
    services: tuple[Service, ...]
    journeys: tuple[Journey, ...]

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ValueError(f"topology {self.name}: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        names = [s.name for s in self.services]
        problems = [f"duplicate service {n}" for n in set(names) if names.count(n) > 1]
        by_name = {s.name: s for s in self.services}
        if self.entry not in by_name:
            problems.append(f"entry service {self.entry} is not defined")
        for service in self.services:
            for op in service.operations:
                for call in op.calls:
                    callee = by_name.get(call.service)
                    if callee is None or callee.operation(call.method, call.path) is None:
                        problems.append(
                            f"{service.name} {op.path} calls unknown "
                            f"{call.service} {call.method} {call.path}"
                        )
        entry = by_name.get(self.entry)
        for journey in self.journeys:
            if entry is not None and entry.operation(journey.method, journey.path) is None:
                problems.append(f"journey {journey.name}: {self.entry} has no {journey.path}")
            if journey.weight <= 0:
                problems.append(f"journey {journey.name}: weight must be > 0")
        if not self.journeys:
            problems.append("no journeys")
        if not problems and self._has_cycle(by_name):
            problems.append("the call graph has a cycle")
        return problems

    def _has_cycle(self, by_name: dict[str, Service]) -> bool:
        state: dict[str, int] = {}  # 1 visiting, 2 done

        def visit(name: str) -> bool:
            if state.get(name) == 1:
                return True
            if state.get(name) == 2:
                return False
            state[name] = 1
            callees = {c.service for op in by_name[name].operations for c in op.calls}
            if any(visit(callee) for callee in sorted(callees)):
                return True
            state[name] = 2
            return False

        return any(visit(name) for name in by_name)

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(f"topology {self.name} has no service {name!r}")

    def edges(self) -> frozenset[tuple[str, str]]:
        """Every (caller, callee) pair of the call graph."""
        return frozenset(
            (s.name, call.service)
            for s in self.services
            for op in s.operations
            for call in op.calls
        )

    def callees(self, name: str) -> tuple[str, ...]:
        return tuple(sorted({callee for caller, callee in self.edges() if caller == name}))

    def callers(self, name: str) -> tuple[str, ...]:
        return tuple(sorted({caller for caller, callee in self.edges() if callee == name}))


def _get(service: str, path: str) -> Call:
    return Call(service, path)


def _post(service: str, path: str) -> Call:
    return Call(service, path, "POST")


# The shop: frontend fans out to catalog and cart; checkout fans out to payment and inventory,
# then shipping (the slow path); inventory is the shared dependency; catalog runs two instances.
SHOP = Topology(
    name="shop",
    entry="frontend",
    services=(
        Service(
            "frontend",
            (
                Operation(
                    "/home",
                    work_ms=2,
                    stages=((_get("catalog", "/products"), _get("cart", "/cart")),),
                ),
                Operation("/product", work_ms=2, stages=((_get("catalog", "/product"),),)),
                Operation(
                    "/checkout",
                    "POST",
                    work_ms=3,
                    stages=((_get("cart", "/cart"),), (_post("checkout", "/checkout"),)),
                ),
            ),
        ),
        Service(
            "catalog",
            (
                Operation("/products", work_ms=6, jitter_ms=3),
                Operation("/product", work_ms=4, stages=((_get("inventory", "/stock"),),)),
            ),
            instances=2,
        ),
        Service("cart", (Operation("/cart", work_ms=3),)),
        Service(
            "checkout",
            (
                Operation(
                    "/checkout",
                    "POST",
                    work_ms=5,
                    stages=(
                        (_post("payment", "/charge"), _post("inventory", "/reserve")),
                        (_get("shipping", "/quote"),),
                    ),
                ),
            ),
        ),
        Service(
            "payment", (Operation("/charge", "POST", work_ms=20, jitter_ms=8, error_rate=0.002),)
        ),
        Service("shipping", (Operation("/quote", work_ms=45, jitter_ms=15),)),
        Service(
            "inventory",
            (Operation("/stock", work_ms=2), Operation("/reserve", "POST", work_ms=4)),
        ),
    ),
    journeys=(
        Journey("browse", "/home", weight=5),
        Journey("view-product", "/product", weight=3),
        Journey("checkout", "/checkout", "POST", weight=2),
    ),
)

# A deeper chain (gateway -> auth, orders -> pricing -> rates -> ledger) with orders twice.
CHAIN = Topology(
    name="chain",
    entry="gateway",
    services=(
        Service(
            "gateway",
            (
                Operation(
                    "/order",
                    "POST",
                    work_ms=2,
                    stages=((_get("auth", "/verify"),), (_post("orders", "/orders"),)),
                ),
                Operation("/status", work_ms=1, stages=((_get("orders", "/status"),),)),
            ),
        ),
        Service("auth", (Operation("/verify", work_ms=3),)),
        Service(
            "orders",
            (
                Operation("/orders", "POST", work_ms=4, stages=((_get("pricing", "/price"),),)),
                Operation("/status", work_ms=2, stages=((_get("ledger", "/entries"),),)),
            ),
            instances=2,
        ),
        Service("pricing", (Operation("/price", work_ms=5, stages=((_get("rates", "/rates"),),)),)),
        Service(
            "rates",
            (Operation("/rates", work_ms=8, jitter_ms=4, stages=((_get("ledger", "/entries"),),)),),
        ),
        Service("ledger", (Operation("/entries", work_ms=3),)),
    ),
    journeys=(Journey("order", "/order", "POST", weight=2), Journey("status", "/status", weight=3)),
)

TOPOLOGIES: dict[str, Topology] = {t.name: t for t in (SHOP, CHAIN)}


def get_topology(name: str) -> Topology:
    try:
        return TOPOLOGIES[name]
    except KeyError:
        raise ValueError(f"unknown topology {name!r}; known: {', '.join(TOPOLOGIES)}") from None
