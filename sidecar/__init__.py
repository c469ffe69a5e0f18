"""meshlens sidecar: the per-instance HTTP proxy (data plane)."""
