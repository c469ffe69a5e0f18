"""Fault kinds, their injection into the running demo, and the ground-truth record of each one.

App-level faults (latency, error burst, CPU starvation, connection resets) are set on the target
instances' `/_demo/fault` endpoint; `abort` goes through the callers' sidecar fault layer; `crash`
SIGKILLs one instance and restarts it when the fault ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "AppFaults",
    "FaultInjector",
    "FaultKind",
    "FaultRecord",
    "FaultSpec",
    "FaultTarget",
    "default_params",
    "describe",
]


class FaultKind(StrEnum):
    LATENCY = "latency"
    ERROR_BURST = "error_burst"
    ABORT = "abort"
    CRASH = "crash"
    CPU = "cpu"
    RESET = "reset"


@dataclass(frozen=True, slots=True)
class AppFaults:
    """What an app instance does wrong on every request (all zero: healthy)."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    cpu_ms: float = 0.0
    reset_rate: float = 0.0
    # A capacity limit without burning CPU: one worker serves requests one at a time for this
    # long each (FIFO queue), while the event loop (and /_demo/fault) stays responsive.
    serial_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.cpu_ms < 0 or self.serial_ms < 0:
            raise ValueError("latency_ms, cpu_ms and serial_ms must be >= 0")
        for name in ("error_rate", "reset_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> AppFaults:
        """Validate a `/_demo/fault` body; ValueError names what is wrong."""
        unknown = set(body) - {"latency_ms", "error_rate", "cpu_ms", "reset_rate", "serial_ms"}
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        values: dict[str, float] = {}
        for key, value in body.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{key} must be a number")
            values[key] = float(value)
        return cls(**values)

    def to_json(self) -> dict[str, float]:
        return {
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "cpu_ms": self.cpu_ms,
            "reset_rate": self.reset_rate,
            "serial_ms": self.serial_ms,
        }


def default_params(kind: FaultKind) -> dict[str, float]:
    """Parameters strong enough to see on the service map within a few seconds."""
    return {
        FaultKind.LATENCY: {"latency_ms": 250.0},
        FaultKind.ERROR_BURST: {"error_rate": 0.4},
        FaultKind.ABORT: {"status": 503.0, "percent": 40.0},
        FaultKind.CRASH: {},
        FaultKind.CPU: {"cpu_ms": 40.0},
        FaultKind.RESET: {"reset_rate": 0.3},
    }[kind]


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """A fault to inject: kind, target service (one instance, or all when None), timing."""

    kind: FaultKind
    service: str
    instance: str | None = None
    start_s: float = 0.0  # offset from the start of the load
    duration_s: float = 10.0
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.duration_s <= 0 or self.start_s < 0:
            raise ValueError("fault needs duration_s > 0 and start_s >= 0")
        if self.kind is FaultKind.CRASH and self.instance is None:
            raise ValueError("a crash fault names one instance")


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """Ground truth: what was injected where, from when to when (wall-clock ns)."""

    spec: FaultSpec
    start_ns: int
    end_ns: int
    instances: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.spec.kind),
            "service": self.spec.service,
            "instance": self.spec.instance,
            "instances": list(self.instances),
            "params": dict(self.spec.params),
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "via": _VIA[self.spec.kind],
        }


_VIA = {
    FaultKind.LATENCY: "app",
    FaultKind.ERROR_BURST: "app",
    FaultKind.CPU: "app",
    FaultKind.RESET: "app",
    FaultKind.ABORT: "sidecar",
    FaultKind.CRASH: "process",
}


def describe(spec: FaultSpec) -> str:
    """One human line for the announcement."""
    where = spec.instance or f"{spec.service} (all instances)"
    p = spec.params
    what = {
        FaultKind.LATENCY: f"+{p.get('latency_ms', 0):.0f} ms latency",
        FaultKind.ERROR_BURST: f"{p.get('error_rate', 0):.0%} HTTP 500 error burst",
        FaultKind.ABORT: f"sidecar abort {p.get('status', 503):.0f}"
        f" on {p.get('percent', 0):.0f}% of calls",
        FaultKind.CRASH: "crashed instance (SIGKILL, restarted when the fault ends)",
        FaultKind.CPU: f"CPU-starved: {p.get('cpu_ms', 0):.0f} ms busy loop per request",
        FaultKind.RESET: f"connection resets on {p.get('reset_rate', 0):.0%} of requests",
    }[spec.kind]
    return f"{what} on {where} for {spec.duration_s:.0f} s"


class FaultTarget(Protocol):
    """What the injector needs from the running mesh (demo.supervisor.Mesh provides it)."""

    def instances_of(self, service: str) -> tuple[str, ...]: ...

    async def set_app_faults(self, instance: str, faults: AppFaults) -> None: ...

    async def set_abort(self, service: str, status: int, percent: float) -> None: ...

    async def clear_abort(self, service: str) -> None: ...

    async def kill(self, instance: str) -> None: ...

    async def restart(self, instance: str) -> None: ...


class FaultInjector:
    """Applies one fault at a time, holds it for its duration, clears it, records it."""

    def __init__(
        self,
        target: FaultTarget,
        announce: Callable[[str], None],
        clock_ns: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._target = target
        self._announce = announce
        self._clock_ns = clock_ns
        self._sleep = sleep
        self.records: list[FaultRecord] = []
        self.active: FaultSpec | None = None

    async def inject(self, spec: FaultSpec) -> FaultRecord:
        """Apply `spec`, wait its duration, clear it (also when cancelled); returns the record."""
        instances = (spec.instance,) if spec.instance else self._target.instances_of(spec.service)
        self._announce(f"FAULT  {spec.kind}: {describe(spec)}")
        start_ns = self._clock_ns()
        self.active = spec
        try:
            await self._apply(spec, instances)
            await self._sleep(spec.duration_s)
        finally:
            self.active = None
            await asyncio.shield(self._clear(spec, instances))
            end_ns = self._clock_ns()
            record = FaultRecord(spec, start_ns, end_ns, instances)
            self.records.append(record)
            self._announce(f"CLEARED {spec.kind} on {spec.instance or spec.service}")
        return record

    async def _apply(self, spec: FaultSpec, instances: tuple[str, ...]) -> None:
        if spec.kind is FaultKind.CRASH:
            await self._target.kill(instances[0])
        elif spec.kind is FaultKind.ABORT:
            await self._target.set_abort(
                spec.service, int(spec.params.get("status", 503)), spec.params.get("percent", 100.0)
            )
        else:
            faults = AppFaults.from_json(spec.params)
            for instance in instances:
                await self._target.set_app_faults(instance, faults)

    async def _clear(self, spec: FaultSpec, instances: tuple[str, ...]) -> None:
        if spec.kind is FaultKind.CRASH:
            await self._target.restart(instances[0])
        elif spec.kind is FaultKind.ABORT:
            await self._target.clear_abort(spec.service)
        else:
            for instance in instances:
                await self._target.set_app_faults(instance, AppFaults())
