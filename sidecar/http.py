"""Request/Response value types shared by every layer of the sidecar's handler stack.

Bodies are either fully buffered (`bytes`, replayable, so retryable) or a one-shot
`BodyStream` that the codec feeds from the socket; layers never read a stream they do
not own. Per-request mutable state (trace ids, chosen endpoint, attempt number, policy
decisions to put on the span) lives in one `RequestContext` shared by all layers.
"""

from __future__ import annotations

import asyncio
import heapq
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FunctionType
from typing import Any, Final

from sidecar.errors import BodyTooLarge
from sidecar.streams import BodyStream

__all__ = [
    "AttrValue",
    "Body",
    "BodyStream",
    "DeadlineQueue",
    "DeadlineTimer",
    "Endpoint",
    "Headers",
    "Request",
    "RequestContext",
    "Response",
    "Trailers",
    "header_name",
    "header_value",
    "new_context",
    "new_request",
    "new_response",
    "parse_digits",
    "read_body",
    "with_header",
    "without_headers",
]

# Header names are lower-case; order and duplicates are preserved.
Headers = tuple[tuple[str, str], ...]
AttrValue = str | int | float | bool


Body = bytes | BodyStream

_heappush: Final = heapq.heappush
_current_task: Final = asyncio.current_task
# Before 3.12, asyncio.current_task is a Python function: an interpreted frame per request on
# the otherwise compiled path (mypyc, uvloop, httptools). Its table is _asyncio's C dict of
# each loop's running task, read here directly; 3.12 has current_task in C.
_TASK_OF_LOOP: Final[dict[object, asyncio.Task[object]] | None] = (
    getattr(asyncio.tasks, "_current_tasks", None) if sys.version_info < (3, 12) else None
)
_get_ident: Final = threading.get_ident  # (pthread_self: no syscall)
_heappop: Final = heapq.heappop
_heapify: Final = heapq.heapify


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream instance: where to connect and how to describe it."""

    host: str
    port: int
    service: str = ""
    instance: str = ""
    weight: int = 1
    labels: tuple[tuple[str, str], ...] = ()
    identity: str = ""  # expected SPIFFE id when the mesh speaks mTLS to it
    # "host:port", built once (read per request: balancer, outlier detection, access log)
    address: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")
        object.__setattr__(self, "address", f"{self.host}:{self.port}")


class DeadlineTimer:
    """The one timer of a request's deadline (armed by layers/timeout.py at `deadline`).

    The HTTP/1.1 upstream waiting for response headers until that same deadline does not arm a
    second timer: it sets `expire` for the time of its wait. Firing, the timer lets `expire` fail
    that wait as the upstream's own timer would have (it returns True), then fires again a
    millisecond later, like the layer's separate timer did; otherwise it cancels the task
    (`fired`), which the timeout layer reports as the request's timeout.

    With a `queue` (a DeadlineQueue, one per timeout layer or fused route) it shares that
    queue's one loop timer instead of arming its own.
    """

    __slots__ = ("deadline", "entry", "expire", "fired", "handle", "queue", "task")

    def __init__(
        self, task: asyncio.Task[object], deadline: float, queue: DeadlineQueue | None = None
    ) -> None:
        self.task = task
        self.deadline = deadline
        self.fired = False
        self.expire: Callable[[], bool] | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.queue = queue
        self.entry = 0  # the queue entry (its sequence number) that fires it; 0: none

    def arm(self, delay_s: float) -> None:
        queue = self.queue
        if queue is not None and queue.add(self, delay_s):
            return
        # (the task's loop: get_running_loop() costs a getpid() syscall per call)
        self.handle = self.task.get_loop().call_later(delay_s, self)

    def cancel(self) -> None:
        self.expire = None
        if self.entry:
            self.entry = 0
            queue = self.queue
            assert queue is not None
            queue.cancelled()
        elif self.handle is not None:
            self.handle.cancel()

    def __call__(self) -> None:
        expire = self.expire
        if expire is not None:
            self.expire = None
            if expire():
                self.arm(0.001)
                return
        self.fired = True
        self.task.cancel()


class DeadlineQueue:
    """Deadline timers of one loop sharing one loop timer, armed at the earliest of them.

    A request's timer costs a heap push instead of a loop timer (call_later: a handle and a
    libuv timer armed, then cancelled); a cancelled entry stays in the heap until it is due or
    the cancelled ones outnumber the rest (then they are dropped). The loop timer fires when the
    earliest entry is due, exactly when that entry's own timer would have, and fires every entry
    due by then in deadline order. Timers of another loop than the queue's use their own.
    """

    __slots__ = ("_at", "_cancelled", "_handle", "_heap", "_loop", "_seq", "_thread_id")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = 0  # the thread that runs `_loop` (it armed the queue's timers)
        self._heap: list[tuple[float, int, DeadlineTimer]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0  # when the loop timer fires
        self._seq = 0
        self._cancelled = 0  # cancelled entries still in the heap

    def __len__(self) -> int:
        """Entries that will fire (not cancelled)."""
        return len(self._heap) - self._cancelled

    def add(self, timer: DeadlineTimer, delay_s: float) -> bool:
        """Fire `timer` in `delay_s`; False (nothing done) if it belongs to another loop."""
        loop = timer.task.get_loop()
        if loop is not self._loop:
            if len(self._heap) > self._cancelled:
                return False
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            self._loop = loop
            self._thread_id = _get_ident()
            self._heap.clear()
            self._cancelled = 0
        now = loop.time()
        when = now + delay_s
        self._seq += 1
        timer.entry = self._seq
        heap = self._heap
        _heappush(heap, (when, self._seq, timer))
        if self._handle is None or when < self._at:
            if self._handle is not None:
                self._handle.cancel()
            self._at = when
            self._handle = loop.call_later(delay_s, self._fire)
        return True

    def current_task(self) -> asyncio.Task[object] | None:
        """asyncio.current_task(), without its getpid() syscall per call when the running
        loop is the queue's: in the thread that runs that loop, the loop's current task is the
        running one (a loop has one only while it runs a step of one of its tasks). From
        another thread, the queue's loop may be mid-step there: asyncio's own answer."""
        loop = self._loop
        if loop is not None and _get_ident() == self._thread_id:
            tasks = _TASK_OF_LOOP
            task = tasks.get(loop) if tasks is not None else _current_task(loop)
            if task is not None:
                return task
        return _current_task()

    def cancelled(self) -> None:
        """One entry was cancelled (DeadlineTimer.cancel)."""
        self._cancelled += 1
        heap = self._heap
        if self._cancelled == len(heap):
            heap.clear()  # (the loop timer stays: re-armed if still needed when it fires)
            self._cancelled = 0
        elif self._cancelled > 64 and self._cancelled * 2 > len(heap):
            live = [entry for entry in heap if entry[2].entry == entry[1]]
            _heapify(live)
            self._heap = live
            self._cancelled = 0

    def _fire(self) -> None:
        self._handle = None
        loop = self._loop
        assert loop is not None
        heap = self._heap
        due: list[tuple[float, int, DeadlineTimer]] = []
        limit = max(self._at, loop.time())
        while heap and heap[0][0] <= limit:
            entry = _heappop(heap)
            if entry[2].entry == entry[1]:
                due.append(entry)
            else:
                self._cancelled -= 1
        if heap:
            when = heap[0][0]
            self._at = when
            self._handle = loop.call_later(when - loop.time(), self._fire)
        for _when, seq, timer in due:
            if timer.entry == seq:  # (not cancelled meanwhile)
                timer.entry = 0
                timer()


@dataclass(slots=True, init=False)
class RequestContext:
    """Mutable per-request state shared by the layers of one stack invocation.

    Layers write only their own fields; `attributes` collects policy decisions that the
    telemetry layer puts on the span (e.g. `meshlens.retry.reason`).
    """

    direction: str = "outbound"  # outbound | inbound
    request_id: str = ""
    downstream_addr: str = ""
    peer_identity: str = ""  # verified SPIFFE id of the caller (inbound, mTLS)
    subject: str = ""  # verified end-user JWT `sub` (inbound, layers/jwt.py)
    claims: dict[str, object] = field(default_factory=dict)  # verified JWT claims, for authz
    original_dst: str = ""  # "ip:port" before an iptables REDIRECT (transparent capture)
    captured_authority: str = ""  # the app's own authority when capture routed by original_dst
    route: str = ""
    upstream: str = ""  # the service (cluster) the request goes to
    endpoint: Endpoint | None = None  # chosen by the balancer, per attempt
    attempt: int = 1
    previous_endpoints: list[Endpoint] = field(default_factory=list)
    deadline: float | None = None  # monotonic clock deadline covering all attempts
    deadline_timer: DeadlineTimer | None = None  # the timer at `deadline` (layers/timeout.py)
    connect_timeout_s: float = 5.0  # set by the balancer from the upstream's config
    idle_timeout_s: float | None = None  # max gap between body chunks (timeout layer sets it)
    trace_id: bytes = b""
    parent_span_id: bytes = b""
    trace_flags: int = 1
    tracestate: str = ""
    attributes: dict[str, AttrValue] = field(default_factory=dict)
    # A final whole response can go downstream the moment it arrives, before the layers' own
    # work on it (sidecar/upstream.py): `write_final` is set by the HTTP/1.1 codec for a request
    # it can answer so (and cleared once used), `final` by a fused route around its first
    # attempt (True: no layer will replace that response). Neither is set otherwise, nor taken
    # by the constructor (a copy made by dataclasses.replace has neither).
    write_final: Callable[[RequestContext, Response], None] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    final: Callable[[Response], bool] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __init__(
        self,
        direction: str = "outbound",
        request_id: str = "",
        downstream_addr: str = "",
        peer_identity: str = "",
        subject: str = "",
        claims: dict[str, object] | None = None,
        original_dst: str = "",
        captured_authority: str = "",
        route: str = "",
        upstream: str = "",
        endpoint: Endpoint | None = None,
        attempt: int = 1,
        previous_endpoints: list[Endpoint] | None = None,
        deadline: float | None = None,
        deadline_timer: DeadlineTimer | None = None,
        connect_timeout_s: float = 5.0,
        idle_timeout_s: float | None = None,
        trace_id: bytes = b"",
        parent_span_id: bytes = b"",
        trace_flags: int = 1,
        tracestate: str = "",
        attributes: dict[str, AttrValue] | None = None,
    ) -> None:
        """The fields in order (`claims`, `previous_endpoints`, `attributes`: new empty ones
        when None or left out).

        Written out, not the dataclass's own __init__: compiled by mypyc this one is native,
        so `RequestContext(...)` from compiled code is a direct call (the generated __init__
        is an interpreted function, ~8k instructions for the 22 fields)."""
        self.direction = direction
        self.request_id = request_id
        self.downstream_addr = downstream_addr
        self.peer_identity = peer_identity
        self.subject = subject
        self.claims = {} if claims is None else claims
        self.original_dst = original_dst
        self.captured_authority = captured_authority
        self.route = route
        self.upstream = upstream
        self.endpoint = endpoint
        self.attempt = attempt
        self.previous_endpoints = [] if previous_endpoints is None else previous_endpoints
        self.deadline = deadline
        self.deadline_timer = deadline_timer
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.trace_id = trace_id
        self.parent_span_id = parent_span_id
        self.trace_flags = trace_flags
        self.tracestate = tracestate
        self.attributes = {} if attributes is None else attributes
        self.write_final = None
        self.final = None


@dataclass(frozen=True, slots=True, init=False)
class Request:
    """An HTTP request as the layers see it; `target` is origin-form (path and query)."""

    method: str
    target: str = "/"
    headers: Headers = ()
    body: Body = b""
    authority: str = ""  # host[:port] or service name this request is for
    scheme: str = "http"
    version: str = "1.1"
    context: RequestContext = field(default_factory=RequestContext)

    def __init__(
        self,
        method: str,
        target: str = "/",
        headers: Headers = (),
        body: Body = b"",
        authority: str = "",
        scheme: str = "http",
        version: str = "1.1",
        context: RequestContext | None = None,
    ) -> None:
        """The fields in order (`context`: a new RequestContext when None or left out).

        Written out, not the dataclass's own __init__: compiled by mypyc this one is native,
        so `Request(...)` from compiled code is a direct call writing the slots (the generated
        __init__ is a Python function setting each field through object.__setattr__)."""
        if context is None:
            context = RequestContext()
        if _COMPILED:
            # Compiled, direct writes into the object's slots; assignment from Python code
            # still raises FrozenInstanceError. Interpreted, they would raise too.
            self.method = method  # type: ignore[misc]
            self.target = target  # type: ignore[misc]
            self.headers = headers  # type: ignore[misc]
            self.body = body  # type: ignore[misc]
            self.authority = authority  # type: ignore[misc]
            self.scheme = scheme  # type: ignore[misc]
            self.version = version  # type: ignore[misc]
            self.context = context  # type: ignore[misc]
            return
        put = object.__setattr__
        put(self, "method", method)
        put(self, "target", target)
        put(self, "headers", headers)
        put(self, "body", body)
        put(self, "authority", authority)
        put(self, "scheme", scheme)
        put(self, "version", version)
        put(self, "context", context)

    @property
    def path(self) -> str:
        """The target without its query string."""
        q = self.target.find("?")
        return self.target if q < 0 else self.target[:q]

    @property
    def replayable(self) -> bool:
        """True when the body is buffered, so the request may be sent again."""
        return isinstance(self.body, bytes)

    def with_headers(self, headers: Headers) -> Request:
        """This request with other headers (same context); for layers that rewrite headers."""
        # Not dataclasses.replace (~2 us) nor Request(...): see new_request.
        return new_request(
            self.method,
            self.target,
            headers,
            self.body,
            self.authority,
            self.scheme,
            self.version,
            self.context,
        )


def _compiled() -> bool:
    """True when this module runs compiled by mypyc (its functions are then native)."""
    return not isinstance(_compiled, FunctionType)


_COMPILED: Final = _compiled()


def new_context(
    direction: str, request_id: str, downstream_addr: str, peer_identity: str, original_dst: str
) -> RequestContext:
    """RequestContext(...) with these fields (the rest default), for the per-request path
    (compiled: a direct call of its native __init__)."""
    return RequestContext(
        direction=direction,
        request_id=request_id,
        downstream_addr=downstream_addr,
        peer_identity=peer_identity,
        original_dst=original_dst,
    )


def new_request(
    method: str,
    target: str,
    headers: Headers,
    body: Body,
    authority: str,
    scheme: str,
    version: str,
    context: RequestContext,
) -> Request:
    """Request(...) with every field given, for the per-request path; the same frozen object
    (compiled by mypyc, sidecar/_native.py, Request's written-out __init__ is native and this
    is a direct call)."""
    return Request(method, target, headers, body, authority, scheme, version, context)


class Trailers:
    """Trailer fields (HTTP/2, gRPC) that follow a body; the producer sets them at its end.

    A one-shot holder like a `BodyStream`: `fields` is () until `set()`, and is final once
    the body's `read()` has returned b"". Layers that rebuild a Response keep the same holder.
    """

    __slots__ = ("_fields", "_set")

    def __init__(self, fields: Headers | None = None) -> None:
        self._fields: Headers = fields or ()
        self._set = fields is not None

    @property
    def fields(self) -> Headers:
        return self._fields

    @property
    def received(self) -> bool:
        """True once the producer has set the trailers (possibly empty)."""
        return self._set

    def set(self, fields: Headers) -> None:
        self._fields = fields
        self._set = True

    def __repr__(self) -> str:
        return f"Trailers({self._fields!r})"


@dataclass(frozen=True, slots=True, init=False)
class Response:
    """An HTTP response as the layers see it (`trailers` only when the protocol carries them)."""

    status: int
    headers: Headers = ()
    body: Body = b""
    reason: str = ""
    trailers: Trailers | None = None

    def __init__(
        self,
        status: int,
        headers: Headers = (),
        body: Body = b"",
        reason: str = "",
        trailers: Trailers | None = None,
    ) -> None:
        """The fields in order; ValueError unless `status` has 3 digits.

        Written out, not the dataclass's own __init__: compiled by mypyc this one is native,
        so `Response(...)` from compiled code is a direct call (as Request's)."""
        if not 100 <= status <= 999:
            raise ValueError(f"status must be a 3-digit code, got {status}")
        if _COMPILED:  # direct slot writes (Python code assigning still raises)
            self.status = status  # type: ignore[misc]
            self.headers = headers  # type: ignore[misc]
            self.body = body  # type: ignore[misc]
            self.reason = reason  # type: ignore[misc]
            self.trailers = trailers  # type: ignore[misc]
            return
        put = object.__setattr__
        put(self, "status", status)
        put(self, "headers", headers)
        put(self, "body", body)
        put(self, "reason", reason)
        put(self, "trailers", trailers)


def new_response(
    status: int, headers: Headers, body: Body, reason: str = "", trailers: Trailers | None = None
) -> Response:
    """Response(...) for the per-request path (the reason is new_request's); same validation
    (compiled, a direct call of Response's native __init__)."""
    return Response(status, headers, body, reason, trailers)


_HEADER_NAMES: Final[dict[bytes, str]] = {}
_HEADER_NAMES_MAX: Final = 256


def header_name(raw: bytes) -> str:
    """The lower-case str of a header name as received (latin-1); the first 256 distinct names
    are cached, so the usual few are not decoded and lowered again on every message."""
    name = _HEADER_NAMES.get(raw)
    if name is None:
        name = raw.decode("latin-1").lower()
        if len(_HEADER_NAMES) < _HEADER_NAMES_MAX:
            _HEADER_NAMES[raw] = name
    return name


FastRequest = Callable[
    [bytes, int, int], tuple[int, str, bytes, str, list[tuple[str, str]], bool, bytes] | None
]
FastResponse = Callable[[bytes, int], tuple[int, list[tuple[str, str]], bytes, bool] | None]


HeadBytes = Callable[[str, Iterable[tuple[str, str]], frozenset[str], str], bytes]
Traceparent = Callable[[bytes, bytes, int], str]
Uuid4Text = Callable[[bytes], str]
EncodeSpans = Callable[[bytes, bytes, list[Any]], bytes | None]


def _head_bytes(
    first: str, headers: Iterable[tuple[str, str]], skip: frozenset[str], tail: str
) -> bytes:
    """`first`, then a `name: value` line for each header whose name is not in `skip`, then
    `tail`, encoded latin-1 ('?' for a character it lacks). sidecar/_h1fast.c's head_bytes does
    the same in one allocation (compiled mode; tests/unit/sidecar/test_h1fast.py compares)."""
    # pieces appended and joined once: an f-string per line is a string built (and freed) each
    lines = [first]
    for name, value in headers:
        if name not in skip:
            lines.append(name)
            lines.append(": ")
            lines.append(value)
            lines.append("\r\n")
    lines.append(tail)
    return "".join(lines).encode("latin-1", "replace")


def _native() -> tuple[
    FastRequest | None,
    FastResponse | None,
    HeadBytes,
    Traceparent | None,
    Uuid4Text | None,
    EncodeSpans | None,
]:
    """sidecar/_h1fast.c's functions in compiled mode (served from build/native with the
    compiled modules): the one-call parsers of the common messages, which the codec and the
    pool use ahead of httptools, falling back to it; the head serialiser; the text of the ids
    every request carries (its traceparent, its x-request-id); the OTLP encoding of a span
    batch. In pure-Python mode httptools parses every message and the rest is the same in
    Python: here (_head_bytes), in sidecar/telemetry/context.py, sidecar/codec.py and
    sidecar/telemetry/otlp.py (tests/unit/sidecar/test_h1fast.py compares each pair)."""
    try:
        from sidecar import _h1fast
    except ImportError:
        return None, None, _head_bytes, None, None, None
    return (
        _h1fast.parse_request,
        _h1fast.parse_response,
        _h1fast.head_bytes,
        _h1fast.traceparent,
        _h1fast.uuid4_text,
        _h1fast.encode_spans,
    )


_C: Final = _native()
FAST_REQUEST: Final = _C[0]
FAST_RESPONSE: Final = _C[1]
head_bytes: Final = _C[2]
FAST_TRACEPARENT: Final = _C[3]
FAST_UUID4_TEXT: Final = _C[4]
FAST_ENCODE_SPANS: Final = _C[5]


def parse_digits(text: str, max_digits: int = 15) -> int | None:
    """`text` as a number when it is 1 to `max_digits` ASCII digits, else None. (str.isdigit
    also takes '\u00b2' and other scripts' digits, which int() refuses, and int() of 4,300
    digits or more raises: from a header, either was a 500 and a logged traceback.)"""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def header_value(headers: Headers, name: str) -> str | None:
    """The first value of header `name` (lower-case), or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


def with_header(headers: Headers, name: str, value: str) -> Headers:
    """`headers` with every `name` replaced by one `name: value`."""
    return (*((k, v) for k, v in headers if k != name), (name, value))


def without_headers(headers: Headers, names: Iterable[str]) -> Headers:
    """`headers` minus every header whose lower-case name is in `names`."""
    drop = frozenset(names)
    return tuple((k, v) for k, v in headers if k not in drop)


async def read_body(body: Body, limit_bytes: int, what: str = "body") -> bytes:
    """The whole of `body`; BodyTooLarge once a stream passes `limit_bytes` (never held whole)."""
    if isinstance(body, bytes):
        return body
    chunks: list[bytes] = []
    size = 0
    while chunk := await body.read():
        size += len(chunk)
        if size > limit_bytes:
            raise BodyTooLarge(f"{what} larger than {limit_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
