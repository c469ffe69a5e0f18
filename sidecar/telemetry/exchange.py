"""What the sidecar records when one exchange (a logical request, an attempt, an inbound
request) has ended: its span tuple, Istio and OTel metrics, and the access log line.

Called by the telemetry layers (sidecar/layers/telemetry.py) off the end of the response body;
for a buffered body after the response is written (Recorder.later), with its end time read when
it ended.
"""

from __future__ import annotations

from typing import Final

from sidecar.http import AttrValue, Endpoint, Request, RequestContext, header_value
from sidecar.telemetry.accesslog import AccessRecord
from sidecar.telemetry.context import SAMPLED
from sidecar.telemetry.grpc_metrics import grpc_method
from sidecar.telemetry.istio import response_flags
from sidecar.telemetry.recorder import Deferred, Recorder
from sidecar.telemetry.semconv import (
    client_status,
    normalize_method,
    peer_from_spiffe,
    server_status,
    span_name,
    split_host_port,
)
from sidecar.telemetry.spans import (
    KIND_CLIENT,
    KIND_SERVER,
    STATUS_ERROR,
    AttrTemplate,
    SpanRecord,
)

__all__ = [
    "ATTEMPT",
    "Done",
    "defer_attempt",
    "defer_inbound",
    "defer_outbound",
    "finish_attempt",
    "finish_inbound",
    "finish_outbound",
]

ATTEMPT: Final = "meshlens.attempt"
_ROUTE: Final = "meshlens.route"
_UPSTREAM: Final = "meshlens.upstream"
_FAULT_DELAY: Final = "meshlens.fault.delay_ms"
_EJECTED: Final = "meshlens.outlier.ejected"
_BUDGET: Final = "meshlens.retry.budget_exhausted"
# Policy decisions the layers record (enforced and observe-only); counted per upstream so the
# effect of `enforce: false` policies is visible on /metrics, not only on spans.
_DECISIONS: Final = frozenset(
    (
        "meshlens.balance.panic",
        "meshlens.breaker.would_overflow",
        "meshlens.fault.abort",
        "meshlens.fault.delay_ms",
        "meshlens.fault.would_abort",
        "meshlens.fault.would_delay_ms",
        _EJECTED,
        "meshlens.outlier.would_eject",
        "meshlens.ratelimit.limited",
        "meshlens.ratelimit.would_limit",
        _BUDGET,
        "meshlens.retry.would_retry",
        "meshlens.timeout.fired",
        "meshlens.timeout.would_timeout",
    )
)


_GRPC_STATUS: Final = "rpc.grpc.status_code"  # set by layers/grpc.py
_URL_FULL: Final = "url.full"
_STATUS_CODE: Final = "http.response.status_code"
_NEW_TUPLE: Final = tuple.__new__  # (looked up once, not per span)
_SPAN_RECORD: Final = SpanRecord  # (compiled: a C static, not a module dict lookup per span)
# server-side gRPC statuses that are errors (OTel rpc conventions; the rest are the caller's)
_GRPC_SERVER_ERRORS: Final = frozenset({2, 4, 12, 13, 14, 15})


def _rpc_name(attrs: dict[str, AttrValue]) -> str:
    """`{rpc.service}/{rpc.method}` for a gRPC span, else ""."""
    service, method = attrs.get("rpc.service"), attrs.get("rpc.method")
    return f"{service}/{method}" if service and method else ""


def _record_grpc(
    rec: Recorder, ctx: RequestContext, outbound: bool, service: str, duration_ms: float
) -> None:
    """The per-method gRPC metrics (only for gRPC requests)."""
    attrs = ctx.attributes
    if rec.grpc is None or attrs.get("rpc.system") != "grpc":
        return
    code = attrs.get(_GRPC_STATUS)
    status = "" if code is None else str(code)
    method = rec.grpc.record(
        outbound=outbound,
        service=service,
        method=grpc_method(attrs),
        status=status,
        duration_ms=duration_ms,
    )
    # OTel rpc.*.call.duration: the same capped method, split into rpc.service / rpc.method
    rpc_service, _, rpc_method = (
        method[1:].partition("/") if method[:1] == "/" else ("", "", method)
    )
    rec.durations.record_rpc(
        ("grpc", rpc_service, rpc_method, status, service if outbound else ""),
        duration_ms / 1000,
        client=outbound,
    )


def _istio_protocol(ctx: RequestContext) -> tuple[str, str]:
    """Istio's request_protocol and grpc_response_status labels."""
    attrs = ctx.attributes
    if attrs.get("rpc.system") != "grpc":
        return "http", ""
    code = attrs.get(_GRPC_STATUS)
    return "grpc", "" if code is None else str(code)


class Done:
    """How one exchange ended: status, proxy error reason (or ""), body bytes, and when (unix
    ns; 0: when it is recorded, for one recorded as it ends)."""

    __slots__ = ("end", "error", "nbytes", "status")

    def __init__(self, status: int, error: str, nbytes: int, end: int = 0) -> None:
        self.status, self.error, self.nbytes, self.end = status, error, nbytes, end


def _request_size(request: Request) -> int:
    body = request.body
    if isinstance(body, bytes):
        return len(body)
    return body.length or 0


def _record_span(
    rec: Recorder,
    ctx: RequestContext,
    span_id: bytes,
    parent: bytes,
    name: str,
    kind: int,
    start: int,
    end: int,
    status: int,
    attrs: dict[str, AttrValue],
    template: AttrTemplate | None = None,
) -> None:
    # (end: the instant the exchange's metrics measured, read once)
    # tuple.__new__ with every field, not SpanRecord(...): the NamedTuple's __new__ is an
    # interpreted function even when this module is compiled; the same SpanRecord results.
    span = _NEW_TUPLE(
        _SPAN_RECORD,
        (
            ctx.trace_id,
            span_id,
            parent,
            name,
            kind,
            start,
            end,
            ctx.trace_flags,
            status,
            attrs,
            ctx.tracestate,
            "",
            template,
        ),
    )
    rec.spans.add(span)


class _Outbound(Deferred):
    __slots__ = ("done", "request", "start")

    def __init__(self, request: Request, start: int, done: Done) -> None:
        self.request, self.start, self.done = request, start, done

    def record(self, rec: Recorder) -> None:
        finish_outbound(rec, self.request, self.start, self.done)


def defer_outbound(rec: Recorder, request: Request, start: int, done: Done) -> None:
    """finish_outbound after the response is written (Recorder.later), ended now: the logical
    request is the outermost layer, nothing changes its context after."""
    done.end = rec.now_ns()
    rec.later(_Outbound(request, start, done))


def finish_outbound(rec: Recorder, request: Request, start: int, done: Done) -> None:
    ctx = request.context
    attrs = ctx.attributes
    now = done.end or rec.now_ns()
    # The usual request: routed, one attempt sent, nothing decided, no fault delay, not gRPC.
    plain = len(attrs) == 3 and ATTEMPT in attrs and _ROUTE in attrs and _UPSTREAM in attrs
    flags = response_flags(done.error, not plain and _FAULT_DELAY in attrs)
    endpoint = ctx.endpoint
    upstream = ctx.upstream or split_host_port(request.authority)[0]
    identity = endpoint.identity if endpoint else ""
    if flags == "-" and (plain or attrs.get("rpc.system") != "grpc"):  # (bound per upstream)
        rec.istio_outbound.record_plain(
            upstream,
            identity,
            done.status,
            "unknown",
            (now - start) / 1e6,
            _request_size(request),
            done.nbytes,
        )
    else:
        rec.istio_outbound.record(
            (upstream, identity, done.status, flags, "unknown", *_istio_protocol(ctx)),
            (now - start) / 1e6,
            _request_size(request),
            done.nbytes,
        )
    if plain:
        decisions: list[str] = []
    else:
        _record_grpc(rec, ctx, True, upstream, (now - start) / 1e6)
        decisions = [key for key in attrs if key in _DECISIONS]  # (attrs: a few keys)
    if decisions:
        for key in decisions:
            rec.decisions.inc((upstream, key[9:]))  # without the "meshlens." prefix
        if _EJECTED in decisions:
            rec.ejections.inc((upstream,))
    if flags == "URX" or _BUDGET in decisions:
        rec.budget_exhausted.inc((upstream,))
    sampled = ctx.trace_flags & SAMPLED
    if sampled and not plain and ATTEMPT not in attrs:
        # Nothing was sent upstream (rate limited, no route, fault): one CLIENT span says why.
        span_attrs: dict[str, AttrValue] = {
            "http.request.method": normalize_method(request.method),
            "server.address": upstream,
            "meshlens.upstream": ctx.upstream,
            "meshlens.route": ctx.route,
            **attrs,
            "http.response.status_code": done.status,
        }
        if done.error or done.status >= 400:
            span_attrs["error.type"] = done.error or str(done.status)
        name = span_name(normalize_method(request.method), ctx.route)
        status = client_status(done.status, done.error)
        _record_span(
            rec,
            ctx,
            rec.ids.span_id(),
            ctx.parent_span_id,
            name,
            KIND_CLIENT,
            start,
            now,
            status,
            span_attrs,
        )
    if not sampled:
        rec.unsampled.inc(("outbound",))
    if rec.access_log is not None:
        _access(rec, request, "outbound", start, now, done, flags, b"")


class _AttemptBase:
    """The attempt span attributes fixed for one endpoint host, port, method, protocol
    version, upstream, route, scheme and authority (in their order, `url.full` left to fill)."""

    __slots__ = (
        "attrs",
        "authority",
        "method",
        "name",
        "port",
        "route",
        "scheme",
        "template",
        "upstream",
        "url",
        "version",
    )

    def __init__(
        self,
        attrs: dict[str, AttrValue],
        method: str,
        port: int,
        request: Request,
        upstream: str,
        route: str,
    ) -> None:
        self.attrs = attrs
        self.method, self.port, self.upstream, self.route = method, port, upstream, route
        self.scheme, self.authority, self.version = (
            request.scheme,
            request.authority,
            request.version,
        )
        self.url = f"{request.scheme}://{request.authority}"
        self.name = span_name(method, route)
        # the attributes of a first attempt with a response and nothing else set (the usual
        # span): these, url.full and the status varying
        self.template = AttrTemplate(
            (
                *((key, None if key == _URL_FULL else value) for key, value in attrs.items()),
                (ATTEMPT, 1),
                (_STATUS_CODE, None),
            )
        )

    def fits(self, method: str, port: int, request: Request, upstream: str, route: str) -> bool:
        return (
            self.port == port
            and self.method == method
            and self.version == request.version
            and self.authority == request.authority
            and self.route == route
            and self.upstream == upstream
            and self.scheme == request.scheme
        )


def _attempt_base(
    method: str, host: str, port: int, request: Request, upstream: str, route: str
) -> _AttemptBase:
    attrs: dict[str, AttrValue] = {
        "http.request.method": method,
        "server.address": host,
        "server.port": port,
        "url.full": "",
        "network.protocol.version": request.version,
        "meshlens.upstream": upstream,
        "meshlens.route": route,
    }
    base = _AttemptBase(attrs, method, port, request, upstream, route)
    if len(_ATTEMPT_BASES) >= _ATTEMPT_BASES_MAX:
        _ATTEMPT_BASES.clear()
    _ATTEMPT_BASES[host] = base
    return base


# endpoint host -> the last base of an attempt to it (bounded: hosts are few, values checked)
_ATTEMPT_BASES: Final[dict[str, _AttemptBase]] = {}
_ATTEMPT_BASES_MAX: Final = 256


def _plain_attempt(extra: dict[str, AttrValue], route: str, upstream: str) -> bool:
    """The context's attributes hold only what an attempt span sets itself (the attempt number)
    and the route and upstream its attributes already have: nothing else to copy."""
    size = len(extra)
    return ATTEMPT in extra and (
        size == 1 or (size == 3 and extra.get(_ROUTE) == route and extra.get(_UPSTREAM) == upstream)
    )


def finish_attempt(
    rec: Recorder, request: Request, number: int, span_id: bytes, start: int, done: Done
) -> None:
    ctx = request.context
    ended = _AttemptEnd(
        request, number, span_id, start, done, ctx.endpoint, ctx.upstream, ctx.route
    )
    ended.finish(rec, ctx.attributes)


def defer_attempt(
    rec: Recorder, request: Request, number: int, span_id: bytes, start: int, done: Done
) -> None:
    """finish_attempt after the response is written (Recorder.later), with its end time and
    what it reads of the context taken now: a retry changes the endpoint and the attributes.
    At once when the attributes hold more than the usual ones (those it would copy)."""
    ctx = request.context
    upstream, route = ctx.upstream, ctx.route
    if not _plain_attempt(ctx.attributes, route, upstream):
        finish_attempt(rec, request, number, span_id, start, done)
        return
    done.end = rec.now_ns()
    rec.later(_AttemptEnd(request, number, span_id, start, done, ctx.endpoint, upstream, route))


class _AttemptEnd(Deferred):
    """An attempt that ended, with the endpoint, upstream and route its context had then."""

    __slots__ = ("done", "endpoint", "number", "request", "route", "span_id", "start", "upstream")

    def __init__(
        self,
        request: Request,
        number: int,
        span_id: bytes,
        start: int,
        done: Done,
        endpoint: Endpoint | None,
        upstream: str,
        route: str,
    ) -> None:
        self.request, self.number, self.span_id, self.start = request, number, span_id, start
        self.done, self.endpoint, self.upstream, self.route = done, endpoint, upstream, route

    def record(self, rec: Recorder) -> None:
        self.finish(rec, None)

    def finish(self, rec: Recorder, extra: dict[str, AttrValue] | None) -> None:
        """Record it, with the context's attributes as they were when it ended (None: only the
        usual ones, see _plain_attempt)."""
        request, number, span_id, start, done = (
            self.request, self.number, self.span_id, self.start, self.done,
        )  # fmt: skip
        endpoint, upstream, route = self.endpoint, self.upstream, self.route
        ctx = request.context
        now = done.end or rec.now_ns()
        host, port = (
            (endpoint.host, endpoint.port) if endpoint else split_host_port(request.authority)
        )
        method = normalize_method(request.method)
        status, error = done.status, done.error
        error_type = error or (str(status) if status >= 400 else "")
        if error_type:
            rec.durations.record_client(
                (method, upstream or host, port, status, error_type, request.version),
                (now - start) / 1e9,
            )
        else:  # (series bound per server address)
            rec.durations.record_client_plain(
                upstream or host, method, port, status, request.version, (now - start) / 1e9
            )
        if not ctx.trace_flags & SAMPLED:
            return
        base = _ATTEMPT_BASES.get(host)
        if base is None or not base.fits(method, port, request, upstream, route):
            base = _attempt_base(method, host, port, request, upstream, route)
        attrs = base.attrs.copy()  # (a copy of a dict in that order, not 7 items inserted)
        attrs[_URL_FULL] = base.url + request.path
        if number > 1:
            attrs["http.request.resend_count"] = number - 1
        plain = extra is None or _plain_attempt(extra, route, upstream)
        if extra is not None and not plain:
            attrs.update(extra)
        attrs[ATTEMPT] = number
        if status:
            attrs[_STATUS_CODE] = status
        if error_type:
            attrs["error.type"] = error_type
        # (the template's keys, in its order: nothing added before or after)
        template = base.template if plain and number == 1 and status and not error_type else None
        # (rpc.* and the gRPC status come from the context's attributes only)
        name = base.name if plain else _rpc_name(attrs) or base.name
        span_status = client_status(status, error)
        if not plain and _GRPC_STATUS in attrs and attrs[_GRPC_STATUS] != 0:
            span_status = STATUS_ERROR  # OTel rpc conventions: any non-OK status on the client
        _record_span(
            rec,
            ctx,
            span_id,
            ctx.parent_span_id,
            name,
            KIND_CLIENT,
            start,
            now,
            span_status,
            attrs,
            template,
        )


class _Inbound(Deferred):
    __slots__ = ("done", "parent", "request", "span_id", "start")

    def __init__(
        self, request: Request, span_id: bytes, parent: bytes, start: int, done: Done
    ) -> None:
        self.request, self.span_id, self.parent, self.start = request, span_id, parent, start
        self.done = done

    def record(self, rec: Recorder) -> None:
        finish_inbound(rec, self.request, self.span_id, self.parent, self.start, self.done)


def defer_inbound(
    rec: Recorder, request: Request, span_id: bytes, parent: bytes, start: int, done: Done
) -> None:
    """finish_inbound after the response is written (Recorder.later), ended now: the SERVER
    span is the outermost layer, nothing changes its context after."""
    done.end = rec.now_ns()
    rec.later(_Inbound(request, span_id, parent, start, done))


def finish_inbound(
    rec: Recorder, request: Request, span_id: bytes, parent: bytes, start: int, done: Done
) -> None:
    ctx = request.context
    now = done.end or rec.now_ns()
    status, error = done.status, done.error
    method = normalize_method(request.method)
    flags = response_flags(error, _FAULT_DELAY in ctx.attributes)
    peer = ctx.peer_identity
    security = "mutual_tls" if peer else "none"
    if flags == "-" and ctx.attributes.get("rpc.system") != "grpc":  # (bound per peer)
        rec.istio_inbound.record_plain(
            peer_from_spiffe(peer),
            peer,
            status,
            security,
            (now - start) / 1e6,
            _request_size(request),
            done.nbytes,
        )
    else:
        rec.istio_inbound.record(
            (peer_from_spiffe(peer), peer, status, flags, security, *_istio_protocol(ctx)),
            (now - start) / 1e6,
            _request_size(request),
            done.nbytes,
        )
    _record_grpc(rec, ctx, False, rec.service, (now - start) / 1e6)
    error_type = error or (str(status) if status >= 500 else "")
    if error_type:
        rec.durations.record_server(
            (method, request.scheme, status, ctx.route, error_type, request.version),
            (now - start) / 1e9,
        )
    else:  # (series bound per route)
        rec.durations.record_server_plain(
            ctx.route, method, request.scheme, status, request.version, (now - start) / 1e9
        )
    if ctx.trace_flags & SAMPLED:
        peer_host, peer_port = split_host_port(ctx.downstream_addr)
        forwarded_for = header_value(request.headers, "x-forwarded-for")
        attrs: dict[str, AttrValue] = {
            "http.request.method": method,
            "url.path": request.path,
            "url.scheme": request.scheme,
            "server.address": split_host_port(request.authority)[0] or rec.service,
            "client.address": (forwarded_for or peer_host).split(",")[0].strip(),
            "network.peer.address": peer_host,
            "network.protocol.version": request.version,
            "user_agent.original": header_value(request.headers, "user-agent") or "",
            "meshlens.peer_identity": peer,
        }
        if peer_port:
            attrs["network.peer.port"] = peer_port
        if ctx.route:
            attrs["http.route"] = ctx.route
        attrs.update(ctx.attributes)
        if status:
            attrs["http.response.status_code"] = status
        if error_type:
            attrs["error.type"] = error_type
        name = _rpc_name(attrs) or span_name(method, ctx.route)
        span_status = server_status(status, error)
        if attrs.get(_GRPC_STATUS) in _GRPC_SERVER_ERRORS:
            span_status = STATUS_ERROR
        _record_span(rec, ctx, span_id, parent, name, KIND_SERVER, start, now, span_status, attrs)
    else:
        rec.unsampled.inc(("inbound",))
    if rec.access_log is not None:
        _access(rec, request, "inbound", start, now, done, flags, span_id)


def _access(
    rec: Recorder,
    request: Request,
    direction: str,
    start: int,
    now: int,
    done: Done,
    flags: str,
    span_id: bytes,
) -> None:
    ctx = request.context
    assert rec.access_log is not None
    endpoint = ctx.endpoint
    attempts = ctx.attributes.get(ATTEMPT, 0)
    rec.access_log.write(
        AccessRecord(
            start_ns=start,
            direction=direction,
            method=request.method,
            authority=request.authority,
            path=request.path,
            status=done.status,
            response_flags=flags,
            duration_ms=(now - start) / 1e6,
            request_bytes=_request_size(request),
            response_bytes=done.nbytes,
            upstream=ctx.upstream,
            route=ctx.route,
            endpoint=endpoint.address if endpoint else "",
            attempts=attempts if isinstance(attempts, int) else 0,
            trace_id=ctx.trace_id.hex(),
            span_id=span_id.hex(),
            request_id=ctx.request_id,
            peer_identity=ctx.peer_identity,
            user_agent=header_value(request.headers, "user-agent") or "",
            error=done.error,
        )
    )
