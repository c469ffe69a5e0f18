"""Resilience policies end to end through a real sidecar: retries, timeouts, connect failures,
outlier ejection, rate limiting and fault injection, each marked with `x-meshlens-error`."""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.app import Sidecar
from tests.integration.conftest import ScriptedUpstream, Step, eventually, url, write_json

pytestmark = pytest.mark.timeout(30)

Sidecars = Callable[..., Awaitable[Sidecar]]
FAST_RETRY = {"backoff_base_ms": 1, "backoff_max_ms": 2}


def _config(
    endpoints: list[str], route: dict[str, Any] | None = None, **upstream: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": "1",
        "upstreams": {"app": {"endpoints": endpoints, "outlier": None, **upstream}},
    }
    if route is not None:
        doc["routes"] = [{"name": "r", "destinations": [{"upstream": "app"}], **route}]
    return doc


async def _get(sidecar: Sidecar, path: str = "/x") -> tuple[int, dict[str, str], bytes]:
    assert sidecar.addresses is not None
    async with aiohttp.ClientSession() as session:
        async with session.get(
            url(sidecar.addresses.outbound) + path, headers={"Host": "app"}
        ) as response:
            return response.status, dict(response.headers), await response.read()


def _ep(upstream: ScriptedUpstream) -> str:
    return f"127.0.0.1:{upstream.port}"


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_retry_rides_out_a_burst_of_503s(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    retry = {"attempts": 3, "on": ["gateway-error"], **FAST_RETRY}
    sidecar = await sidecars("web", 1, config=_config([_ep(upstream)], {"retry": retry}))
    upstream.script.extend([Step(status=503), Step(status=503)])
    status, headers, _ = await _get(sidecar)
    assert status == 200
    assert "x-meshlens-error" not in headers
    assert len(upstream.seen) == 3


async def test_per_try_timeout_cuts_a_slow_attempt_and_the_retry_succeeds(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    route = {
        "timeout": {"request_s": 5, "per_try_s": 0.2},
        "retry": {"attempts": 2, "on": ["gateway-error"], **FAST_RETRY},
    }
    sidecar = await sidecars("web", 1, config=_config([_ep(upstream)], route))
    upstream.script.append(Step(delay_s=2.0))
    status, _, _ = await _get(sidecar)
    assert status == 200
    assert len(upstream.seen) == 2
    upstream.script.extend([Step(delay_s=2.0), Step(delay_s=2.0)])
    status, headers, _ = await _get(sidecar)
    assert status == 504
    assert headers["x-meshlens-error"] == "per_try_timeout"


async def test_connect_failure_to_a_dead_port_is_a_marked_503(sidecars: Sidecars) -> None:
    retry = {"attempts": 2, "on": ["connect-failure"], **FAST_RETRY}
    config = _config([f"127.0.0.1:{_dead_port()}"], {"retry": retry})
    sidecar = await sidecars("web", 1, config=config)
    status, headers, body = await _get(sidecar)
    assert status == 503
    assert headers["x-meshlens-error"] == "connect_failure"
    assert b"refused" in body


async def test_outlier_detection_ejects_the_failing_endpoint_of_two(
    upstream_factory: Callable[..., Awaitable[ScriptedUpstream]], sidecars: Sidecars
) -> None:
    good, bad = await upstream_factory("good"), await upstream_factory("bad")
    bad.default = Step(status=500)
    outlier = {
        "consecutive_5xx": 2,
        "success_rate": None,
        "max_ejection_percent": 50,
        "base_ejection_s": 30,
    }
    config = _config([_ep(good), _ep(bad)], lb="round_robin")
    config["upstreams"]["app"]["outlier"] = outlier
    sidecar = await sidecars("web", 1, config=config)
    statuses = [(await _get(sidecar))[0] for _ in range(20)]
    assert statuses[-10:] == [200] * 10
    assert len(bad.seen) <= 3
    stats = json.dumps(sidecar.stats_doc())
    assert "eject" in stats


async def test_rate_limit_answers_429_past_the_burst(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    route = {"ratelimit": {"rps": 0.5, "burst": 2}}
    sidecar = await sidecars("web", 1, config=_config([_ep(upstream)], route))
    results = [await _get(sidecar) for _ in range(3)]
    assert [r[0] for r in results] == [200, 200, 429]
    assert results[2][1]["x-meshlens-error"] == "rate_limited"
    assert len(upstream.seen) == 2


async def test_fault_abort_never_reaches_the_app(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    route = {"fault": {"abort": {"status": 503, "percent": 100}}}
    sidecar = await sidecars("web", 1, config=_config([_ep(upstream)], route))
    status, headers, _ = await _get(sidecar)
    assert status == 503
    assert headers["x-meshlens-error"] == "fault_abort"
    assert upstream.seen == []


async def test_config_file_reload_swaps_stacks_and_a_bad_file_keeps_the_last_good(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    sidecar = await sidecars("web", 1, config=_config([_ep(upstream)]))
    path = Path(str(sidecar.options.config_path))
    assert (await _get(sidecar))[0] == 200
    updated = _config([_ep(upstream)], {"fault": {"abort": {"status": 418, "percent": 100}}})
    updated["version"] = "2"
    write_json(path, updated)
    await eventually(lambda: sidecar.config_doc()["version"] == "2")
    assert (await _get(sidecar))[0] == 418
    write_json(path, {"version": "3", "routes": [{"name": "bad"}], "bogus": 1})
    await eventually(lambda: bool(sidecar.config_doc()["last_errors"]))
    doc = sidecar.config_doc()
    assert doc["version"] == "2"
    assert len(doc["last_errors"]) >= 2  # type: ignore[arg-type]  # every problem listed
    assert (await _get(sidecar))[0] == 418
