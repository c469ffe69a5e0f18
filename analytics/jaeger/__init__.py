"""Jaeger query API (v1 internal JSON and api_v3 OTLP-JSON) under /jaeger, over analytics.traces."""
