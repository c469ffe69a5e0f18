"""Fault injection: delay and/or abort a percentage of a route's requests (Istio VirtualService
`fault`), so resilience policies can be tested on live traffic. Sits above timeout and retry, so an
injected fault behaves like the upstream misbehaving."""

from __future__ import annotations

import asyncio
import random as _random
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.errors import FaultAbort
from sidecar.http import Request, Response
from sidecar.stack import Handler, Layer, Sleep

__all__ = ["Fault", "FaultConfig", "fault_layer"]


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Delay `delay_percent` % of requests by `delay_ms`; abort `abort_percent` % of them."""

    delay_ms: float = 0.0
    delay_percent: float = 0.0
    abort_status: int = 503
    abort_percent: float = 0.0
    enforce: bool = True  # False: record meshlens.fault.would_* and inject nothing

    def __post_init__(self) -> None:
        if self.delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {self.delay_ms}")
        for name in ("delay_percent", "abort_percent"):
            value = getattr(self, name)
            if not 0.0 <= value <= 100.0:
                raise ValueError(f"{name} must be in 0..100, got {value}")
        if not 200 <= self.abort_status <= 599:
            raise ValueError(f"abort_status must be in 200..599, got {self.abort_status}")


class Fault:
    """The decisions of one route's fault config, shared by the layer and a fused route
    (sidecar/layers/fused.py): the same random draws, in the same order."""

    __slots__ = ("abort_p", "config", "delay_p", "delay_s", "random", "status")

    def __init__(self, config: FaultConfig, random: Callable[[], float]) -> None:
        self.config = config
        self.random = random
        self.delay_s = config.delay_ms / 1000.0
        self.delay_p = config.delay_percent / 100.0
        self.abort_p = config.abort_percent / 100.0
        self.status = config.abort_status

    def delay(self, request: Request) -> float | None:
        """Seconds to wait before forwarding (None: no delay), recorded on the request."""
        if self.delay_p > 0.0 and self.random() < self.delay_p:
            config = self.config
            if config.enforce:
                request.context.attributes["meshlens.fault.delay_ms"] = config.delay_ms
                return self.delay_s
            request.context.attributes["meshlens.fault.would_delay_ms"] = config.delay_ms
        return None

    def abort(self, request: Request) -> None:
        """Raise the injected abort (FaultAbort) when drawn; observe-only, record it."""
        if self.abort_p > 0.0 and self.random() < self.abort_p:
            status = self.status
            if self.config.enforce:
                request.context.attributes["meshlens.fault.abort"] = status
                raise FaultAbort(f"fault injected: abort {status}", status=status)
            request.context.attributes["meshlens.fault.would_abort"] = status


def fault_layer(
    config: FaultConfig,
    *,
    sleep: Sleep = asyncio.sleep,
    random: Callable[[], float] = _random.random,
) -> Layer:
    """Inject the configured delay (before forwarding) and abort (instead of forwarding)."""
    fault = Fault(config, random)

    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            delay_s = fault.delay(request)
            if delay_s is not None:
                await sleep(delay_s)
            fault.abort(request)
            return await inner(request)

        return handle

    return wrap
