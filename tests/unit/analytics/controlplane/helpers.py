"""Shared pieces of the control-plane tests: tokens, settings, manual clocks, request helpers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI

from analytics.controlplane.service import ControlPlane
from analytics.settings import ApiTokenSpec, BootstrapTokenSpec, Settings, hash_token

OPERATOR_TOKEN = "operator-token-0123456789"
VIEWER_TOKEN = "viewer-token-0123456789ab"
ORDERS_BOOTSTRAP = "bootstrap-orders-0123456789"
PAYMENTS_BOOTSTRAP = "bootstrap-payments-0123456"


class ManualClock:
    """A clock that only moves when the test says so."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def never(seconds: float) -> None:
    # Background loops stay parked; tests drive sweeps explicitly.
    await asyncio.Event().wait()


def make_settings(tmp_path: Path) -> Settings:
    return Settings(
        store_url=f"chdb://{tmp_path}/ch",
        data_dir=tmp_path / "data",
        trust_domain="mesh.test",
        api_tokens=(
            ApiTokenSpec("alice", "operator", hash_token(OPERATOR_TOKEN)),
            ApiTokenSpec("victor", "viewer", hash_token(VIEWER_TOKEN)),
        ),
        bootstrap_tokens=(
            BootstrapTokenSpec("default", "orders", hash_token(ORDERS_BOOTSTRAP)),
            BootstrapTokenSpec("default", "payments", hash_token(PAYMENTS_BOOTSTRAP)),
        ),
        lease_ttl_s=6.0,
        watch_timeout_s=5.0,
    )


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    clock: ManualClock
    wall: ManualClock

    @property
    def plane(self) -> ControlPlane:
        plane: ControlPlane = self.app.state.control_plane
        return plane


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


OPERATOR = bearer(OPERATOR_TOKEN)
VIEWER = bearer(VIEWER_TOKEN)
ORDERS = bearer(ORDERS_BOOTSTRAP)
PAYMENTS = bearer(PAYMENTS_BOOTSTRAP)


def registration(instance: str, service: str = "orders", **extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "service": service,
        "instance": instance,
        "address": "10.0.0.1",
        "ports": {"inbound": 15006},
        "labels": {"version": "v1"},
    }
    body.update(extra)
    return body
