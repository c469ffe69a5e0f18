"""Telemetry layers over a scripted upstream: spans per attempt, trace propagation, server spans,
span end at the end of a streamed body, metrics and access log."""

from __future__ import annotations

import asyncio
import gc
import io
import json
from collections.abc import Sequence

from sidecar.errors import RateLimited, UpstreamConnectError
from sidecar.http import Endpoint, Request, RequestContext, Response, header_value
from sidecar.layers.proxy_errors import proxy_errors_layer
from sidecar.layers.retry import RetryConfig, retry_layer
from sidecar.stack import Handler, Layer, compose
from sidecar.telemetry import Telemetry, TelemetryConfig
from sidecar.telemetry.accesslog import AccessLog
from sidecar.telemetry.context import IdSource, parse_traceparent
from sidecar.telemetry.spans import KIND_CLIENT, KIND_SERVER, STATUS_ERROR, STATUS_UNSET, SpanRecord
from tests.fakes import body_bytes
from tests.unit.sidecar.telemetry.promtext import parse_prometheus

APP_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_SPAN = "00f067aa0ba902b7"
ENDPOINT = Endpoint(
    "10.0.0.7", 8080, service="orders", identity="spiffe://mesh/ns/default/sa/orders"
)


class Clock:
    """Unix-ns clock advancing 1 ms per reading."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000_000_000

    def __call__(self) -> int:
        self.now += 1_000_000
        return self.now


class Chunks:
    """A one-shot streamed body."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._chunks = list(chunks)

    @property
    def length(self) -> int | None:
        return None

    async def read(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


class ScriptedUpstream:
    """Answers each call with the next scripted response or raises the next scripted error."""

    def __init__(self, script: Sequence[Response | Exception]) -> None:
        self.script = list(script)
        self.requests: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def route(upstream: str = "orders", name: str = "orders-default") -> Layer:
    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            request.context.upstream, request.context.route = upstream, name
            return await inner(request)

        return handle

    return wrap


def pick_endpoint(inner: Handler) -> Handler:
    async def handle(request: Request) -> Response:
        request.context.endpoint = ENDPOINT
        return await inner(request)

    return handle


async def no_sleep(_seconds: float) -> None:
    return None


def make_telemetry(access_log: AccessLog | None = None) -> Telemetry:
    telemetry = Telemetry(
        TelemetryConfig(service="checkout", instance="checkout-1"),
        now_ns=Clock(),
        ids=IdSource(seed=1),
    )
    telemetry.recorder.access_log = access_log
    return telemetry


def outbound(telemetry: Telemetry, upstream: Handler, attempts: int = 3) -> Handler:
    retry = retry_layer(RetryConfig(attempts=attempts, budget=None), sleep=no_sleep)
    return compose(
        [
            telemetry.outbound_layer(),
            proxy_errors_layer(),
            route(),
            retry,
            telemetry.attempt_layer(),
            pick_endpoint,
        ],
        upstream,
    )


def app_request(flags: str = "01", headers: tuple[tuple[str, str], ...] = ()) -> Request:
    return Request(
        "GET",
        "/orders/42?token=secret",
        headers=(
            ("traceparent", f"00-{APP_TRACE}-{APP_SPAN}-{flags}"),
            ("tracestate", "app=1"),
            ("authorization", "Bearer secret-token"),
            *headers,
        ),
        authority="orders",
        context=RequestContext(request_id="req-1", downstream_addr="127.0.0.1:5555"),
    )


def spans(telemetry: Telemetry) -> list[SpanRecord]:
    return telemetry.recorder.spans.take(1000)


async def test_one_client_span_per_attempt_with_attempt_numbers_and_propagation() -> None:
    telemetry = make_telemetry()
    upstream = ScriptedUpstream([Response(503), Response(503), Response(200, body=b"ok")])
    response = await outbound(telemetry, upstream)(app_request())

    assert response.status == 200 and await body_bytes(response.body) == b"ok"
    recorded = spans(telemetry)
    assert [s.attributes["meshlens.attempt"] for s in recorded] == [1, 2, 3]
    assert all(s.kind == KIND_CLIENT for s in recorded)
    assert [s.attributes["http.response.status_code"] for s in recorded] == [503, 503, 200]
    assert [s.status for s in recorded] == [STATUS_ERROR, STATUS_ERROR, STATUS_UNSET]
    assert "http.request.resend_count" not in recorded[0].attributes
    assert [s.attributes.get("http.request.resend_count") for s in recorded[1:]] == [1, 2]
    for span, sent in zip(recorded, upstream.requests, strict=True):
        assert span.trace_id.hex() == APP_TRACE
        assert span.parent_span_id.hex() == APP_SPAN  # the app's span is the parent
        assert span.name == "GET orders-default"
        assert span.tracestate == "app=1"
        attrs = span.attributes
        assert attrs["meshlens.upstream"] == "orders"
        assert attrs["meshlens.route"] == "orders-default"
        assert attrs["server.address"] == "10.0.0.7" and attrs["server.port"] == 8080
        assert attrs["url.full"] == "http://orders/orders/42"  # no query string
        # the upstream sees our span as its parent, with the app's tracestate
        sent_ctx = parse_traceparent(header_value(sent.headers, "traceparent") or "")
        assert sent_ctx is not None and sent_ctx.span_id == span.span_id
        assert sent_ctx.trace_id == span.trace_id and sent_ctx.flags == 1
        assert header_value(sent.headers, "tracestate") == "app=1"
    assert len({s.span_id for s in recorded}) == 3
    assert recorded[1].attributes["meshlens.retry.reason"] == "gateway-error"
    assert telemetry.recorder.retries.value(("orders", "gateway-error")) == 2


def rotating_endpoints(inner: Handler) -> Handler:
    """A balancer stand-in: each attempt goes to the next of three endpoints."""
    picks = iter(Endpoint(f"10.0.0.{n}", 8080 + n, service="orders") for n in range(1, 9))

    async def handle(request: Request) -> Response:
        request.context.endpoint = next(picks)
        return await inner(request)

    return handle


async def retried_exchange(deferred: bool) -> tuple[list[SpanRecord], str, int]:
    """Two 503s then a 200 across three endpoints: (spans, /metrics text, spans recorded by
    the time the request returned), recorded at once or after the response (Recorder.later)."""
    telemetry = make_telemetry()
    if deferred:
        telemetry.recorder.defer_to(asyncio.get_running_loop())
    upstream = ScriptedUpstream([Response(503), Response(503), Response(200, body=b"ok")])
    retry = retry_layer(RetryConfig(attempts=3, budget=None), sleep=no_sleep)
    handler = compose(
        [
            telemetry.outbound_layer(),
            proxy_errors_layer(),
            route(),
            retry,
            telemetry.attempt_layer(),
            rotating_endpoints,
        ],
        upstream,
    )
    response = await handler(app_request())
    assert response.status == 200
    at_return = len(telemetry.recorder.spans)
    await asyncio.sleep(0)  # the loop's next round of callbacks
    return spans(telemetry), telemetry.prometheus_text(), at_return


async def test_exchanges_recorded_after_the_response_are_recorded_the_same() -> None:
    # Deferred, an attempt is recorded with the endpoint, attributes and end time it had when
    # it ended, though the retry changed the context before the record was made.
    now, now_metrics, now_at_return = await retried_exchange(deferred=False)
    later, later_metrics, later_at_return = await retried_exchange(deferred=True)
    # the first attempt waits (it holds only the usual attributes); the retried ones carry the
    # retry's reason, which the span copies, so they are recorded as they end
    assert now_at_return == 3 and later_at_return == 2
    # (in the buffer the waiting first attempt comes after the two recorded at once)
    later.sort(key=lambda span: span.start_ns)
    assert later == now
    assert [s.attributes["server.address"] for s in later] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert "meshlens.retry.reason" not in later[0].attributes
    assert later[1].attributes["meshlens.retry.reason"] == "gateway-error"
    assert later_metrics == now_metrics


async def test_metrics_read_before_the_deferred_record_runs_include_it() -> None:
    telemetry = make_telemetry()
    telemetry.recorder.defer_to(asyncio.get_running_loop())
    handler = outbound(telemetry, ScriptedUpstream([Response(200, body=b"ok")]))
    await handler(app_request())
    assert telemetry.recorder.pending  # not yet recorded...
    _, samples = parse_prometheus(telemetry.prometheus_text())  # ...but read: recorded first
    assert [v for n, _, v in samples if n == "istio_requests_total"] == [1]
    assert telemetry.stats()["spans_queued"] == 1


async def test_streamed_body_ends_span_at_eof_and_counts_bytes() -> None:
    telemetry = make_telemetry()
    upstream = ScriptedUpstream([Response(200, body=Chunks([b"abc", b"defg"]))])
    response = await outbound(telemetry, upstream)(app_request())

    assert spans(telemetry) == []  # still streaming: nothing recorded yet
    assert await body_bytes(response.body) == b"abcdefg"
    (span,) = spans(telemetry)
    assert span.attributes["http.response.status_code"] == 200
    _, samples = parse_prometheus(telemetry.prometheus_text())
    sizes = [v for n, lb, v in samples if n == "istio_response_bytes_sum"]
    assert sizes == [7]


async def test_streamed_body_dropped_unread_still_ends_its_span() -> None:
    telemetry = make_telemetry()
    upstream = ScriptedUpstream([Response(200, body=Chunks([b"abc"]))])
    response = await outbound(telemetry, upstream)(app_request())
    del response
    gc.collect()
    (span,) = spans(telemetry)
    assert span.attributes["error.type"] == "body_abandoned"


async def test_upstream_error_is_recorded_on_the_attempt_and_retried() -> None:
    telemetry = make_telemetry()
    upstream = ScriptedUpstream([UpstreamConnectError("refused"), Response(200)])
    response = await outbound(telemetry, upstream)(app_request())
    assert response.status == 200
    first, second = spans(telemetry)
    assert first.attributes["error.type"] == "connect_failure"
    assert first.attributes["http.response.status_code"] == 503
    assert first.status == STATUS_ERROR
    assert second.attributes["meshlens.attempt"] == 2 and second.status == STATUS_UNSET


async def test_request_rejected_before_any_attempt_gets_one_error_span() -> None:
    telemetry = make_telemetry()

    async def limited(_request: Request) -> Response:
        raise RateLimited()

    handler = compose([telemetry.outbound_layer(), proxy_errors_layer(), route()], limited)
    response = await handler(app_request())
    assert response.status == 429
    (span,) = spans(telemetry)
    assert span.kind == KIND_CLIENT and span.status == STATUS_ERROR
    assert span.attributes["error.type"] == "rate_limited"
    assert span.attributes["meshlens.upstream"] == "orders"
    assert span.parent_span_id.hex() == APP_SPAN
    _, samples = parse_prometheus(telemetry.prometheus_text())
    (labels,) = [lb for n, lb, _ in samples if n == "istio_requests_total"]
    assert labels["response_flags"] == "RL" and labels["response_code"] == "429"
    assert labels["reporter"] == "source"
    assert labels["source_canonical_service"] == "checkout"
    assert labels["destination_service_name"] == "orders"


async def test_marked_response_from_an_upstream_sidecar_is_not_our_flag() -> None:
    telemetry = make_telemetry()
    upstream = ScriptedUpstream([Response(429, headers=(("x-meshlens-error", "rate_limited"),))])
    await outbound(telemetry, upstream, attempts=1)(app_request())
    _, samples = parse_prometheus(telemetry.prometheus_text())
    (labels,) = [lb for n, lb, _ in samples if n == "istio_requests_total"]
    assert labels["response_flags"] == "-"
    assert labels["destination_principal"] == ENDPOINT.identity


async def test_unsampled_request_has_metrics_and_propagation_but_no_span() -> None:
    telemetry = make_telemetry()
    upstream = ScriptedUpstream([Response(200)])
    await outbound(telemetry, upstream)(app_request(flags="00"))
    assert spans(telemetry) == []
    sent = parse_traceparent(header_value(upstream.requests[0].headers, "traceparent") or "")
    assert sent is not None and sent.trace_id.hex() == APP_TRACE and sent.flags == 0
    _, samples = parse_prometheus(telemetry.prometheus_text())
    assert [v for n, _, v in samples if n == "istio_requests_total"] == [1]


async def test_request_without_trace_context_starts_a_new_trace() -> None:
    telemetry = make_telemetry()
    upstream = ScriptedUpstream([Response(200)])
    request = Request("GET", "/x", authority="orders")
    await outbound(telemetry, upstream)(request)
    (span,) = spans(telemetry)
    assert span.parent_span_id == b"" and len(span.trace_id) == 16
    sent = parse_traceparent(header_value(upstream.requests[0].headers, "traceparent") or "")
    assert sent is not None and sent.trace_id == span.trace_id and sent.span_id == span.span_id


def inbound(telemetry: Telemetry, app: Handler) -> Handler:
    return compose([telemetry.inbound_layer(), proxy_errors_layer()], app)


async def test_inbound_server_span_is_the_apps_parent() -> None:
    telemetry = make_telemetry()
    app = ScriptedUpstream([Response(200, body=b"hi")])
    caller = f"00-{APP_TRACE}-{APP_SPAN}-01"
    request = Request(
        "POST",
        "/pay?card=4111",
        headers=(("traceparent", caller), ("tracestate", "x=y"), ("user-agent", "curl/8")),
        body=b"{}",
        authority="checkout:8080",
        context=RequestContext(
            direction="inbound",
            downstream_addr="10.1.2.3:4444",
            peer_identity="spiffe://mesh/ns/default/sa/frontend",
        ),
    )
    response = await inbound(telemetry, app)(request)
    assert await body_bytes(response.body) == b"hi"
    (span,) = spans(telemetry)
    assert span.kind == KIND_SERVER and span.status == STATUS_UNSET
    assert span.trace_id.hex() == APP_TRACE and span.parent_span_id.hex() == APP_SPAN
    assert span.name == "POST"
    got = parse_traceparent(header_value(app.requests[0].headers, "traceparent") or "")
    assert got is not None and got.span_id == span.span_id and got.trace_id == span.trace_id
    assert header_value(app.requests[0].headers, "tracestate") == "x=y"
    attrs = span.attributes
    assert attrs["url.path"] == "/pay" and attrs["http.request.method"] == "POST"
    assert attrs["client.address"] == "10.1.2.3" and attrs["network.peer.address"] == "10.1.2.3"
    assert attrs["server.address"] == "checkout" and attrs["user_agent.original"] == "curl/8"
    assert attrs["meshlens.peer_identity"] == "spiffe://mesh/ns/default/sa/frontend"
    _, samples = parse_prometheus(telemetry.prometheus_text())
    (labels,) = [lb for n, lb, _ in samples if n == "istio_requests_total"]
    assert labels["reporter"] == "destination"
    assert labels["source_workload"] == "frontend"
    assert labels["destination_canonical_service"] == "checkout"
    assert labels["connection_security_policy"] == "mutual_tls"


async def test_inbound_status_rules_and_proxy_errors() -> None:
    telemetry = make_telemetry()

    async def app(request: Request) -> Response:
        if request.path == "/missing":
            return Response(404)
        if request.path == "/boom":
            return Response(500)
        raise UpstreamConnectError("app not listening")

    handler = inbound(telemetry, app)
    for path in ("/missing", "/boom", "/down"):
        await handler(Request("GET", path, authority="checkout"))
    missing, boom, down = spans(telemetry)
    assert missing.status == STATUS_UNSET and "error.type" not in missing.attributes
    assert boom.status == STATUS_ERROR and boom.attributes["error.type"] == "500"
    assert down.status == STATUS_ERROR and down.attributes["error.type"] == "connect_failure"
    assert down.attributes["http.response.status_code"] == 503
    _, samples = parse_prometheus(telemetry.prometheus_text())
    flags = {
        lb["response_code"]: lb["response_flags"]
        for n, lb, _ in samples
        if n == "istio_requests_total"
    }
    assert flags == {"404": "-", "500": "-", "503": "UF"}


async def test_inbound_b3_caller_gets_b3_and_traceparent_forwarded() -> None:
    telemetry = make_telemetry()
    app = ScriptedUpstream([Response(200)])
    b3 = (("x-b3-traceid", "a" * 32), ("x-b3-spanid", "b" * 16), ("x-b3-sampled", "1"))
    await inbound(telemetry, app)(Request("GET", "/", headers=b3, authority="checkout"))
    (span,) = spans(telemetry)
    assert span.trace_id.hex() == "a" * 32 and span.parent_span_id.hex() == "b" * 16
    sent = app.requests[0].headers
    assert header_value(sent, "x-b3-spanid") == span.span_id.hex()
    assert header_value(sent, "x-b3-traceid") == "a" * 32
    assert [k for k, _ in sent].count("x-b3-spanid") == 1
    got = parse_traceparent(header_value(sent, "traceparent") or "")
    assert got is not None and got.span_id == span.span_id


async def test_access_log_has_trace_id_and_never_secrets() -> None:
    stream = io.StringIO()
    telemetry = make_telemetry(AccessLog(stream))
    upstream = ScriptedUpstream([Response(503), Response(200, body=b"ok")])
    response = await outbound(telemetry, upstream)(app_request())
    await body_bytes(response.body)
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["trace_id"] == APP_TRACE and entry["status"] == 200
    assert entry["attempts"] == 2 and entry["upstream"] == "orders"
    assert entry["flags"] == "-" and entry["endpoint"] == "10.0.0.7:8080"
    assert entry["path"] == "/orders/42" and entry["request_id"] == "req-1"
    assert "secret" not in line and "Bearer" not in line


async def test_policy_decisions_are_counted_per_upstream_and_put_on_the_span() -> None:
    telemetry = make_telemetry()

    def decide(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            attrs = request.context.attributes
            attrs["meshlens.ratelimit.would_limit"] = True
            attrs["meshlens.outlier.ejected"] = "consecutive_5xx"
            attrs["meshlens.retry.budget_exhausted"] = True
            return await inner(request)

        return handle

    upstream = ScriptedUpstream([Response(200)])
    handler = compose(
        [telemetry.outbound_layer(), route(), decide, telemetry.attempt_layer(), pick_endpoint],
        upstream,
    )
    await handler(app_request())
    (span,) = spans(telemetry)
    assert span.attributes["meshlens.ratelimit.would_limit"] is True
    _, samples = parse_prometheus(telemetry.prometheus_text())
    decisions = {
        lb["decision"]: v for n, lb, v in samples if n == "meshlens_sidecar_policy_decisions_total"
    }
    assert decisions == {
        "ratelimit.would_limit": 1,
        "outlier.ejected": 1,
        "retry.budget_exhausted": 1,
    }
    ejections = [
        (lb["upstream"], v)
        for n, lb, v in samples
        if n == "meshlens_sidecar_outlier_ejections_total"
    ]
    assert ejections == [("orders", 1)]
    exhausted = [v for n, lb, v in samples if n == "meshlens_sidecar_retry_budget_exhausted_total"]
    assert exhausted == [1]


async def test_recorded_spans_are_complete_span_records() -> None:
    # exchange.py builds SpanRecords with tuple.__new__ (fast when compiled): every field must
    # be there, the same as the NamedTuple's own constructor would make.
    telemetry = make_telemetry()
    handler = outbound(telemetry, ScriptedUpstream([Response(200, (), b"ok")]))
    await handler(app_request())
    (span,) = spans(telemetry)
    assert type(span) is SpanRecord
    assert len(span) == len(SpanRecord._fields)
    # (the last field, the attribute template, is the attempt's own object: passed as is)
    assert span == SpanRecord(*span[:-2], template=span.template)  # status_message defaults to ""
    assert span.status_message == ""
    assert span.template is not None
    assert span.tracestate == "app=1"


async def test_attempt_spans_to_one_host_keep_their_own_fixed_attributes() -> None:
    # The attempt span's fixed attributes are prepared once per endpoint host and reused while
    # method, port, version, scheme, authority, upstream and route match: vary each in turn.
    telemetry = make_telemetry()
    cases = [
        ("GET", 8080, "1.1", "http", "orders", "orders", "r1", "/a"),
        ("GET", 8080, "1.1", "http", "orders", "orders", "r1", "/b"),
        ("POST", 8080, "1.1", "http", "orders", "orders", "r1", "/a"),
        ("POST", 9090, "1.1", "http", "orders", "orders", "r1", "/a"),
        ("POST", 9090, "2", "http", "orders", "orders", "r1", "/a"),
        ("POST", 9090, "2", "https", "orders", "orders", "r1", "/a"),
        ("POST", 9090, "2", "https", "orders:81", "orders", "r1", "/a"),
        ("POST", 9090, "2", "https", "orders:81", "billing", "r1", "/a"),
        ("POST", 9090, "2", "https", "orders:81", "billing", "r2", "/a"),
        ("GET", 8080, "1.1", "http", "orders", "orders", "r1", "/c"),
    ]
    for method, port, version, scheme, authority, upstream_name, route_name, path in cases:

        def set_route(inner: Handler, up: str = upstream_name, name: str = route_name) -> Handler:
            async def handle(req: Request) -> Response:
                req.context.upstream, req.context.route = up, name
                req.context.attributes["meshlens.route"] = name
                req.context.attributes["meshlens.upstream"] = up
                return await inner(req)

            return handle

        def set_endpoint(inner: Handler, port: int = port) -> Handler:
            async def handle(req: Request) -> Response:
                req.context.endpoint = Endpoint("10.0.0.7", port)
                return await inner(req)

            return handle

        chain = compose(
            [telemetry.outbound_layer(), set_route, telemetry.attempt_layer(), set_endpoint],
            ScriptedUpstream([Response(200, body=b"ok")]),
        )
        request = Request(method, path, authority=authority, scheme=scheme, version=version)
        await chain(request)
        (span,) = spans(telemetry)
        assert list(span.attributes.items()) == [
            ("http.request.method", method),
            ("server.address", "10.0.0.7"),
            ("server.port", port),
            ("url.full", f"{scheme}://{authority}{path}"),
            ("network.protocol.version", version),
            ("meshlens.upstream", upstream_name),
            ("meshlens.route", route_name),
            ("meshlens.attempt", 1),
            ("http.response.status_code", 200),
        ]
        assert span.name == f"{method} {route_name}"


async def test_attempt_spans_with_and_without_a_template_encode_the_same() -> None:
    # The usual attempt span (first attempt, a response, nothing else set) carries its
    # attributes' template and the encoder writes the shared ones pre-encoded; every span
    # must decode to the same protobuf as when its attributes are encoded one by one.
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from sidecar.telemetry.otlp import TraceEncoder

    telemetry = make_telemetry()
    responses: list[Response | Exception] = [
        Response(200, body=b"ok"),
        Response(204, body=b""),
        Response(404, body=b"no"),  # error.type: no template
        UpstreamConnectError("refused"),  # an error, then a retry (resend count)
        Response(200, body=b"ok"),
        Response(201, body=b"ok"),
    ]
    handler = outbound(telemetry, ScriptedUpstream(responses))
    for _ in range(5):
        response = await handler(app_request())
        await body_bytes(response.body)
    recorded = spans(telemetry)
    client = [s for s in recorded if s.kind == KIND_CLIENT]
    templated = [s for s in client if s.template is not None]
    assert [s.attributes["http.response.status_code"] for s in templated] == [200, 204, 201]
    assert all(s.attributes["meshlens.attempt"] == 1 for s in templated)
    assert len(templated) < len(client)  # the 404, the reset and its retry have none
    plain = [s._replace(template=None) for s in recorded]
    for _round in range(2):  # (the second with the template's pieces already encoded)
        encoder = TraceEncoder([("service.name", "web")])
        with_template, without = encoder.encode(recorded), encoder.encode(plain)
        assert with_template == without
        fresh = TraceEncoder([("service.name", "web")]).encode(plain)
        assert with_template == fresh
        decoded, expected = ExportTraceServiceRequest(), ExportTraceServiceRequest()
        decoded.ParseFromString(with_template)
        expected.ParseFromString(fresh)
        assert decoded == expected
        (spans_out,) = [ss.spans for rs in decoded.resource_spans for ss in rs.scope_spans]
        assert [
            {kv.key: kv.value for kv in span.attributes}["url.full"].string_value
            for span in spans_out
            if span.kind == 3
        ] == [str(s.attributes["url.full"]) for s in client]
