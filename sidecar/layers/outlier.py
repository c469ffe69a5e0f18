"""Outlier detection: eject misbehaving endpoints of an upstream for a while (Envoy outlier
detection + Linkerd's unified breaker), and latency-based ejection against the peer median, which
Envoy never built (envoyproxy/envoy#288). Breaker states per endpoint: closed, open (ejected),
half_open (ejection expired: one real request probes it; failure re-ejects for longer)."""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sidecar.discovery import EndpointSource
from sidecar.errors import ProxyError
from sidecar.http import Endpoint, Request, Response
from sidecar.stack import Clock, Handler, Layer, monotonic

__all__ = [
    "LatencyConfig",
    "OutlierConfig",
    "OutlierDetector",
    "SuccessRateConfig",
    "outlier_layer",
]

logger = logging.getLogger(__name__)

_BUCKETS = 10  # Linkerd: exact ratio over 10 fixed buckets spanning the window
_GATEWAY: Final = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class SuccessRateConfig:
    """Eject when fewer than `threshold` of >= `min_requests` requests in `window_s` succeed."""

    window_s: float = 10.0  # Linkerd unified breaker
    min_requests: int = 5
    threshold: float = 0.8

    def __post_init__(self) -> None:
        if not 1.0 <= self.window_s <= 3600.0:
            raise ValueError(f"window_s must be in 1..3600, got {self.window_s}")
        if self.min_requests < 1:
            raise ValueError(f"min_requests must be >= 1, got {self.min_requests}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")


@dataclass(frozen=True, slots=True)
class LatencyConfig:
    """Eject when the mean latency is over `factor` x the median of peers (each >= min_requests)."""

    factor: float = 3.0
    min_requests: int = 20
    min_latency_ms: float = 10.0  # never eject below this mean: 1 ms vs 3 ms is noise

    def __post_init__(self) -> None:
        if self.factor <= 1.0:
            raise ValueError(f"factor must be > 1, got {self.factor}")
        if self.min_requests < 1:
            raise ValueError(f"min_requests must be >= 1, got {self.min_requests}")
        if self.min_latency_ms < 0:
            raise ValueError(f"min_latency_ms must be >= 0, got {self.min_latency_ms}")


DEFAULT_SUCCESS_RATE = SuccessRateConfig()


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    """Ejection rules of one upstream; None disables a rule. Defaults follow Envoy/Linkerd."""

    consecutive_5xx: int | None = 5  # Envoy
    consecutive_gateway_failures: int | None = None  # Envoy: enforcing 0 by default
    success_rate: SuccessRateConfig | None = DEFAULT_SUCCESS_RATE
    latency: LatencyConfig | None = None
    base_ejection_s: float = 30.0  # Envoy base_ejection_time, x number of ejections
    max_ejection_s: float = 300.0  # Envoy max_ejection_time
    max_ejection_percent: float = 10.0  # Envoy; at least one endpoint may always be ejected
    interval_s: float = 1.0  # how often the windowed rules are evaluated
    enforce: bool = True  # False: record meshlens.outlier.would_eject, eject nothing

    def __post_init__(self) -> None:
        for name in ("consecutive_5xx", "consecutive_gateway_failures"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0 < self.base_ejection_s <= self.max_ejection_s:
            raise ValueError("base_ejection_s must be > 0 and <= max_ejection_s")
        if not 0.0 <= self.max_ejection_percent <= 100.0:
            raise ValueError(
                f"max_ejection_percent must be in 0..100, got {self.max_ejection_percent}"
            )
        if self.interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {self.interval_s}")

    @property
    def window_s(self) -> float:
        return self.success_rate.window_s if self.success_rate else 10.0


class _Host:
    """Outlier state of one endpoint."""

    __slots__ = (
        "address",
        "consecutive_5xx",
        "consecutive_gateway",
        "ejected_until",
        "ejections",
        "failed",
        "generation",
        "last_change",
        "latency",
        "ok",
        "probing",
        "state",
        "times_ejected",
    )

    def __init__(self, address: str, now: float) -> None:
        self.address = address
        self.state = "closed"
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.ejected_until = 0.0
        self.times_ejected = 0
        self.ejections = 0
        self.last_change = now
        self.probing = False
        self.generation = 0
        # the window: successes, failures and latency sums in _BUCKETS time slots
        self.ok = [0] * _BUCKETS
        self.failed = [0] * _BUCKETS
        self.latency = [0.0] * _BUCKETS

    def slot(self, generation: int) -> int:
        """Index of the current slot, zeroing the slots that slid out of the window."""
        gap = generation - self.generation
        if gap > 0:
            for i in range(1, min(gap, _BUCKETS) + 1):
                j = (self.generation + i) % _BUCKETS
                self.ok[j] = self.failed[j] = 0
                self.latency[j] = 0.0
            self.generation = generation
        return generation % _BUCKETS

    def totals(self, generation: int) -> tuple[int, int, float]:
        self.slot(generation)
        return sum(self.ok), sum(self.failed), sum(self.latency)

    def reset_counters(self) -> None:
        self.consecutive_5xx = self.consecutive_gateway = 0
        self.ok = [0] * _BUCKETS
        self.failed = [0] * _BUCKETS
        self.latency = [0.0] * _BUCKETS


class OutlierDetector:
    """Tracks outcomes per endpoint of one upstream and decides ejections."""

    def __init__(
        self,
        service: str,
        config: OutlierConfig,
        source: EndpointSource,
        *,
        clock: Clock = monotonic,
    ) -> None:
        self.service = service
        self.config = config
        self._source = source
        self._clock = clock
        self._version: int | None = None
        self._hosts: dict[str, _Host] = {}
        self._slot_s = config.window_s / _BUCKETS
        self._next_sweep = clock() + config.interval_s
        self.would_eject = 0
        self.skipped_max_percent = 0
        self.ejected = 0  # endpoints not closed (open or half_open)
        self._sync()

    def _sync(self) -> None:
        version = self._source.version
        if version == self._version:
            return
        now = self._clock()
        addresses = [e.address for e in self._source.endpoints(self.service)]
        self._hosts = {a: self._hosts.get(a) or _Host(a, now) for a in addresses}
        self.ejected = sum(1 for h in self._hosts.values() if h.state != "closed")
        self._version = version

    def rebind(self, source: EndpointSource) -> OutlierDetector:
        """Read endpoints from `source` from now on, keeping per-endpoint state by address."""
        self._source = source
        self._version = None
        self._sync()
        return self

    def available(self, endpoint: Endpoint) -> bool:
        """False while `endpoint` is ejected or its one probe request is in flight."""
        host = self._hosts.get(endpoint.address)
        if host is None or host.state == "closed" or not self.config.enforce:
            return True
        if host.state == "open":
            if self._clock() < host.ejected_until:
                return False
            host.state = "half_open"
            host.probing = False
        return not host.probing

    def begin(self, endpoint: Endpoint) -> _Host | None:
        """Start an attempt on `endpoint`; marks it as the probe of a half-open endpoint."""
        self._sync()
        host = self._hosts.get(endpoint.address)
        if host is not None and host.state != "closed" and self.available(endpoint):
            host.probing = True
        return host

    def record(self, host: _Host, request: Request, status: int | None, latency_s: float) -> None:
        """Feed one attempt's outcome (status None: it failed without a response)."""
        now = self._clock()
        failed = status is None or status >= 500
        slot = host.slot(int(now / self._slot_s))
        if failed or status == 429:  # Linkerd: a 429 counts in the rate, not as consecutive
            host.failed[slot] += 1
        else:
            host.ok[slot] += 1
        host.latency[slot] += latency_s
        if host.state == "open":
            return  # began before the ejection, or sent in panic: only the probe decides
        if host.state == "half_open":
            host.probing = False
            if failed:
                self._eject(host, request, "probe_failed", now)
            else:
                self._change(host, "closed", now, "probe_succeeded")
            return
        host.consecutive_5xx = host.consecutive_5xx + 1 if failed else 0
        gateway = status is None or status in _GATEWAY
        host.consecutive_gateway = host.consecutive_gateway + 1 if gateway else 0
        config = self.config
        if config.consecutive_5xx is not None and host.consecutive_5xx >= config.consecutive_5xx:
            self._eject(host, request, "consecutive_5xx", now)
        elif (
            config.consecutive_gateway_failures is not None
            and host.consecutive_gateway >= config.consecutive_gateway_failures
        ):
            self._eject(host, request, "consecutive_gateway_failures", now)
        if now >= self._next_sweep:
            self._next_sweep = now + config.interval_s
            self._sweep(host, request, now)

    def _sweep(self, current: _Host, request: Request, now: float) -> None:
        """Evaluate the windowed rules: success rate, and latency vs the peer median.

        Only an ejection of `current` (the endpoint `request` went to) is put on that request."""
        generation = int(now / self._slot_s)
        means: dict[str, float] = {}
        counts: dict[str, tuple[int, int]] = {}
        for host in self._hosts.values():
            if host.state == "closed":
                ok, failed, latency = host.totals(generation)
                counts[host.address] = (ok, failed)
                if ok + failed:
                    means[host.address] = latency / (ok + failed)
        rate, lat = self.config.success_rate, self.config.latency
        for address, (ok, failed) in counts.items():
            host = self._hosts[address]
            mine = request if host is current else None
            total = ok + failed
            if rate is not None and total >= rate.min_requests and ok / total < rate.threshold:
                self._eject(host, mine, "success_rate", now)
            elif lat is not None and total >= lat.min_requests:
                peers = [
                    means[a]
                    for a, (o, f) in counts.items()
                    if a != address and o + f >= lat.min_requests
                ]
                mean = means[address]
                if peers and mean * 1000.0 >= lat.min_latency_ms:
                    if mean > lat.factor * statistics.median(peers):
                        self._eject(host, mine, "latency", now)

    def _eject(self, host: _Host, request: Request | None, reason: str, now: float) -> None:
        attrs = request.context.attributes if request is not None else {}
        if not self.config.enforce:
            self.would_eject += 1
            attrs["meshlens.outlier.would_eject"] = reason
            host.reset_counters()
            return
        others = sum(1 for h in self._hosts.values() if h is not host and h.state != "closed")
        percent = self.config.max_ejection_percent
        allowed = max(1, math.floor(len(self._hosts) * percent / 100.0)) if percent > 0 else 0
        if others >= allowed:
            self.skipped_max_percent += 1
            attrs["meshlens.outlier.skipped"] = "max_ejection_percent"
            return
        base = self.config.base_ejection_s
        if host.state == "closed":  # Envoy: the multiplier decays while the host stays healthy
            host.times_ejected = max(0, host.times_ejected - int((now - host.last_change) // base))
        host.times_ejected += 1
        host.ejections += 1
        host.ejected_until = now + min(self.config.max_ejection_s, base * host.times_ejected)
        host.reset_counters()
        attrs["meshlens.outlier.ejected"] = reason
        self._change(host, "open", now, reason)

    def _change(self, host: _Host, state: str, now: float, reason: str) -> None:
        if (host.state == "closed") != (state == "closed"):
            self.ejected += 1 if host.state == "closed" else -1
        host.state = state
        host.last_change = now
        host.probing = False
        extra = {"upstream": self.service, "endpoint": host.address, "reason": reason}
        extra["times_ejected"] = str(host.times_ejected)
        logger.info("endpoint %s", "ejected" if state == "open" else "restored", extra=extra)

    def stats(self) -> dict[str, Any]:
        generation = int(self._clock() / self._slot_s)
        endpoints = {}
        for host in self._hosts.values():
            ok, failed, latency = host.totals(generation)
            endpoints[host.address] = {
                "state": host.state,
                "ejected_for_s": round(max(0.0, host.ejected_until - self._clock()), 3),
                "times_ejected": host.times_ejected,
                "ejections": host.ejections,
                "consecutive_5xx": host.consecutive_5xx,
                "consecutive_gateway_failures": host.consecutive_gateway,
                "window_requests": ok + failed,
                "window_success_rate": round(ok / (ok + failed), 4) if ok + failed else None,
                "window_mean_latency_ms": (
                    round(latency / (ok + failed) * 1000.0, 3) if ok + failed else None
                ),
            }
        return {
            "enforce": self.config.enforce,
            "would_eject": self.would_eject,
            "skipped_max_percent": self.skipped_max_percent,
            "endpoints": endpoints,
        }


def outlier_layer(detectors: Mapping[str, OutlierDetector], *, clock: Clock = monotonic) -> Layer:
    """Record each attempt's outcome with the detector of context.upstream."""

    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            context = request.context
            detector = detectors.get(context.upstream)
            endpoint = context.endpoint
            if detector is None or endpoint is None:
                return await inner(request)
            host = detector.begin(endpoint)
            if host is None:
                return await inner(request)
            start = clock()
            try:
                response = await inner(request)
            except (ProxyError, asyncio.CancelledError):
                # errors below us are the upstream's (connect, reset, protocol); a cancel is a
                # timeout above us firing while this endpoint kept us waiting
                detector.record(host, request, None, clock() - start)
                raise
            detector.record(host, request, response.status, clock() - start)
            return response

        return handle

    return wrap
