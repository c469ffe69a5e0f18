"""The web UI in headless Chromium against the real app: map, trace search, incidents, policies,
fleet ACKs, and what a viewer may not do (hidden in the UI and refused by the API)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Browser

from tests.conftest import trace_columns
from tests.ui.conftest import OPERATOR, VIEWER, Login, Mesh
from tests.unit.analytics.tuning.traffic import Edge, spans, spread_503, traffic

CP = "/api/v1/controlplane"


async def call(mesh: Mesh, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.request(method, mesh.url + path, json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json() if resp.status != 204 else None


def checkout_policy(lb: str) -> dict[str, Any]:
    return {"service": "checkout", "upstreams": {"payments": {"lb": lb, "outlier": None}}}


async def test_map_renders_the_shop_services_and_an_edge_opens_its_charts_and_traces(
    mesh: Mesh, login: Login, shots: Path
) -> None:
    page = await login(OPERATOR)
    await page.wait_for_function(
        "() => window.meshlensMap && window.meshlensMap.nodes().length > 0"
    )
    nodes = await page.evaluate("window.meshlensMap.nodes().map(n => n.id()).sort()")
    assert nodes == ["catalog", "checkout", "frontend", "inventory", "payments"]
    edges = await page.evaluate("window.meshlensMap.edges().map(e => e.id()).sort()")
    assert "checkout→payments" in edges and "frontend→checkout" in edges
    colour = await page.evaluate(
        "window.meshlensMap.getElementById('checkout→payments').data('colour')"
    )
    assert colour == "#dc2626"  # the payments outage: over 5 % errors in the hour
    await page.screenshot(path=str(shots / "service-map.png"))

    status, body = await call(
        mesh,
        "PUT",
        f"{CP}/policies/checkout",
        OPERATOR,
        {"document": checkout_policy("round_robin"), "reason": "test"},
    )
    assert status == 201, body  # shows as an annotation on the edge's charts
    # Tap the edge as a user would (cytoscape draws on a canvas, so there is no DOM element).
    await page.evaluate(
        "() => { window.meshlensMap.getElementById('checkout→payments').emit('tap'); }"
    )
    await page.wait_for_selector("#detail svg.chart")
    await page.wait_for_selector("#detail table.traces a")
    assert await page.locator("#detail svg.chart").count() == 3
    label = page.locator("#detail svg.chart .annotation-label").first
    assert (await label.text_content() or "").startswith("checkout v1")
    await page.screenshot(path=str(shots / "edge-detail.png"))

    await page.evaluate("() => { window.meshlensMap.getElementById('payments').emit('tap'); }")
    await page.locator("#detail h2", has_text="payments").wait_for()
    await page.wait_for_selector("#detail svg.chart")
    await page.wait_for_selector("#detail table.traces a")


async def test_a_trace_opens_from_search_with_its_waterfall_and_policy_decisions(
    mesh: Mesh, login: Login, shots: Path
) -> None:
    page = await login(VIEWER)
    await page.click("#nav a[data-view=traces]")
    await page.select_option("#trace-search select[name=service]", "payments")
    await page.select_option("#trace-search select[name=status]", "error")
    await page.click("#trace-search button[type=submit]")
    await page.wait_for_selector("#trace-results table.traces a")
    await page.screenshot(path=str(shots / "trace-search.png"))
    await page.click("#trace-results table.traces a >> nth=0")
    await page.wait_for_selector("[data-testid=waterfall] .wf-row")
    assert await page.locator("[data-testid=waterfall] .wf-row").count() == 9
    retried = page.locator(".wf-row", has_text="policy").first
    await retried.click()
    detail = page.locator("[data-testid=span-detail]")
    await detail.get_by_text("retry.reason = status_503").wait_for()
    await page.screenshot(path=str(shots / "trace-waterfall.png"))


async def test_incident_shows_ranked_root_causes_with_evidence(
    mesh: Mesh, login: Login, shots: Path
) -> None:
    page = await login(VIEWER)
    await page.click("#nav a[data-view=incidents]")
    detail = page.locator("[data-testid=incident-detail]")
    await detail.wait_for()
    causes = await detail.locator("ol.causes > li strong").all_inner_texts()
    assert causes[:2] == ["payments", "checkout"]
    await detail.get_by_text("self time +255 ms (z 6.2)").wait_for()
    await page.screenshot(path=str(shots / "incident.png"))
    await detail.locator("ol.causes a.mono").first.click()  # the top candidate's example trace
    await page.wait_for_selector("[data-testid=waterfall] .wf-row.error")


async def test_operator_rolls_back_and_the_new_version_is_acked_in_the_fleet_view(
    mesh: Mesh, login: Login, shots: Path
) -> None:
    for lb in ("round_robin", "least_request"):
        status, body = await call(
            mesh,
            "PUT",
            f"{CP}/policies/checkout",
            OPERATOR,
            {"document": checkout_policy(lb), "reason": f"use {lb}"},
        )
        assert status == 201, body
    page = await login(OPERATOR)
    await page.goto(mesh.url + "/ui/#/policies/checkout")
    await page.wait_for_selector("[data-testid=diff] tr.op-replace, [data-testid=diff] tbody tr")
    await page.screenshot(path=str(shots / "policies.png"))
    await page.click("[data-testid=rollback-1]")
    await page.fill("[data-testid=history] input[name=reason]", "back to round robin")
    await page.click("[data-testid=history] button[type=submit]")
    await page.get_by_text("Published v3 (rollback to v1).").wait_for()

    await page.click("#nav a[data-view=fleet]")
    row = page.locator("[data-testid=fleet] tr[data-instance=checkout-0] td.sync")
    for _ in range(50):  # the sidecar ACKs within its watch round trip; reload the view to see it
        if "ACKed v3" in await row.inner_text():
            break
        await page.wait_for_timeout(200)
        await page.evaluate("window.dispatchEvent(new HashChangeEvent('hashchange'))")
        await row.wait_for()
    assert "ACKed v3" in await row.inner_text()
    await page.screenshot(path=str(shots / "fleet.png"))


async def test_viewer_sees_no_operator_actions_and_the_api_refuses_them(
    mesh: Mesh, login: Login
) -> None:
    for lb in ("round_robin", "least_request"):
        await call(
            mesh,
            "PUT",
            f"{CP}/policies/checkout",
            OPERATOR,
            {"document": checkout_policy(lb), "reason": lb},
        )
    page = await login(VIEWER)
    assert await page.locator(".who .badge").inner_text() == "viewer"
    await page.goto(mesh.url + "/ui/#/policies/checkout")
    await page.wait_for_selector("[data-testid=history] tbody tr")
    assert await page.locator("[data-testid^=rollback-]").count() == 0
    status, _ = await call(
        mesh,
        "POST",
        f"{CP}/policies/checkout/rollback",
        VIEWER,
        {"to_version": 1, "reason": "viewer tries"},
    )
    assert status == 403
    token_in_storage = await page.evaluate("sessionStorage.getItem('meshlens.token')")
    assert token_in_storage == VIEWER and VIEWER not in page.url


async def test_a_wrong_token_stays_on_the_login_form(mesh: Mesh, browser: Browser) -> None:
    page = await browser.new_page()
    await page.goto(mesh.url + "/ui/")
    await page.fill("#token", "not-a-valid-token-at-all")
    await page.click("#login-form button[type=submit]")
    await page.get_by_text("That token was not accepted").wait_for(timeout=15_000)
    assert await page.locator("#shell").is_hidden()
    assert await page.evaluate("sessionStorage.getItem('meshlens.token')") is None


async def _suggest_retry(mesh: Mesh) -> None:
    """Sidecar traffic with transient 503s on checkout -> orders, then a tuning refresh."""
    start_s = time.time() - 600
    rows = spans(
        traffic(Edge(caller="checkout", upstream="orders"), start_s=start_s, fails=spread_503(0.03))
    )
    await mesh.store.insert("otel_traces", trace_columns(rows))
    status, body = await call(mesh, "POST", "/api/v1/suggestions/refresh", OPERATOR)
    assert status == 200 and body["suggested"] >= 1, body


async def test_operator_accepts_a_suggestion_and_the_fleet_shows_the_new_version_acked(
    mesh: Mesh, login: Login, shots: Path
) -> None:
    await _suggest_retry(mesh)
    page = await login(OPERATOR)
    await page.click("#nav a[data-view=suggestions]")
    kind = page.locator("td:nth-child(2)", has_text=re.compile(r"^retry$"))
    row = page.locator("[data-testid=suggestions] tbody tr").filter(has=kind)
    summary = await row.locator("td:nth-child(3)").inner_text()
    await row.click()
    # The panel first shows the list's top suggestion (another kind when its id sorts first)
    # until the click's hashchange re-renders it: wait for the clicked one's heading.
    heading = page.get_by_role("heading", name=summary, exact=True)
    detail = page.locator("[data-testid=suggestion-detail]").filter(has=heading)
    await detail.locator(".replay-text").wait_for()
    assert (
        "would have been retried with success" in await detail.locator(".replay-text").inner_text()
    )
    extra_load = detail.locator("[data-testid=replay] tr", has_text="extra load").locator("td")
    assert re.fullmatch(r"\d+\.\d %", await extra_load.inner_text())  # a share, shown as percent
    await page.screenshot(path=str(shots / "suggestion.png"))
    await detail.locator("select[name=mode]").select_option("enforce")
    await detail.locator("[data-testid=accept]").click()
    await detail.get_by_text("Accepted: the control plane is pushing the new policy.").wait_for()
    published = await detail.get_by_text("checkout policy v").inner_text()
    version = int(published.rsplit("v", 1)[1])

    await page.click("#nav a[data-view=fleet]")
    row = page.locator("[data-testid=fleet] tr[data-instance=checkout-0] td.sync")
    for _ in range(50):  # the sidecar ACKs within its watch round trip; re-render to see it
        if f"ACKed v{version}" in await row.inner_text():
            break
        await page.wait_for_timeout(200)
        await page.evaluate("window.dispatchEvent(new HashChangeEvent('hashchange'))")
        await row.wait_for()
    assert f"ACKed v{version}" in await row.inner_text()
    await page.screenshot(path=str(shots / "fleet-after-accept.png"))


async def test_viewer_sees_no_accept_button_and_the_api_refuses_a_viewer_accept(
    mesh: Mesh, login: Login, shots: Path
) -> None:
    await _suggest_retry(mesh)
    page = await login(VIEWER)
    await page.click("#nav a[data-view=suggestions]")
    detail = page.locator("[data-testid=suggestion-detail]")
    await detail.wait_for()
    await page.get_by_text("Read-only: operators accept or reject suggestions.").wait_for()
    assert await page.locator("[data-testid=accept]").count() == 0
    assert await page.locator("[data-testid=reject]").count() == 0
    assert await page.locator("[data-testid=refresh]").count() == 0
    await page.screenshot(path=str(shots / "suggestion-viewer.png"))
    ident = await page.locator("[data-testid=suggestions] tbody tr").first.get_attribute("data-id")
    status, body = await call(
        mesh,
        "POST",
        f"/api/v1/suggestions/{ident}/accept",
        VIEWER,
        {"mode": "enforce", "reason": "viewer tries"},
    )
    assert status == 403, body
