from __future__ import annotations

import pytest

from analytics.controlplane.errors import InvalidPolicy
from analytics.controlplane.validation import upstreams_of, validate_policy


def test_valid_document_passes_and_names_its_upstreams() -> None:
    document = {"service": "orders", "upstreams": {"payments": {}, "stock": {}}}
    validate_policy("orders", document)
    validate_policy("orders", {})
    assert upstreams_of(document) == ("payments", "stock")


def test_every_problem_is_listed() -> None:
    document = {
        "service": "payments",
        "upstreams": {"payments": {"lb": "random"}},
        "routes": [{"name": "r", "destinations": [{"upstream": "nope"}]}],
        "unknown": 1,
    }
    with pytest.raises(InvalidPolicy) as info:
        validate_policy("orders", document)
    problems = info.value.problems
    assert len(problems) == 4
    assert any(p.startswith("service:") for p in problems)
    assert any("unknown" in p for p in problems)


def test_non_object_document_is_rejected() -> None:
    with pytest.raises(InvalidPolicy, match="problem"):
        validate_policy("orders", [1, 2])
