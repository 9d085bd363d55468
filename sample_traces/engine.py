"""A tiny deterministic simulation on top of the real OpenTelemetry Python SDK.

Scenarios describe what services do (serve a request, call a peer, query a table, publish and
consume messages) on a timeline in milliseconds; this module turns that into real SDK spans:
one `TracerProvider` per (service, version) with its own Resource, seeded ids, W3C trace
context injected into and extracted from message and request headers, explicit start/end
timestamps, and per-service clock offsets added to every timestamp that service records.

Assumption: everything a scenario does is decided by `Sim.rng` and `Sim.ids`, both seeded,
so the same seed gives byte-identical spans.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from choreoscope.collector import semconv as sc

NEW = "new"
OLD = "old"

# Attribute names by convention generation, taken from the semconv tuples (newest first).
NAMES = {
    NEW: {
        "msg_system": sc.MESSAGING_SYSTEM[0],
        "msg_dest": sc.MESSAGING_DESTINATION[0],          # messaging.destination.name
        "msg_op": sc.MESSAGING_OPERATION[0],              # messaging.operation.type
        "msg_id": sc.MESSAGING_MESSAGE_ID[0],             # messaging.message.id
        "msg_group": sc.MESSAGING_CONSUMER_GROUP[0],      # messaging.consumer.group.name
        "db_system": sc.DB_SYSTEM[0],                     # db.system.name
        "db_collection": sc.DB_COLLECTION[0],             # db.collection.name
        "db_op": sc.DB_OPERATION[0],                      # db.operation.name
        "http_method": sc.HTTP_METHOD[0],                 # http.request.method
        "http_status": sc.HTTP_STATUS_CODE[0],            # http.response.status_code
        "url": sc.HTTP_URL[0],                            # url.full
        "path": sc.HTTP_URL[3],                           # url.path
        "server": sc.SERVER_ADDRESS[0],                   # server.address
        "route": sc.HTTP_ROUTE[0],
        "msg_retry": sc.RETRY_ATTEMPT[0],                 # messaging.retry.attempt
        "http_retry": sc.RETRY_ATTEMPT[1],                # http.request.resend_count
    },
    OLD: {
        "msg_system": sc.MESSAGING_SYSTEM[0],
        "msg_dest": sc.MESSAGING_DESTINATION[1],          # messaging.destination
        "msg_op": sc.MESSAGING_OPERATION[1],              # messaging.operation
        "msg_id": sc.MESSAGING_MESSAGE_ID[1],             # messaging.message_id
        "msg_group": sc.MESSAGING_CONSUMER_GROUP[2],      # messaging.kafka.consumer.group
        "db_system": sc.DB_SYSTEM[1],                     # db.system
        "db_collection": sc.DB_COLLECTION[1],             # db.sql.table
        "db_op": sc.DB_OPERATION[1],                      # db.operation
        "http_method": sc.HTTP_METHOD[1],                 # http.method
        "http_status": sc.HTTP_STATUS_CODE[1],            # http.status_code
        "url": sc.HTTP_URL[1],                            # http.url
        "path": sc.HTTP_URL[2],                           # http.target
        "server": sc.SERVER_ADDRESS[1],                   # net.peer.name
        "route": sc.HTTP_ROUTE[0],
        "msg_retry": sc.RETRY_ATTEMPT[0],
        "http_retry": sc.RETRY_ATTEMPT[1],
    },
}
# Operation values: the old conventions said publish/receive, the current ones send/receive/process.
OP_VALUES = {NEW: {"send": "send", "receive": "receive", "process": "process"},
             OLD: {"send": "publish", "receive": "receive", "process": "process"}}

DEFAULT_BASE_TIME_NS = 1_736_931_600_000_000_000  # 2025-01-15T09:00:00Z
SCOPE_NAME = "choreoscope.sample_traces"
SCOPE_VERSION = "1.0.0"
_PROPAGATOR = TraceContextTextMapPropagator()


class SeededIdGenerator(IdGenerator):
    """Trace and span ids from a seeded `random.Random`, so reruns give identical ids."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def generate_span_id(self) -> int:
        value = 0
        while value == trace.INVALID_SPAN_ID:
            value = self.rng.getrandbits(64)
        return value

    def generate_trace_id(self) -> int:
        value = 0
        while value == trace.INVALID_TRACE_ID:
            value = self.rng.getrandbits(128)
        return value

    def is_trace_id_random(self) -> bool:
        return True


class _KeepOpenExporter(SpanExporter):
    """Forwards to the caller's exporter but leaves shutting it down to the caller."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans) -> SpanExportResult:
        return self.inner.export(spans)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        pass


class ServiceError(Exception):
    """The exception recorded on failed spans (its class name is the exception.type)."""


@dataclass
class Message:
    """A message on the broker: what a producer sent and what a consumer can see."""

    destination: str
    message_id: str
    headers: dict
    system: str
    sent_ms: float          # true time the producer finished sending
    attributes: dict = field(default_factory=dict)


class Sim:
    """One scenario run: services, seeded randomness, the shared span processor."""

    def __init__(self, exporter: SpanExporter, seed: int, base_time_ns: int,
                 clock_offsets_ms: dict[str, float], namespace: str, batch: bool = False) -> None:
        # Ids seeded per scenario too: dumps of different scenarios must not share span ids,
        # or loading them into one store would drop spans as duplicates.
        self.ids = SeededIdGenerator(random.Random(f"choreoscope-ids-{namespace}-{seed}"))
        self.rng = random.Random(f"choreoscope-behaviour-{seed}")
        self.base_time_ns = base_time_ns
        self.clock_offsets_ms = dict(clock_offsets_ms)
        self.namespace = namespace
        shared = _KeepOpenExporter(exporter)
        self.processor = BatchSpanProcessor(shared) if batch else SimpleSpanProcessor(shared)
        self._services: dict[tuple[str, str], Service] = {}

    def service(self, name: str, version: str, conventions: str = NEW) -> Service:
        """The service `name` at `version` (one TracerProvider each, sharing the id generator)."""
        key = (name, version)
        if key not in self._services:
            resource = Resource({
                sc.SERVICE_NAME: name,
                sc.SERVICE_VERSION: version,
                sc.SERVICE_NAMESPACE: self.namespace,
                sc.SERVICE_INSTANCE_ID: f"{name}-0",
            })
            provider = TracerProvider(resource=resource, id_generator=self.ids)
            provider.add_span_processor(self.processor)
            tracer = provider.get_tracer(SCOPE_NAME, SCOPE_VERSION)
            offset_ns = round(self.clock_offsets_ms.get(name, 0.0) * 1e6)
            self._services[key] = Service(self, name, version, conventions, tracer, offset_ns)
        return self._services[key]

    def message_id(self) -> str:
        """A deterministic UUID-shaped message id."""
        v = self.rng.getrandbits(128)
        h = f"{v:032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"

    def finish(self) -> None:
        """Flush every span to the exporter (the exporter itself stays open)."""
        self.processor.force_flush()
        self.processor.shutdown()


class Service:
    """One instrumented service: starts spans on its own (possibly skewed) clock."""

    def __init__(self, sim: Sim, name: str, version: str, conventions: str, tracer, offset_ns: int) -> None:
        self.sim = sim
        self.name = name
        self.version = version
        self.conventions = conventions
        self.n = NAMES[conventions]
        self.ops = OP_VALUES[conventions]
        self.tracer = tracer
        self.offset_ns = offset_ns

    def ns(self, ms: float) -> int:
        """Timestamp on this service's clock for true time `ms` after the base time."""
        return self.sim.base_time_ns + round(ms * 1e6) + self.offset_ns

    def start(self, name: str, kind: SpanKind, at: float, parent: Context | None = None,
              attrs: dict | None = None, links: list[Link] | None = None) -> Op:
        span = self.tracer.start_span(
            name, context=parent if parent is not None else Context(), kind=kind,
            attributes=attrs or {}, links=links or (), start_time=self.ns(at),
        )
        return Op(self, span, at)

    # --- entry points -------------------------------------------------------------------
    def serve(self, method: str, route: str, path: str, at: float, headers: dict | None = None) -> Op:
        """An HTTP SERVER span; continues the trace in `headers` if there is one."""
        n = self.n
        parent = _PROPAGATOR.extract(headers) if headers else None
        op = self.start(f"{method} {route}", SpanKind.SERVER, at, parent, {
            n["http_method"]: method, n["route"]: route, n["path"]: path,
        })
        op.http = True
        return op

    def consume(self, msg: Message, at: float, mode: str = "child", attempt: int | None = None) -> Op:
        """A CONSUMER span for `msg`.

        mode: "child" continues the producer's trace (process), "link" starts a new trace linked
        to the producer (a batch receive), "none" has neither (headers lost on the way).
        """
        n, ops = self.n, self.ops
        attrs = {
            n["msg_system"]: msg.system, n["msg_dest"]: msg.destination, n["msg_id"]: msg.message_id,
            n["msg_group"]: self.name,
        }
        producer_ctx = _PROPAGATOR.extract(msg.headers) if msg.headers else None
        parent, links = None, None
        if mode == "child":
            attrs[n["msg_op"]] = ops["process"]
            parent = producer_ctx
            name = f"process {msg.destination}" if self.conventions == NEW else f"{msg.destination} process"
        else:
            attrs[n["msg_op"]] = ops["receive"]
            name = f"receive {msg.destination}" if self.conventions == NEW else f"{msg.destination} receive"
            if mode == "link" and producer_ctx is not None:
                links = [Link(trace.get_current_span(producer_ctx).get_span_context())]
        if attempt:
            attrs[n["msg_retry"]] = attempt
        return self.start(name, SpanKind.CONSUMER, at, parent, attrs, links)


class Op:
    """A started span plus a cursor (true ms) for the work done inside it."""

    def __init__(self, service: Service, span, at: float) -> None:
        self.service = service
        self.span = span
        self.start_ms = at
        self.t = at
        self.http = False

    @property
    def ctx(self) -> Context:
        return trace.set_span_in_context(self.span)

    def work(self, ms: float) -> Op:
        self.t += ms
        return self

    def child(self, name: str, ms: float, attrs: dict | None = None) -> Op:
        """An INTERNAL child span of `ms` duration at the cursor; returns self."""
        op = self.service.start(name, SpanKind.INTERNAL, self.t, self.ctx, attrs)
        op.t += ms
        op.finish()
        self.t = op.t
        return self

    def db(self, operation: str, collection: str, ms: float, system: str = "postgresql",
           error: str | None = None) -> Op:
        """A database CLIENT span on `collection` (a table, a collection); returns self to chain."""
        n = self.service.n
        op = self.service.start(f"{operation} {collection}", SpanKind.CLIENT, self.t, self.ctx, {
            n["db_system"]: system, n["db_collection"]: collection, n["db_op"]: operation,
        })
        op.t += ms
        op.finish(error=error)
        self.t = op.t
        return self

    def publish(self, destination: str, attrs: dict | None = None, ms: float = 1.5,
                propagate: bool = True, system: str = "kafka") -> Message:
        """A PRODUCER span sending one message; `propagate=False` leaves the headers empty."""
        svc = self.service
        n = svc.n
        message_id = svc.sim.message_id()
        name = f"send {destination}" if svc.conventions == NEW else f"{destination} publish"
        span_attrs = {n["msg_system"]: system, n["msg_dest"]: destination, n["msg_op"]: svc.ops["send"],
                      n["msg_id"]: message_id}
        span_attrs.update(attrs or {})
        op = svc.start(name, SpanKind.PRODUCER, self.t, self.ctx, span_attrs)
        headers: dict = {}
        if propagate:
            _PROPAGATOR.inject(headers, context=op.ctx)
        op.t += ms
        op.finish()
        self.t = op.t
        return Message(destination, message_id, headers, system, op.t, dict(attrs or {}))

    def call(self, callee: Service, method: str, route: str, path: str, net_ms: float = 0.8,
             attempt: int | None = None) -> Call:
        """Start a synchronous HTTP call: a CLIENT span here, the SERVER span in `callee`."""
        svc = self.service
        n = svc.n
        attrs = {n["http_method"]: method, n["url"]: f"http://{callee.name}{path}", n["server"]: callee.name}
        if attempt:
            attrs[n["http_retry"]] = attempt
        client = svc.start(f"{method}", SpanKind.CLIENT, self.t, self.ctx, attrs)
        client.http = True
        headers: dict = {}
        _PROPAGATOR.inject(headers, context=client.ctx)
        server = callee.serve(method, route, path, self.t + net_ms, headers)
        return Call(self, client, server, net_ms)

    def call_external(self, address: str, method: str, path: str, ms: float, status: int = 200) -> Op:
        """A CLIENT call to an uninstrumented peer (no server span will ever appear); returns self."""
        n = self.service.n
        op = self.service.start(method, SpanKind.CLIENT, self.t, self.ctx, {
            n["http_method"]: method, n["url"]: f"https://{address}{path}", n["server"]: address,
        })
        op.http = True
        op.t += ms
        op.finish(status=status)
        self.t = op.t
        return self

    def finish(self, status: int | None = None, error: str | None = None) -> Op:
        """End the span at the cursor; `error` sets status ERROR and records an exception event."""
        if self.http:
            self.span.set_attribute(self.service.n["http_status"], status or (500 if error else 200))
        if error or (status is not None and status >= 500):
            message = error or f"HTTP {status}"
            self.span.record_exception(ServiceError(message), timestamp=self.service.ns(self.t))
            self.span.set_status(Status(StatusCode.ERROR, message))
        self.span.end(end_time=self.service.ns(self.t))
        return self


class Call:
    """An HTTP call in flight: do the callee's work on `server`, then `done()`."""

    def __init__(self, caller: Op, client: Op, server: Op, net_ms: float) -> None:
        self.caller, self.client, self.server, self.net_ms = caller, client, server, net_ms

    def done(self, status: int = 200, error: str | None = None) -> int:
        """End the server span at its cursor and the client span a network hop later."""
        self.server.finish(status=status, error=error)
        self.client.t = self.server.t + self.net_ms
        self.client.finish(status=status, error=error)
        self.caller.t = self.client.t
        return status
