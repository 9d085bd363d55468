"""Generate the food_delivery_404 scenario: a food-delivery platform traced with the OpenTelemetry Python SDK.

    python sample_traces/independent/food_delivery_404/generate.py [--seed 404] [--instances 160]
                                                                   [--races N] [--out FILE]

Every span is made by the SDK API: one TracerProvider + Resource per service *and version*, the SDK's own
random W3C ids (seeded through `random.seed`), W3C TraceContext injected into and extracted from Kafka /
RabbitMQ message headers and HTTP headers by the real propagator. Spans are finished into an in-memory
exporter and written as the Collector file exporter writes: one OTLP ExportTraceServiceRequest as JSON per
line (built by the OTLP exporter's own encoder, the JSON by `sample_traces/captures/otlp_sink.py`), gzipped
with mtime 0. Time is a simulated clock (nanoseconds from a fixed epoch); courier-dispatch's host clock
runs 40 ms ahead. The same --seed gives the same bytes.

The system (README.md has the picture and what was planted):

  POST /orders (order-api) -> order.placed (Kafka), order.audit (Kafka)
      kitchen            INSERT kitchen_tickets; send kitchen.ticket-events (ticket.accepted: full,
                         ticket.delayed: ids only)
      courier-dispatch   "find nearby couriers"; GET kitchen /tickets/{order_id}: 404 when kitchen's consumer
                         is late (a few % of orders) -> the handler fails, the offset is not committed and the
                         same message is polled again after a back-off          (implicit ordering through an API)
                         quote.request (RabbitMQ exchange pricing) -> pricing -> reply on an amq.gen-* queue
                         send dispatch.route-planned (Kafka, nobody subscribes); courier.assigned (RabbitMQ
                         exchange delivery, routing key courier.assigned)
      promo-engine       consumes order.placed 1.5 s late (cancellation grace window), always after kitchen
      audit-log          batch consumer of order.audit: new traces with span links
      customer-notify    kitchen.ticket-events: calls kitchen back only for ticket.delayed; courier.assigned:
                         calls courier-profiles (not the producer)
  POST /deliveries/{delivery_id}/complete (courier-gateway) -> delivery.completed (RabbitMQ exchange delivery)
      billing            PSP charge with exponential back-off on 503 (retry loop)
      ratings            context not extracted (message id only); pages through courier-profiles' reviews
  courier.gps-pings (Kafka, written by an uninstrumented MQTT bridge) -> tracking (orphan)
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "captures"))
from otlp_sink import request_to_json_line  # the capture sink's OTLP -> JSON line encoding

EPOCH_NS = 1_796_212_800 * 10**9  # 2026-12-02T12:00:00Z
MS = 1_000_000
SEC = 1000 * MS
PROPAGATOR = TraceContextTextMapPropagator()
KAFKA = ("kafka-0.delivery.internal", 9092)
RABBIT = ("rabbitmq.delivery.internal", 5672)
EXPORT_WINDOW_NS = 5 * SEC  # BatchSpanProcessor's default schedule delay
EXPORT_BATCH = 512          # ... and its default max export batch size
PARTITIONS = 8
REPLY_QUEUE = "amq.gen-Xq3vR9kLm2Tb7YwZ1aFc0g"  # courier-dispatch's exclusive, server-named reply queue
AUDIT_POLL_NS = 5 * SEC

# (service, version) -> (semantic-convention generation, host). "old": messaging.destination, db.statement,
# http.method, net.peer.name; "new": messaging.destination.name, db.query.text, http.request.method, server.address.
VERSIONS = {
    ("order-api", "3.4.0"): ("old", "order-api-5c7d9-k2m4p"),
    ("order-api", "3.5.0"): ("new", "order-api-6f1a2-r8t3w"),
    ("kitchen", "2.2.1"): ("old", "kitchen-7b4c1-q9z2x"),
    ("courier-dispatch", "1.8.0"): ("new", "courier-dispatch-84d2e-h5n7c"),
    ("pricing", "0.9.4"): ("old", "pricing-59a3f-d4v8b"),
    ("promo-engine", "4.0.0"): ("new", "promo-engine-6e2b7-w3k9s"),
    ("audit-log", "1.1.0"): ("new", "audit-log-0-statefulset"),
    ("customer-notify", "5.3.2"): ("new", "customer-notify-7c8d4-m2p6j"),
    ("courier-profiles", "2.0.1"): ("old", "courier-profiles-5d6e3-t7r1y"),
    ("courier-gateway", "1.5.0"): ("new", "courier-gateway-8a9b2-x4c5v"),
    ("billing", "6.0.2"): ("old", "billing-6b3c8-g1h2k"),
    ("ratings", "1.0.3"): ("old", "ratings-4f5a6-n8b9m"),
    ("tracking", "3.1.0"): ("old", "tracking-7d2e9-s3f4l"),
}
CLOCK_OFFSET_NS = {"courier-dispatch": 40 * MS}  # its host's clock is 40 ms ahead (all its spans)
DATABASES = {  # service -> (db system, database, server)
    "order-api": ("postgresql", "orders", "pg-orders.delivery.internal"),
    "kitchen": ("postgresql", "kitchen", "pg-kitchen.delivery.internal"),
    "courier-dispatch": ("postgresql", "dispatch", "pg-dispatch.delivery.internal"),
    "pricing": ("postgresql", "pricing", "pg-pricing.delivery.internal"),
    "promo-engine": ("postgresql", "promo", "pg-promo.delivery.internal"),
    "audit-log": ("clickhouse", "audit", "clickhouse.delivery.internal"),
    "customer-notify": ("postgresql", "notify", "pg-notify.delivery.internal"),
    "courier-profiles": ("postgresql", "couriers", "pg-couriers.delivery.internal"),
    "courier-gateway": ("postgresql", "deliveries", "pg-deliveries.delivery.internal"),
    "billing": ("mysql", "billing", "mysql-billing.delivery.internal"),
    "ratings": ("postgresql", "ratings", "pg-ratings.delivery.internal"),
    "tracking": ("postgresql", "tracking", "pg-tracking.delivery.internal"),
}
HOSTS = {  # internal HTTP servers
    "kitchen": ("kitchen.delivery.internal", 8080),
    "courier-profiles": ("courier-profiles.delivery.internal", 8080),
}


class TicketNotFound(RuntimeError):
    """courier-dispatch's error when kitchen has no ticket for the order yet (404)."""


TicketNotFound.__module__ = "dispatch.clients.kitchen"


@dataclass
class Message:
    dest: str          # Kafka topic / RabbitMQ exchange ("" = the default exchange)
    system: str
    msg_id: str
    key: str           # Kafka key / RabbitMQ routing key
    headers: dict
    body_size: int
    available: int     # true ns when a consumer can have it
    ce_type: str = ""
    partition: int = 0
    offset: int = 0

    @property
    def name(self) -> str:
        """The destination name the semantic conventions give: the topic, the exchange, or - on the default
        exchange - the routing key (the queue)."""
        return self.dest or self.key


@dataclass
class World:
    rng: random.Random
    providers: dict = field(default_factory=dict)
    exporters: dict = field(default_factory=dict)
    offsets: dict = field(default_factory=lambda: defaultdict(int))

    # ------------------------------------------------------------------ providers, clocks, styles
    def tracer(self, svc: str, ver: str, scope: str) -> trace.Tracer:
        key = (svc, ver)
        if key not in self.providers:
            style, host = VERSIONS[key]
            env_key = "deployment.environment" if style == "old" else "deployment.environment.name"
            resource = Resource.create({
                "service.name": svc, "service.version": ver, "service.namespace": "delivery",
                "service.instance.id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                env_key: "production", "host.name": host, "k8s.namespace.name": "delivery",
                "process.runtime.name": "cpython", "process.runtime.version": "3.10.14" if style == "old" else "3.12.7",
            })
            exporter = InMemorySpanExporter()
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            self.providers[key], self.exporters[key] = provider, exporter
        return self.providers[key].get_tracer(f"delivery.{scope}", "1.0.0")

    @staticmethod
    def old(svc: str, ver: str) -> bool:
        return VERSIONS[(svc, ver)][0] == "old"

    @staticmethod
    def at(svc: str, t: int) -> int:
        """A true time as the service's host clock records it."""
        return t + CLOCK_OFFSET_NS.get(svc, 0)

    def start(self, svc: str, ver: str, scope: str, name: str, t: int, kind: SpanKind, context, attrs: dict,
              links: list | None = None) -> trace.Span:
        return self.tracer(svc, ver, scope).start_span(name, context=context, kind=kind, start_time=self.at(svc, t),
                                                       attributes=attrs, links=links)

    def end(self, span: trace.Span, t: int) -> int:
        span.end(end_time=self.at(span.resource.attributes["service.name"], t))
        return t

    def fail(self, span: trace.Span, exc: Exception, t: int, error_type: str) -> None:
        span.record_exception(exc, timestamp=self.at(span.resource.attributes["service.name"], t))
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, str(exc)))

    def u(self, lo_ms: float, hi_ms: float) -> int:
        return int(self.rng.uniform(lo_ms, hi_ms) * MS)

    def ident(self, prefix: str, n: int = 10) -> str:
        return prefix + "".join(self.rng.choice("0123456789abcdefghjkmnpqrstvwxyz") for _ in range(n))

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # ------------------------------------------------------------------ spans by kind
    def db(self, svc: str, ver: str, parent: trace.Span, t: int, dur: int, sql: str) -> int:
        system, database, host = DATABASES[svc]
        port = {"mysql": 3306, "clickhouse": 9000}.get(system, 5432)
        if self.old(svc, ver):
            attrs = {"db.system": system, "db.name": database, "db.statement": sql, "db.user": svc.replace("-", "_"),
                     "net.peer.name": host, "net.peer.port": port}
            name = f"{sql.split()[0]} {database}"
        else:
            attrs = {"db.system.name": system, "db.namespace": database, "db.query.text": sql,
                     "server.address": host, "server.port": port}
            name = sql.split()[0]
        span = self.start(svc, ver, "db", name, t, SpanKind.CLIENT, trace.set_span_in_context(parent), attrs)
        return self.end(span, t + dur)

    def internal(self, svc: str, ver: str, parent: trace.Span, name: str, t: int, dur: int) -> int:
        span = self.start(svc, ver, "app", name, t, SpanKind.INTERNAL, trace.set_span_in_context(parent), {})
        return self.end(span, t + dur)

    def http_client(self, svc: str, ver: str, parent: trace.Span, t: int, method: str, url: str,
                    host: str, port: int) -> tuple[trace.Span, dict]:
        if self.old(svc, ver):
            attrs = {"http.method": method, "http.url": url, "net.peer.name": host, "net.peer.port": port,
                     "http.flavor": "1.1"}
            name = f"HTTP {method}"
        else:
            attrs = {"http.request.method": method, "url.full": url, "server.address": host, "server.port": port,
                     "network.protocol.version": "1.1"}
            name = method
        span = self.start(svc, ver, "http", name, t, SpanKind.CLIENT, trace.set_span_in_context(parent), attrs)
        headers: dict = {}
        PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))
        return span, headers

    @staticmethod
    def http_status(span: trace.Span, status: int, old: bool) -> None:
        span.set_attribute("http.status_code" if old else "http.response.status_code", status)

    def http_server(self, svc: str, ver: str, headers: dict | None, t: int, method: str, route: str,
                    path: str, query: str = "") -> trace.Span:
        host, port = HOSTS.get(svc, (f"{svc}.delivery.example", 443))
        ctx = PROPAGATOR.extract(headers) if headers is not None else otel_context.Context()
        if self.old(svc, ver):
            attrs = {"http.method": method, "http.route": route, "http.target": path + (f"?{query}" if query else ""),
                     "http.scheme": "http" if port != 443 else "https", "net.host.name": host, "net.host.port": port,
                     "http.flavor": "1.1"}
        else:
            attrs = {"http.request.method": method, "http.route": route, "url.path": path,
                     "url.scheme": "https" if port == 443 else "http", "server.address": host, "server.port": port,
                     "network.protocol.version": "1.1"}
            if query:
                attrs["url.query"] = query
        return self.start(svc, ver, "http", f"{method} {route}", t, SpanKind.SERVER, ctx, attrs)

    def call(self, svc: str, ver: str, parent: trace.Span, t: int, target: str, tver: str, method: str,
             route: str, path: str, work, query: str = "") -> tuple[int, int]:
        """A synchronous HTTP call to an internal service: CLIENT span, the target's SERVER span; the target's
        `work(server_span, t)` adds its children and returns (done time, status). Returns (end, status)."""
        host, port = HOSTS[target]
        url = f"http://{host}:{port}{path}" + (f"?{query}" if query else "")
        client, headers = self.http_client(svc, ver, parent, t, method, url, host, port)
        srv = self.http_server(target, tver, headers, t + self.u(0.6, 1.4), method, route, path, query)
        done, status = work(srv, t + self.u(1.5, 2.5))
        self.http_status(srv, status, self.old(target, tver))
        if status >= 500:
            srv.set_status(Status(StatusCode.ERROR))
        srv_end = self.end(srv, done + self.u(0.2, 0.6))
        self.http_status(client, status, self.old(svc, ver))
        if status >= 400:
            client.set_status(Status(StatusCode.ERROR))
        return self.end(client, srv_end + self.u(0.5, 1.2)), status

    def external(self, svc: str, ver: str, parent: trace.Span, t: int, dur: int, method: str, url: str,
                 status: int) -> int:
        host = url.split("/")[2]
        span, _ = self.http_client(svc, ver, parent, t, method, url, host, 443)
        self.http_status(span, status, self.old(svc, ver))
        if status >= 400:
            span.set_status(Status(StatusCode.ERROR))
        return self.end(span, t + dur)

    # ------------------------------------------------------------------ messaging
    def send(self, svc: str, ver: str, parent: trace.Span, t: int, dest: str, key: str, payload: dict,
             body_size: int, system: str = "kafka", ce_type: str = "", extra: dict | None = None
             ) -> tuple[Message, int]:
        old = self.old(svc, ver)
        msg = Message(dest, system, self.new_id(), key, {}, body_size, 0, ce_type)
        if system == "kafka":
            msg.partition = sum(key.encode()) % PARTITIONS
            msg.offset = self.offsets[(dest, msg.partition)]
            self.offsets[(dest, msg.partition)] += 1
            host, port = KAFKA
            if old:
                attrs = {"messaging.system": "kafka", "messaging.destination": dest,
                         "messaging.destination_kind": "topic", "messaging.message_id": msg.msg_id,
                         "messaging.kafka.message_key": key, "messaging.kafka.partition": msg.partition,
                         "messaging.message_payload_size_bytes": body_size, "net.peer.name": host,
                         "net.peer.port": port}
                name = f"{dest} send"
            else:
                attrs = {"messaging.system": "kafka", "messaging.operation.type": "send",
                         "messaging.operation.name": "send", "messaging.destination.name": dest,
                         "messaging.destination.partition.id": str(msg.partition),
                         "messaging.message.id": msg.msg_id, "messaging.kafka.message.key": key,
                         "messaging.message.body.size": body_size, "messaging.client.id": f"{svc}-producer",
                         "server.address": host, "server.port": port}
                name = f"send {dest}"
        else:  # RabbitMQ: an exchange and a routing key
            host, port = RABBIT
            if old:
                attrs = {"messaging.system": "rabbitmq", "messaging.destination": msg.name,
                         "messaging.destination_kind": "queue" if not dest else "topic",
                         "messaging.rabbitmq.routing_key": key, "messaging.message_id": msg.msg_id,
                         "messaging.protocol": "AMQP", "messaging.protocol_version": "0.9.1",
                         "messaging.message_payload_size_bytes": body_size, "net.peer.name": host, "net.peer.port": port}
                name = f"{msg.name} send"
            else:
                attrs = {"messaging.system": "rabbitmq", "messaging.operation.type": "send",
                         "messaging.operation.name": "publish", "messaging.destination.name": msg.name,
                         "messaging.rabbitmq.destination.routing_key": key, "messaging.message.id": msg.msg_id,
                         "messaging.message.body.size": body_size, "network.protocol.name": "amqp",
                         "network.protocol.version": "0.9.1", "server.address": host, "server.port": port}
                name = f"publish {msg.name}"
        if ce_type:
            attrs["cloudevents.event_type"] = ce_type
        attrs.update(extra or {})
        attrs.update(payload)
        span = self.start(svc, ver, "messaging", name, t, SpanKind.PRODUCER, trace.set_span_in_context(parent),
                          attrs)
        msg.headers = {"ce_id": msg.msg_id, "ce_source": f"/delivery/{svc}", "ce_type": ce_type or msg.name}
        PROPAGATOR.inject(msg.headers, context=trace.set_span_in_context(span))
        end = self.end(span, t + self.u(0.8, 3.0))
        msg.available = end + self.u(0.5, 2.5)
        return msg, end

    def process(self, svc: str, ver: str, msg: Message, t: int, how: str = "child", queue: str = "",
                group: str = "") -> trace.Span:
        """A consumer's process span: `child` of the producer span whose context is in the headers, or `none`
        (a new trace: the context is not extracted; only the message id is left)."""
        ctx = PROPAGATOR.extract(msg.headers) if how == "child" else otel_context.Context()
        old = self.old(svc, ver)
        host, port = KAFKA if msg.system == "kafka" else RABBIT
        if old:
            attrs = {"messaging.system": msg.system, "messaging.destination": msg.name,
                     "messaging.operation": "process", "messaging.message_id": msg.msg_id,
                     "messaging.message_payload_size_bytes": msg.body_size, "net.peer.name": host,
                     "net.peer.port": port}
            if msg.system == "kafka":
                attrs.update({"messaging.destination_kind": "topic", "messaging.kafka.consumer_group": group or svc,
                              "messaging.kafka.partition": msg.partition, "messaging.kafka.message_key": msg.key,
                              "messaging.kafka.message.offset": msg.offset})
            else:
                attrs.update({"messaging.destination_kind": "queue" if not msg.dest else "topic",
                              "messaging.rabbitmq.routing_key": msg.key})
            name = f"{msg.name} process"
        else:
            attrs = {"messaging.system": msg.system, "messaging.operation.type": "process",
                     "messaging.operation.name": "process" if msg.system == "kafka" else "deliver",
                     "messaging.destination.name": msg.name, "messaging.message.id": msg.msg_id,
                     "messaging.message.body.size": msg.body_size, "server.address": host, "server.port": port}
            if msg.system == "kafka":
                attrs.update({"messaging.consumer.group.name": group or svc,
                              "messaging.destination.partition.id": str(msg.partition),
                              "messaging.kafka.message.key": msg.key, "messaging.kafka.offset": msg.offset})
            else:
                attrs.update({"messaging.destination.subscription.name": queue,
                              "messaging.rabbitmq.destination.routing_key": msg.key})
            name = f"process {msg.name}"
        if msg.ce_type:
            attrs["cloudevents.event_type"] = msg.ce_type
        return self.start(svc, ver, "messaging", name, t, SpanKind.CONSUMER, ctx, attrs)


# ---------------------------------------------------------------------- the order workflow
@dataclass
class Order:
    """What one order instance does, chosen up front so that the counts are exact."""
    api_ver: str
    kitchen_late: bool   # kitchen's consumer lags (rebalance): courier-dispatch asks before the ticket exists
    delayed: bool        # kitchen publishes ticket.delayed (ids only) instead of ticket.accepted


def order(w: World, t: int, plan: Order, audit: list) -> dict:
    av = plan.api_ver
    order_id = w.ident("ord_")
    courier_id = w.ident("cr_", 8)
    api = w.http_server("order-api", av, None, t, "POST", "/orders", "/orders")
    api.set_attribute("client.address" if not w.old("order-api", av) else "http.client_ip",
                      f"10.60.{w.rng.randint(0, 255)}.{w.rng.randint(1, 254)}")
    c = w.db("order-api", av, api, t + w.u(1, 3), w.u(2, 6),
             "INSERT INTO orders (id, customer_id, restaurant_id, total_cents, status) "
             + ("VALUES (%s, %s, %s, %s, 'placed')" if w.old("order-api", av) else "VALUES ($1, $2, $3, $4, 'placed')"))
    placed, c = w.send("order-api", av, api, c + w.u(0.2, 0.8), "order.placed", order_id,
                       {"delivery.order.id": order_id, "delivery.restaurant.id": w.ident("rs_", 6),
                        "delivery.order.items": w.rng.randint(1, 6)}, w.rng.randint(1300, 1800))
    a_msg, c = w.send("order-api", av, api, c + w.u(0.2, 0.6), "order.audit", order_id,
                      {"delivery.order.id": order_id}, w.rng.randint(300, 420))
    audit.append(a_msg)
    w.http_status(api, 201, w.old("order-api", av))
    w.end(api, c + w.u(0.3, 1.0))

    # kitchen (old conventions): creates the ticket, announces it
    kv = "2.2.1"
    t_k = placed.available + (w.u(180, 320) if plan.kitchen_late else w.u(2, 12))
    k = w.process("kitchen", kv, placed, t_k)
    c = w.db("kitchen", kv, k, t_k + w.u(0.3, 0.8), w.u(2, 5),
             "SELECT station, prep_minutes FROM menu_items WHERE restaurant_id = %s AND id = ANY(%s)")
    ticket_written = w.db("kitchen", kv, k, c + w.u(0.2, 0.5), w.u(2, 5),
                          "INSERT INTO kitchen_tickets (order_id, station, status, eta_minutes) "
                          "VALUES (%s, %s, 'queued', %s)")
    ticket_id = w.ident("tk_", 8)
    if plan.delayed:
        payload, size, ce = {"delivery.order.id": order_id, "delivery.ticket.id": ticket_id}, w.rng.randint(90, 130), \
            "ticket.delayed"
    else:
        payload = {"delivery.order.id": order_id, "delivery.ticket.id": ticket_id,
                   "delivery.ticket.station": w.rng.choice(["grill", "wok", "cold", "pizza"]),
                   "delivery.ticket.eta_minutes": w.rng.randint(8, 25)}
        size, ce = w.rng.randint(620, 900), "ticket.accepted"
    tev, c = w.send("kitchen", kv, k, ticket_written + w.u(0.2, 0.6), "kitchen.ticket-events", order_id, payload,
                    size, ce_type=ce)
    w.end(k, c + w.u(0.3, 1.0))

    def ticket_lookup(s, t1):
        done = w.db("kitchen", kv, s, t1, w.u(1.5, 4),
                    "SELECT status, eta_minutes, station FROM kitchen_tickets WHERE order_id = %s")
        return done, (200 if t1 >= ticket_written else 404)

    # courier-dispatch (new conventions, clock +40 ms): needs kitchen's ticket for the pickup time
    dv = "1.8.0"
    t_d = placed.available + w.u(2, 10)
    attempts = 0
    while True:
        attempts += 1
        d = w.process("courier-dispatch", dv, placed, t_d)
        c = w.internal("courier-dispatch", dv, d, "find nearby couriers", t_d + w.u(0.3, 0.8), w.u(45, 85))
        c, status = w.call("courier-dispatch", dv, d, c + w.u(0.2, 0.5), "kitchen", kv, "GET",
                           "/tickets/{order_id}", f"/tickets/{order_id}", ticket_lookup)
        if status == 200:
            break
        exc = TicketNotFound(f"kitchen has no ticket for order {order_id} (404)")
        w.fail(d, exc, c + w.u(0.1, 0.3), "dispatch.clients.kitchen.TicketNotFound")
        w.end(d, c + w.u(0.5, 1.0))
        t_d = c + w.u(500, 800)  # offset not committed: the consumer seeks back and polls it again after a back-off
        assert attempts < 3
    assert (attempts == 2) == plan.kitchen_late, "the race must happen exactly in the planned orders"

    # request-reply: the delivery fee from pricing over RabbitMQ, the reply on the exclusive reply queue
    corr = w.new_id()
    conv = {"messaging.message.conversation_id": corr}
    req, c = w.send("courier-dispatch", dv, d, c + w.u(0.3, 0.8), "pricing", "quote.request",
                    {"delivery.order.id": order_id}, w.rng.randint(200, 260), system="rabbitmq", extra=conv)
    pv = "0.9.4"
    t_p = req.available + w.u(1, 4)
    p = w.process("pricing", pv, req, t_p, queue="pricing.quote-requests")
    c2 = w.db("pricing", pv, p, t_p + w.u(0.3, 0.8), w.u(2, 5),
              "SELECT base_cents, per_km_cents, surge FROM tariffs WHERE zone_id = %s")
    reply, c2 = w.send("pricing", pv, p, c2 + w.u(0.2, 0.5), "", REPLY_QUEUE, {"delivery.quote.fee_cents":
                       w.rng.randint(199, 699)}, w.rng.randint(120, 160), system="rabbitmq",
                       extra={"messaging.conversation_id": corr})
    w.end(p, c2 + w.u(0.2, 0.6))
    r = w.process("courier-dispatch", dv, reply, reply.available + w.u(0.3, 1.0), queue=REPLY_QUEUE)
    c = w.end(r, reply.available + w.u(1.0, 2.0))
    c = w.db("courier-dispatch", dv, d, c + w.u(0.2, 0.5), w.u(2, 6),
             "INSERT INTO dispatch_jobs (order_id, courier_id, pickup_eta, fee_cents) VALUES ($1, $2, $3, $4)")
    _, c = w.send("courier-dispatch", dv, d, c + w.u(0.2, 0.5), "dispatch.route-planned", order_id,
                  {"delivery.order.id": order_id, "delivery.courier.id": courier_id,
                   "delivery.route.distance_m": w.rng.randint(400, 6500)}, w.rng.randint(2400, 3600))
    assigned, c = w.send("courier-dispatch", dv, d, c + w.u(0.2, 0.5), "delivery", "courier.assigned",
                         {"delivery.order.id": order_id, "delivery.courier.id": courier_id},
                         w.rng.randint(110, 150), system="rabbitmq")
    w.end(d, c + w.u(0.3, 1.0))

    # promo-engine: holds every order for the 1.5 s cancellation grace window, then books the promotion
    t_pe = placed.available + 1500 * MS + w.u(0, 6)
    pe = w.process("promo-engine", "4.0.0", placed, t_pe)
    c = w.db("promo-engine", "4.0.0", pe, t_pe + w.u(0.3, 0.8), w.u(2, 5),
             "SELECT id, kind, value FROM promo_rules WHERE restaurant_id = $1 AND active")
    c = w.db("promo-engine", "4.0.0", pe, c + w.u(0.2, 0.5), w.u(2, 5),
             "INSERT INTO promo_ledger (order_id, rule_id, discount_cents) VALUES ($1, $2, $3)")
    w.end(pe, c + w.u(0.3, 1.0))

    # customer-notify: ticket events (calls kitchen back only when the event carries ids only)
    nv = "5.3.2"
    t_n = tev.available + w.u(3, 15)
    n = w.process("customer-notify", nv, tev, t_n, group="customer-notify")
    c = t_n + w.u(0.3, 0.8)
    if plan.delayed:
        c, _ = w.call("customer-notify", nv, n, c, "kitchen", kv, "GET", "/tickets/{order_id}",
                      f"/tickets/{order_id}", ticket_lookup)
    c = w.external("customer-notify", nv, n, c + w.u(0.2, 0.5), w.u(30, 90), "POST",
                   "https://api.push.example/v1/messages", 202)
    w.end(n, c + w.u(0.3, 1.0))

    # customer-notify: courier.assigned (RabbitMQ queue), enriched from courier-profiles (not the producer)
    t_n = assigned.available + w.u(2, 8)
    n = w.process("customer-notify", nv, assigned, t_n, queue="customer-notify.courier-assigned")

    def profile(s, t1):
        return w.db("courier-profiles", "2.0.1", s, t1, w.u(1.5, 4),
                    "SELECT display_name, vehicle, photo_url FROM couriers WHERE id = %s"), 200
    c, _ = w.call("customer-notify", nv, n, t_n + w.u(0.3, 0.8), "courier-profiles", "2.0.1", "GET",
                  "/couriers/{courier_id}", f"/couriers/{courier_id}", profile)
    c = w.external("customer-notify", nv, n, c + w.u(0.2, 0.5), w.u(30, 90), "POST",
                   "https://api.push.example/v1/messages", 202)
    w.end(n, c + w.u(0.3, 1.0))
    return {"order_id": order_id, "courier_id": courier_id, "end": c}


# ---------------------------------------------------------------------- the completion workflow
def complete(w: World, t: int, order_id: str, courier_id: str, psp_failures: int) -> None:
    gv = "1.5.0"
    delivery_id = w.ident("dl_")
    path = f"/deliveries/{delivery_id}/complete"
    g = w.http_server("courier-gateway", gv, None, t, "POST", "/deliveries/{delivery_id}/complete", path)
    c = w.db("courier-gateway", gv, g, t + w.u(1, 3), w.u(2, 5),
             "UPDATE deliveries SET status = 'completed', completed_at = now() WHERE id = $1")
    msg, c = w.send("courier-gateway", gv, g, c + w.u(0.2, 0.6), "delivery", "delivery.completed",
                    {"delivery.order.id": order_id, "delivery.courier.id": courier_id, "delivery.id": delivery_id},
                    w.rng.randint(160, 220), system="rabbitmq")
    w.http_status(g, 200, False)
    w.end(g, c + w.u(0.3, 1.0))

    # billing (old conventions): charges the card; its HTTP client backs off 100, 200 ms on 503
    bv = "6.0.2"
    t_b = msg.available + w.u(2, 9)
    b = w.process("billing", bv, msg, t_b, queue="billing.delivery-completed")
    c = w.db("billing", bv, b, t_b + w.u(0.3, 0.8), w.u(2, 5),
             "SELECT payment_method_id, total_cents FROM billing_orders WHERE order_id = %s")
    for attempt in range(psp_failures + 1):
        ok = attempt == psp_failures
        c = w.external("billing", bv, b, c + w.u(0.2, 0.5), w.u(120, 300) if ok else w.u(15, 40), "POST",
                       "https://api.psp.example/v2/charges", 201 if ok else 503)
        if not ok:
            c += 100 * MS * 2 ** attempt + w.u(0, 20)  # exponential back-off with jitter
    c = w.db("billing", bv, b, c + w.u(0.2, 0.5), w.u(2, 5),
             "INSERT INTO invoices (order_id, amount_cents, psp_charge_id) VALUES (%s, %s, %s)")
    w.end(b, c + w.u(0.3, 1.0))

    # ratings (old pika-era consumer: context not extracted, a new trace tied only by the message id);
    # pages through the courier's recent reviews to decide whether to ask for a rating
    rv = "1.0.3"
    t_r = msg.available + w.u(3, 12)
    r = w.process("ratings", rv, msg, t_r, how="none", queue="ratings.delivery-completed")
    c = t_r + w.u(0.3, 0.8)
    pages = w.rng.randint(1, 4)
    for page in range(1, pages + 1):
        def reviews(s, t1):
            return w.db("courier-profiles", "2.0.1", s, t1, w.u(2, 5),
                        "SELECT stars, created_at FROM reviews WHERE courier_id = %s ORDER BY created_at DESC "
                        "LIMIT 20 OFFSET %s"), 200
        c, _ = w.call("ratings", rv, r, c + w.u(0.2, 0.6), "courier-profiles", "2.0.1", "GET",
                      "/couriers/{courier_id}/reviews", f"/couriers/{courier_id}/reviews", reviews,
                      query=f"page={page}&per_page=20")
    c = w.db("ratings", rv, r, c + w.u(0.2, 0.5), w.u(2, 5),
             "INSERT INTO rating_requests (order_id, courier_id, send_at) VALUES (%s, %s, %s)")
    w.end(r, c + w.u(0.3, 1.0))


# ---------------------------------------------------------------------- the other consumers
def audit_batches(w: World, msgs: list[Message]) -> None:
    """audit-log polls order.audit every 5 s; one NEW trace per non-empty batch, a span link per message."""
    msgs = sorted(msgs, key=lambda m: m.available)
    t = EPOCH_NS + AUDIT_POLL_NS
    i = 0
    while i < len(msgs):
        batch = []
        while i < len(msgs) and msgs[i].available <= t:
            batch.append(msgs[i])
            i += 1
        if batch:
            links = [Link(trace.get_current_span(PROPAGATOR.extract(m.headers)).get_span_context(),
                          {"messaging.message.id": m.msg_id}) for m in batch]
            s = w.start("audit-log", "1.1.0", "messaging", "process order.audit", t, SpanKind.CONSUMER,
                        otel_context.Context(), {"messaging.system": "kafka", "messaging.operation.type": "process",
                                                 "messaging.operation.name": "process",
                                                 "messaging.destination.name": "order.audit",
                                                 "messaging.consumer.group.name": "audit-log",
                                                 "messaging.batch.message_count": len(batch),
                                                 "server.address": KAFKA[0], "server.port": KAFKA[1]},
                        links=links)
            c = w.db("audit-log", "1.1.0", s, t + w.u(0.5, 1.5), w.u(4, 12),
                     "INSERT INTO audit_entries (order_id, event, at) VALUES")
            w.end(s, c + w.u(0.3, 1.0))
        t += AUDIT_POLL_NS


def gps_ping(w: World, t: int, courier_id: str) -> None:
    """courier.gps-pings are written to Kafka by an uninstrumented MQTT bridge: no producer span, no context."""
    msg = Message("courier.gps-pings", "kafka", w.new_id(), courier_id, {}, w.rng.randint(70, 95), t)
    msg.partition = sum(courier_id.encode()) % PARTITIONS
    msg.offset = w.offsets[("courier.gps-pings", msg.partition)]
    w.offsets[("courier.gps-pings", msg.partition)] += 1
    s = w.process("tracking", "3.1.0", msg, t + w.u(2, 20), how="none")
    c = w.db("tracking", "3.1.0", s, t + w.u(22, 23), w.u(1, 3),
             "UPDATE courier_positions SET lat = %s, lon = %s, seen_at = %s WHERE courier_id = %s")
    w.end(s, c + w.u(0.2, 0.6))


# ---------------------------------------------------------------------- export
def export_lines(w: World) -> list[str]:
    """Per service and version, spans batched by end time into 5 s windows (<= 512 each), as a
    BatchSpanProcessor sends them."""
    requests: list[tuple[int, tuple, list[ReadableSpan]]] = []
    for key in sorted(w.exporters):
        spans = sorted(w.exporters[key].get_finished_spans(), key=lambda s: (s.end_time, s.start_time))
        windows: dict[int, list[ReadableSpan]] = defaultdict(list)
        for s in spans:
            windows[(s.end_time - EPOCH_NS) // EXPORT_WINDOW_NS].append(s)
        for window, group in windows.items():
            for i in range(0, len(group), EXPORT_BATCH):
                requests.append((window, key, group[i:i + EXPORT_BATCH]))
    requests.sort(key=lambda r: (r[0], r[1]))
    return [request_to_json_line(encode_spans(batch).SerializeToString(), "application/x-protobuf")
            for _, _, batch in requests]


def counts(instances: int, races: int | None = None) -> dict:
    """The exact numbers of each path, as functions of --instances (inspect_scenario.py uses the same)."""
    completed = round(instances * 0.94)
    return {"orders": instances, "races": max(2, round(instances * 0.04)) if races is None else races,
            "delayed": round(instances * 0.3), "completed": completed,
            "psp_retried": max(2, round(completed * 0.12)), "pings": round(instances * 0.3)}


def generate(seed: int, instances: int, races: int | None = None) -> tuple[list[str], dict]:
    random.seed(seed)  # the SDK's RandomIdGenerator draws from the module-level generator
    w = World(rng=random.Random(f"food_delivery_404:{seed}"))
    n = counts(instances, races)
    idx = list(range(instances))
    late = set(w.rng.sample(idx, n["races"]))
    delayed = set(w.rng.sample(idx, n["delayed"]))
    t = EPOCH_NS + w.u(500, 1500)
    audit: list[Message] = []
    results = []
    for i in range(instances):
        plan = Order("3.4.0" if i < instances // 2 else "3.5.0", i in late, i in delayed)
        results.append(order(w, t, plan, audit))
        t += int(w.rng.expovariate(1 / 2700) * MS) + 300 * MS  # arrivals ~ every 3 s
    last_order = t
    audit_batches(w, audit)

    done = sorted(w.rng.sample(range(instances), n["completed"]))
    retried = w.rng.sample(done, n["psp_retried"])
    fails = {i: 1 + (j % 2) for j, i in enumerate(retried)}
    comp = sorted((results[i]["end"] + w.u(600_000, 1_500_000), i) for i in done)
    for tc, i in comp:
        complete(w, tc, results[i]["order_id"], results[i]["courier_id"], fails.get(i, 0))

    end_all = max(comp)[0]
    for j in range(n["pings"]):
        r = results[w.rng.randrange(instances)]
        gps_ping(w, EPOCH_NS + int((end_all - EPOCH_NS) * (j + w.rng.random()) / n["pings"]), r["courier_id"])
    for provider in w.providers.values():
        provider.shutdown()
    stats = {**n, "last_order_s": (last_order - EPOCH_NS) // SEC,
             "spans": sum(len(e.get_finished_spans()) for e in w.exporters.values())}
    return export_lines(w), stats


def write_dump(lines: list[str], out: Path) -> None:
    with open(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                               compresslevel=9) as fh:
        for line in lines:
            fh.write(line.encode() + b"\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=404)
    ap.add_argument("--instances", type=int, default=160, help="orders (the other workflows scale)")
    ap.add_argument("--races", type=int, default=None,
                    help="orders where kitchen's consumer is late (default 4 %%, at least 2; 0 for none)")
    ap.add_argument("--out", type=Path, default=HERE / "dump.otlp.jsonl.gz")
    args = ap.parse_args(argv)
    if args.instances < 10:
        ap.error("--instances must be at least 10 (every path needs an instance)")
    lines, stats = generate(args.seed, args.instances, args.races)
    write_dump(lines, args.out)
    print(f"wrote {args.out}: {len(lines)} export requests, " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
