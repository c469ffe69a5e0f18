"""Push latency of the control plane: from a policy PUT to its ACK by N long-poll watch clients.

Runs the analytics app under uvicorn in a child process (127.0.0.1, port 0, embedded store in a
temp dir) and N aiohttp watch clients in this one. Prints p50/p99 per client count; the 1-client
run is the baseline from the same run, the target is p99 < 1 s at 100 clients.

    .venv/bin/python bench/controlplane_push.py [--clients 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

OPERATOR_TOKEN = "bench-operator-token-0123456789"
BOOTSTRAP_TOKEN = "bench-bootstrap-token-012345678"
API = "/api/v1/controlplane"
_CALL_TIMEOUT = aiohttp.ClientTimeout(total=30)


def serve(data_dir: str) -> None:
    """Child process: run the app on an ephemeral port and print it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import uvicorn

    from analytics.main import create_app
    from analytics.settings import Settings

    settings = Settings.from_env(
        {
            "MESH_ANALYTICS_STORE_URL": f"chdb://{data_dir}/ch",
            "MESH_ANALYTICS_DATA_DIR": data_dir,
            "MESH_ANALYTICS_API_TOKENS": f"bench:operator:{OPERATOR_TOKEN}",
            "MESH_ANALYTICS_BOOTSTRAP_TOKENS": f"default/bench:{BOOTSTRAP_TOKEN}",
            "MESH_ANALYTICS_LEASE_TTL_S": "60",
        }
    )
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_level="warning", loop="uvloop"
    )
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        async with asyncio.timeout(60):
            while not server.started:  # noqa: ASYNC110 - uvicorn exposes only a flag
                await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await task

    asyncio.run(run())


@dataclass
class Client:
    instance: str
    version: int = 0
    revision: str | None = None
    acked: dict[int, float] = field(default_factory=dict)


@dataclass
class Tally:
    """Counts ACKs per version and signals when the whole fleet has ACKed one."""

    size: int
    counts: dict[int, int] = field(default_factory=dict)
    complete: dict[int, asyncio.Event] = field(default_factory=dict)

    def event(self, version: int) -> asyncio.Event:
        return self.complete.setdefault(version, asyncio.Event())

    def acked(self, version: int) -> None:
        self.counts[version] = self.counts.get(version, 0) + 1
        if self.counts[version] == self.size:
            self.event(version).set()


async def _watch_loop(
    session: aiohttp.ClientSession, base: str, client: Client, ready: asyncio.Event, tally: Tally
) -> None:
    headers = {"authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
    body = {
        "service": "bench",
        "instance": client.instance,
        "address": "127.0.0.1",
        "ports": {"inbound": 15006},
    }
    async with session.post(f"{base}{API}/instances", json=body, headers=headers) as r:
        r.raise_for_status()
    first = True
    while True:
        params: dict[str, Any] = {
            "service": "bench",
            "instance": client.instance,
            "version": client.version,
            "timeout_s": 20,
        }
        if client.revision is not None:
            params["revision"] = client.revision
        if not first:
            ready.set()
        async with session.get(f"{base}{API}/watch", params=params, headers=headers) as r:
            r.raise_for_status()
            if r.status == 204:
                continue
            push = await r.json()
        first = False
        client.revision = push["revision"]
        if push["version"] != client.version:
            ack = {
                "instance": client.instance,
                "version": push["version"],
                "nonce": push["nonce"],
                "ok": True,
            }
            async with session.post(f"{base}{API}/ack", json=ack, headers=headers) as r:
                r.raise_for_status()
            client.version = push["version"]
            client.acked[push["version"]] = time.perf_counter()
            tally.acked(push["version"])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(base: str, clients: int, rounds: int, start_version: int) -> list[float]:
    """Latencies (s) from PUT sent to each client's ACK answered, over `rounds` pushes."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=_CALL_TIMEOUT) as session:
        fleet = [Client(f"bench-{clients}-{i}") for i in range(clients)]
        readies = [asyncio.Event() for _ in fleet]
        tally = Tally(clients)
        tasks = [
            asyncio.create_task(_watch_loop(session, base, c, e, tally))
            for c, e in zip(fleet, readies, strict=True)
        ]
        latencies: list[float] = []
        try:
            for c in fleet:
                c.version = start_version
            async with asyncio.timeout(30):
                await asyncio.gather(*(e.wait() for e in readies))
            for n in range(rounds):
                await asyncio.sleep(0.3)  # let every watch reach the server and park
                version = start_version + n + 1
                document = {
                    "service": "bench",
                    "routes": [],
                    "inbound": {"timeout": {"request_s": 1 + n}},
                }
                sent = time.perf_counter()
                async with session.put(
                    f"{base}{API}/policies/bench",
                    json={"document": document, "reason": f"bench round {n}"},
                    headers={"authorization": f"Bearer {OPERATOR_TOKEN}"},
                ) as r:
                    r.raise_for_status()
                async with asyncio.timeout(30):
                    await tally.event(version).wait()
                latencies.extend(c.acked[version] - sent for c in fleet)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for c in fleet:
                async with session.delete(
                    f"{base}{API}/instances/{c.instance}",
                    headers={"authorization": f"Bearer {BOOTSTRAP_TOKEN}"},
                ):
                    pass
    return latencies


async def main(clients: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", data_dir, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert child.stdout is not None
            line = (await asyncio.wait_for(child.stdout.readline(), 60)).decode()
            if not line.startswith("PORT "):
                raise SystemExit(f"server did not start: {line!r}")
            base = f"http://127.0.0.1:{int(line.split()[1])}"
            baseline = await measure(base, 1, rounds, start_version=0)
            result = await measure(base, clients, rounds, start_version=rounds)
        finally:
            child.terminate()
            await asyncio.wait_for(child.wait(), 30)
    print(f"control-plane push: policy PUT -> ACK, {rounds} pushes each (cpus={os.cpu_count()})")
    for label, values in (("1 client (baseline)", baseline), (f"{clients} clients", result)):
        print(
            f"  {label:>20}: p50 {_pct(values, 0.5) * 1000:7.1f} ms  "
            f"p99 {_pct(values, 0.99) * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms  "
            f"mean {statistics.fmean(values) * 1000:7.1f} ms  (n={len(values)})"
        )
    verdict = "meets" if _pct(result, 0.99) < 1.0 else "MISSES"
    print(f"  target p99 < 1000 ms at {clients} clients: {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", metavar="DATA_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
    else:
        asyncio.run(main(args.clients, args.rounds))
