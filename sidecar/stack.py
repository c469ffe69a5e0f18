"""Handler and Layer types, composition, and the canonical layer order of the sidecar.

Order, outermost first, with the reason for each position:
  1. telemetry       - sees every request, including ones the proxy itself rejects
  2. proxy_errors    - the single place a ProxyError becomes a marked response
  3. ratelimit       - shed load before spending any routing or upstream work
  4. authz           - (inbound) refuse callers before touching the app
  5. routing         - picks the route; everything below is built per route
  6. fault           - injected delay/abort behaves like the upstream misbehaving
  7. timeout         - the request deadline covers every retry attempt
  8. retry           - re-enters balancing so each attempt may pick another endpoint
  9. attempt span    - (telemetry) one client span per attempt, with its number
 10. balance         - chooses the endpoint for this attempt
 11. breaker         - per-endpoint limits and outlier detection see each attempt
 12. upstream        - the terminal handler: pooled connections (+ mTLS client)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from sidecar.http import Request, Response

__all__ = ["Clock", "Handler", "Layer", "Sleep", "compose", "monotonic"]

Handler = Callable[[Request], Awaitable[Response]]
Layer = Callable[[Handler], Handler]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

monotonic: Clock = time.monotonic


def compose(layers: Sequence[Layer], terminal: Handler) -> Handler:
    """Wrap `terminal` so that `layers[0]` is the outermost layer."""
    handler = terminal
    for layer in reversed(layers):
        handler = layer(handler)
    return handler
