"""`meshlens up` / `meshlens collector` as processes: ready lines with real ports, spans in, a
clean SIGINT shutdown that flushes the open batch into the embedded store, clear CLI errors."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collector.store import open_store

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _send(endpoint: str, names: list[str]) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "cli-test"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=5))
    )
    tracer = provider.get_tracer("cli")
    for name in names:
        with tracer.start_as_current_span(name):
            pass
    provider.shutdown()


async def test_up_prints_its_ports_ingests_and_flushes_on_sigint(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshlens_cli", "--log-level", "WARNING", "up",
        "--data", str(data), "--otlp-http-port", "0", "--otlp-grpc-port", "0",
        stdout=asyncio.subprocess.PIPE, cwd=str(tmp_path), env=ENV,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not lines or lines[-1] != "meshlens ready":
                line = (await proc.stdout.readline()).decode()
                assert line, f"exited early after {lines}"
                lines.append(line.strip())
        grpc_address = next(m.group(1) for m in map(_GRPC.search, lines) if m)
        http_address = next(m.group(1) for m in map(_HTTP.search, lines) if m)
        assert not http_address.endswith(":0") and not grpc_address.endswith(":0")

        await asyncio.to_thread(_send, f"http://{grpc_address}", ["a", "b", "c"])
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    store = open_store(f"chdb://{data / 'clickhouse'}")
    try:
        rows = await store.query("SELECT SpanName, ServiceName FROM otel_traces ORDER BY SpanName")
    finally:
        await store.close()
    assert rows == [{"SpanName": n, "ServiceName": "cli-test"} for n in ("a", "b", "c")]


_GRPC = re.compile(r"^otlp-grpc listening on (127\.0\.0\.1:\d+)$")
_HTTP = re.compile(r"^otlp-http listening on (http://127\.0\.0\.1:\d+)$")


async def test_a_bad_store_url_is_a_clear_error(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshlens_cli", "collector", "--store", "ftp://nowhere",
        "--otlp-http-port", "0", "--otlp-grpc-port", "0", "--spool", str(tmp_path / "spool"),
        stderr=asyncio.subprocess.PIPE, cwd=str(tmp_path), env=ENV,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "cannot open store ftp://nowhere" in err.decode()
