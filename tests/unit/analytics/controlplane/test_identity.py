from __future__ import annotations

import pytest

from analytics.controlplane.errors import Forbidden
from analytics.controlplane.identity import SpiffeId


def test_spiffe_id_round_trips() -> None:
    identity = SpiffeId("cluster.local", "default", "orders")
    assert identity.uri == "spiffe://cluster.local/ns/default/sa/orders"
    assert SpiffeId.parse(identity.uri) == identity


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://cluster.local/orders",
        "spiffe://cluster.local/ns/default/sa/Orders",
        "https://cluster.local/ns/default/sa/orders",
        "spiffe://cluster.local/ns/default/sa/orders/extra",
    ],
)
def test_other_shapes_are_refused(uri: str) -> None:
    with pytest.raises(Forbidden):
        SpiffeId.parse(uri)
