"""Process wiring: components with start/shutdown run in one asyncio process until a signal.

`meshlens collector` runs one CollectorComponent; `meshlens up` runs the collector plus any
other components (analytics, control plane, UI) sharing the same store, started in order and
shut down in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from collector.exporters.clickhouse import ClickHouseExporterConfig
from collector.metrics import CollectorMetrics
from collector.pipeline import Pipeline, PipelineConfig
from collector.processors.batch import BatchConfig
from collector.receivers.otlp_grpc import OtlpGrpcConfig
from collector.receivers.otlp_http import OtlpHttpConfig
from collector.store.base import Store

__all__ = [
    "CollectorComponent",
    "CollectorSettings",
    "Component",
    "run_components",
    "serve",
    "tune_gc",
]

logger = logging.getLogger(__name__)


class Component(Protocol):
    """A part of a meshlens process: started in order, shut down in reverse order."""

    name: str

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    def addresses(self) -> dict[str, str]:
        """What it listens on, by name (printed when the process is ready)."""
        ...


@dataclass(frozen=True, slots=True)
class CollectorSettings:
    """The collector's settings (from CLI flags)."""

    spool_dir: Path
    host: str = "127.0.0.1"
    otlp_http_port: int = 4318
    otlp_grpc_port: int = 4317
    max_body_bytes: int = 16 * 1024 * 1024
    spool_max_bytes: int = 2 * 1024 * 1024 * 1024
    batch: BatchConfig = field(default_factory=BatchConfig)
    exporter: ClickHouseExporterConfig = field(default_factory=ClickHouseExporterConfig)
    metrics_log_interval_s: float = 60.0

    def pipeline_config(self) -> PipelineConfig:
        return PipelineConfig(
            spool_dir=self.spool_dir,
            http=OtlpHttpConfig(self.host, self.otlp_http_port, self.max_body_bytes),
            grpc=OtlpGrpcConfig(self.host, self.otlp_grpc_port, self.max_body_bytes),
            batch=self.batch,
            exporter=self.exporter,
            spool_max_bytes=self.spool_max_bytes,
        )


class CollectorComponent:
    """The OTLP collector over a store the caller opened (and closes)."""

    name = "collector"

    def __init__(self, settings: CollectorSettings, store: Store) -> None:
        self._settings = settings
        self._store = store
        self.metrics = CollectorMetrics()
        self.pipeline: Pipeline | None = None
        self._log_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.pipeline = Pipeline(
            self._settings.pipeline_config(), self._store, metrics=self.metrics
        )
        await self.pipeline.start()
        self._log_task = asyncio.create_task(self._log_metrics(), name="collector-metrics-log")

    async def shutdown(self) -> None:
        if self._log_task is not None:
            self._log_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._log_task
            self._log_task = None
        if self.pipeline is not None:
            await self.pipeline.shutdown()
            self.metrics.log()

    def addresses(self) -> dict[str, str]:
        return self.pipeline.addresses() if self.pipeline is not None else {}

    async def _log_metrics(self) -> None:
        while True:
            await asyncio.sleep(self._settings.metrics_log_interval_s)
            self.metrics.log()


async def run_components(
    components: Sequence[Component], stop: asyncio.Event, out: TextIO = sys.stdout
) -> None:
    """Start `components` in order, print their addresses, wait for `stop`, shut down."""
    started: list[Component] = []
    try:
        for component in components:
            await component.start()
            started.append(component)
        for component in components:
            for name, address in component.addresses().items():
                print(f"{name} listening on {address}", file=out)
        print("meshlens ready", file=out, flush=True)
        await stop.wait()
    finally:
        for component in reversed(started):
            try:
                await component.shutdown()
            except Exception:
                # Process boundary: one component failing to stop must not keep the others up.
                logger.exception("component shutdown failed", extra={"component": component.name})


def tune_gc() -> None:
    """Make cyclic garbage collection rare for an ingest process.

    Decoding allocates millions of short-lived, acyclic dicts and lists (freed by reference
    counting); with the default thresholds the collector re-scans the live batch over and over,
    which cost about a third of the event loop's CPU in bench/collector_ingest.py.
    """
    gc.collect()
    gc.freeze()  # start-up objects (modules, schema, config) are never garbage
    gc.set_threshold(100_000, 50, 100)


def serve(main: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run `main(stop)` on a fresh event loop; SIGINT/SIGTERM set `stop`. Returns an exit code."""

    async def runner() -> None:
        tune_gc()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await main(stop)

    try:
        asyncio.run(runner())
    except OSError as exc:
        logger.error("could not start", extra={"error": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
