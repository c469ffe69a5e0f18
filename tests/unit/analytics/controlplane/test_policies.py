from __future__ import annotations

from analytics.controlplane.policies import Change, diff_documents, document_digest


def test_diff_reports_adds_removes_and_nested_replacements() -> None:
    old = {"a": 1, "b": {"c": 2, "d": [1, 2]}, "gone": True}
    new = {"a": 1, "b": {"c": 3, "d": [1, 2, 3]}, "new": "x"}
    assert diff_documents(old, new) == [
        Change("$.b.c", "replace", 2, 3),
        Change("$.b.d", "replace", [1, 2], [1, 2, 3]),
        Change("$.gone", "remove", True, None),
        Change("$.new", "add", None, "x"),
    ]
    assert diff_documents(new, new) == []


def test_digest_ignores_key_order() -> None:
    assert document_digest({"a": 1, "b": 2}) == document_digest({"b": 2, "a": 1})
    assert document_digest({"a": 1}) != document_digest({"a": 2})
