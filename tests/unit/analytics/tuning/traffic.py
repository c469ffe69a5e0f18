"""Constructed sidecar traffic for the tuning tests: deterministic attempts, and the same as
otel_traces rows (sidecar scope, CLIENT spans with the meshlens.* attributes)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from analytics.tuning.repository import SCOPE
from analytics.tuning.stats import Attempt, EdgeKey
from tests.conftest import Span

T0 = 1_790_000_000.0  # a fixed wall-clock start (unix seconds)


@dataclass(frozen=True)
class Edge:
    caller: str = "web"
    upstream: str = "orders"
    route: str = "default"
    method: str = "GET"
    endpoints: tuple[str, ...] = ("10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080")


def traffic(
    edge: Edge,
    *,
    seconds: int = 600,
    rps: int = 5,
    start_s: float = T0,
    latency_ms: Callable[[random.Random, str, float], float] | None = None,
    fails: Callable[[random.Random, str, float], str] | None = None,
    retry_attempts: int = 1,
    seed: int = 7,
) -> list[Attempt]:
    """`rps` calls a second for `seconds`; `fails` returns an error type ('' = success, '503',
    'connect_failure'); a failed call is retried up to `retry_attempts` tries."""
    rng = random.Random(seed)
    out: list[Attempt] = []
    key = EdgeKey(edge.caller, edge.upstream, edge.route)
    n = 0
    for second in range(seconds):
        for k in range(rps):
            t = start_s + second + k / rps
            n += 1
            for attempt in range(1, retry_attempts + 1):
                endpoint = edge.endpoints[(n + attempt) % len(edge.endpoints)]
                ms = latency_ms(rng, endpoint, t) if latency_ms else rng.uniform(10.0, 30.0)
                error = fails(rng, endpoint, t) if fails else ""
                status = int(error) if error.isdigit() else (0 if error else 200)
                out.append(
                    Attempt(
                        key,
                        f"{n:032x}",
                        f"{n:016x}",
                        t + attempt * 0.001,
                        ms,
                        edge.method,
                        endpoint,
                        attempt,
                        status,
                        error,
                    )
                )
                if not error:
                    break
    return out


def spans(attempts: Iterable[Attempt]) -> list[Span]:
    """The attempts as otel_traces rows written by the caller's sidecar."""
    rows = []
    for i, a in enumerate(attempts):
        host, port = a.endpoint.rsplit(":", 1)
        attrs = {
            "http.request.method": a.method,
            "server.address": host,
            "server.port": port,
            "meshlens.upstream": a.edge.upstream,
            "meshlens.route": a.edge.route,
            "meshlens.attempt": str(a.attempt),
        }
        if a.status:
            attrs["http.response.status_code"] = str(a.status)
        if a.error_type:
            attrs["error.type"] = a.error_type
        rows.append(
            Span(
                service=a.edge.caller,
                name=f"{a.method} {a.edge.route}",
                trace_id=a.trace_id,
                span_id=f"{i + 1:016x}",
                parent_span_id=a.parent_id,
                start_ns=int(a.start_s * 1e9),
                duration_ns=int(a.duration_ms * 1e6),
                kind="Client",
                status="Error" if a.failed else "Unset",
                attributes=attrs,
                scope_name=SCOPE,
            )
        )
    return rows


def spread_503(rate: float) -> Callable[[random.Random, str, float], str]:
    """Transient 503s at `rate`, independent of time and endpoint."""
    return lambda rng, endpoint, t: "503" if rng.random() < rate else ""
