"""The demo's sidecar policies: one document per service, published through the control plane
(`PUT /policies/{svc}`, sidecars watch it) or, without one, as hot-reloaded files (SIGHUP).

A callee named in `aborts` gets a route whose sidecar fault layer aborts part of the calls.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from demo.topology import Topology

__all__ = [
    "ControlPlanePolicies",
    "FilePolicies",
    "PolicyPublisher",
    "sidecar_config",
]

API = "/api/v1/controlplane"
_TIMEOUT_S = 5.0

Aborts = Mapping[str, tuple[int, float]]


def sidecar_config(
    topology: Topology,
    service: str,
    aborts: Aborts,
    endpoints: Mapping[str, list[tuple[str, int]]] | None = None,
    *,
    mtls: str = "off",
) -> dict[str, Any]:
    """The policy document of `service`'s sidecar: one upstream per callee (with the callee
    instances' inbound `endpoints` when given; else the control plane supplies them).

    With `mtls` strict, the entry service's inbound is made permissive by its policy: users (the
    load generator) come in over plaintext; every other listener stays strict.
    """
    upstreams: dict[str, Any] = {}
    routes: list[dict[str, Any]] = []
    for callee in topology.callees(service):
        upstream: dict[str, Any] = {
            "lb": "peak_ewma",
            # A crashed instance is ejected after 3 gateway failures; failover takes the rest.
            "outlier": {
                "consecutive_gateway_failures": 3,
                "base_ejection_s": 10,
                "max_ejection_percent": 50,
            },
        }
        if endpoints is not None:
            upstream["endpoints"] = [
                {"host": "127.0.0.1", "port": port, "labels": {"instance": name}}
                for name, port in endpoints[callee]
            ]
        upstreams[callee] = upstream
        if callee in aborts:
            status, percent = aborts[callee]
            routes.append(
                {
                    "name": f"{callee}-fault",
                    "match": {"hosts": [callee]},
                    "destinations": [{"upstream": callee}],
                    "fault": {"abort": {"status": status, "percent": percent}},
                }
            )
    document: dict[str, Any] = {
        "service": service,
        "outbound_policy": "registry_only",
        "upstreams": upstreams,
        "routes": routes,
    }
    if mtls == "strict" and service == topology.entry:
        document["mtls"] = {"mode": "permissive"}
    return document


class PolicyPublisher(Protocol):
    async def publish(self, services: set[str], aborts: Aborts, reason: str) -> None: ...


class FilePolicies:
    """Static files, one per instance; `notify(instance)` makes its sidecar re-read (SIGHUP)."""

    def __init__(
        self,
        topology: Topology,
        paths: Mapping[str, tuple[str, Path]],  # instance -> (service, config path)
        endpoints: Mapping[str, list[tuple[str, int]]],
        notify: Callable[[str], None],
    ) -> None:
        self._topology = topology
        self._paths = paths
        self._endpoints = endpoints
        self._notify = notify
        self._version = 0

    async def publish(self, services: set[str], aborts: Aborts, reason: str) -> None:
        self._version += 1
        for instance, (service, path) in self._paths.items():
            if service not in services:
                continue
            document = sidecar_config(self._topology, service, aborts, self._endpoints)
            document["version"] = f"demo-{self._version}"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(document, indent=2), encoding="utf-8")
            os.replace(tmp, path)  # atomic: a sidecar never reads half a file
            self._notify(instance)


class ControlPlanePolicies:
    """Versioned policies in the control plane (operator token); sidecars get them by watch."""

    def __init__(
        self, topology: Topology, url: str, operator_token: str, *, mtls: str = "off"
    ) -> None:
        self._topology = topology
        self._mtls = mtls
        self._url = url.rstrip("/") + API
        self._headers = {"authorization": f"Bearer {operator_token}"}
        self.versions: dict[str, int] = {}

    async def publish(self, services: set[str], aborts: Aborts, reason: str) -> None:
        timeout = aiohttp.ClientTimeout(total=_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout, headers=self._headers) as session:
            for service in sorted(services):
                body = {
                    "document": sidecar_config(self._topology, service, aborts, mtls=self._mtls),
                    "reason": reason,
                }
                async with session.put(f"{self._url}/policies/{service}", json=body) as response:
                    if response.status not in (200, 201):
                        text = await response.text()
                        raise RuntimeError(
                            f"policy for {service} refused ({response.status}): {text}"
                        )
                    self.versions[service] = int((await response.json())["version"])

    async def registered(self, service: str) -> set[str]:
        """The instances of `service` the registry currently lists."""
        timeout = aiohttp.ClientTimeout(total=_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout, headers=self._headers) as session:
            async with session.get(f"{self._url}/endpoints/{service}") as response:
                if response.status != 200:
                    return set()
                return {str(e.get("instance")) for e in await response.json()}

    async def wait_registered(self, expected: Mapping[str, set[str]], timeout_s: float) -> None:
        """Until every expected instance is registered (RuntimeError after `timeout_s`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            missing = {s: want - await self.registered(s) for s, want in expected.items()}
            missing = {s: m for s, m in missing.items() if m}
            if not missing:
                return
            if loop.time() > deadline:
                raise RuntimeError(f"instances not registered with the control plane: {missing}")
            await asyncio.sleep(0.2)
