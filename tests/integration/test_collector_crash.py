"""SIGKILL `meshlens collector` mid-ingest, restart it on the same spool and store: every span
that got a 200 is in the embedded store exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from collector.store import open_store

REPO = Path(__file__).resolve().parents[2]
_ADDRESS = re.compile(r"otlp-http listening on (\S+)")


async def _start_collector(tmp_path: Path, run: int) -> tuple[asyncio.subprocess.Process, str]:
    args = [
        sys.executable, "-m", "meshlens_cli", "--log-level", "WARNING", "collector",
        "--store", f"chdb://{tmp_path / 'ch'}", "--spool", str(tmp_path / "spool"),
        "--otlp-http-port", "0", "--otlp-grpc-port", "0",
    ]  # fmt: skip
    log = tmp_path / f"collector-{run}.log"
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=log.open("wb"),
        cwd=str(REPO),
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    address = ""
    try:
        async with asyncio.timeout(60):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    tail = log.read_text()[-3000:]
                    raise AssertionError(f"collector exited before it was ready:\n{tail}")
                match = _ADDRESS.search(line)
                if match:
                    address = match.group(1)
                if line.strip() == "meshlens ready":
                    return proc, address
    except BaseException:
        proc.kill()
        await proc.wait()
        raise


def _request(sender: int, number: int, spans: int) -> tuple[bytes, list[str]]:
    request = trace_service_pb2.ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.append(
        common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="crash"))
    )
    scope = resource.scope_spans.add()
    ids = []
    for _ in range(spans):
        span = scope.spans.add(
            name=f"sender-{sender}", trace_id=os.urandom(16), span_id=os.urandom(8), kind=2
        )
        span.start_time_unix_nano = 1_700_000_000_000_000_000 + number
        span.end_time_unix_nano = span.start_time_unix_nano + 1000
        ids.append(span.span_id.hex())
    return bytes(request.SerializeToString()), ids


async def _send_until_dead(url: str, sender: int, acked: list[str]) -> None:
    timeout = aiohttp.ClientTimeout(total=5)
    headers = {"Content-Type": "application/x-protobuf"}
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for number in range(10_000):
            body, ids = _request(sender, number, 50)
            try:
                async with http.post(f"{url}/v1/traces", data=body, headers=headers) as response:
                    if response.status == 200:
                        acked.extend(ids)
            except (aiohttp.ClientError, TimeoutError):
                return


def _inflight(checkpoint: Path) -> bool:
    try:
        state = json.loads(checkpoint.read_text())
    except (OSError, ValueError):
        return False
    return bool(state["inflight"]) and int(state["done_upto"]) > 0


async def _pending(url: str) -> float:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.get(f"{url}/metrics") as response:
            text = await response.text()
    match = re.search(r"^meshlens_collector_spool_pending_records (\S+)$", text, re.M)
    assert match is not None
    return float(match.group(1))


async def test_sigkill_mid_ingest_then_restart_keeps_every_acknowledged_span_once(
    tmp_path: Path,
) -> None:
    proc, url = await _start_collector(tmp_path, 1)
    acked: list[str] = []
    senders = [asyncio.create_task(_send_until_dead(url, n, acked)) for n in range(3)]
    try:
        # Kill while a batch is being inserted (checkpoint names it in flight) if we catch one.
        for _ in range(3000):
            if len(acked) >= 3000 and _inflight(tmp_path / "spool" / "checkpoint.json"):
                break
            await asyncio.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert len(acked) >= 3000

    proc, url = await _start_collector(tmp_path, 2)
    try:
        for _ in range(300):
            if await _pending(url) == 0:
                break
            await asyncio.sleep(0.05)
        assert await _pending(url) == 0
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    store = open_store(f"chdb://{tmp_path / 'ch'}")
    try:
        rows = await store.query("SELECT SpanId, count() AS n FROM otel_traces GROUP BY SpanId")
    finally:
        await store.close()
    counts = {row["SpanId"]: int(row["n"]) for row in rows}
    missing = [span for span in acked if span not in counts]
    assert missing == [], f"{len(missing)} acknowledged spans lost"
    assert max(counts.values()) == 1, "a span was written twice"
