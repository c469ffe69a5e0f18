"""The control-plane API end to end: ASGI transport, real embedded store, real cryptography."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import MutableMapping
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from analytics.controlplane.auth import CERT_HEADER, SIGNATURE_HEADER, sign_request
from tests.unit.analytics.controlplane.helpers import (
    OPERATOR,
    OPERATOR_TOKEN,
    ORDERS,
    ORDERS_BOOTSTRAP,
    PAYMENTS,
    VIEWER,
    Harness,
    bearer,
    registration,
)
from tests.unit.analytics.controlplane.test_ca import make_csr

API = "/api/v1/controlplane"
ORDERS_ID = "spiffe://mesh.test/ns/default/sa/orders"


def policy(request_s: float = 2.0) -> dict[str, Any]:
    return {
        "service": "orders",
        "upstreams": {"payments": {}},
        "routes": [
            {
                "name": "pay",
                "destinations": [{"upstream": "payments"}],
                "timeout": {"request_s": request_s},
            }
        ],
    }


async def put(h: Harness, document: dict[str, Any], headers: dict[str, str] = OPERATOR) -> Any:
    return await h.client.put(
        f"{API}/policies/orders", json={"document": document, "reason": "tune"}, headers=headers
    )


async def watch(h: Harness, **params: str | int | float) -> httpx.Response:
    query: dict[str, str | int | float] = {
        "service": "orders",
        "instance": "orders-1",
        "timeout_s": 5.0,
        **params,
    }
    return await h.client.get(f"{API}/watch", params=query, headers=ORDERS)


async def ack(h: Harness, body: dict[str, Any]) -> httpx.Response:
    return await h.client.post(f"{API}/ack", json={"instance": "orders-1", **body}, headers=ORDERS)


async def test_invalid_policy_is_rejected_with_every_error(harness: Harness) -> None:
    bad = policy(request_s=-1)
    bad["service"] = "payments"
    bad["upstreams"]["payments"] = {"bogus": 1}
    bad["routes"][0]["destinations"] = [{"upstream": "nowhere"}]

    response = await put(harness, bad)

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_policy"
    problems = "\n".join(body["problems"])
    assert len(body["problems"]) == 4
    for fragment in ("service", "bogus", "request_s", "nowhere"):
        assert fragment in problems
    history = await harness.client.get(f"{API}/policies/orders/versions", headers=VIEWER)
    assert history.json() == []


async def test_a_policy_number_json_cannot_hold_is_refused_with_its_path(harness: Harness) -> None:
    # Python's json reads 1e999 and Infinity as inf: taken, a version every sidecar failed to
    # build was stored and pushed; a 400-digit integer raised out of validation (a 500)
    for raw in ("1e999", "Infinity", "-Infinity", "NaN", "1" + "0" * 400):
        document = json.dumps(policy()).replace('"request_s": 2.0', f'"request_s": {raw}')
        body = f'{{"document": {document}, "reason": "tune"}}'

        response = await harness.client.put(
            f"{API}/policies/orders",
            content=body,
            headers={**OPERATOR, "content-type": "application/json"},
        )

        assert response.status_code == 422, raw
        assert response.json()["problems"] == [
            "routes[0].timeout.request_s: Input should be a finite number"
        ]
    current = await harness.client.get(f"{API}/policies/orders", headers=OPERATOR)
    assert current.status_code == 404  # nothing was stored


async def test_viewer_cannot_change_policy_and_missing_or_forged_tokens_fail(
    harness: Harness,
) -> None:
    assert (await put(harness, policy(), headers=VIEWER)).status_code == 403
    missing = await harness.client.put(
        f"{API}/policies/orders", json={"document": policy(), "reason": "x"}
    )
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert (
        await put(harness, policy(), headers=bearer("forged-0123456789abcdef"))
    ).status_code == 403
    assert (await put(harness, policy(), headers=ORDERS)).status_code == 403
    reads = await harness.client.get(f"{API}/policies", headers=ORDERS)
    assert reads.status_code == 403  # sidecars get their config by watching


async def test_put_history_diff_and_rollback(harness: Harness) -> None:
    first = await put(harness, policy(2.0))
    second = await put(harness, policy(3.0))
    assert (first.status_code, second.status_code) == (201, 201)
    assert (first.json()["version"], second.json()["version"]) == (1, 2)
    assert second.json()["author"] == "token:alice"

    diff = await harness.client.get(
        f"{API}/policies/orders/diff", params={"from_version": 1, "to_version": 2}, headers=VIEWER
    )
    assert diff.json() == [
        {
            "path": "$.routes",
            "op": "replace",
            "old": policy(2.0)["routes"],
            "new": policy(3.0)["routes"],
        }
    ]
    rolled = await harness.client.post(
        f"{API}/policies/orders/rollback",
        json={"to_version": 1, "reason": "p99 regressed"},
        headers=OPERATOR,
    )
    assert rolled.status_code == 201
    assert rolled.json()["version"] == 3
    assert rolled.json()["source_version"] == 1
    assert rolled.json()["document"] == policy(2.0)

    current = await harness.client.get(f"{API}/policies/orders", headers=VIEWER)
    assert current.json()["version"] == 3
    history = await harness.client.get(f"{API}/policies/orders/versions", headers=VIEWER)
    assert [(v["version"], v["action"], v["reason"]) for v in history.json()] == [
        (3, "rollback", "p99 regressed"),
        (2, "put", "tune"),
        (1, "put", "tune"),
    ]
    missing = await harness.client.post(
        f"{API}/policies/orders/rollback", json={"to_version": 9, "reason": "x"}, headers=OPERATOR
    )
    assert missing.status_code == 404
    stale = await harness.client.put(
        f"{API}/policies/orders",
        json={"document": policy(), "reason": "x", "expected_version": 2},
        headers=OPERATOR,
    )
    assert stale.status_code == 409


async def test_watch_returns_on_policy_change_and_times_out_otherwise(harness: Harness) -> None:
    assert (
        await harness.client.post(f"{API}/instances", json=registration("orders-1"), headers=ORDERS)
    ).status_code == 201
    first = await watch(harness)
    assert first.status_code == 200
    assert (first.json()["version"], first.json()["document"]) == (0, None)
    revision = first.json()["revision"]

    idle = await watch(harness, version=0, revision=revision, timeout_s=0.05)
    assert idle.status_code == 204

    pending = asyncio.create_task(watch(harness, version=0, revision=revision))
    await asyncio.sleep(0)
    assert (await put(harness, policy())).status_code == 201
    pushed = (await asyncio.wait_for(pending, 5.0)).json()

    assert pushed["version"] == 1
    assert pushed["document"] == {**policy(), "version": "1"}
    assert pushed["endpoints"] == {"payments": []}
    assert pushed["nonce"]
    assert len(pushed["trust_bundle"]) == 1


async def test_endpoints_of_upstreams_are_pushed_and_dead_instances_leave(harness: Harness) -> None:
    for name in ("payments-1", "payments-2"):
        body = registration(name, service="payments", address=f"10.0.1.{name[-1]}")
        assert (
            await harness.client.post(f"{API}/instances", json=body, headers=PAYMENTS)
        ).status_code == 201
    await harness.client.post(
        f"{API}/instances", json=registration("orders-1", upstreams=["payments"]), headers=ORDERS
    )
    first = (await watch(harness)).json()
    assert [e["instance"] for e in first["endpoints"]["payments"]] == ["payments-1", "payments-2"]
    # Each endpoint names the SPIFFE id a caller verifies over mTLS.
    assert {e["identity"] for e in first["endpoints"]["payments"]} == {
        "spiffe://mesh.test/ns/default/sa/payments"
    }

    harness.clock.advance(4.0)
    beat = await harness.client.post(f"{API}/instances/payments-1/heartbeat", headers=PAYMENTS)
    assert beat.status_code == 200
    await harness.client.post(f"{API}/instances/orders-1/heartbeat", headers=ORDERS)
    pending = asyncio.create_task(watch(harness, version=0, revision=first["revision"]))
    await asyncio.sleep(0)
    harness.clock.advance(3.0)  # payments-2 missed its lease (6 s), the others renewed theirs
    expired = await harness.plane.sweep()
    pushed = (await asyncio.wait_for(pending, 5.0)).json()

    assert [r.instance for r in expired] == ["payments-2"]
    assert [e["instance"] for e in pushed["endpoints"]["payments"]] == ["payments-1"]
    listed = await harness.client.get(f"{API}/endpoints/payments", headers=VIEWER)
    assert [e["address"] for e in listed.json()] == ["10.0.1.1"]
    gone = await harness.client.post(f"{API}/instances/payments-2/heartbeat", headers=PAYMENTS)
    assert gone.status_code == 404


async def test_sidecar_cannot_register_or_touch_another_service(harness: Harness) -> None:
    other = await harness.client.post(
        f"{API}/instances", json=registration("p-1", service="payments"), headers=ORDERS
    )
    assert other.status_code == 403
    await harness.client.post(
        f"{API}/instances", json=registration("p-1", service="payments"), headers=PAYMENTS
    )
    assert (await harness.client.delete(f"{API}/instances/p-1", headers=ORDERS)).status_code == 403
    bad = await harness.client.post(
        f"{API}/instances", json=registration("o-1", address="", ports={"x": 0}), headers=ORDERS
    )
    assert bad.status_code == 422
    assert "address" in bad.json()["message"] and "port" in bad.json()["message"]


async def test_nack_keeps_last_good_version_in_fleet_view_with_the_reason(harness: Harness) -> None:
    await harness.client.post(f"{API}/instances", json=registration("orders-1"), headers=ORDERS)
    await put(harness, policy(2.0))
    v1 = (await watch(harness)).json()
    assert (await ack(harness, {"version": 1, "nonce": v1["nonce"], "ok": True})).status_code == 200
    await put(harness, policy(3.0))
    v2 = (await watch(harness, version=1, revision=v1["revision"])).json()
    assert v2["version"] == 2

    harness.wall.advance(1.0)
    nack = await ack(
        harness, {"version": 2, "nonce": v2["nonce"], "ok": False, "error": "timeout too short"}
    )
    fleet = await harness.client.get(f"{API}/fleet", params={"service": "orders"}, headers=VIEWER)
    again = await watch(harness, version=1, revision=v2["revision"], timeout_s=0.05)

    assert nack.status_code == 200
    [entry] = fleet.json()
    assert entry["acked_version"] == 1
    assert entry["current_version"] == 2
    assert entry["in_sync"] is False
    assert entry["nack"]["version"] == 2
    assert entry["nack"]["error"] == "timeout too short"
    assert again.status_code == 204  # the NACKed version is not re-sent in a loop
    mismatched = await ack(harness, {"version": 1, "nonce": v2["nonce"], "ok": True})
    assert mismatched.status_code == 409
    await harness.plane.flush()
    rows = await harness.plane.repository.acks("orders-1", 10)
    assert [(r.version, r.ok, r.error) for r in rows][:2] == [
        (2, False, "timeout too short"),
        (1, True, ""),
    ]


async def test_reregistration_reports_running_version_after_control_plane_restart(
    harness: Harness,
) -> None:
    await put(harness, policy())
    body = registration("orders-1", running_version=1)
    await harness.client.post(f"{API}/instances", json=body, headers=ORDERS)
    fleet = (await harness.client.get(f"{API}/fleet", headers=VIEWER)).json()
    idle = await watch(harness, version=1, timeout_s=0.05)
    assert (fleet[0]["acked_version"], fleet[0]["in_sync"]) == (1, True)
    assert idle.status_code == 200  # no revision yet: endpoints and bundle are sent once


def new_csr(uri: str) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, make_csr([uri], key)


async def test_bootstrap_token_gets_a_certificate_and_forged_one_gets_nothing(
    harness: Harness,
) -> None:
    _key, csr = new_csr(ORDERS_ID)
    forged = await harness.client.post(
        f"{API}/certificates", json={"csr": csr}, headers=bearer("bootstrap-orders-0123456788")
    )
    other = await harness.client.post(
        f"{API}/certificates",
        json={"csr": new_csr("spiffe://mesh.test/ns/default/sa/payments")[1]},
        headers=ORDERS,
    )
    viewer = await harness.client.post(f"{API}/certificates", json={"csr": csr}, headers=VIEWER)
    issued = await harness.client.post(f"{API}/certificates", json={"csr": csr}, headers=ORDERS)

    assert forged.status_code == 403
    assert "certificate" not in forged.text.lower()
    assert other.status_code == 403
    assert viewer.status_code == 403
    assert issued.status_code == 201
    body = issued.json()
    leaf = x509.load_pem_x509_certificate(body["certificate_chain"][0].encode())
    root = x509.load_pem_x509_certificate(body["trust_bundle"][0].encode())
    leaf.verify_directly_issued_by(root)
    assert body["spiffe_id"] == ORDERS_ID
    assert body["not_after"] - harness.wall.now == 24 * 3600.0


async def signed_send(
    h: Harness, method: str, path: str, cert_pem: str, key: ec.EllipticCurvePrivateKey, **kw: Any
) -> httpx.Response:
    request = h.client.build_request(method, path, **kw)
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    target = request.url.raw_path.decode()
    request.headers[CERT_HEADER] = base64.b64encode(der).decode()
    request.headers[SIGNATURE_HEADER] = sign_request(
        key, method, target, int(h.wall.now), request.content
    )
    return await h.client.send(request)


async def test_sidecar_authenticates_with_its_certificate_after_bootstrap(harness: Harness) -> None:
    key, csr = new_csr(ORDERS_ID)
    cert = (
        await harness.client.post(f"{API}/certificates", json={"csr": csr}, headers=ORDERS)
    ).json()
    chain = cert["certificate_chain"][0]

    registered = await signed_send(
        harness, "POST", f"{API}/instances", chain, key, json=registration("orders-1")
    )
    watched = await signed_send(
        harness,
        "GET",
        f"{API}/watch",
        chain,
        key,
        params={"service": "orders", "instance": "orders-1"},
    )
    _renewed_key, renewal_csr = new_csr(ORDERS_ID)
    renewed = await signed_send(
        harness, "POST", f"{API}/certificates", chain, key, json={"csr": renewal_csr}
    )
    foreign = await signed_send(
        harness,
        "POST",
        f"{API}/instances",
        chain,
        key,
        json=registration("p-1", service="payments"),
    )
    harness.wall.advance(24 * 3600.0 + 1)
    expired = await signed_send(harness, "POST", f"{API}/instances/orders-1/heartbeat", chain, key)

    assert registered.status_code == 201
    assert watched.status_code == 200
    assert renewed.status_code == 201
    assert foreign.status_code == 403
    assert expired.status_code == 403


async def test_trust_bundle_rotation_is_pushed_to_watchers(harness: Harness) -> None:
    await harness.client.post(f"{API}/instances", json=registration("orders-1"), headers=ORDERS)
    first = (await watch(harness)).json()
    pending = asyncio.create_task(watch(harness, version=0, revision=first["revision"]))
    await asyncio.sleep(0)

    added = await harness.client.post(
        f"{API}/trust-bundle/roots", json={"reason": "yearly rotation"}, headers=OPERATOR
    )
    pushed = (await asyncio.wait_for(pending, 5.0)).json()

    assert added.status_code == 201
    roots = added.json()["roots"]
    assert [r["active"] for r in roots] == [True, False]
    assert len(pushed["trust_bundle"]) == 2
    new = roots[1]["fingerprint"]
    old = roots[0]["fingerprint"]
    activated = await harness.client.post(
        f"{API}/trust-bundle/roots/{new}/activate", json={"reason": "cut over"}, headers=OPERATOR
    )
    assert activated.json()["active"] == new
    viewer = await harness.client.delete(
        f"{API}/trust-bundle/roots/{old}", params={"reason": "done"}, headers=VIEWER
    )
    retired = await harness.client.delete(
        f"{API}/trust-bundle/roots/{old}", params={"reason": "done"}, headers=OPERATOR
    )
    assert viewer.status_code == 403
    assert [r["fingerprint"] for r in retired.json()["roots"]] == [new]


async def test_audit_log_records_each_change_without_secrets(harness: Harness) -> None:
    await put(harness, policy(2.0))
    await harness.client.post(
        f"{API}/policies/orders/rollback",
        json={"to_version": 1, "reason": "undo"},
        headers=OPERATOR,
    )
    _, csr = new_csr(ORDERS_ID)
    await harness.client.post(f"{API}/certificates", json={"csr": csr}, headers=ORDERS)
    await harness.client.post(f"{API}/instances", json=registration("orders-1"), headers=ORDERS)
    await harness.client.delete(f"{API}/instances/orders-1", headers=ORDERS)

    response = await harness.client.get(f"{API}/audit", headers=VIEWER)

    entries = response.json()
    assert [e["action"] for e in reversed(entries)] == [
        "policy.put",
        "policy.rollback",
        "certificate.issue",
        "instance.register",
        "instance.deregister",
    ]
    put_entry = entries[-1]
    assert (put_entry["actor"], put_entry["actor_kind"], put_entry["target"]) == (
        "token:alice",
        "operator",
        "policy/orders",
    )
    assert put_entry["reason"] == "tune"
    assert entries[-2]["details"]["restored_version"] == 1
    assert entries[-3]["actor"] == "bootstrap:default/orders"
    text = json.dumps(entries)
    for secret in (OPERATOR_TOKEN, ORDERS_BOOTSTRAP, "BEGIN"):
        assert secret not in text
    assert (await harness.client.get(f"{API}/audit", headers=ORDERS)).status_code == 403


async def test_watch_is_abandoned_when_the_sidecar_disconnects(harness: Harness) -> None:
    await harness.client.post(f"{API}/instances", json=registration("orders-1"), headers=ORDERS)
    first = (await watch(harness)).json()
    query = f"service=orders&instance=orders-1&version=0&revision={first['revision']}&timeout_s=60"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"{API}/watch",
        "raw_path": f"{API}/watch".encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"cp"), (b"authorization", ORDERS["authorization"].encode())],
        "server": ("cp", 80),
        "client": ("127.0.0.1", 5000),
        "root_path": "",
    }
    hang_up = asyncio.Event()
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not hang_up.is_set():
            hang_up.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    # Without disconnect handling this would park for the full 60 s watch timeout.
    await asyncio.wait_for(harness.app(scope, receive, send), 10.0)

    assert sent[0]["status"] == 204
