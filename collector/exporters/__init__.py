"""Exporters: the last pipeline stage, writing batches to the store."""
