from __future__ import annotations

from sidecar.discovery import EndpointSource, StaticEndpoints
from sidecar.http import Endpoint


def test_static_endpoints_serve_the_configured_table() -> None:
    a = Endpoint("10.0.0.1", 80, service="reviews")
    source: EndpointSource = StaticEndpoints({"reviews": [a]})  # (mypy checks the fit)

    assert source.endpoints("reviews") == (a,)
    assert source.endpoints("ratings") == ()
    assert source.version == 0
    assert isinstance(source, StaticEndpoints) and source.services() == ("reviews",)
