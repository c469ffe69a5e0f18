"""Processors: pipeline stages between the receivers and the exporter."""
