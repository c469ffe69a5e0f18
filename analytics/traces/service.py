"""Trace query logic shared by the REST and Jaeger APIs: validation, paging, grouping spans."""

from __future__ import annotations

import re
from collections.abc import Sequence

from analytics.traces.query import InvalidQuery, SearchPage, SpanRecord, TraceQuery
from analytics.traces.repository import TraceRepository
from collector.store import Store, StoreRejected

__all__ = ["TraceNotFound", "TraceService"]


class TraceNotFound(LookupError):
    """No span of the trace is stored (within the given window, if any)."""


class TraceService:
    """Searches and reads traces from one store."""

    def __init__(self, store: Store) -> None:
        self.repository = TraceRepository(store)

    async def _check_regexes(self, query: TraceQuery) -> None:
        for flt in query.attributes:
            if flt.op not in ("=~", "!~"):
                continue
            try:
                await self.repository.check_regex(flt.value)
            except StoreRejected as exc:
                # The engine's re2 names the problem (e.g. "missing ): (ab"); pass it on.
                found = re.search(r"error: ([^.]*)", str(exc))
                detail = found.group(1) if found else str(exc).splitlines()[0][:200]
                raise InvalidQuery(
                    f"attribute {flt.key!r}: {flt.value!r} is not a valid re2 regex ({detail})"
                ) from exc

    async def search(self, query: TraceQuery) -> SearchPage:
        """One page of matching traces, newest match first; `next_cursor` continues it."""
        await self._check_regexes(query)
        hits, cursor = await self.repository.search(query)
        return SearchPage(tuple(hits), cursor)

    async def search_spans(self, query: TraceQuery) -> list[list[SpanRecord]]:
        """The spans of each trace `search` finds (same order): for APIs returning whole traces."""
        page = await self.search(query)
        if not page.traces:
            return []
        ids = [hit.trace_id for hit in page.traces]
        lo = min(hit.start_ns for hit in page.traces)
        hi = max(hit.end_ns for hit in page.traces) + 1
        grouped = await self.traces(ids, lo_ns=lo, hi_ns=hi)
        return [grouped[i] for i in ids if i in grouped]

    async def traces(
        self, trace_ids: Sequence[str], *, lo_ns: int = 0, hi_ns: int = 2**62
    ) -> dict[str, list[SpanRecord]]:
        """Spans per trace id (ids without spans are absent)."""
        grouped: dict[str, list[SpanRecord]] = {}
        for span in await self.repository.spans(trace_ids, lo_ns=lo_ns, hi_ns=hi_ns):
            grouped.setdefault(span.trace_id, []).append(span)
        return grouped

    async def trace(self, trace_id: str, *, lo_ns: int = 0, hi_ns: int = 2**62) -> list[SpanRecord]:
        """Every span of one trace in start order; TraceNotFound if there is none."""
        spans = await self.repository.spans([trace_id], lo_ns=lo_ns, hi_ns=hi_ns)
        if not spans:
            raise TraceNotFound(f"trace {trace_id} not found")
        return spans

    async def services(self, lo_ns: int, hi_ns: int) -> list[str]:
        return await self.repository.services(lo_ns, hi_ns)

    async def operations(
        self, service: str, lo_ns: int, hi_ns: int, *, kind: str | None = None
    ) -> list[tuple[str, str]]:
        """(span name, kind) pairs of `service`; `kind` keeps only that span kind."""
        pairs = await self.repository.operations(service, lo_ns, hi_ns)
        return [p for p in pairs if kind is None or p[1] == kind]

    async def dependencies(self, lo_ms: int, hi_ms: int) -> list[tuple[str, str, int]]:
        return await self.repository.dependencies(lo_ms, hi_ms)
