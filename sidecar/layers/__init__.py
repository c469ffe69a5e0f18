"""Sidecar policy layers, one concern per module; the order lives in sidecar/stack.py."""
