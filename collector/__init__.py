"""meshlens collector: OTLP receivers, pipeline and the ClickHouse store."""
