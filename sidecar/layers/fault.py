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

__all__ = ["FaultConfig", "fault_layer"]


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


def fault_layer(
    config: FaultConfig,
    *,
    sleep: Sleep = asyncio.sleep,
    random: Callable[[], float] = _random.random,
) -> Layer:
    """Inject the configured delay (before forwarding) and abort (instead of forwarding)."""
    delay_s = config.delay_ms / 1000.0
    delay_p = config.delay_percent / 100.0
    abort_p = config.abort_percent / 100.0
    status = config.abort_status
    enforce = config.enforce

    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            attrs = request.context.attributes
            if delay_p > 0.0 and random() < delay_p:
                if enforce:
                    attrs["meshlens.fault.delay_ms"] = config.delay_ms
                    await sleep(delay_s)
                else:
                    attrs["meshlens.fault.would_delay_ms"] = config.delay_ms
            if abort_p > 0.0 and random() < abort_p:
                if enforce:
                    attrs["meshlens.fault.abort"] = status
                    raise FaultAbort(f"fault injected: abort {status}", status=status)
                attrs["meshlens.fault.would_abort"] = status
            return await inner(request)

        return handle

    return wrap
