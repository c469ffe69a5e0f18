"""meshlens sidecar: the per-instance HTTP proxy (data plane)."""

from sidecar._native import install as _install_native

_install_native()  # compiled hot-path modules when built and fresh (sidecar/_native.py)
