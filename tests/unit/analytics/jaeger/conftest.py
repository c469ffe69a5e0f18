"""The `api` fixture: the analytics app on an embedded store holding the sample traces."""

from __future__ import annotations

from tests.unit.analytics.traces.helpers import api

__all__ = ["api"]
