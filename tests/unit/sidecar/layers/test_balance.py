from __future__ import annotations

import random
from collections import Counter

import pytest

from sidecar.errors import NoHealthyUpstream, NoRoute
from sidecar.http import Endpoint, Response
from sidecar.layers.balance import BalanceConfig, Balancer, balance_layer
from sidecar.layers.outlier import OutlierConfig, OutlierDetector, SuccessRateConfig, outlier_layer
from sidecar.stack import compose
from tests.fakes import ManualClock, MutableEndpoints, ScriptedUpstream, make_request

A, B, C = Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80), Endpoint("10.0.0.3", 80)


def _balancer(
    endpoints, lb="round_robin", clock=None, seed=1, available=None, **config
) -> tuple[Balancer, MutableEndpoints]:
    source = MutableEndpoints({"svc": endpoints})
    extra = {"health": PredicateHealth(available, endpoints)} if available is not None else {}
    balancer = Balancer(
        "svc",
        BalanceConfig(lb=lb, **config),
        source,
        clock=clock or ManualClock(),
        random=random.Random(seed).random,
        **extra,
    )
    return balancer, source


class PredicateHealth:
    """Outlier state stand-in: endpoints failing `predicate` are ejected."""

    def __init__(self, predicate, endpoints) -> None:
        self.available = predicate
        self.ejected = sum(1 for e in endpoints if not predicate(e))


def _picks(balancer: Balancer, n: int) -> Counter[str]:
    return Counter(balancer.pick(make_request()).endpoint.address for _ in range(n))


def test_round_robin_cycles_through_endpoints() -> None:
    balancer, _ = _balancer([A, B, C])

    order = [balancer.pick(make_request()).endpoint for _ in range(6)]

    assert order[:3] == order[3:]
    assert set(order[:3]) == {A, B, C}


def test_round_robin_follows_weights() -> None:
    heavy = Endpoint("10.0.0.9", 80, weight=3)
    balancer, _ = _balancer([heavy, A])

    assert _picks(balancer, 8) == {heavy.address: 6, A.address: 2}


def test_least_request_prefers_the_idle_endpoint() -> None:
    balancer, _ = _balancer([A, B], lb="least_request")
    busy = balancer.pick(make_request())
    busy.in_flight = 5

    picks = _picks(balancer, 20)

    assert picks == {({A, B} - {busy.endpoint}).pop().address: 20}


async def _ewma_share(endpoints, latency_s, n=300) -> Counter[str]:
    clock = ManualClock()
    balancer, _ = _balancer(endpoints, lb="peak_ewma", clock=clock, seed=7)
    upstream = ScriptedUpstream(clock=clock, latency_s=latency_s)
    handler = compose([balance_layer({"svc": balancer}, clock=clock)], upstream)
    for _ in range(n):
        await handler(make_request(upstream="svc"))
    return Counter(upstream.addresses())


async def test_peak_ewma_favours_the_fast_endpoint() -> None:
    share = await _ewma_share([A, B], {A.address: 0.200, B.address: 0.010})

    assert share[B.address] > 0.95 * 300


async def test_p2c_peak_ewma_ranks_three_endpoints_by_latency() -> None:
    # with three endpoints the fastest is in the sampled pair 2/3 of the time
    latency = {A.address: 0.200, B.address: 0.010, C.address: 0.100}
    share = await _ewma_share([A, B, C], latency)

    assert share[B.address] > 0.6 * 300
    assert share[B.address] > share[C.address] > share[A.address]


async def test_failures_are_charged_a_penalty_so_fast_errors_do_not_attract_traffic() -> None:
    clock = ManualClock()
    balancer, _ = _balancer([A, B], lb="peak_ewma", clock=clock, seed=3)
    upstream = ScriptedUpstream(
        by_endpoint={A.address: [503] * 1000},
        clock=clock,
        latency_s={A.address: 0.001, B.address: 0.020},
    )
    handler = compose([balance_layer({"svc": balancer}, clock=clock)], upstream)

    for _ in range(200):
        await handler(make_request(upstream="svc"))

    assert Counter(upstream.addresses())[B.address] > 150


def test_slow_start_ramps_a_new_endpoint_up() -> None:
    clock = ManualClock()
    balancer, source = _balancer([A, B], clock=clock, slow_start_s=10.0)
    balancer.pick(make_request())
    source.set("svc", [A, B, C])

    def weight_of_c() -> float:
        balancer.pick(make_request())  # refreshes the endpoint set
        [c] = [e for e in balancer.stats()["endpoints"] if e["address"] == C.address]
        return c["effective_weight"]

    assert weight_of_c() == pytest.approx(0.1)  # Envoy min_weight_percent 10 %
    assert _picks(balancer, 210)[C.address] == 10  # 0.1 / 2.1 of the picks
    clock.advance(5.0)
    assert weight_of_c() == pytest.approx(0.5)
    clock.advance(5.0)
    assert weight_of_c() == pytest.approx(1.0)
    assert _picks(balancer, 300)[C.address] == 100


def test_initial_endpoints_are_not_slow_started() -> None:
    balancer, _ = _balancer([A, B], slow_start_s=10.0)

    assert [e["effective_weight"] for e in balancer.stats()["endpoints"]] == [1.0, 1.0]


def test_ejected_endpoints_are_skipped() -> None:
    ejected = {A.address}
    for lb in ("round_robin", "least_request", "peak_ewma"):
        balancer, _ = _balancer([A, B, C], lb=lb, available=lambda e: e.address not in ejected)

        assert A.address not in _picks(balancer, 50)


def test_all_ejected_means_panic_and_every_endpoint_is_used() -> None:
    balancer, _ = _balancer([A, B], available=lambda e: False)
    request = make_request()

    assert balancer.pick(request).endpoint in (A, B)
    assert request.context.attributes["meshlens.balance.panic"] is True
    assert balancer.stats()["panics"] == 1


def test_previous_endpoints_are_avoided_when_another_is_available() -> None:
    for lb in ("round_robin", "least_request", "peak_ewma"):
        balancer, _ = _balancer([A, B, C], lb=lb)
        for _ in range(30):
            request = make_request()
            request.context.previous_endpoints.extend([A, B])
            assert balancer.pick(request).endpoint == C
        request = make_request()
        request.context.previous_endpoints.extend([A, B, C])
        assert balancer.pick(request).endpoint in (A, B, C)


def test_no_endpoints_is_no_healthy_upstream() -> None:
    balancer, _ = _balancer([])

    with pytest.raises(NoHealthyUpstream):
        balancer.pick(make_request())


def test_endpoints_are_read_once_per_version() -> None:
    class CountingSource(MutableEndpoints):
        reads = 0

        def endpoints(self, service: str) -> tuple[Endpoint, ...]:
            self.reads += 1
            return super().endpoints(service)

    source = CountingSource({"svc": [A, B]})
    balancer = Balancer("svc", BalanceConfig(), source, clock=ManualClock())
    for _ in range(10):
        balancer.pick(make_request())
    assert source.reads == 1

    source.set("svc", [C])
    assert balancer.pick(make_request()).endpoint == C
    assert source.reads == 2


async def test_layer_sets_endpoint_and_connect_timeout() -> None:
    balancer, _ = _balancer([A], connect_timeout_s=0.25)
    upstream = ScriptedUpstream()
    handler = compose([balance_layer({"svc": balancer})], upstream)
    request = make_request(upstream="svc")

    await handler(request)

    assert upstream.seen[0].endpoint == A
    assert request.context.connect_timeout_s == 0.25
    with pytest.raises(NoRoute):
        await handler(make_request(upstream="other"))


def test_property_never_picks_an_ejected_endpoint_while_healthy_ones_exist() -> None:
    rng = random.Random(20261126)
    for case in range(300):
        n = rng.randint(1, 8)
        endpoints = [Endpoint(f"10.1.0.{i}", 80, weight=rng.randint(1, 5)) for i in range(n)]
        ejected = {e.address for e in endpoints if rng.random() < 0.5}
        if len(ejected) == n:
            ejected.discard(endpoints[0].address)
        lb = rng.choice(["round_robin", "least_request", "peak_ewma"])
        balancer, _ = _balancer(
            endpoints, lb=lb, seed=case, available=lambda e, x=ejected: e.address not in x
        )
        for _ in range(20):
            request = make_request()
            if rng.random() < 0.3:
                request.context.previous_endpoints.append(rng.choice(endpoints))
            state = balancer.pick(request)
            state.in_flight += rng.randint(0, 2)
            balancer.finish(state, rng.random() / 10, failed=rng.random() < 0.2)
            assert state.endpoint.address not in ejected, (case, lb)


def test_balance_config_rejects_unknown_lb() -> None:
    with pytest.raises(ValueError, match="lb must be one of"):
        BalanceConfig(lb="random")


def test_zero_weight_endpoints_are_drained_unless_all_are_zero() -> None:
    drained = Endpoint("10.0.0.8", 80, weight=0)
    for lb in ("round_robin", "least_request", "peak_ewma"):
        balancer, _ = _balancer([drained, A], lb=lb)
        assert _picks(balancer, 10) == {A.address: 10}
        balancer, _ = _balancer([drained, Endpoint("10.0.0.7", 80, weight=0)], lb=lb)
        assert sum(_picks(balancer, 10).values()) == 10


async def test_property_with_real_outlier_detection_ejected_endpoints_are_never_picked() -> None:
    rng = random.Random(7)
    ejections = 0
    for case in range(40):
        clock = ManualClock()
        n = rng.randint(2, 6)
        endpoints = [Endpoint(f"10.2.0.{i}", 80) for i in range(n)]
        source = MutableEndpoints({"svc": endpoints})
        detector = OutlierDetector(
            "svc",
            OutlierConfig(
                consecutive_5xx=rng.randint(1, 3),
                success_rate=SuccessRateConfig(window_s=5, min_requests=3, threshold=0.7),
                base_ejection_s=rng.choice([0.5, 2.0]),
                max_ejection_s=10.0,
                max_ejection_percent=rng.choice([10.0, 50.0, 100.0]),
                interval_s=0.2,
            ),
            source,
            clock=clock,
        )
        lb = rng.choice(["round_robin", "least_request", "peak_ewma"])
        balancer = Balancer(
            "svc", BalanceConfig(lb=lb), source, health=detector, clock=clock, random=rng.random
        )
        bad = {e.address: rng.random() for e in endpoints}  # failure probability per endpoint

        async def terminal(request, bad=bad, clock=clock):
            clock.advance(rng.random() / 20)
            address = request.context.endpoint.address
            return Response(status=503 if rng.random() < bad[address] else 200)

        picks: list[str] = []

        def check(inner, picks=picks, detector=detector, endpoints=endpoints, where=(case, lb)):
            async def handle(request):  # between the balancer and the outlier layer
                endpoint = request.context.endpoint
                healthy = [e for e in endpoints if detector.available(e)]
                assert not healthy or endpoint in healthy, where
                picks.append(endpoint.address)
                return await inner(request)

            return handle

        handler = compose(
            [
                balance_layer({"svc": balancer}, clock=clock),
                check,
                outlier_layer({"svc": detector}, clock=clock),
            ],
            terminal,
        )
        for _ in range(150):
            await handler(make_request(upstream="svc"))
        assert len(picks) == 150
        ejections += sum(e["ejections"] for e in detector.stats()["endpoints"].values())
    assert ejections > 40  # the property was exercised, not vacuous
