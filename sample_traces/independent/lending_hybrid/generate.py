"""Generate the lending_hybrid scenario: a consumer-lending shop traced with the OpenTelemetry Python SDK.

    python sample_traces/independent/lending_hybrid/generate.py [--seed 11] [--instances 160] [--out FILE]

Every span is made by the SDK API: one TracerProvider + Resource per service *and version*, the SDK's
own random W3C ids (seeded through `random.seed`), W3C TraceContext injected into and extracted from
Kafka / RabbitMQ message headers, HTTP headers and gRPC metadata by the real propagator. Spans are
finished into an in-memory exporter and written as the Collector file exporter writes: one OTLP
ExportTraceServiceRequest as JSON per line (the request built by the OTLP exporter's own encoder, the
JSON by `sample_traces/captures/otlp_sink.py`), gzipped with mtime 0. Time is a simulated clock
(nanoseconds from a fixed epoch); two services run with a skewed clock. The same --seed gives the
same bytes.

The system (README.md has the picture and what was planted):

  POST /applications (loan-api) -> application.submitted (Kafka)
      kyc (retries its ID vendor after 503s), credit-scoring (v1 / v2 send credit.scored with different
      fields), fraud (polls its vendor) -> kyc.completed / credit.scored / fraud.cleared
      application-tracker consumes all three "done" events, keeps the progress in its table and
      publishes decision.requested when the last one arrives; decisioning -> decision.made ->
      application-tracker -> offer.requested | application.declined          (implicit orchestrator)
      pricing -> quote.updated -> limits -> limit.adjusted -> pricing -> quote.updated ... -> offer.ready
                                                                            (event cycle, 1-3 rounds)
      notifications (new traces with span links) -> notification.scheduled -> notifications worker
  POST /offers/{offer_id}/accept (loan-api) -> disbursement-orchestrator (HTTP saga):
      ledger POST /holds, contracts POST /contracts, payouts gRPC CreatePayout; when the payout is
      rejected the hold is released but the signed contract is never voided (missing compensation);
      on success loan.disbursed (RabbitMQ fanout) -> notifications (link), servicing (no context)
  POST /collections/cases (collections, triggered by an uninstrumented scheduler): calls servicing,
      ledger, contracts and notifications, several endpoints of each (god coordinator)
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

EPOCH_NS = 1_796_205_600 * 10**9  # 2026-12-02T10:00:00Z
MS = 1_000_000
SEC = 1000 * MS
PROPAGATOR = TraceContextTextMapPropagator()
KAFKA = ("kafka-1.lending.internal", 9092)
RABBIT = ("rabbitmq.lending.internal", 5672)
EXPORT_WINDOW_NS = 5 * SEC  # BatchSpanProcessor's default schedule delay
EXPORT_BATCH = 512          # ... and its default max export batch size

# (service, version) -> (semantic-convention generation, host); one TracerProvider + Resource each.
# "old": messaging.destination, db.statement, http.method, net.peer.name (semconv <= 1.20);
# "new": messaging.destination.name, db.query.text, http.request.method, server.address.
VERSIONS = {
    ("loan-api", "4.2.1"): ("new", "loan-api-6b8c9-d2xkq"),
    ("kyc", "1.9.3"): ("old", "kyc-7f5d4-pq8wz"),
    ("kyc", "2.0.0"): ("old", "kyc-86c1e-mm3ts"),
    ("credit-scoring", "1.4.2"): ("new", "credit-scoring-5d9f7-h4jbn"),
    ("credit-scoring", "2.0.0"): ("new", "credit-scoring-7a2b1-c9vrl"),
    ("fraud", "3.3.0"): ("old", "fraud-64d8b-x7pfs"),
    ("application-tracker", "1.12.0"): ("new", "application-tracker-58bd6-kk2qe"),
    ("decisioning", "2.7.5"): ("new", "decisioning-7c4f9-wz5ha"),
    ("pricing", "5.0.2"): ("new", "pricing-6f7d8-ln4cr"),
    ("limits", "0.14.1"): ("old", "limits-59c7b-tt9dm"),
    ("notifications", "2.1.0"): ("new", "notifications-api-7d6c5-b8rwy"),
    ("notifications", "2.0.3"): ("new", "notifications-worker-5b4a3-q2nve"),
    ("disbursement-orchestrator", "3.1.4"): ("old", "disbursement-orchestrator-6c5b4-f3gkx"),
    ("disbursement-orchestrator", "3.2.0"): ("new", "disbursement-orchestrator-7e9a1-j6spd"),
    ("ledger", "8.0.4"): ("old", "ledger-5f6e7-r4dzc"),
    ("contracts", "1.6.0"): ("new", "contracts-68a9b-v5mwu"),
    ("payouts", "2.2.3"): ("new", "payouts-7b8c9-e2hqa"),
    ("servicing", "6.4.0"): ("old", "servicing-54f3e-n8kcy"),
    ("collections", "0.9.2"): ("old", "collections-6a5d4-s7lbw"),
}
CLOCK_OFFSET_NS = {"kyc": 38 * MS, "limits": -27 * MS}  # hosts whose clocks are off (all their spans)
DATABASES = {  # service -> (db system, database, server)
    "loan-api": ("postgresql", "applications", "pg-applications.lending.internal"),
    "kyc": ("postgresql", "kyc", "pg-kyc.lending.internal"),
    "credit-scoring": ("postgresql", "scoring", "pg-scoring.lending.internal"),
    "fraud": ("mysql", "fraud", "mysql-fraud.lending.internal"),
    "application-tracker": ("postgresql", "tracker", "pg-tracker.lending.internal"),
    "decisioning": ("postgresql", "decisions", "pg-decisions.lending.internal"),
    "pricing": ("postgresql", "pricing", "pg-pricing.lending.internal"),
    "limits": ("postgresql", "limits", "pg-limits.lending.internal"),
    "notifications": ("postgresql", "notify", "pg-notify.lending.internal"),
    "disbursement-orchestrator": ("postgresql", "disbursements", "pg-disbursements.lending.internal"),
    "ledger": ("postgresql", "ledger", "pg-ledger.lending.internal"),
    "contracts": ("postgresql", "contracts", "pg-contracts.lending.internal"),
    "payouts": ("postgresql", "payouts", "pg-payouts.lending.internal"),
    "servicing": ("postgresql", "servicing", "pg-servicing.lending.internal"),
    "collections": ("postgresql", "collections", "pg-collections.lending.internal"),
}
HOSTS = {  # internal HTTP / gRPC servers
    "disbursement-orchestrator": ("disbursement-orchestrator.lending.internal", 8080),
    "ledger": ("ledger.lending.internal", 8080),
    "contracts": ("contracts.lending.internal", 8080),
    "payouts": ("payouts.lending.internal", 50051),
    "servicing": ("servicing.lending.internal", 8080),
    "notifications": ("notifications.lending.internal", 8080),
}
PARTITIONS = 6


class PayoutRejected(RuntimeError):
    """disbursement-orchestrator's error when payouts answers FAILED_PRECONDITION."""


PayoutRejected.__module__ = "disbursement.saga"


@dataclass
class Message:
    topic: str
    system: str
    msg_id: str
    key: str
    headers: dict
    body_size: int
    available: int  # true ns when a consumer can have it
    partition: int = 0
    offset: int = 0


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
                "service.name": svc, "service.version": ver, "service.namespace": "lending",
                "service.instance.id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                env_key: "production", "host.name": host, "k8s.namespace.name": "lending",
                "process.runtime.name": "cpython", "process.runtime.version": "3.11.9" if style == "old" else "3.12.7",
            })
            exporter = InMemorySpanExporter()
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            self.providers[key], self.exporters[key] = provider, exporter
        return self.providers[key].get_tracer(f"lending.{scope}", "1.0.0")

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
        port = 3306 if system == "mysql" else 5432
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

    def http_status(self, span: trace.Span, status: int, old: bool) -> None:
        span.set_attribute("http.status_code" if old else "http.response.status_code", status)

    def http_server(self, svc: str, ver: str, headers: dict | None, t: int, method: str, route: str,
                    path: str) -> trace.Span:
        host, port = HOSTS.get(svc, ("api.lending.example", 443))
        ctx = PROPAGATOR.extract(headers) if headers is not None else otel_context.Context()
        if self.old(svc, ver):
            attrs = {"http.method": method, "http.route": route, "http.target": path, "http.scheme": "http",
                     "net.host.name": host, "net.host.port": port, "http.flavor": "1.1"}
        else:
            attrs = {"http.request.method": method, "http.route": route, "url.path": path,
                     "url.scheme": "https" if port == 443 else "http", "server.address": host, "server.port": port,
                     "network.protocol.version": "1.1"}
        return self.start(svc, ver, "http", f"{method} {route}", t, SpanKind.SERVER, ctx, attrs)

    def call(self, svc: str, ver: str, parent: trace.Span, t: int, target: str, tver: str, method: str,
             route: str, path: str, status: int, work, dur_ms: tuple = (4, 12)) -> int:
        """A synchronous HTTP call to an internal service: CLIENT span, the target's SERVER span (its
        `work(server_span, t)` adds the target's own children and returns when it is done)."""
        host, port = HOSTS[target]
        client, headers = self.http_client(svc, ver, parent, t, method, f"http://{host}:{port}{path}", host, port)
        srv = self.http_server(target, tver, headers, t + self.u(0.6, 1.4), method, route, path)
        done = work(srv, t + self.u(1.5, 2.5)) if work else t + self.u(*dur_ms)
        self.http_status(srv, status, self.old(target, tver))
        if status >= 500:
            srv.set_status(Status(StatusCode.ERROR))
        srv_end = self.end(srv, done + self.u(0.2, 0.6))
        self.http_status(client, status, self.old(svc, ver))
        if status >= 400:
            client.set_status(Status(StatusCode.ERROR))
        return self.end(client, srv_end + self.u(0.5, 1.2))

    def external(self, svc: str, ver: str, parent: trace.Span, t: int, dur: int, method: str, url: str,
                 status: int) -> int:
        host = url.split("/")[2]
        span, _ = self.http_client(svc, ver, parent, t, method, url, host, 443)
        self.http_status(span, status, self.old(svc, ver))
        if status >= 400:
            span.set_status(Status(StatusCode.ERROR))
        return self.end(span, t + dur)

    # ------------------------------------------------------------------ messaging
    def send(self, svc: str, ver: str, parent: trace.Span, t: int, topic: str, key: str, payload: dict,
             body_size: int, system: str = "kafka") -> tuple[Message, int]:
        old = self.old(svc, ver)
        msg = Message(topic, system, self.new_id(), key, {}, body_size, 0)
        if system == "kafka":
            msg.partition = sum(key.encode()) % PARTITIONS
            msg.offset = self.offsets[(topic, msg.partition)]
            self.offsets[(topic, msg.partition)] += 1
            host, port = KAFKA
            if old:
                attrs = {"messaging.system": "kafka", "messaging.destination": topic,
                         "messaging.destination_kind": "topic", "messaging.message_id": msg.msg_id,
                         "messaging.kafka.message_key": key, "messaging.kafka.partition": msg.partition,
                         "messaging.message_payload_size_bytes": body_size, "net.peer.name": host,
                         "net.peer.port": port}
                name = f"{topic} send"
            else:
                attrs = {"messaging.system": "kafka", "messaging.operation.type": "send",
                         "messaging.operation.name": "send", "messaging.destination.name": topic,
                         "messaging.destination.partition.id": str(msg.partition),
                         "messaging.message.id": msg.msg_id, "messaging.kafka.message.key": key,
                         "messaging.message.body.size": body_size, "messaging.client.id": f"{svc}-producer",
                         "server.address": host, "server.port": port}
                name = f"send {topic}"
        else:  # RabbitMQ: a fanout exchange named after the event, empty routing key
            host, port = RABBIT
            if old:
                attrs = {"messaging.system": "rabbitmq", "messaging.destination": topic,
                         "messaging.destination_kind": "topic", "messaging.rabbitmq.routing_key": "",
                         "messaging.message_id": msg.msg_id, "messaging.protocol": "AMQP",
                         "messaging.protocol_version": "0.9.1", "messaging.message_payload_size_bytes": body_size,
                         "net.peer.name": host, "net.peer.port": port}
                name = f"{topic} send"
            else:
                attrs = {"messaging.system": "rabbitmq", "messaging.operation.type": "send",
                         "messaging.operation.name": "publish", "messaging.destination.name": topic,
                         "messaging.rabbitmq.destination.routing_key": "", "messaging.message.id": msg.msg_id,
                         "messaging.message.body.size": body_size, "network.protocol.name": "amqp",
                         "network.protocol.version": "0.9.1", "server.address": host, "server.port": port}
                name = f"publish {topic}"
        attrs.update(payload)
        span = self.start(svc, ver, "messaging", name, t, SpanKind.PRODUCER, trace.set_span_in_context(parent),
                          attrs)
        msg.headers = {"ce_id": msg.msg_id, "ce_type": topic, "ce_source": f"/lending/{svc}"}
        PROPAGATOR.inject(msg.headers, context=trace.set_span_in_context(span))
        end = self.end(span, t + self.u(0.8, 3.0))
        msg.available = end + self.u(0.5, 2.5)
        return msg, end

    def process(self, svc: str, ver: str, msg: Message, t: int, how: str = "child") -> trace.Span:
        """A consumer's process span: `child` of the producer span whose context is in the headers, `link`
        (a new trace with a span link to it) or `none` (a new trace: the context is not extracted)."""
        links = None
        if how == "child":
            ctx = PROPAGATOR.extract(msg.headers)
        else:
            ctx = otel_context.Context()
            if how == "link":
                links = [Link(trace.get_current_span(PROPAGATOR.extract(msg.headers)).get_span_context())]
        old = self.old(svc, ver)
        host, port = KAFKA if msg.system == "kafka" else RABBIT
        queue = f"{svc}.{msg.topic}"
        if old:
            attrs = {"messaging.system": msg.system, "messaging.destination": msg.topic,
                     "messaging.destination_kind": "topic", "messaging.operation": "process",
                     "messaging.message_id": msg.msg_id, "messaging.message_payload_size_bytes": msg.body_size,
                     "net.peer.name": host, "net.peer.port": port}
            if msg.system == "kafka":
                attrs.update({"messaging.kafka.consumer_group": svc, "messaging.kafka.partition": msg.partition,
                              "messaging.kafka.message_key": msg.key, "messaging.kafka.message.offset": msg.offset})
            else:
                attrs["messaging.rabbitmq.routing_key"] = ""  # no queue name: pika-era consumers record none
            name = f"{msg.topic} process"
        else:
            attrs = {"messaging.system": msg.system, "messaging.operation.type": "process",
                     "messaging.operation.name": "process" if msg.system == "kafka" else "deliver",
                     "messaging.destination.name": msg.topic, "messaging.message.id": msg.msg_id,
                     "messaging.message.body.size": msg.body_size, "server.address": host, "server.port": port}
            if msg.system == "kafka":
                attrs.update({"messaging.consumer.group.name": svc,
                              "messaging.destination.partition.id": str(msg.partition),
                              "messaging.kafka.message.key": msg.key, "messaging.kafka.offset": msg.offset})
            else:
                attrs.update({"messaging.destination.subscription.name": queue,
                              "messaging.rabbitmq.destination.routing_key": ""})
            name = f"process {msg.topic}"
        return self.start(svc, ver, "messaging", name, t, SpanKind.CONSUMER, ctx, attrs, links=links)


# ---------------------------------------------------------------------- the application workflow
@dataclass
class Plan:
    """What one application instance does, chosen up front so that the counts are exact."""
    approved: bool
    rounds: int          # pricing <-> limits rounds before offer.ready (approved only)
    kyc_failures: int    # 503s from the ID vendor before the verification succeeds
    kyc_ver: str
    score_ver: str
    calm: bool = False   # --calm: v2 keeps v1's event fields (no schema drift)


def application(w: World, t: int, plan: Plan) -> dict:
    app_id = w.ident("app_")
    api = w.http_server("loan-api", "4.2.1", None, t, "POST", "/applications", "/applications")
    api.set_attributes({"client.address": f"10.40.{w.rng.randint(0, 255)}.{w.rng.randint(1, 254)}",
                        "user_agent.original": "LendingWeb/3.9 (+https://lend.example)"})
    c = w.db("loan-api", "4.2.1", api, t + w.u(1, 3), w.u(2, 6),
             "INSERT INTO applications (id, applicant_id, amount_cents, term_months, status) "
             "VALUES ($1, $2, $3, $4, 'submitted')")
    submitted, c = w.send("loan-api", "4.2.1", api, c + w.u(0.2, 0.8), "application.submitted", app_id,
                          {"lending.application.id": app_id}, w.rng.randint(1800, 2400))
    w.http_status(api, 202, False)
    w.end(api, c + w.u(0.3, 1.0))

    done: list[tuple[int, Message]] = []  # (available, message) of the three "done" events

    # kyc (old conventions, clock +38 ms): verifies the applicant at an ID vendor, retrying 503s
    ver = plan.kyc_ver
    t_k = submitted.available + w.u(2, 10)
    k = w.process("kyc", ver, submitted, t_k)
    c = w.db("kyc", ver, k, t_k + w.u(0.2, 0.5), w.u(2, 5),
             "SELECT document_type, document_ref FROM applicant_documents WHERE application_id = %s")
    for attempt in range(plan.kyc_failures + 1):
        ok = attempt == plan.kyc_failures
        c = w.external("kyc", ver, k, c + w.u(0.2, 0.5), w.u(60, 140) if ok else w.u(20, 45), "POST",
                       "https://api.idvendor.example/v1/verifications", 200 if ok else 503)
        if not ok:
            c += (200 if attempt == 0 else 400) * MS + w.u(0, 30)  # urllib3 Retry backoff
    c = w.db("kyc", ver, k, c + w.u(0.2, 0.5), w.u(2, 5),
             "INSERT INTO kyc_checks (application_id, vendor, result, level) VALUES (%s, %s, 'pass', %s)")
    vendor, level = ("idcheck", "standard") if ver == "1.9.3" else ("veriff", w.rng.choice(["standard", "enhanced"]))
    m, c = w.send("kyc", ver, k, c + w.u(0.2, 0.6), "kyc.completed", app_id,
                  {"lending.application.id": app_id, "lending.kyc.result": "pass", "lending.kyc.vendor": vendor,
                   "lending.kyc.level": level}, w.rng.randint(380, 460))
    w.end(k, c + w.u(0.3, 1.0))
    done.append((m.available, m))

    # credit-scoring: a bureau report; v2.0.0 renamed and replaced the event's fields
    ver = plan.score_ver
    t_s = submitted.available + w.u(2, 10)
    s = w.process("credit-scoring", ver, submitted, t_s)
    c = w.external("credit-scoring", ver, s, t_s + w.u(0.3, 0.8), w.u(150, 700), "POST",
                   "https://api.bureau.example/v1/reports", 201)
    c = w.db("credit-scoring", ver, s, c + w.u(0.2, 0.5), w.u(3, 7),
             "INSERT INTO credit_reports (application_id, bureau, score, report_ref) VALUES ($1, $2, $3, $4)")
    score = w.rng.randint(540, 820)
    if ver == "1.4.2" or plan.calm:
        payload = {"lending.application.id": app_id, "lending.credit.score": score,
                   "lending.credit.bureau": "experian", "lending.credit.model": "fico8"}
        size = w.rng.randint(300, 360)
    else:
        band = "A" if score >= 740 else "B" if score >= 670 else "C" if score >= 600 else "D"
        payload = {"lending.application.id": app_id, "lending.credit.score_band": band,
                   "lending.credit.provider": "experian", "lending.credit.model_version": "fico10t-2026.3"}
        size = w.rng.randint(340, 400)
    m, c = w.send("credit-scoring", ver, s, c + w.u(0.2, 0.6), "credit.scored", app_id, payload, size)
    w.end(s, c + w.u(0.3, 1.0))
    done.append((m.available, m))

    # fraud (old conventions): submits a check to a vendor and polls it until it is complete
    t_f = submitted.available + w.u(2, 10)
    f = w.process("fraud", "3.3.0", submitted, t_f)
    c = w.external("fraud", "3.3.0", f, t_f + w.u(0.3, 0.8), w.u(25, 60), "POST",
                   "https://api.fraudvendor.example/v2/checks", 202)
    check_id = w.ident("chk_", 8)
    for _ in range(w.rng.randint(1, 4)):  # 200 {"status": "pending"} ... 200 {"status": "complete"}
        c = w.external("fraud", "3.3.0", f, c + 150 * MS + w.u(0, 20), w.u(12, 30), "GET",
                       f"https://api.fraudvendor.example/v2/checks/{check_id}", 200)
    c = w.db("fraud", "3.3.0", f, c + w.u(0.2, 0.5), w.u(2, 5),
             "INSERT INTO fraud_checks (application_id, vendor_check_id, risk, decision) VALUES (%s, %s, %s, 'clear')")
    m, c = w.send("fraud", "3.3.0", f, c + w.u(0.2, 0.6), "fraud.cleared", app_id,
                  {"lending.application.id": app_id, "lending.fraud.risk": w.rng.choice(["low", "medium"])},
                  w.rng.randint(260, 320))
    w.end(f, c + w.u(0.3, 1.0))
    done.append((m.available, m))

    # application-tracker: records each "done" event; the last of the three triggers the decision
    done.sort(key=lambda d: d[0])
    decision_requested = None
    busy_until = 0  # one consumer thread: a delivery waits for the previous one to finish
    for i, (avail, msg) in enumerate(done):
        tt = max(avail + w.u(2, 8), busy_until + w.u(0.2, 0.8))
        span = w.process("application-tracker", "1.12.0", msg, tt)
        c = w.db("application-tracker", "1.12.0", span, tt + w.u(0.2, 0.5), w.u(2, 5),
                 "INSERT INTO application_progress (application_id, step, completed_at) VALUES ($1, $2, now()) "
                 "ON CONFLICT (application_id, step) DO NOTHING")
        c = w.db("application-tracker", "1.12.0", span, c + w.u(0.2, 0.5), w.u(1, 3),
                 "SELECT count(*) FROM application_progress WHERE application_id = $1 "
                 "AND step IN ('kyc', 'credit', 'fraud')")
        if i == len(done) - 1:
            decision_requested, c = w.send("application-tracker", "1.12.0", span, c + w.u(0.2, 0.6),
                                           "decision.requested", app_id, {"lending.application.id": app_id},
                                           w.rng.randint(900, 1100))
        busy_until = w.end(span, c + w.u(0.3, 1.0))
    out = {"app": app_id, "last_done": done[-1][1].topic}

    # decisioning
    t_d = decision_requested.available + w.u(2, 10)
    d = w.process("decisioning", "2.7.5", decision_requested, t_d)
    c = w.db("decisioning", "2.7.5", d, t_d + w.u(0.2, 0.5), w.u(2, 6),
             "SELECT rule_id, expression, weight FROM policy_rules WHERE product = $1 AND active")
    c = w.internal("decisioning", "2.7.5", d, "evaluate credit policy", c + w.u(0.1, 0.3), w.u(8, 25))
    outcome = "approved" if plan.approved else "declined"
    c = w.db("decisioning", "2.7.5", d, c + w.u(0.2, 0.5), w.u(2, 5),
             "INSERT INTO decisions (application_id, outcome, policy_version) VALUES ($1, $2, $3)")
    made, c = w.send("decisioning", "2.7.5", d, c + w.u(0.2, 0.6), "decision.made", app_id,
                     {"lending.application.id": app_id, "lending.decision.outcome": outcome}, w.rng.randint(500, 640))
    w.end(d, c + w.u(0.3, 1.0))

    # application-tracker again: the next step depends on the outcome
    tt = made.available + w.u(2, 8)
    span = w.process("application-tracker", "1.12.0", made, tt)
    c = w.db("application-tracker", "1.12.0", span, tt + w.u(0.2, 0.5), w.u(2, 5),
             "UPDATE application_progress SET outcome = $2 WHERE application_id = $1 AND step = 'decision'")
    nxt = "offer.requested" if plan.approved else "application.declined"
    nmsg, c = w.send("application-tracker", "1.12.0", span, c + w.u(0.2, 0.6), nxt, app_id,
                     {"lending.application.id": app_id}, w.rng.randint(700, 900))
    w.end(span, c + w.u(0.3, 1.0))

    if not plan.approved:
        notify(w, nmsg, "application_declined")
        return out

    # pricing <-> limits: quote.updated -> limit.adjusted -> quote.updated ... until limits accepts
    t_p = nmsg.available + w.u(2, 10)
    p = w.process("pricing", "5.0.2", nmsg, t_p)
    c = w.db("pricing", "5.0.2", p, t_p + w.u(0.2, 0.5), w.u(2, 6),
             "SELECT base_rate_bps, margin_bps FROM rate_cards WHERE product = $1 AND band = $2")
    c = w.db("pricing", "5.0.2", p, c + w.u(0.2, 0.5), w.u(2, 5),
             "INSERT INTO quotes (application_id, amount_cents, rate_bps, round) VALUES ($1, $2, $3, 1)")
    quote, c = w.send("pricing", "5.0.2", p, c + w.u(0.2, 0.6), "quote.updated", app_id,
                      {"lending.application.id": app_id, "lending.quote.round": 1}, w.rng.randint(600, 760))
    w.end(p, c + w.u(0.3, 1.0))
    for rnd in range(1, plan.rounds + 1):
        t_l = quote.available + w.u(2, 10)
        lim = w.process("limits", "0.14.1", quote, t_l)
        c = w.db("limits", "0.14.1", lim, t_l + w.u(0.2, 0.5), w.u(2, 6),
                 "SELECT sum(outstanding_cents) FROM exposures WHERE applicant_id = %s")
        c = w.db("limits", "0.14.1", lim, c + w.u(0.2, 0.5), w.u(2, 4),
                 "INSERT INTO limit_checks (application_id, round, verdict) VALUES (%s, %s, %s)")
        verdict = "accepted" if rnd == plan.rounds else "reduced"
        adj, c = w.send("limits", "0.14.1", lim, c + w.u(0.2, 0.6), "limit.adjusted", app_id,
                        {"lending.application.id": app_id, "lending.limit.verdict": verdict,
                         "lending.quote.round": rnd}, w.rng.randint(300, 380))
        w.end(lim, c + w.u(0.3, 1.0))
        t_p = adj.available + w.u(2, 10)
        p = w.process("pricing", "5.0.2", adj, t_p)
        if verdict == "reduced":
            c = w.db("pricing", "5.0.2", p, t_p + w.u(0.2, 0.5), w.u(2, 5),
                     "UPDATE quotes SET amount_cents = $2, rate_bps = $3, round = round + 1 WHERE application_id = $1")
            quote, c = w.send("pricing", "5.0.2", p, c + w.u(0.2, 0.6), "quote.updated", app_id,
                              {"lending.application.id": app_id, "lending.quote.round": rnd + 1},
                              w.rng.randint(600, 760))
        else:
            c = w.db("pricing", "5.0.2", p, t_p + w.u(0.2, 0.5), w.u(2, 5),
                     "UPDATE quotes SET status = 'final' WHERE application_id = $1")
            ready, c = w.send("pricing", "5.0.2", p, c + w.u(0.2, 0.6), "offer.ready", app_id,
                              {"lending.application.id": app_id, "lending.offer.id": w.ident("off_")},
                              w.rng.randint(900, 1200))
        w.end(p, c + w.u(0.3, 1.0))
    notify(w, ready, "offer_ready")
    out["offer_ready_at"] = ready.available
    return out


def notify(w: World, msg: Message, template: str) -> None:
    """notifications (API 2.1.0) consumes in a new trace linked to the message, schedules the send on a
    RabbitMQ delayed exchange; its worker deployment (2.0.3, same service name) sends it."""
    t = msg.available + w.u(3, 40)
    n = w.process("notifications", "2.1.0", msg, t, how="link")
    c = w.db("notifications", "2.1.0", n, t + w.u(0.2, 0.5), w.u(2, 5),
             "INSERT INTO notifications (recipient_id, template, status) VALUES ($1, $2, 'scheduled')")
    sched, c = w.send("notifications", "2.1.0", n, c + w.u(0.2, 0.6), "notification.scheduled", w.ident("ntf_"),
                      {"lending.notification.template": template}, w.rng.randint(200, 260), system="rabbitmq")
    w.end(n, c + w.u(0.3, 1.0))
    t = sched.available + w.u(500, 1500)  # the delayed exchange holds it
    wk = w.process("notifications", "2.0.3", sched, t)
    c = w.external("notifications", "2.0.3", wk, t + w.u(0.3, 0.8), w.u(30, 90), "POST",
                   "https://api.mailer.example/v3/mail/send", 202)
    c = w.db("notifications", "2.0.3", wk, c + w.u(0.2, 0.5), w.u(1, 3),
             "UPDATE notifications SET status = 'sent', sent_at = now() WHERE id = $1")
    w.end(wk, c + w.u(0.3, 1.0))


# ---------------------------------------------------------------------- the accept workflow (HTTP saga)
def accept(w: World, t: int, orch_ver: str, payout_fails: bool, calm: bool = False) -> dict:
    offer_id = w.ident("off_")
    api = w.http_server("loan-api", "4.2.1", None, t, "POST", "/offers/{offer_id}/accept",
                        f"/offers/{offer_id}/accept")
    c = w.db("loan-api", "4.2.1", api, t + w.u(1, 3), w.u(2, 4),
             "UPDATE applications SET status = 'accepted' WHERE offer_id = $1")
    ov = orch_ver
    out: dict = {"offer": offer_id, "loan": None}
    loan_id = w.ident("ln_")
    contract_id = w.ident("ct_")

    def saga(srv: trace.Span, t0: int) -> int:
        c = w.db("disbursement-orchestrator", ov, srv, t0, w.u(2, 5),
                 "INSERT INTO disbursements (offer_id, loan_id, state) VALUES ($1, $2, 'started')")
        hold_id = w.ident("hld_")

        def hold(s, t1):
            return w.db("ledger", "8.0.4", s, t1, w.u(3, 7),
                        "INSERT INTO holds (id, account_id, amount_cents, status) VALUES (%s, %s, %s, 'held')")
        c = w.call("disbursement-orchestrator", ov, srv, c + w.u(0.3, 0.8), "ledger", "8.0.4", "POST", "/holds",
                   "/holds", 201, hold)

        def sign(s, t1):
            t2 = w.db("contracts", "1.6.0", s, t1, w.u(3, 7),
                      "INSERT INTO contracts (id, loan_id, terms_version, status) VALUES ($1, $2, $3, 'signed')")
            t2 = w.internal("contracts", "1.6.0", s, "render contract pdf", t2 + w.u(0.2, 0.5), w.u(40, 90))
            return w.db("contracts", "1.6.0", s, t2 + w.u(0.2, 0.5), w.u(2, 5),
                        "INSERT INTO contract_documents (contract_id, object_key) VALUES ($1, $2)")
        c = w.call("disbursement-orchestrator", ov, srv, c + w.u(0.3, 0.8), "contracts", "1.6.0", "POST",
                   "/contracts", "/contracts", 201, sign)

        # payouts over gRPC
        rpc = {"rpc.system": "grpc", "rpc.service": "payouts.v1.Payouts", "rpc.method": "CreatePayout"}
        host, port = HOSTS["payouts"]
        peer = ({"net.peer.name": host, "net.peer.port": port} if w.old("disbursement-orchestrator", ov)
                else {"server.address": host, "server.port": port})
        t1 = c + w.u(0.3, 0.8)
        cl = w.start("disbursement-orchestrator", ov, "grpc", "payouts.v1.Payouts/CreatePayout", t1, SpanKind.CLIENT,
                     trace.set_span_in_context(srv), {**rpc, **peer})
        md: dict = {}
        PROPAGATOR.inject(md, context=trace.set_span_in_context(cl))
        ps = w.start("payouts", "2.2.3", "grpc", "payouts.v1.Payouts/CreatePayout", t1 + w.u(0.5, 1.2),
                     SpanKind.SERVER, PROPAGATOR.extract(md),
                     {**rpc, "server.address": host, "server.port": port})
        t2 = w.db("payouts", "2.2.3", ps, t1 + w.u(2, 3), w.u(2, 5),
                  "INSERT INTO payouts (id, loan_id, amount_cents, status) VALUES ($1, $2, $3, 'pending')")
        t2 = w.external("payouts", "2.2.3", ps, t2 + w.u(0.3, 0.8), w.u(120, 380), "POST",
                        "https://api.bank.example/v2/transfers", 422 if payout_fails else 201)
        t2 = w.db("payouts", "2.2.3", ps, t2 + w.u(0.2, 0.5), w.u(2, 4),
                  "UPDATE payouts SET status = $2 WHERE id = $1")
        code = 9 if payout_fails else 0  # FAILED_PRECONDITION: the beneficiary account is closed
        ps.set_attribute("rpc.grpc.status_code", code)
        cl.set_attribute("rpc.grpc.status_code", code)
        if payout_fails:
            ps.set_status(Status(StatusCode.ERROR, "beneficiary account closed"))
            cl.set_status(Status(StatusCode.ERROR, "FAILED_PRECONDITION: beneficiary account closed"))
        t2 = w.end(ps, t2 + w.u(0.3, 0.8))
        c = w.end(cl, t2 + w.u(0.5, 1.2))
        if payout_fails:
            exc = PayoutRejected(f"payout for loan {loan_id} rejected: beneficiary account closed")
            w.fail(srv, exc, c + w.u(0.1, 0.3), "disbursement.saga.PayoutRejected")

            def release(s, t1):
                return w.db("ledger", "8.0.4", s, t1, w.u(2, 5), "UPDATE holds SET status = 'released' WHERE id = %s")
            c = w.call("disbursement-orchestrator", ov, srv, c + w.u(0.3, 0.8), "ledger", "8.0.4", "DELETE",
                       "/holds/{hold_id}", f"/holds/{hold_id}", 204, release)
            # (no call to contracts: the signed contract stays signed - unless --calm)
            if calm:
                def void(s, t1):
                    return w.db("contracts", "1.6.0", s, t1, w.u(2, 5),
                                "UPDATE contracts SET status = 'void' WHERE id = $1")
                c = w.call("disbursement-orchestrator", ov, srv, c + w.u(0.3, 0.8), "contracts", "1.6.0", "POST",
                           "/contracts/{contract_id}/void", f"/contracts/{contract_id}/void", 200, void)
            return w.db("disbursement-orchestrator", ov, srv, c + w.u(0.2, 0.5), w.u(2, 4),
                        "UPDATE disbursements SET state = 'failed' WHERE offer_id = $1")
        c = w.db("disbursement-orchestrator", ov, srv, c + w.u(0.2, 0.5), w.u(2, 4),
                 "UPDATE disbursements SET state = 'completed' WHERE offer_id = $1")
        msg, c = w.send("disbursement-orchestrator", ov, srv, c + w.u(0.2, 0.6), "loan.disbursed", loan_id,
                        {"lending.loan.id": loan_id, "lending.contract.id": contract_id}, w.rng.randint(140, 190),
                        system="rabbitmq")
        out["msg"] = msg
        return c

    status = 502 if payout_fails else 201
    c = w.call("loan-api", "4.2.1", api, c + w.u(0.3, 0.8), "disbursement-orchestrator", ov, "POST",
               "/disbursements", "/disbursements", status, saga)
    w.http_status(api, status, False)
    if payout_fails:
        api.set_status(Status(StatusCode.ERROR))
    w.end(api, c + w.u(0.5, 1.5))
    if payout_fails:
        return out
    out["loan"], out["contract"] = loan_id, contract_id
    msg = out.pop("msg")
    notify(w, msg, "loan_disbursed")
    # servicing (old pika-era consumer): does not extract the context; only the message id ties it
    t_v = msg.available + w.u(5, 30)
    v = w.process("servicing", "6.4.0", msg, t_v, how="none")

    def terms(s, t1):
        return w.db("contracts", "1.6.0", s, t1, w.u(2, 5),
                    "SELECT principal_cents, rate_bps, term_months, first_due FROM contracts WHERE id = $1")
    c = w.call("servicing", "6.4.0", v, t_v + w.u(0.3, 0.8), "contracts", "1.6.0", "GET",
               "/contracts/{contract_id}/terms", f"/contracts/{contract_id}/terms", 200, terms)
    c = w.db("servicing", "6.4.0", v, c + w.u(0.2, 0.5), w.u(3, 6),
             "INSERT INTO loans (id, contract_id, principal_cents, status) VALUES (%s, %s, %s, 'active')")
    c = w.db("servicing", "6.4.0", v, c + w.u(0.2, 0.5), w.u(4, 9),
             "INSERT INTO repayment_schedule (loan_id, due_date, amount_cents) VALUES (%s, %s, %s)")
    w.end(v, c + w.u(0.3, 1.0))
    return out


# ---------------------------------------------------------------------- the collections workflow
def collection_case(w: World, t: int, loan_id: str, contract_id: str) -> None:
    """collections (old conventions) walks a delinquent loan through four services' internals, synchronously."""
    cv = "0.9.2"
    root = w.http_server("collections", cv, None, t, "POST", "/collections/cases", "/collections/cases")
    account_id = w.ident("acc_")
    c = t + w.u(1, 2)

    def sel(svc, ver, sql):
        return lambda s, t1: w.db(svc, ver, s, t1, w.u(2, 6), sql)
    steps = [
        ("servicing", "6.4.0", "GET", "/loans/{loan_id}", f"/loans/{loan_id}", 200,
         sel("servicing", "6.4.0", "SELECT contract_id, account_id, status FROM loans WHERE id = %s")),
        ("servicing", "6.4.0", "GET", "/loans/{loan_id}/schedule", f"/loans/{loan_id}/schedule", 200,
         sel("servicing", "6.4.0", "SELECT due_date, amount_cents, paid_cents FROM repayment_schedule "
                                   "WHERE loan_id = %s ORDER BY due_date")),
        ("servicing", "6.4.0", "GET", "/loans/{loan_id}/balance", f"/loans/{loan_id}/balance", 200,
         sel("servicing", "6.4.0", "SELECT sum(amount_cents - paid_cents) FROM repayment_schedule "
                                   "WHERE loan_id = %s AND due_date < now()")),
        ("ledger", "8.0.4", "GET", "/accounts/{account_id}/entries", f"/accounts/{account_id}/entries", 200,
         sel("ledger", "8.0.4", "SELECT posted_at, amount_cents, kind FROM entries WHERE account_id = %s "
                                "ORDER BY posted_at DESC LIMIT 50")),
        ("contracts", "1.6.0", "GET", "/contracts/{contract_id}/clauses", f"/contracts/{contract_id}/clauses", 200,
         sel("contracts", "1.6.0", "SELECT clause_no, kind, params FROM contract_clauses WHERE contract_id = $1")),
        ("ledger", "8.0.4", "POST", "/accounts/{account_id}/late-fees", f"/accounts/{account_id}/late-fees", 201,
         sel("ledger", "8.0.4", "INSERT INTO entries (account_id, amount_cents, kind) VALUES (%s, %s, 'late_fee')")),
        ("servicing", "6.4.0", "PATCH", "/loans/{loan_id}/status", f"/loans/{loan_id}/status", 200,
         sel("servicing", "6.4.0", "UPDATE loans SET status = 'delinquent' WHERE id = %s")),
        ("notifications", "2.1.0", "POST", "/templates/{template_id}/render", "/templates/dunning_letter_1/render", 200,
         sel("notifications", "2.1.0", "SELECT body, locale FROM templates WHERE id = $1")),
        ("notifications", "2.1.0", "POST", "/messages", "/messages", 202,
         sel("notifications", "2.1.0", "INSERT INTO notifications (recipient_id, template, status) "
                                       "VALUES ($1, $2, 'queued')")),
    ]
    for target, tver, method, route, path, status, work in steps:
        c = w.call("collections", cv, root, c + w.u(0.3, 1.0), target, tver, method, route, path, status, work)
        if route == "/contracts/{contract_id}/clauses":
            c = w.internal("collections", cv, root, "compute late fee", c + w.u(0.1, 0.3), w.u(1, 4))
    c = w.db("collections", cv, root, c + w.u(0.3, 0.8), w.u(2, 5),
             "INSERT INTO collection_cases (loan_id, stage, opened_at) VALUES (%s, 'dunning_1', now())")
    w.http_status(root, 201, True)
    w.end(root, c + w.u(0.5, 1.2))


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


def counts(instances: int) -> dict:
    """The exact numbers of each path, as functions of --instances (inspect_scenario.py uses the same)."""
    approved = round(instances * 0.7)
    accepted = round(approved * 0.75)
    return {"applications": instances, "approved": approved, "declined": instances - approved,
            "rounds3": round(approved * 0.15), "rounds2": round(approved * 0.30), "accepted": accepted,
            "payout_failures": max(2, round(accepted * 0.1)), "kyc_retried": max(2, round(instances * 0.1)),
            "collections": max(3, round(instances * 25 / 160))}


def generate(seed: int, instances: int, calm: bool = False) -> tuple[list[str], dict]:
    """`calm`: the same system without four of the plants (no kyc retries, limits accepts the first quote,
    credit-scoring 2.0.0 keeps the old fields, the orchestrator voids the contract): for the inspector's tests."""
    random.seed(seed)  # the SDK's RandomIdGenerator draws from the module-level generator
    w = World(rng=random.Random(f"lending_hybrid:{seed}"))
    n = counts(instances)
    idx = list(range(instances))
    approved = set(w.rng.sample(idx, n["approved"]))
    appr = sorted(approved)
    multi = w.rng.sample(appr, n["rounds3"] + n["rounds2"])
    rounds = {i: 1 for i in appr} | {i: 3 for i in multi[:n["rounds3"]]} | {i: 2 for i in multi[n["rounds3"]:]}
    kyc_retry = w.rng.sample(idx, n["kyc_retried"])
    kyc_fail = {i: 1 + (j % 2) for j, i in enumerate(kyc_retry)}
    v1_until, v2_from = round(instances * 0.4), round(instances * 0.6)  # credit-scoring's canary rollout

    t = EPOCH_NS + w.u(500, 1500)
    results = []
    for i in range(instances):
        score_ver = "1.4.2" if i < v1_until else "2.0.0" if i >= v2_from else ("2.0.0" if i % 2 else "1.4.2")
        plan = Plan(i in approved, 1 if calm and i in approved else rounds.get(i, 0),
                    0 if calm else kyc_fail.get(i, 0), "1.9.3" if i < instances // 2 else "2.0.0", score_ver, calm)
        results.append(application(w, t, plan))
        t += int(w.rng.expovariate(1 / 2500) * MS) + 300 * MS  # arrivals ~ every 2.8 s
    last_app = t

    ready = sorted((r for r in results if "offer_ready_at" in r), key=lambda r: r["offer_ready_at"])
    chosen = sorted(w.rng.sample(range(len(ready)), n["accepted"]))
    accept_times = sorted(ready[j]["offer_ready_at"] + w.u(20_000, 240_000) for j in chosen)
    half = len(accept_times) // 2
    fails = set(w.rng.sample(range(half), n["payout_failures"] // 2)) | set(
        w.rng.sample(range(half, len(accept_times)), n["payout_failures"] - n["payout_failures"] // 2))
    loans = []
    for j, ta in enumerate(accept_times):
        out = accept(w, ta, "3.1.4" if j < half else "3.2.0", j in fails, calm)
        if out["loan"]:
            loans.append((out["loan"], out["contract"]))
    start_c, end_c = last_app, max(accept_times) + 60 * SEC
    for j in range(n["collections"]):
        loan_id, contract_id = loans[w.rng.randrange(len(loans))]
        collection_case(w, start_c + int((end_c - start_c) * (j + w.rng.random()) / n["collections"]),
                        loan_id, contract_id)
    for provider in w.providers.values():
        provider.shutdown()
    stats = {**n, "calm": calm, "spans": sum(len(e.get_finished_spans()) for e in w.exporters.values()),
             "decision_triggered_by": dict(sorted(
                 (k, sum(1 for r in results if r["last_done"] == k)) for k in {r["last_done"] for r in results}))}
    return export_lines(w), stats


def write_dump(lines: list[str], out: Path) -> None:
    with open(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                               compresslevel=9) as fh:
        for line in lines:
            fh.write(line.encode() + b"\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--instances", type=int, default=160, help="loan applications (the other workflows scale)")
    ap.add_argument("--out", type=Path, default=HERE / "dump.otlp.jsonl.gz")
    ap.add_argument("--calm", action="store_true", help="without the retries, the cycle, the drift and the "
                                                         "missing compensation (to test the inspector)")
    args = ap.parse_args(argv)
    if args.instances < 10:
        ap.error("--instances must be at least 10 (every path needs an instance)")
    lines, stats = generate(args.seed, args.instances, args.calm)
    write_dump(lines, args.out)
    print(f"wrote {args.out}: {len(lines)} export requests, " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
