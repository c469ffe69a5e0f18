"""One demo service instance: an aiohttp server instrumented with the OpenTelemetry SDK.

Run as `python -m demo.services --topology shop --service catalog --instance catalog-1 --port N
--collector http://127.0.0.1:4318`. Outgoing calls go to `http://<service><path>` through the
proxy in HTTP_PROXY (the instance's own outbound sidecar); W3C trace context is extracted from
every request and injected into every call, so a journey is one trace across the mesh.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import socket
import struct
import sys
import time
import zlib
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from demo.faults import AppFaults
from demo.topology import Call, Operation, Service, get_topology

__all__ = ["DemoService", "main"]

CALL_TIMEOUT_S = 5.0


class DemoService:
    """The app of one instance: serves its operations, calls its dependencies, obeys faults."""

    def __init__(
        self, service: Service, instance: str, tracer: trace.Tracer, seed: int = 0
    ) -> None:
        self.service = service
        self.instance = instance
        self.faults = AppFaults()
        self._tracer = tracer
        self._rng = random.Random(seed ^ zlib.crc32(instance.encode()))
        self._session: aiohttp.ClientSession | None = None
        self._worker = asyncio.Lock()  # the one worker of `serial_ms` (asyncio.Lock is FIFO)

    def app(self) -> web.Application:
        app = web.Application()
        for op in self.service.operations:
            app.router.add_route(op.method, op.path, self._handler(op))
        app.router.add_get("/_demo/fault", self._get_fault)
        app.router.add_post("/_demo/fault", self._set_fault)
        app.router.add_get("/_demo/health", self._health)
        app.on_startup.append(self._open_session)
        app.on_cleanup.append(self._close_session)
        return app

    async def _open_session(self, _app: web.Application) -> None:
        # trust_env: the proxy comes from HTTP_PROXY, as for any application in the mesh.
        self._session = aiohttp.ClientSession(
            trust_env=True, timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
        )

    async def _close_session(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({"service": self.service.name, "instance": self.instance})

    async def _get_fault(self, _request: web.Request) -> web.Response:
        return web.json_response(self.faults.to_json())

    async def _set_fault(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            self.faults = AppFaults.from_json(body)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.faults.to_json())

    def _handler(self, op: Operation) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            context = propagate.extract(request.headers)
            with self._tracer.start_as_current_span(
                f"{op.method} {op.path}",
                context=context,
                kind=SpanKind.SERVER,
                attributes={
                    "http.request.method": op.method,
                    "http.route": op.path,
                    "url.path": request.path,
                    "service.instance.id": self.instance,
                },
            ) as span:
                status = await self._serve(op, request)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                    span.set_attribute("error.type", str(status))
                if status == 0:
                    raise _Reset()
                return web.json_response(
                    {"service": self.service.name, "instance": self.instance}, status=status
                )

        return handle

    async def _serve(self, op: Operation, request: web.Request) -> int:
        """Do the operation; returns the status to answer (0: reset the connection)."""
        faults = self.faults
        if faults.reset_rate and self._rng.random() < faults.reset_rate:
            _reset(request)
            return 0
        if faults.cpu_ms:
            _burn(faults.cpu_ms / 1000.0)  # blocks the loop: that is what CPU starvation does
        if faults.serial_ms:
            async with self._worker:  # queued requests wait here, unbounded, like a busy server
                await asyncio.sleep(faults.serial_ms / 1000.0)
        delay_ms = max(0.0, self._rng.gauss(op.work_ms, op.jitter_ms)) + faults.latency_ms
        await asyncio.sleep(delay_ms / 1000.0)
        if self._rng.random() < max(op.error_rate, faults.error_rate):
            return 500
        for stage in op.stages:
            statuses = await asyncio.gather(*(self._call(call) for call in stage))
            if any(s >= 500 for s in statuses):
                return 502 if all(s >= 500 for s in statuses) else 500
        return 200

    async def _call(self, call: Call) -> int:
        """Call a dependency through the sidecar; returns its status (599: no response)."""
        assert self._session is not None
        url = f"http://{call.service}{call.path}"
        with self._tracer.start_as_current_span(
            call.method,
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": call.method,
                "server.address": call.service,
                "url.full": url,
                "peer.service": call.service,
            },
        ) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            try:
                async with self._session.request(call.method, url, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR))
                return 599
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
                span.set_attribute("error.type", str(status))
            return status


class _Reset(web.HTTPException):
    """Raised after the socket was reset: aiohttp has nothing left to send."""

    status_code = 500


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0), as a crashing server would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _tracer(service: str, instance: str, collector: str | None) -> tuple[TracerProvider, Any]:
    resource = Resource.create(
        {
            "service.name": service,
            "service.instance.id": instance,
            "service.namespace": "meshlens-demo",
            "telemetry.sdk.language": "python",
        }
    )
    provider = TracerProvider(resource=resource)
    if collector:
        exporter = OTLPSpanExporter(endpoint=f"{collector.rstrip('/')}/v1/traces", timeout=5)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    return provider, provider.get_tracer("meshlens.demo")


async def _serve_forever(args: argparse.Namespace) -> int:
    service = get_topology(args.topology).service(args.service)
    provider, tracer = _tracer(service.name, args.instance, args.collector)
    demo = DemoService(service, args.instance, tracer, seed=args.seed)
    runner = web.AppRunner(demo.app(), access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, args.host, args.port, shutdown_timeout=1.0)
        await site.start()
        print(f"demo service {args.instance} ready on http://{args.host}:{args.port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        # Flush the spans still buffered (bounded by the exporter's own timeout).
        await asyncio.to_thread(provider.shutdown)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.services", description=__doc__)
    parser.add_argument("--topology", default="shop")
    parser.add_argument("--service", required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--collector", default=None, help="OTLP/HTTP base URL")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_serve_forever(args))
    except (ValueError, KeyError) as exc:
        print(f"demo service: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
