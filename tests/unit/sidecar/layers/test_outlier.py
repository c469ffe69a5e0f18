from __future__ import annotations

import asyncio

import pytest

from sidecar.errors import UpstreamConnectError
from sidecar.http import Endpoint, Request
from sidecar.layers.outlier import (
    LatencyConfig,
    OutlierConfig,
    OutlierDetector,
    SuccessRateConfig,
    outlier_layer,
)
from sidecar.stack import compose
from tests.fakes import HANG, ManualClock, MutableEndpoints, ScriptedUpstream, make_request

A, B, C = Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80), Endpoint("10.0.0.3", 80)
CONSECUTIVE_ONLY = OutlierConfig(consecutive_5xx=3, success_rate=None, max_ejection_percent=100)


class Harness:
    def __init__(self, config: OutlierConfig, endpoints=(A, B, C)) -> None:
        self.clock = ManualClock()
        self.source = MutableEndpoints({"svc": list(endpoints)})
        self.detector = OutlierDetector("svc", config, self.source, clock=self.clock)
        self.upstream = ScriptedUpstream(clock=self.clock)
        self.handler = compose(
            [outlier_layer({"svc": self.detector}, clock=self.clock)], self.upstream
        )

    async def send(self, endpoint: Endpoint, outcome, latency_s: float = 0.0) -> Request:
        self.upstream.statuses[:] = [outcome]
        self.upstream.latency_s = {endpoint.address: latency_s}
        request = make_request(upstream="svc")
        request.context.endpoint = endpoint
        try:
            await self.handler(request)
        except UpstreamConnectError:
            pass
        return request

    def state(self, endpoint: Endpoint) -> str:
        return self.detector.stats()["endpoints"][endpoint.address]["state"]


async def test_consecutive_5xx_ejects_and_a_success_resets_the_count() -> None:
    h = Harness(CONSECUTIVE_ONLY)
    for outcome in (500, 503, 200, 500, 502):
        await h.send(A, outcome)
    assert h.detector.available(A)

    request = await h.send(A, 504)

    assert not h.detector.available(A)
    assert h.state(A) == "open"
    assert request.context.attributes["meshlens.outlier.ejected"] == "consecutive_5xx"


async def test_connect_errors_count_as_gateway_failures() -> None:
    config = OutlierConfig(
        consecutive_5xx=None,
        consecutive_gateway_failures=2,
        success_rate=None,
        max_ejection_percent=100,
    )
    h = Harness(config)
    await h.send(A, UpstreamConnectError("refused"))
    await h.send(A, 503)

    assert not h.detector.available(A)


async def test_a_cancelled_attempt_counts_as_a_failure() -> None:
    h = Harness(OutlierConfig(consecutive_5xx=1, success_rate=None, max_ejection_percent=100))
    h.upstream.statuses[:] = [HANG]
    request = make_request(upstream="svc")
    request.context.endpoint = A

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await h.handler(request)

    assert not h.detector.available(A)


async def test_ejection_time_grows_with_repeats_and_is_capped() -> None:
    config = OutlierConfig(
        consecutive_5xx=1,
        success_rate=None,
        base_ejection_s=30,
        max_ejection_s=70,
        max_ejection_percent=100,
    )
    h = Harness(config)
    durations = []
    for _ in range(3):
        await h.send(A, 500)
        durations.append(h.detector.stats()["endpoints"][A.address]["ejected_for_s"])
        h.clock.advance(durations[-1])
        assert h.detector.available(A)  # expired: half open, waiting for its probe
        assert h.state(A) == "half_open"
    assert durations == [30, 60, 70]


async def test_expired_ejection_is_probed_with_one_real_request() -> None:
    h = Harness(OutlierConfig(consecutive_5xx=1, success_rate=None, max_ejection_percent=100))
    await h.send(A, 500)
    assert h.detector.ejected == 1
    h.clock.advance(30)

    assert h.detector.available(A)
    host = h.detector.begin(A)  # a probe is in flight: nobody else is sent there meanwhile
    assert host is not None
    assert not h.detector.available(A)
    h.detector.record(host, make_request(), 200, 0.01)

    assert h.state(A) == "closed"
    assert h.detector.available(A)
    assert h.detector.ejected == 0


async def test_failed_probe_ejects_again_for_longer() -> None:
    h = Harness(OutlierConfig(consecutive_5xx=1, success_rate=None, max_ejection_percent=100))
    await h.send(A, 500)
    h.clock.advance(30)

    request = await h.send(A, 503)

    assert request.context.attributes["meshlens.outlier.ejected"] == "probe_failed"
    assert h.detector.stats()["endpoints"][A.address]["ejected_for_s"] == 60


async def test_ejection_multiplier_decays_while_healthy() -> None:
    h = Harness(OutlierConfig(consecutive_5xx=1, success_rate=None, max_ejection_percent=100))
    await h.send(A, 500)
    h.clock.advance(30)
    await h.send(A, 200)  # probe succeeds
    h.clock.advance(90)  # three base periods healthy

    await h.send(A, 500)

    assert h.detector.stats()["endpoints"][A.address]["ejected_for_s"] == 30


async def test_max_ejection_percent_keeps_endpoints_in_service() -> None:
    config = OutlierConfig(consecutive_5xx=1, success_rate=None, max_ejection_percent=10)
    h = Harness(config)
    await h.send(A, 500)  # at least one may always be ejected

    request = await h.send(B, 500)

    assert not h.detector.available(A)
    assert h.detector.available(B)
    assert request.context.attributes["meshlens.outlier.skipped"] == "max_ejection_percent"
    assert h.detector.stats()["skipped_max_percent"] == 1


async def test_windowed_success_rate_ejects_without_consecutive_failures() -> None:
    config = OutlierConfig(
        consecutive_5xx=5,
        success_rate=SuccessRateConfig(window_s=10, min_requests=10, threshold=0.8),
        max_ejection_percent=100,
    )
    h = Harness(config)
    for i in range(10):
        await h.send(A, 500 if i % 2 else 200)
        h.clock.advance(0.1)
    assert h.detector.available(A)  # evaluated once per interval
    h.clock.advance(1.0)

    other = await h.send(B, 200)  # the sweep runs on any endpoint's outcome

    assert not h.detector.available(A)
    assert "meshlens.outlier.ejected" not in other.context.attributes  # B's span is not A's


async def test_success_rate_forgets_failures_outside_the_window() -> None:
    config = OutlierConfig(
        consecutive_5xx=None,
        success_rate=SuccessRateConfig(window_s=10, min_requests=4, threshold=0.8),
    )
    h = Harness(config)
    for _ in range(3):
        await h.send(A, 500)
    h.clock.advance(11)
    for _ in range(4):
        await h.send(A, 200)

    assert h.detector.available(A)
    assert h.detector.stats()["endpoints"][A.address]["window_success_rate"] == 1.0


async def test_429_counts_in_the_success_rate_but_not_as_consecutive_5xx() -> None:
    config = OutlierConfig(
        consecutive_5xx=2,
        success_rate=SuccessRateConfig(window_s=10, min_requests=4, threshold=0.8),
        max_ejection_percent=100,
    )
    h = Harness(config)
    for _ in range(4):
        await h.send(A, 429)
    assert h.detector.stats()["endpoints"][A.address]["consecutive_5xx"] == 0
    h.clock.advance(1.5)

    request = await h.send(A, 429)

    assert request.context.attributes["meshlens.outlier.ejected"] == "success_rate"


async def test_latency_outlier_is_ejected_against_the_peer_median() -> None:
    config = OutlierConfig(
        consecutive_5xx=None,
        success_rate=None,
        latency=LatencyConfig(factor=3.0, min_requests=5, min_latency_ms=10),
        max_ejection_percent=50,
    )
    h = Harness(config)
    for _ in range(5):
        await h.send(A, 200, latency_s=0.300)
        await h.send(B, 200, latency_s=0.020)
        await h.send(C, 200, latency_s=0.030)
    h.clock.advance(1.0)

    request = await h.send(A, 200, latency_s=0.300)

    assert request.context.attributes["meshlens.outlier.ejected"] == "latency"
    assert not h.detector.available(A)
    assert h.detector.available(B) and h.detector.available(C)


async def test_latency_below_the_floor_is_never_an_outlier() -> None:
    config = OutlierConfig(
        consecutive_5xx=None,
        success_rate=None,
        latency=LatencyConfig(factor=3.0, min_requests=5, min_latency_ms=10),
        max_ejection_percent=50,
    )
    h = Harness(config)
    for _ in range(5):
        await h.send(A, 200, latency_s=0.008)
        await h.send(B, 200, latency_s=0.001)
    h.clock.advance(1.0)
    await h.send(B, 200, latency_s=0.001)

    assert h.detector.available(A)


async def test_observe_only_never_ejects_but_records_the_decision() -> None:
    config = OutlierConfig(consecutive_5xx=2, success_rate=None, enforce=False)
    h = Harness(config)
    await h.send(A, 500)

    request = await h.send(A, 500)

    assert request.context.attributes["meshlens.outlier.would_eject"] == "consecutive_5xx"
    assert h.detector.available(A)
    assert h.state(A) == "closed"
    assert h.detector.stats()["would_eject"] == 1


async def test_new_endpoints_are_tracked_after_a_version_change() -> None:
    h = Harness(CONSECUTIVE_ONLY, endpoints=(A,))
    h.source.set("svc", [A, B])
    for _ in range(3):
        await h.send(B, 500)

    assert not h.detector.available(B)


def test_outlier_config_validates() -> None:
    with pytest.raises(ValueError, match="base_ejection_s"):
        OutlierConfig(base_ejection_s=400, max_ejection_s=300)
    with pytest.raises(ValueError, match="factor"):
        LatencyConfig(factor=0.5)


async def test_outcomes_while_ejected_do_not_extend_the_ejection() -> None:
    h = Harness(OutlierConfig(consecutive_5xx=1, success_rate=None, max_ejection_percent=100))
    await h.send(A, 500)
    for _ in range(5):  # e.g. panic traffic, or requests that began before the ejection
        await h.send(A, 500)

    assert h.detector.stats()["endpoints"][A.address]["ejected_for_s"] == 30
    assert h.detector.stats()["endpoints"][A.address]["times_ejected"] == 1
