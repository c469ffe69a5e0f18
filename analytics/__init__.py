"""meshlens analytics: service map, anomalies, root cause, tuning, control plane, API and UI."""
