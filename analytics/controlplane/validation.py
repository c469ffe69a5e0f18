"""Validation of pushed policy documents with the sidecar's own schema, every problem at once.

The schema is `sidecar.config` (the contract the control plane pushes); on top of it the document
must fit the size limit and name the service it is pushed to (or no service).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from analytics.controlplane.errors import InvalidPolicy
from sidecar.config import ConfigError, parse_config

__all__ = ["MAX_DOCUMENT_BYTES", "upstreams_of", "validate_policy"]

MAX_DOCUMENT_BYTES = 1 << 20


def validate_policy(service: str, document: Any) -> None:
    """Raise InvalidPolicy with every problem found in `document` for `service`."""
    if not isinstance(document, Mapping):
        raise InvalidPolicy([f"document must be a JSON object, got {type(document).__name__}"])
    problems: list[str] = []
    size = len(json.dumps(document, separators=(",", ":")))
    if size > MAX_DOCUMENT_BYTES:
        problems.append(f"document is {size} bytes; the limit is {MAX_DOCUMENT_BYTES}")
    declared = document.get("service")
    if declared not in (None, "", service):
        problems.append(f"service: document is for {declared!r}, pushed to {service!r}")
    try:
        parse_config(document)
    except ConfigError as exc:
        problems.extend(exc.errors)
    if problems:
        raise InvalidPolicy(problems)


def upstreams_of(document: Mapping[str, Any]) -> tuple[str, ...]:
    """The upstream services a document names (their endpoints are pushed with it)."""
    upstreams = document.get("upstreams")
    if isinstance(upstreams, Mapping):
        return tuple(sorted(str(name) for name in upstreams))
    return ()
