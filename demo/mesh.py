"""The running demo mesh: every instance's app and sidecar, and the fault hooks on them.

`Mesh` implements `demo.faults.FaultTarget`. Sidecars get a static policy file listing their
callees' endpoints (hot-reloaded on SIGHUP, which is how a sidecar-fault abort is switched on).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp

from demo.faults import AppFaults
from demo.supervisor import Child, Instance, free_ports, sidecar_config
from demo.topology import Topology

__all__ = ["Mesh"]

_CONTROL_TIMEOUT_S = 3.0


class Mesh:
    """Starts, faults and stops the app + sidecar processes of every instance of a topology."""

    def __init__(
        self,
        topology: Topology,
        work_dir: Path,
        collector_url: str,
        seed: int = 0,
        control_plane_url: str | None = None,
    ) -> None:
        self.topology = topology
        self.collector_url = collector_url
        self.control_plane_url = control_plane_url
        self._seed = seed
        self._config_dir = work_dir / "sidecars"
        self._log_dir = work_dir / "logs"
        self._aborts: dict[str, tuple[int, float]] = {}
        self._version = 1
        self.instances: dict[str, Instance] = {}
        self._build()

    def _build(self) -> None:
        names = [(s.name, i) for s in self.topology.services for i in s.instance_ids()]
        ports = free_ports(4 * len(names))
        for n, (service, name) in enumerate(names):
            app_port, admin, outbound, inbound = ports[4 * n : 4 * n + 4]
            config = self._config_dir / f"{name}.json"
            app = Child(
                name,
                self._app_argv(service, name, app_port),
                self._log_dir / f"{name}.log",
                r"demo service \S+ ready",
            )
            sidecar_argv = [
                sys.executable, "-m", "meshlens_cli", "sidecar", "--service", service,
                "--app-port", str(app_port), "--config", str(config),
                "--collector", self.collector_url, "--admin-port", str(admin),
                "--outbound-port", str(outbound), "--inbound-port", str(inbound),
                "--drain-timeout", "2",
            ]  # fmt: skip
            if self.control_plane_url:
                sidecar_argv += ["--control-plane", self.control_plane_url]
            sidecar = Child(
                f"{name}-sidecar",
                sidecar_argv,
                self._log_dir / f"{name}-sidecar.log",
                r"meshlens sidecar \S+ ready",
            )
            self.instances[name] = Instance(service, name, app_port, admin, outbound, inbound,
                                            app, sidecar, config)  # fmt: skip

    def _app_argv(self, service: str, name: str, port: int) -> list[str]:
        return [
            sys.executable, "-m", "demo.services", "--topology", self.topology.name,
            "--service", service, "--instance", name, "--port", str(port),
            "--collector", self.collector_url, "--seed", str(self._seed),
        ]  # fmt: skip

    def _app_env(self, instance: Instance) -> dict[str, str]:
        proxy = f"http://127.0.0.1:{instance.outbound_port}"
        # The app reaches its dependencies only through its own outbound sidecar; loopback (the
        # collector, where its OTLP exporter sends spans) is outside the mesh.
        local = "127.0.0.1,localhost"
        return {"HTTP_PROXY": proxy, "http_proxy": proxy, "NO_PROXY": local, "no_proxy": local,
                "PYTHONUNBUFFERED": "1"}  # fmt: skip

    def instances_of(self, service: str) -> tuple[str, ...]:
        return tuple(i.name for i in self.instances.values() if i.service == service)

    def entry_urls(self) -> list[str]:
        """Where users come in: the entry service's inbound sidecar listeners."""
        return [
            f"http://127.0.0.1:{self.instances[name].inbound_port}"
            for name in self.instances_of(self.topology.entry)
        ]

    def _write_configs(self, services: set[str] | None = None) -> None:
        inbound: dict[str, list[tuple[str, int]]] = {}
        for inst in self.instances.values():
            inbound.setdefault(inst.service, []).append((inst.name, inst.inbound_port))
        self._config_dir.mkdir(parents=True, exist_ok=True)
        for inst in self.instances.values():
            if services is not None and inst.service not in services:
                continue
            document = sidecar_config(
                self.topology, inst.service, inbound, self._aborts, self._version
            )
            tmp = inst.config_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(document, indent=2), encoding="utf-8")
            os.replace(tmp, inst.config_path)  # atomic: the sidecar never reads half a file

    async def start(self) -> None:
        """Start every app and sidecar and wait until all are ready (RuntimeError otherwise)."""
        self._write_configs()
        for inst in self.instances.values():
            await inst.app.start(self._app_env(inst))
            await inst.sidecar.start()
        await asyncio.gather(
            *(c.wait_ready() for i in self.instances.values() for c in (i.app, i.sidecar))
        )

    async def stop(self) -> None:
        """Apps first (they flush their spans), then the sidecars (drain and flush)."""
        await asyncio.gather(*(i.app.stop() for i in self.instances.values()))
        await asyncio.gather(*(i.sidecar.stop() for i in self.instances.values()))

    async def set_app_faults(self, instance: str, faults: AppFaults) -> None:
        inst = self.instances[instance]
        url = f"http://127.0.0.1:{inst.app_port}/_demo/fault"
        timeout = aiohttp.ClientTimeout(total=_CONTROL_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(url, json=faults.to_json()) as response:
                if response.status != 200:
                    raise RuntimeError(f"{instance}: fault rejected: {await response.text()}")

    async def set_abort(self, service: str, status: int, percent: float) -> None:
        self._aborts[service] = (status, percent)
        self._reload_callers(service)

    async def clear_abort(self, service: str) -> None:
        self._aborts.pop(service, None)
        self._reload_callers(service)

    def _reload_callers(self, service: str) -> None:
        self._version += 1
        callers = set(self.topology.callers(service))
        self._write_configs(callers)
        for inst in self.instances.values():
            if inst.service in callers:
                inst.sidecar.signal(signal.SIGHUP)

    async def kill(self, instance: str) -> None:
        await self.instances[instance].app.kill()

    async def restart(self, instance: str) -> None:
        inst = self.instances[instance]
        await inst.app.start(self._app_env(inst))
        await inst.app.wait_ready()
