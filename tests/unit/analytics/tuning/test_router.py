"""The suggestions API over the real app: refresh, detail with replay, accept (published as a
policy version), reject, roll back, pins; every state change in the audit log."""

from __future__ import annotations

from typing import Any

from collector.store import Store
from tests.conftest import trace_columns
from tests.unit.analytics.controlplane.helpers import OPERATOR, VIEWER, Harness
from tests.unit.analytics.tuning.traffic import Edge, spans, spread_503, traffic

API = "/api/v1/suggestions"
POLICIES = "/api/v1/controlplane/policies"


async def _load(store: Store, *edges: Edge) -> None:
    for i, edge in enumerate(edges):
        rows = spans(traffic(edge, fails=spread_503(0.03), seed=i))
        await store.insert("otel_traces", trace_columns(rows))


async def _refresh(h: Harness) -> dict[str, Any]:
    r = await h.client.post(f"{API}/refresh", headers=OPERATOR)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _find(h: Harness, kind: str, caller: str = "web", state: str = "") -> dict[str, Any]:
    r = await h.client.get(API, headers=VIEWER, params={"caller": caller, "state": state})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = [s for s in r.json()["suggestions"] if s["kind"] == kind]
    assert len(found) == 1, r.json()
    return found[0]


async def test_retry_suggestion_with_replay_accepted_becomes_a_policy_version(
    harness: Harness, store: Store
) -> None:
    h = harness
    await _load(store, Edge())
    await _refresh(h)
    retry = await _find(h, "retry")
    assert retry["state"] == "proposed"
    assert retry["evidence"]["transient_failures"] > 0

    detail = (await h.client.get(f"{API}/{retry['id']}", headers=VIEWER)).json()
    replay = detail["replay"]
    assert replay["requests"] == 3000
    assert 0 < replay["rescued"] <= replay["failures"]
    assert 0 < replay["extra_load"] < 0.1
    assert "would have been retried with success" in replay["text"]

    r = await h.client.post(
        f"{API}/{retry['id']}/accept", headers=OPERATOR, json={"mode": "enforce", "reason": "ok"}
    )
    assert r.status_code == 200, r.text
    accepted = r.json()
    assert accepted["state"] == "enforcing"
    assert [s["state"] for s in accepted["history"]] == ["proposed", "accepted", "enforcing"]
    policy = (await h.client.get(f"{POLICIES}/web", headers=VIEWER)).json()
    assert policy["version"] == accepted["policy_version"] == 1
    (route,) = policy["document"]["routes"]
    assert route["name"] == "tuned-orders"
    assert route["retry"]["attempts"] == retry["change"]["retry"]["attempts"]
    assert route["retry"]["enforce"] is True

    audit = (await h.client.get("/api/v1/controlplane/audit", headers=VIEWER)).json()
    actions = [e["action"] for e in audit]
    assert {"suggestion.accepted", "suggestion.enforcing", "policy.put"} <= set(actions)

    again = await h.client.post(
        f"{API}/{retry['id']}/accept", headers=OPERATOR, json={"mode": "enforce", "reason": "x"}
    )
    assert again.status_code == 409


async def test_observe_first_then_enforce_then_roll_back(harness: Harness, store: Store) -> None:
    h = harness
    await _load(store, Edge())
    await _refresh(h)
    retry = await _find(h, "retry")
    url = f"{API}/{retry['id']}"

    observing = (
        await h.client.post(f"{url}/accept", headers=OPERATOR, json={"reason": "shadow first"})
    ).json()
    assert observing["state"] == "observing" and observing["mode"] == "observe"
    doc = (await h.client.get(f"{POLICIES}/web", headers=VIEWER)).json()["document"]
    assert doc["routes"][0]["retry"]["enforce"] is False

    enforcing = (
        await h.client.post(
            f"{url}/accept", headers=OPERATOR, json={"mode": "enforce", "reason": "looked fine"}
        )
    ).json()
    assert enforcing["state"] == "enforcing" and enforcing["policy_version"] == 2
    assert enforcing["previous_version"] == 0

    rolled = await h.client.post(f"{url}/rollback", headers=OPERATOR, json={"reason": "no"})
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["state"] == "rolled_back"
    doc = (await h.client.get(f"{POLICIES}/web", headers=VIEWER)).json()["document"]
    assert doc.get("routes") == []  # the route added for the suggestion is gone


async def test_reject_is_audited_and_final(harness: Harness, store: Store) -> None:
    h = harness
    await _load(store, Edge())
    await _refresh(h)
    retry = await _find(h, "retry")
    r = await h.client.post(
        f"{API}/{retry['id']}/reject", headers=OPERATOR, json={"reason": "we fix the app"}
    )
    assert r.json()["state"] == "rejected"
    audit = (
        await h.client.get(
            "/api/v1/controlplane/audit",
            headers=VIEWER,
            params={"target": f"suggestion/{retry['id']}"},
        )
    ).json()
    assert [(e["action"], e["reason"]) for e in audit] == [
        ("suggestion.rejected", "we fix the app")
    ]
    await _refresh(h)  # the same suggestion is not proposed again
    r2 = await h.client.get(API, headers=VIEWER, params={"state": "proposed", "caller": "web"})
    assert all(s["kind"] != "retry" for s in r2.json()["suggestions"])


async def test_refresh_deduplicates(harness: Harness, store: Store) -> None:
    h = harness
    await _load(store, Edge())
    await _refresh(h)
    first = await _find(h, "retry")
    await _refresh(h)
    second = await _find(h, "retry")
    assert second["id"] == first["id"]


async def test_pinned_policy_gets_no_suggestions_and_cannot_be_changed(
    harness: Harness, store: Store
) -> None:
    h = harness
    await _load(store, Edge(), Edge(caller="api", upstream="stock"))
    await _refresh(h)
    retry = await _find(h, "retry")
    r = await h.client.put("/api/v1/policies/web/pin", headers=OPERATOR, json={"reason": "freeze"})
    assert r.status_code == 200 and r.json()["pinned"] is True
    await _refresh(h)
    assert (await h.client.get(f"{API}/{retry['id']}", headers=VIEWER)).json()[
        "state"
    ] == "superseded"
    proposed = (await h.client.get(API, headers=VIEWER, params={"state": "proposed"})).json()
    callers = {s["caller"] for s in proposed["suggestions"]}
    assert "web" not in callers and "api" in callers

    await h.client.delete("/api/v1/policies/web/pin", headers=OPERATOR)
    await _refresh(h)
    back = await _find(h, "retry", state="proposed")
    assert back["id"] != retry["id"] and back["fingerprint"] == retry["fingerprint"]


async def test_viewers_cannot_accept_and_bad_ids_are_rejected(harness: Harness) -> None:
    h = harness
    r = await h.client.post(f"{API}/0123456789abcdef/accept", headers=VIEWER, json={"reason": "x"})
    assert r.status_code == 403
    assert (await h.client.get(f"{API}/nope", headers=VIEWER)).status_code == 422
    missing = await h.client.get(f"{API}/0123456789abcdef", headers=VIEWER)
    assert missing.status_code == 404
    bad_mode = await h.client.post(
        f"{API}/0123456789abcdef/accept", headers=OPERATOR, json={"mode": "yolo", "reason": "x"}
    )
    assert bad_mode.status_code == 422
