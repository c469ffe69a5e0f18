"""Handler and Layer types, composition, and the canonical layer order of the sidecar.

Order, outermost first, with the reason for each position (sidecar/build.py builds exactly this).
Outbound (app -> upstream services):
  1. telemetry       - sees every request, including ones the proxy itself rejects
     (capture)       - with --capture: the original destination picks the upstream
  2. proxy_errors    - the single place a ProxyError becomes a marked response
  3. ratelimit       - (sidecar-wide) shed load before spending any routing or upstream work
  4. routing         - picks the route; everything below is built per route
  5. fallback        - (per route) answers for the route when everything below failed
  6. ratelimit       - (per route) a route's own budget, after routing has named it
  7. fault           - injected delay/abort behaves like the upstream misbehaving
  8. timeout         - one deadline covering every retry attempt; it honours the caller's
                       x-meshlens-timeout-ms and forwards the remaining budget (deadline
                       propagation; off on the passthrough route: outside the mesh)
  9. retry           - re-enters balancing so each attempt may pick another endpoint
 10. attempt span    - (telemetry) one client span per attempt, with its number
 11. balance         - chooses the endpoint for this attempt
 12. breaker         - per-endpoint connection/request limits see each attempt
 13. outlier         - ejects endpoints on consecutive 5xx, success rate or latency
 14. upstream        - the terminal handler: pooled connections (+ mTLS client)
Inbound (caller -> local app):
  1. telemetry       - the server span, including calls the sidecar refuses
  2. jwt             - verifies a bearer token (its own 401) so authz can match the claims
  3. proxy_errors    - as outbound
  4. ratelimit       - shed load before authorization or the app spend any work
  5. authz           - refuse callers (403 rbac_denied) before touching the app
  6. timeout, retry  - the inbound route's deadline and retries towards the local app
  7. upstream        - the local app
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from sidecar.http import Request, Response

__all__ = ["AttemptStage", "Clock", "Handler", "Layer", "Sleep", "compose", "monotonic"]

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


class AttemptStage:
    """A per-attempt layer that a fused route (sidecar/layers/fused.py) can run without a
    coroutine of its own: `begin` before the attempt, then `end` with its response or `fail`
    with its exception, exactly what the layer does around `await inner(request)`.

    Called as a Layer it is that layer (the full chain). `bypass(request)` True means the
    request needs the layer's full form (e.g. gRPC): the fused route then takes its full chain.
    `passive`: begin/end/fail do nothing (only `bypass` matters); `may_bypass`: `bypass` may
    return True (else it is never asked); `keeps_whole`: `end` returns a response whose body is
    bytes unchanged.
    """

    def __init__(
        self, *, passive: bool = False, may_bypass: bool = False, keeps_whole: bool = False
    ) -> None:
        self.passive = passive
        self.may_bypass = may_bypass
        # `end` returns a response with a whole (bytes) body as it is: such a response can go
        # downstream before `end` runs (RequestContext.final)
        self.keeps_whole = keeps_whole

    def __call__(self, inner: Handler) -> Handler:
        raise NotImplementedError

    def bypass(self, request: Request) -> bool:
        return False

    def begin(self, request: Request) -> tuple[Request, object]:
        """The request to send on (this layer's `forwarded`) and a token for `end`/`fail`."""
        return request, None

    def end(self, request: Request, token: object, response: Response) -> Response:
        return response

    def fail(self, request: Request, token: object, exc: BaseException) -> None:
        return None
