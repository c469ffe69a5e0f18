from __future__ import annotations

import pytest

from sidecar.errors import FaultAbort
from sidecar.layers.fault import FaultConfig, fault_layer
from sidecar.stack import compose
from tests.fakes import RecordingSleep, ScriptedUpstream, SequenceRandom, make_request


async def test_delay_applies_to_the_configured_percentage() -> None:
    sleep = RecordingSleep()
    upstream = ScriptedUpstream()
    layer = fault_layer(
        FaultConfig(delay_ms=250, delay_percent=50), sleep=sleep, random=SequenceRandom([0.4, 0.6])
    )
    handler = compose([layer], upstream)

    await handler(make_request())
    await handler(make_request())

    assert sleep.calls == [0.25]
    assert upstream.calls == 2


async def test_abort_raises_with_the_configured_status() -> None:
    upstream = ScriptedUpstream()
    layer = fault_layer(
        FaultConfig(abort_status=418, abort_percent=30), random=SequenceRandom([0.1, 0.9])
    )
    handler = compose([layer], upstream)
    request = make_request()

    with pytest.raises(FaultAbort) as caught:
        await handler(request)
    assert caught.value.status == 418
    assert request.context.attributes["meshlens.fault.abort"] == 418
    assert (await handler(make_request())).status == 200
    assert upstream.calls == 1


async def test_observe_only_injects_nothing() -> None:
    sleep = RecordingSleep()
    config = FaultConfig(delay_ms=100, delay_percent=100, abort_percent=100, enforce=False)
    handler = compose([fault_layer(config, sleep=sleep)], ScriptedUpstream())
    request = make_request()

    assert (await handler(request)).status == 200
    assert sleep.calls == []
    assert request.context.attributes["meshlens.fault.would_abort"] == 503
    assert request.context.attributes["meshlens.fault.would_delay_ms"] == 100


def test_fault_config_validates() -> None:
    with pytest.raises(ValueError):
        FaultConfig(abort_percent=101)
    with pytest.raises(ValueError):
        FaultConfig(abort_status=99)
