"""Receivers: OTLP over HTTP and gRPC, the first pipeline stage."""
