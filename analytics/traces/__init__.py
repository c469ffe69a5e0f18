"""Trace queries over `otel_traces`: search, trace by id, services, operations (REST under /api/v1).

The Jaeger-compatible API (analytics/jaeger) runs on the same service and repository.
"""
