"""Browser-test harness: the real analytics app under uvicorn, real sidecars, headless Chromium.

The store holds constructed shop traffic (frontend -> checkout -> payments/inventory, frontend ->
catalog) over the last 30 minutes, like the demo's; sidecars register through the control plane.
Set MESHLENS_UI_SCREENSHOTS=1 to write the screenshots into docs/screenshots (else tmp_path).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from analytics.anomalies.repository import IncidentRepository
from analytics.main import create_app
from analytics.settings import ApiTokenSpec, BootstrapTokenSpec, Settings
from analytics.up import HttpServerComponent
from collector.store import Store
from sidecar.app import Sidecar, SidecarOptions
from tests.conftest import Span, trace_columns

CHROMIUM = "/usr/bin/chromium"
OPERATOR = "ops-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abc"
BOOTSTRAP = {"checkout": "checkout-token-0123456789ab", "frontend": "frontend-token-012345678"}
MS = 1_000_000
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

if not os.access(CHROMIUM, os.X_OK):  # installed by `make test` (scripts/system-deps.sh)
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: scripts/system-deps.sh installs it")
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)


def _call(
    spans: list[Span],
    trace: str,
    parent: str,
    caller: str,
    callee: str,
    start: int,
    ms: int,
    *,
    seq: list[int],
    error: bool = False,
    attrs: dict[str, str] | None = None,
) -> str:
    """A sidecar CLIENT span of `caller` and the SERVER span of `callee` under it."""
    seq[0] += 2
    client, server = f"{seq[0]:016x}", f"{seq[0] + 1:016x}"
    code = "503" if error else "200"
    status = "Error" if error else "Unset"
    spans.append(
        Span(
            caller,
            "GET",
            trace,
            client,
            start,
            ms * MS,
            kind="Client",
            parent_span_id=parent,
            status=status,
            scope_name="meshlens-sidecar",
            attributes={
                "meshlens.upstream": callee,
                "meshlens.route": "default",
                "http.request.method": "GET",
                "http.response.status_code": code,
                **(attrs or {}),
            },
        )
    )
    spans.append(
        Span(
            callee,
            f"GET /{callee}",
            trace,
            server,
            start + MS,
            (ms - 2) * MS,
            parent_span_id=client,
            status=status,
            attributes={"http.response.status_code": code},
        )
    )
    return server


def trace_id(n: int) -> str:
    """Random-looking (like real ones) but deterministic trace ids."""
    return hashlib.sha256(f"shop-{n}".encode()).hexdigest()[:32]


def shop_spans(now_ns: int, *, minutes: int = 30, per_minute: int = 6) -> list[Span]:
    """Shop traffic; failed payments calls were retried once by checkout's sidecar."""
    spans: list[Span] = []
    seq = [0]
    for n in range(minutes * per_minute):
        start = now_ns - (minutes * 60 - n * 60 // per_minute) * 1_000_000_000
        trace = trace_id(n)
        minutes_ago = minutes - n // per_minute
        # A payments outage 12..6 minutes ago (the incident below), rare failures otherwise.
        failed = n % 2 == 1 if 6 < minutes_ago <= 12 else n % 45 == 7
        pay_ms, inv_ms, cat_ms = 40 + n % 7 * 6 + (260 if failed else 0), 12 + n % 5, 8 + n % 4
        checkout_ms = pay_ms + inv_ms + 14
        seq[0] += 1
        root = f"{seq[0]:016x}"
        spans.append(
            Span(
                "frontend",
                "GET /buy",
                trace,
                root,
                start,
                (checkout_ms + cat_ms + 12) * MS,
                status="Error" if failed else "Unset",
                attributes={
                    "http.route": "/buy",
                    "http.response.status_code": "502" if failed else "200",
                },
            )
        )
        _call(spans, trace, root, "frontend", "catalog", start + 2 * MS, cat_ms, seq=seq)
        checkout = _call(
            spans,
            trace,
            root,
            "frontend",
            "checkout",
            start + (cat_ms + 4) * MS,
            checkout_ms,
            seq=seq,
            error=failed,
        )
        t = start + (cat_ms + 7) * MS
        _call(spans, trace, checkout, "checkout", "inventory", t, inv_ms, seq=seq)
        attrs = {"meshlens.attempt": "2", "meshlens.retry.reason": "status_503"} if failed else {}
        _call(
            spans,
            trace,
            checkout,
            "checkout",
            "payments",
            t + (inv_ms + 2) * MS,
            pay_ms,
            seq=seq,
            error=failed,
            attrs=attrs,
        )
    return spans


def incident(now: datetime) -> dict[str, Any]:
    start = now - timedelta(minutes=12)
    return {
        "id": "00c0ffee00c0ffee",
        "start": start,
        "end": start + timedelta(minutes=6),
        "summary": "3 anomalies (errors, latency) on checkout, frontend, payments",
        "services": ["checkout", "frontend", "payments"],
        "anomalies": [
            {
                "subject": "checkout->payments",
                "signal": "errors",
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=6)).isoformat(),
                "observed": 0.21,
                "expected": 0.01,
                "score": 8.4,
            },
            {
                "subject": "frontend->checkout",
                "signal": "latency",
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=5)).isoformat(),
                "observed": 388.0,
                "expected": 92.0,
                "score": 5.1,
            },
        ],
        "root_causes": [
            {
                "service": "payments",
                "score": 0.91,
                "self_time_z": 6.2,
                "self_time_change_ms": 255.0,
                "inherited_change_ms": 0.0,
                "edge_gap_z": 0.4,
                "error_origin_z": 5.8,
                "error_origins": 14,
                "spans": [trace_id(125)],
                "evidence": ["self time +255 ms (z 6.2)", "14 failed spans originate here"],
            },
            {
                "service": "checkout",
                "score": 0.22,
                "self_time_z": 0.8,
                "self_time_change_ms": 4.0,
                "inherited_change_ms": 251.0,
                "edge_gap_z": 0.3,
                "error_origin_z": 0.1,
                "error_origins": 0,
                "spans": [],
                "evidence": ["latency inherited from payments"],
            },
        ],
    }


@dataclass
class Mesh:
    url: str
    store: Store
    sidecars: list[Sidecar]


@pytest.fixture
async def mesh(store: Store, tmp_path: Path) -> AsyncIterator[Mesh]:
    """The analytics app with shop traffic, an incident and two sidecars registered."""
    now = datetime.now(UTC)
    await store.insert("otel_traces", trace_columns(shop_spans(time.time_ns())))
    repo = IncidentRepository(store)
    await repo.ensure_table()
    await repo.upsert([incident(now)], now)
    settings = Settings(
        store_url=store.url,
        data_dir=tmp_path / "cp",
        http_port=0,
        api_tokens=(
            ApiTokenSpec.parse(f"ops:operator:{OPERATOR}"),
            ApiTokenSpec.parse(f"eve:viewer:{VIEWER}"),
        ),
        bootstrap_tokens=tuple(
            BootstrapTokenSpec.parse(f"default/{svc}:{tok}") for svc, tok in BOOTSTRAP.items()
        ),
        lease_ttl_s=5.0,
        sweep_interval_s=0.2,
        watch_timeout_s=2.0,
        store_sync_interval_s=0.2,
    )
    server = HttpServerComponent(
        "analytics", create_app(settings, store=store), "127.0.0.1", 0, graceful_s=1.0
    )
    await server.start()
    url = f"http://127.0.0.1:{server.port}"
    sidecars: list[Sidecar] = []
    try:
        for i, service in enumerate(("checkout", "frontend")):
            sidecar = Sidecar(
                SidecarOptions(
                    service=service,
                    app_port=9,
                    admin_port=0,
                    outbound_port=0,
                    inbound_port=0,
                    control_plane_url=url,
                    bootstrap_token=BOOTSTRAP[service],
                    instance=f"{service}-{i}",
                    state_dir=str(tmp_path / "state" / service),
                    labels=(("version", "v1"),),
                    cp_watch_timeout_s=2.0,
                    cp_heartbeat_s=0.3,
                    cp_backoff_max_s=0.4,
                    initial_sync_s=5.0,
                    drain_timeout_s=2.0,
                )
            )
            await sidecar.start()
            sidecars.append(sidecar)
        yield Mesh(url, store, sidecars)
    finally:
        for sidecar in sidecars:
            await sidecar.stop()
        await server.shutdown()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            timeout=30_000,
        )
        try:
            yield launched
        finally:
            await launched.close()


Login = Callable[[str], Awaitable[Page]]


@pytest.fixture
def login(browser: Browser, mesh: Mesh) -> Login:
    """Open the UI in a fresh context and sign in with `token` through the login form."""

    async def open_as(token: str) -> Page:
        context = await browser.new_context(viewport={"width": 1440, "height": 900})
        page = await context.new_page()
        page.set_default_timeout(15_000)
        await page.goto(mesh.url + "/ui/")
        await page.fill("#token", token)
        await page.click("#login-form button[type=submit]")
        await page.wait_for_selector("#shell:not([hidden])")
        return page

    return open_as


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    if os.environ.get("MESHLENS_UI_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path
