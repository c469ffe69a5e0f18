"""The running demo mesh: every instance's app and sidecar, and the fault hooks on them.

`Mesh` implements `demo.faults.FaultTarget`. With a control plane, sidecars register there and
watch their policies (published with `ControlPlanePolicies`); without one, each gets a static
policy file listing its callees' endpoints (`FilePolicies`, re-read on SIGHUP).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from demo.faults import AppFaults
from demo.policies import ControlPlanePolicies, FilePolicies, PolicyPublisher
from demo.supervisor import Child, Instance, free_ports
from demo.topology import Topology

__all__ = ["ControlPlane", "Mesh"]

NAMESPACE = "demo"
_CONTROL_TIMEOUT_S = 3.0
_SYNC_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ControlPlane:
    """Where the control plane is, the operator token, the sidecars' bootstrap token files."""

    url: str
    operator_token: str
    bootstrap_dir: Path

    def token_file(self, service: str) -> Path:
        return self.bootstrap_dir / f"{NAMESPACE}.{service}.token"


class Mesh:
    """Starts, faults and stops the app + sidecar processes of every instance of a topology."""

    def __init__(
        self,
        topology: Topology,
        work_dir: Path,
        collector_url: str,
        seed: int = 0,
        control_plane: ControlPlane | None = None,
        mtls: str = "off",
    ) -> None:
        if mtls != "off" and control_plane is None:
            raise ValueError("mTLS in the demo needs the control plane (it issues certificates)")
        self.mtls = mtls
        self.topology = topology
        self.collector_url = collector_url
        self.control_plane = control_plane
        self._seed = seed
        self._work = work_dir
        self._aborts: dict[str, tuple[int, float]] = {}
        self.instances: dict[str, Instance] = {}
        self._build()
        self.policies: PolicyPublisher
        if control_plane is not None:
            self._cp = ControlPlanePolicies(
                topology, control_plane.url, control_plane.operator_token, mtls=mtls
            )
            self.policies = self._cp
        else:
            endpoints: dict[str, list[tuple[str, int]]] = {}
            for inst in self.instances.values():
                endpoints.setdefault(inst.service, []).append((inst.name, inst.inbound_port))
            paths = {i.name: (i.service, i.config_path) for i in self.instances.values()}
            self.policies = FilePolicies(topology, paths, endpoints, self._reload)

    def _build(self) -> None:
        names = [(s.name, i) for s in self.topology.services for i in s.instance_ids()]
        ports = free_ports(4 * len(names))
        logs = self._work / "logs"
        for n, (service, name) in enumerate(names):
            app_port, admin, outbound, inbound = ports[4 * n : 4 * n + 4]
            config = self._work / "sidecars" / f"{name}.json"
            app = Child(
                name, self._app_argv(service, name, app_port), logs / f"{name}.log",
                r"demo service \S+ ready",
            )  # fmt: skip
            sidecar_argv = [
                sys.executable, "-m", "meshlens_cli", "sidecar", "--service", service,
                "--app-port", str(app_port), "--collector", self.collector_url,
                "--admin-port", str(admin), "--outbound-port", str(outbound),
                "--inbound-port", str(inbound), "--drain-timeout", "2",
            ]  # fmt: skip
            sidecar_argv += self._policy_args(service, name, config)
            sidecar = Child(
                f"{name}-sidecar", sidecar_argv, logs / f"{name}-sidecar.log",
                r"meshlens sidecar \S+ ready",
            )  # fmt: skip
            self.instances[name] = Instance(
                service, name, app_port, admin, outbound, inbound, app, sidecar, config
            )

    def _policy_args(self, service: str, name: str, config: Path) -> list[str]:
        cp = self.control_plane
        if cp is None:
            return ["--config", str(config)]
        return [
            "--control-plane", cp.url, "--bootstrap-token-file", str(cp.token_file(service)),
            "--namespace", NAMESPACE, "--instance-id", name, "--labels", f"instance={name}",
            "--state-dir", str(self._work / "state" / name), "--mtls", self.mtls,
        ]  # fmt: skip

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
        return {
            "HTTP_PROXY": proxy, "http_proxy": proxy, "NO_PROXY": local, "no_proxy": local,
            "PYTHONUNBUFFERED": "1",
        }  # fmt: skip

    def instances_of(self, service: str) -> tuple[str, ...]:
        return tuple(i.name for i in self.instances.values() if i.service == service)

    def entry_urls(self) -> list[str]:
        """Where users come in: the entry service's inbound sidecar listeners."""
        return [
            f"http://127.0.0.1:{self.instances[name].inbound_port}"
            for name in self.instances_of(self.topology.entry)
        ]

    async def start(self) -> None:
        """Publish the policies, start every app and sidecar, wait until all are ready and (with
        a control plane) registered and running their policy; RuntimeError otherwise."""
        await self.policies.publish(
            {s.name for s in self.topology.services}, self._aborts, "demo: initial policies"
        )
        for inst in self.instances.values():
            await inst.app.start(self._app_env(inst))
            await inst.sidecar.start()
        await asyncio.gather(
            *(c.wait_ready() for i in self.instances.values() for c in (i.app, i.sidecar))
        )
        if self.control_plane is not None:
            expected = {s.name: set(s.instance_ids()) for s in self.topology.services}
            await self._cp.wait_registered(expected, _SYNC_TIMEOUT_S)
            await self._wait_versions()

    async def _wait_versions(self) -> None:
        """Until every sidecar's admin /config shows the version the control plane holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SYNC_TIMEOUT_S
        timeout = aiohttp.ClientTimeout(total=_CONTROL_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for inst in self.instances.values():
                want = str(self._cp.versions[inst.service])
                while True:
                    url = f"http://127.0.0.1:{inst.admin_port}/config"
                    async with session.get(url) as response:
                        doc = await response.json(content_type=None)
                    if str(doc.get("version")) == want:
                        break
                    if loop.time() > deadline:
                        raise RuntimeError(f"{inst.name}: sidecar never ran policy v{want}")
                    await asyncio.sleep(0.2)

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
        reason = f"demo fault: abort {status} on {percent:.0f}% of calls to {service}"
        await self.policies.publish(set(self.topology.callers(service)), self._aborts, reason)

    async def clear_abort(self, service: str) -> None:
        self._aborts.pop(service, None)
        reason = f"demo fault cleared: calls to {service}"
        await self.policies.publish(set(self.topology.callers(service)), self._aborts, reason)

    def _reload(self, instance: str) -> None:
        self.instances[instance].sidecar.signal(signal.SIGHUP)

    async def kill(self, instance: str) -> None:
        await self.instances[instance].app.kill()

    async def restart(self, instance: str) -> None:
        inst = self.instances[instance]
        await inst.app.start(self._app_env(inst))
        await inst.app.wait_ready()
