"""Wires the collector pipeline from config and owns its lifecycle:
receivers (HTTP, gRPC) -> durable batch processor (spool) -> ClickHouse exporter -> store.

Stages start from the store end and shut down from the receiver end, so nothing is accepted that
cannot be spooled and every spooled record gets a chance to be flushed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from collector.exporters.clickhouse import ClickHouseExporter, ClickHouseExporterConfig, Sleep
from collector.metrics import CollectorMetrics
from collector.processors.batch import BatchConfig, DurableBatchProcessor
from collector.receivers.otlp_grpc import OtlpGrpcConfig, OtlpGrpcReceiver
from collector.receivers.otlp_http import OtlpHttpConfig, OtlpHttpReceiver
from collector.spool import Spool, SpoolConfig
from collector.store.base import Store

__all__ = ["Pipeline", "PipelineConfig"]


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Everything the pipeline needs; `http`/`grpc` None disables that receiver."""

    spool_dir: Path
    http: OtlpHttpConfig | None = field(default_factory=OtlpHttpConfig)
    grpc: OtlpGrpcConfig | None = field(default_factory=OtlpGrpcConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    exporter: ClickHouseExporterConfig = field(default_factory=ClickHouseExporterConfig)
    spool_segment_bytes: int = 64 * 1024 * 1024
    spool_max_bytes: int = 2 * 1024 * 1024 * 1024
    fsync: bool = True


class Pipeline:
    """The running collector pipeline over an already-migrated store."""

    def __init__(
        self,
        config: PipelineConfig,
        store: Store,
        *,
        metrics: CollectorMetrics | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = metrics or CollectorMetrics()
        self.spool = Spool.open(
            SpoolConfig(
                config.spool_dir,
                segment_bytes=config.spool_segment_bytes,
                max_bytes=config.spool_max_bytes,
                fsync=config.fsync,
            )
        )
        self.exporter = ClickHouseExporter(
            config.exporter,
            store,
            self.metrics,
            token_prefix=self.spool.spool_id,
            sleep=sleep,
            clock=clock,
        )
        self.processor = DurableBatchProcessor(
            config.batch, self.spool, self.exporter, self.metrics, clock=clock
        )
        self.http = (
            OtlpHttpReceiver(config.http, self.processor, self.metrics) if config.http else None
        )
        self.grpc = (
            OtlpGrpcReceiver(config.grpc, self.processor, self.metrics) if config.grpc else None
        )

    def addresses(self) -> dict[str, str]:
        """Listening addresses by name (valid after start)."""
        out: dict[str, str] = {}
        if self.grpc is not None:
            out["otlp-grpc"] = self.grpc.address
        if self.http is not None:
            out["otlp-http"] = self.http.address
        return out

    async def start(self) -> None:
        await self.processor.start()
        try:
            if self.grpc is not None:
                await self.grpc.start()
            if self.http is not None:
                await self.http.start()
        except BaseException:
            await self.shutdown()
            raise

    async def shutdown(self) -> None:
        """Stop receiving, flush batches (bounded), close the spool. The store stays open."""
        if self.http is not None:
            await self.http.shutdown()
        if self.grpc is not None:
            await self.grpc.shutdown()
        await self.processor.shutdown()
