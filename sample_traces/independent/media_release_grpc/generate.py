"""Generate the media_release_grpc scenario: a media platform run by gRPC orchestrators, traced with the OpenTelemetry Python SDK.

    python sample_traces/independent/media_release_grpc/generate.py [--seed 21] [--instances 160] [--calm]
                                                                    [--out FILE]

Every span is made by the SDK API (one TracerProvider + Resource per service and version, the SDK's own
random W3C ids seeded through the module-level `random`, W3C TraceContext injected into and extracted
from gRPC metadata, HTTP headers and Kafka headers by the real propagator), finished into an in-memory
exporter and written as the Collector file exporter writes: one OTLP ExportTraceServiceRequest as JSON
per line (built by the OTLP exporter's encoder, the JSON by `sample_traces/captures/otlp_sink.py`),
gzipped with mtime 0. Time is a simulated clock, so the same --seed gives the same bytes.

The system (README.md has the picture and what was planted):

    studio-gateway   POST /v1/titles   -> gRPC IngestOrchestrator/StartIngest (long unary call)
      ingest-orchestrator: Catalog CreateAsset, SetMetadata; ObjectStore PutObject; Transcoder/Transcode
        (server streaming, 18-60 progress messages); Catalog AttachRendition, SetThumbnail,
        SetAvailability, PublishAsset. When the transcode fails: ObjectStore DeleteObject and Catalog
        DeleteAsset (always). media-catalog's PublishAsset sends asset.published (thin: the id only).
      asset.published consumers: recommendations (calls back Catalog/GetAsset), search-indexer (no call).
    studio-gateway   POST /v1/releases -> gRPC Releases/ScheduleRelease
      release-orchestrator saga: Scheduling/ReserveSlot, Billing/ChargeFee (client retries on
        UNAVAILABLE), EdgeProvisioner/ProvisionEdge (cdn-provisioner: uninstrumented CDN API, INSERT
        edge_configs). When ProvisionEdge fails: Scheduling/ReleaseSlot, but never Billing/RefundFee
        (--calm: always refunded). On success: send release.scheduled, then POST audit-log without
        trace context (audit-log's SERVER span is a new root).
      release.scheduled: notifications' batch consumer (new root trace per poll, span links).
    scheduler (no server span): janitor's root CLIENT `DELETE jobs` every cycle at +0 s (its own jobs
      table on pg-ops), sitemap-builder's root INTERNAL `rebuild-sitemap` at +20 s (reads edge_configs
      on pg-delivery, the table cdn-provisioner writes; uploads to an uninstrumented object store).
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
BASE = 160  # --instances default: title ingests; the other workflows scale from it
PROPAGATOR = TraceContextTextMapPropagator()
KAFKA = {"server.address": "kafka-media.internal", "server.port": 9092}
EXPORT_WINDOW_NS = 5_000 * MS  # BatchSpanProcessor's default schedule delay
EXPORT_BATCH = 512
GRPC_OK, GRPC_UNAVAILABLE, GRPC_INTERNAL = 0, 14, 13

SERVICES = {  # service -> (versions, host)
    "studio-gateway": (("2.7.1",), "studio-gateway-6b7d-qx2p"),
    "ingest-orchestrator": (("1.12.0",), "ingest-orch-5f9c-a1mm"),
    "media-catalog": (("4.2.0", "4.3.0"), "media-catalog-77c1-r4tt"),  # a rolling upgrade: both run
    "object-store": (("0.19.2",), "object-store-3a2e-k9vb"),
    "transcoder": (("3.0.4",), "transcoder-gpu-1c8f-n2wd"),
    "recommendations": (("1.4.0",), "recs-4d4a-w8se"),
    "search-indexer": (("2.2.3",), "search-indexer-9b02-h7uj"),
    "release-orchestrator": (("0.8.5",), "release-orch-2e6a-p0zc"),
    "scheduling": (("1.1.9",), "scheduling-8c3f-b5ye"),
    "billing": (("6.0.2",), "billing-7e11-d3fq"),
    "cdn-provisioner": (("1.3.0",), "cdn-prov-0f5b-l6ai"),
    "audit-log": (("0.4.1",), "audit-log-58aa-t1ok"),
    "notifications": (("2.9.0",), "notifications-3b9e-m2cu"),
    "janitor": (("0.2.0",), "janitor-cron-28f1-x0aa"),
    "sitemap-builder": (("1.0.3",), "sitemap-cron-4a7c-u3ie"),
}
GRPC_PORT = 50051
DATABASES = {  # service -> (db.system.name, db.namespace, server.address, server.port)
    "media-catalog": ("postgresql", "catalog", "pg-catalog.internal", 5432),
    "transcoder": ("postgresql", "media", "pg-transcode.internal", 5432),   # its own `jobs` table ...
    "janitor": ("postgresql", "media", "pg-ops.internal", 5432),            # ... and janitor's, same db name
    "search-indexer": ("postgresql", "search", "pg-search.internal", 5432),
    "scheduling": ("postgresql", "releases", "pg-releases.internal", 5432),
    "billing": ("postgresql", "billing", "pg-billing.internal", 5432),
    "cdn-provisioner": ("postgresql", "delivery", "pg-delivery.internal", 5432),  # edge_configs ...
    "sitemap-builder": ("postgresql", "delivery", "pg-delivery.internal", 5432),  # ... read here
    "audit-log": ("postgresql", "audit", "pg-audit.internal", 5432),
    "recommendations": ("postgresql", "recs", "pg-recs.internal", 5432),
}


def scaled(count_at_base: int, instances: int) -> int:
    return max(1, round(count_at_base * instances / BASE))


@dataclass
class Message:
    topic: str
    msg_id: str
    key: str
    headers: dict
    body_size: int
    producer_ctx: trace.SpanContext
    sent_end: int
    available: int


@dataclass
class World:
    rng: random.Random
    providers: dict = field(default_factory=dict)
    exporters: dict = field(default_factory=dict)
    offsets: dict = field(default_factory=lambda: defaultdict(int))
    scheduled: list = field(default_factory=list)  # release.scheduled messages for the batch consumer
    ingest_version: int = 0

    def tracer(self, service: str, scope: str, version: str | None = None) -> trace.Tracer:
        versions, host = SERVICES[service]
        version = version or versions[0]
        key = (service, version)
        if key not in self.providers:
            resource = Resource.create({
                "service.name": service, "service.version": version, "service.namespace": "media",
                "service.instance.id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "deployment.environment.name": "production", "host.name": host,
                "process.runtime.name": "cpython", "process.runtime.version": "3.12.7",
            })
            exporter = InMemorySpanExporter()
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            self.providers[key], self.exporters[key] = provider, exporter
        return self.providers[key].get_tracer(f"media.{scope}", "1.0.0")

    def u(self, lo_ms: float, hi_ms: float) -> int:
        return int(self.rng.uniform(lo_ms, hi_ms) * MS)

    def ident(self, prefix: str) -> str:
        return prefix + "".join(self.rng.choice("0123456789abcdefghjkmnpqrstvwxyz") for _ in range(10))

    # ------------------------------------------------------------------ spans by kind
    def db(self, service: str, parent: trace.Span | None, start: int, dur: int, sql: str, op: str,
           table: str) -> int:
        system, namespace, host, port = DATABASES[service]
        ctx = trace.set_span_in_context(parent) if parent is not None else otel_context.Context()
        span = self.tracer(service, "db").start_span(
            f"{op} {table}", context=ctx, kind=SpanKind.CLIENT, start_time=start,
            attributes={"db.system.name": system, "db.namespace": namespace, "db.query.text": sql,
                        "db.operation.name": op, "server.address": host, "server.port": port})
        span.end(end_time=start + dur)
        return start + dur

    def internal(self, service: str, parent: trace.Span, name: str, start: int, dur: int) -> int:
        span = self.tracer(service, "app").start_span(
            name, context=trace.set_span_in_context(parent), kind=SpanKind.INTERNAL, start_time=start)
        span.end(end_time=start + dur)
        return start + dur

    def grpc(self, client: str, parent: trace.Span, start: int, callee: str, rpc_service: str, method: str,
             handler, status: int = GRPC_OK, streamed: int = 0, callee_version: str | None = None) -> int:
        """A unary (or server-streaming, `streamed` messages) gRPC call: CLIENT span, metadata carrying
        traceparent, the callee's SERVER span extracted from it, `handler(server_span, t) -> t` inside."""
        name = f"{rpc_service}/{method}"
        attrs = {"rpc.system": "grpc", "rpc.service": rpc_service, "rpc.method": method,
                 "server.address": f"{callee}.media.svc.cluster.local", "server.port": GRPC_PORT,
                 "network.transport": "tcp"}
        cspan = self.tracer(client, "grpc").start_span(
            name, context=trace.set_span_in_context(parent), kind=SpanKind.CLIENT, start_time=start,
            attributes=dict(attrs))
        metadata: dict = {}
        PROPAGATOR.inject(metadata, context=trace.set_span_in_context(cspan))
        s0 = start + self.u(0.3, 1.2)
        sspan = self.tracer(callee, "grpc", callee_version).start_span(
            name, context=PROPAGATOR.extract(metadata), kind=SpanKind.SERVER, start_time=s0,
            attributes={"rpc.system": "grpc", "rpc.service": rpc_service, "rpc.method": method,
                        "server.address": f"{callee}.media.svc.cluster.local", "server.port": GRPC_PORT})
        t = handler(sspan, s0 + self.u(0.1, 0.5)) if handler else s0 + self.u(1, 4)
        if streamed:
            for k in range(1, streamed + 1):
                t += self.u(60, 160)
                size = self.rng.randint(48, 96)
                sspan.add_event("message", {"message.type": "SENT", "message.id": k,
                                            "message.uncompressed_size": size}, timestamp=t)
                cspan.add_event("message", {"message.type": "RECEIVED", "message.id": k,
                                            "message.uncompressed_size": size}, timestamp=t + self.u(0.2, 0.8))
            t += MS
        s_end = t + self.u(0.1, 0.4)
        for span in (sspan, cspan):
            span.set_attribute("rpc.grpc.status_code", status)
            if status != GRPC_OK:
                span.set_status(Status(StatusCode.ERROR, {GRPC_UNAVAILABLE: "UNAVAILABLE",
                                                          GRPC_INTERNAL: "INTERNAL"}[status]))
        sspan.end(end_time=s_end)
        c_end = s_end + self.u(0.3, 1.2)
        cspan.end(end_time=c_end)
        return c_end

    def http_external(self, service: str, parent: trace.Span, start: int, dur: int, method: str, url: str,
                      host: str, status: int) -> int:
        """An HTTP call to an uninstrumented third-party API: a CLIENT span and nothing on the other side."""
        span = self.tracer(service, "http").start_span(
            method, context=trace.set_span_in_context(parent), kind=SpanKind.CLIENT, start_time=start,
            attributes={"http.request.method": method, "url.full": url, "server.address": host,
                        "server.port": 443, "http.response.status_code": status})
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=start + dur)
        return start + dur

    def send(self, service: str, parent: trace.Span, start: int, topic: str, key: str, body_size: int,
             version: str | None = None) -> Message:
        msg_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        offset = self.offsets[topic]
        self.offsets[topic] += 1
        span = self.tracer(service, "kafka", version).start_span(
            f"send {topic}", context=trace.set_span_in_context(parent), kind=SpanKind.PRODUCER, start_time=start,
            attributes={"messaging.system": "kafka", "messaging.operation.type": "send",
                        "messaging.operation.name": "send", "messaging.destination.name": topic,
                        "messaging.kafka.message.key": key, "messaging.message.id": msg_id,
                        "messaging.kafka.offset": offset, "messaging.message.body.size": body_size, **KAFKA})
        headers: dict = {}
        PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))
        end = start + self.u(1.0, 3.0)
        span.end(end_time=end)
        return Message(topic, msg_id, key, headers, body_size, span.get_span_context(), end, end + self.u(0.5, 3.0))

    def process(self, service: str, msg: Message, start: int) -> trace.Span:
        return self.tracer(service, "kafka").start_span(
            f"process {msg.topic}", context=PROPAGATOR.extract(msg.headers), kind=SpanKind.CONSUMER,
            start_time=start,
            attributes={"messaging.system": "kafka", "messaging.operation.type": "process",
                        "messaging.operation.name": "process", "messaging.destination.name": msg.topic,
                        "messaging.consumer.group.name": service, "messaging.kafka.message.key": msg.key,
                        "messaging.message.id": msg.msg_id, "messaging.message.body.size": msg.body_size,
                        **KAFKA})


# ---------------------------------------------------------------------- workflow 1: title ingest
CATALOG = "media.catalog.v1.Catalog"
STORE = "media.storage.v1.ObjectStore"


def catalog_handler(w: World, method: str, asset_id: str, version: str, publish: list | None = None):
    op = {"CreateAsset": ("INSERT", "INSERT INTO assets (id, state) VALUES ($1, 'draft')"),
          "SetMetadata": ("UPDATE", "UPDATE assets SET title = $2, synopsis = $3 WHERE id = $1"),
          "AttachRendition": ("INSERT", "INSERT INTO renditions (asset_id, profile, uri) VALUES ($1, $2, $3)"),
          "SetThumbnail": ("UPDATE", "UPDATE assets SET thumbnail_uri = $2 WHERE id = $1"),
          "SetAvailability": ("INSERT", "INSERT INTO availability (asset_id, region, starts_at) VALUES ($1, $2, $3)"),
          "PublishAsset": ("UPDATE", "UPDATE assets SET state = 'published' WHERE id = $1"),
          "DeleteAsset": ("DELETE", "DELETE FROM assets WHERE id = $1"),
          "GetAsset": ("SELECT", ("SELECT a.id, a.title, a.synopsis, r.profile FROM assets a "
                                  "JOIN renditions r ON r.asset_id = a.id WHERE a.id = $1"))}[method]
    table = "renditions" if method == "AttachRendition" else "availability" if method == "SetAvailability" else "assets"

    def handle(span: trace.Span, t: int) -> int:
        t = w.db("media-catalog", span, t, w.u(0.8, 3.0), op[1], op[0], table)
        if publish is not None:
            publish.append(w.send("media-catalog", span, t + w.u(0.1, 0.4), "asset.published", asset_id, 64,
                                  version))
            t = publish[-1].sent_end + w.u(0.1, 0.5)
        return t
    return handle


def title_ingest(w: World, t: int, transcode_fails: bool) -> tuple[list, int]:
    asset_id = w.ident("as_")
    version = SERVICES["media-catalog"][0][w.ingest_version % 2]  # the two versions behind one k8s service
    w.ingest_version += 1
    gw = w.tracer("studio-gateway", "http").start_span(
        "POST /v1/titles", kind=SpanKind.SERVER, start_time=t, context=otel_context.Context(),
        attributes={"http.request.method": "POST", "http.route": "/v1/titles", "url.path": "/v1/titles",
                    "url.scheme": "https", "server.address": "studio.example.com", "server.port": 443,
                    "user_agent.original": "studio-web/5.1"})
    published: list = []

    def orchestrate(span: trace.Span, t0: int) -> int:
        def cat(m: str, tt: int, pub: list | None = None) -> int:
            return w.grpc("ingest-orchestrator", span, tt, "media-catalog", CATALOG, m,
                          catalog_handler(w, m, asset_id, version, pub), callee_version=version)
        t1 = cat("CreateAsset", t0)
        t1 = cat("SetMetadata", t1 + w.u(0.2, 1.0))
        t1 = w.grpc("ingest-orchestrator", span, t1 + w.u(0.2, 1.0), "object-store", STORE, "PutObject",
                    lambda s, tt: tt + w.u(40, 160))

        def transcode(s: trace.Span, tt: int) -> int:
            s.set_attribute("media.transcode.job_id", w.ident("job_"))
            tt = w.db("transcoder", s, tt, w.u(1, 3), "INSERT INTO jobs (id, asset_id, state) VALUES ($1, $2, 'running')",
                      "INSERT", "jobs")
            for _ in range(3):  # progress checkpoints: the same statement three times, all fine
                tt = w.db("transcoder", s, tt + w.u(300, 900), w.u(0.5, 2), "UPDATE jobs SET progress = $2 WHERE id = $1",
                          "UPDATE", "jobs")
            final = "failed" if transcode_fails else "done"
            tt = w.db("transcoder", s, tt + w.u(5, 20), w.u(0.5, 2), f"UPDATE jobs SET state = '{final}' WHERE id = $1",
                      "UPDATE", "jobs")
            return tt
        t1 = w.grpc("ingest-orchestrator", span, t1 + w.u(0.5, 2.0), "transcoder", "media.transcode.v1.Transcoder",
                    "Transcode", transcode, status=GRPC_INTERNAL if transcode_fails else GRPC_OK,
                    streamed=w.rng.randint(18, 60))
        if transcode_fails:  # the saga compensates every earlier step, in reverse
            t1 = w.grpc("ingest-orchestrator", span, t1 + w.u(0.5, 2.0), "object-store", STORE, "DeleteObject",
                        lambda s, tt: tt + w.u(5, 20))
            t1 = cat("DeleteAsset", t1 + w.u(0.2, 1.0))
            return t1 + w.u(0.2, 0.8)
        for m in ("AttachRendition", "SetThumbnail", "SetAvailability"):
            t1 = cat(m, t1 + w.u(0.2, 1.0))
        t1 = cat("PublishAsset", t1 + w.u(0.2, 1.0), published)
        return t1 + w.u(0.2, 0.8)

    t_end = w.grpc("studio-gateway", gw, t + w.u(1, 3), "ingest-orchestrator", "media.ingest.v1.IngestOrchestrator",
                   "StartIngest", orchestrate, status=GRPC_INTERNAL if transcode_fails else GRPC_OK)
    gw.set_attribute("http.response.status_code", 502 if transcode_fails else 201)
    if transcode_fails:
        gw.set_status(Status(StatusCode.ERROR))
    gw.end(end_time=t_end + w.u(0.5, 2))
    for msg in published:
        asset_published_consumers(w, msg, version)
    return published, t_end


def asset_published_consumers(w: World, msg: Message, version: str) -> None:
    # recommendations: the event only carries the id, so it calls back the catalog for the asset
    t = msg.available + w.u(2, 30)
    span = w.process("recommendations", msg, t)
    t2 = w.grpc("recommendations", span, t + w.u(0.3, 1), "media-catalog", CATALOG, "GetAsset",
                catalog_handler(w, "GetAsset", msg.key, version), callee_version=version)
    t2 = w.db("recommendations", span, t2 + w.u(0.2, 1), w.u(1, 4),
              "INSERT INTO candidate_items (asset_id, embedding_version) VALUES ($1, 7)", "INSERT", "candidate_items")
    span.end(end_time=t2 + w.u(0.2, 1))
    # search-indexer: queues the id for its nightly crawl, no call
    t = msg.available + w.u(2, 30)
    span = w.process("search-indexer", msg, t)
    t2 = w.db("search-indexer", span, t + w.u(0.2, 1), w.u(1, 3),
              "INSERT INTO pending_documents (asset_id) VALUES ($1) ON CONFLICT DO NOTHING", "INSERT", "pending_documents")
    span.end(end_time=t2 + w.u(0.2, 1))


# ---------------------------------------------------------------------- workflow 2: release saga
def release(w: World, t: int, fee_failures: int, edge_fails: bool, calm: bool) -> int:
    release_id = w.ident("rl_")
    gw = w.tracer("studio-gateway", "http").start_span(
        "POST /v1/releases", kind=SpanKind.SERVER, start_time=t, context=otel_context.Context(),
        attributes={"http.request.method": "POST", "http.route": "/v1/releases", "url.path": "/v1/releases",
                    "url.scheme": "https", "server.address": "studio.example.com", "server.port": 443,
                    "user_agent.original": "studio-web/5.1"})
    after: dict = {}

    def orchestrate(span: trace.Span, t0: int) -> int:
        def step(svc: str, rsvc: str, method: str, sql: tuple | None, tt: int, status: int = GRPC_OK, handler=None) -> int:
            def h(s: trace.Span, x: int) -> int:
                return w.db(svc, s, x, w.u(1, 4), sql[0], sql[1], sql[2]) + w.u(0.2, 1)
            return w.grpc("release-orchestrator", span, tt, svc, rsvc, method, handler or (h if sql else None), status)
        t1 = step("scheduling", "media.scheduling.v1.Scheduling", "ReserveSlot",
                  ("INSERT INTO slots (release_id, window_start) VALUES ($1, $2)", "INSERT", "slots"), t0)
        for _ in range(fee_failures):  # the client's retry loop: UNAVAILABLE while billing drains, backoff
            t1 = step("billing", "media.billing.v1.Billing", "ChargeFee", None, t1 + w.u(0.3, 1), GRPC_UNAVAILABLE)
            t1 += w.u(80, 250)
        t1 = step("billing", "media.billing.v1.Billing", "ChargeFee",
                  ("INSERT INTO charges (release_id, amount_cents) VALUES ($1, $2)", "INSERT", "charges"), t1 + w.u(0.3, 1))

        def provision(s: trace.Span, x: int) -> int:
            x = w.http_external("cdn-provisioner", s, x, w.u(60, 240), "POST",
                                "https://api.edgecdn.example/v2/properties", "api.edgecdn.example",
                                503 if edge_fails else 201)
            if not edge_fails:
                x = w.db("cdn-provisioner", s, x + w.u(0.2, 1), w.u(1, 3),
                         "INSERT INTO edge_configs (release_id, property_id, origin) VALUES ($1, $2, $3)",
                         "INSERT", "edge_configs")
            return x + w.u(0.2, 1)
        t1 = step("cdn-provisioner", "media.delivery.v1.EdgeProvisioner", "ProvisionEdge", None, t1 + w.u(0.3, 1),
                  GRPC_INTERNAL if edge_fails else GRPC_OK, provision)
        if edge_fails:
            t1 = step("scheduling", "media.scheduling.v1.Scheduling", "ReleaseSlot",
                      ("DELETE FROM slots WHERE release_id = $1", "DELETE", "slots"), t1 + w.u(0.3, 1))
            if calm:
                t1 = step("billing", "media.billing.v1.Billing", "RefundFee",
                          ("UPDATE charges SET refunded_at = now() WHERE release_id = $1", "UPDATE", "charges"),
                          t1 + w.u(0.3, 1))
            return t1 + w.u(0.2, 1)
        msg = w.send("release-orchestrator", span, t1 + w.u(0.2, 1), "release.scheduled", release_id, 412)
        w.scheduled.append(msg)
        # the audit call: a plain HTTP client without the propagator (no traceparent header sent)
        t2 = msg.sent_end + w.u(0.3, 0.5)
        cspan = w.tracer("release-orchestrator", "http").start_span(
            "POST", context=trace.set_span_in_context(span), kind=SpanKind.CLIENT, start_time=t2,
            attributes={"http.request.method": "POST", "url.full": "http://audit-log.media.svc.cluster.local/v1/audit",
                        "server.address": "audit-log.media.svc.cluster.local", "server.port": 80,
                        "http.response.status_code": 202})
        headers: dict = {"content-type": "application/json"}  # nothing injected
        srv = w.tracer("audit-log", "http").start_span(
            "POST /v1/audit", context=PROPAGATOR.extract(headers), kind=SpanKind.SERVER, start_time=t2 + w.u(0.4, 1),
            attributes={"http.request.method": "POST", "http.route": "/v1/audit", "url.path": "/v1/audit",
                        "http.response.status_code": 202, "server.address": "audit-log.media.svc.cluster.local"})
        x = w.db("audit-log", srv, t2 + w.u(1.2, 2), w.u(1, 3),
                 "INSERT INTO audit_entries (actor, action, subject) VALUES ($1, 'release.scheduled', $2)",
                 "INSERT", "audit_entries")
        srv.end(end_time=x + w.u(0.2, 0.6))
        cspan.end(end_time=x + w.u(0.8, 1.5))
        after["audit"] = x
        return x + w.u(2, 3)

    t_end = w.grpc("studio-gateway", gw, t + w.u(1, 3), "release-orchestrator", "media.release.v1.Releases",
                   "ScheduleRelease", orchestrate, status=GRPC_INTERNAL if edge_fails else GRPC_OK)
    gw.set_attribute("http.response.status_code", 502 if edge_fails else 201)
    if edge_fails:
        gw.set_status(Status(StatusCode.ERROR))
    gw.end(end_time=t_end + w.u(0.5, 2))
    return t_end


def notification_batches(w: World, first: int, last: int) -> int:
    """notifications polls release.scheduled every 10 s: one new root trace per poll, a link per message."""
    batches, t, pending = 0, first + 10_000 * MS, sorted(w.scheduled, key=lambda m: m.available)
    while pending:
        ready = [m for m in pending if m.available <= t]
        if ready:
            pending = [m for m in pending if m.available > t]
            span = w.tracer("notifications", "kafka").start_span(
                "process release.scheduled", context=otel_context.Context(), kind=SpanKind.CONSUMER, start_time=t,
                links=[Link(m.producer_ctx, {"messaging.message.id": m.msg_id}) for m in ready],
                attributes={"messaging.system": "kafka", "messaging.operation.type": "process",
                            "messaging.operation.name": "process", "messaging.destination.name": "release.scheduled",
                            "messaging.consumer.group.name": "notifications", "messaging.batch.message_count": len(ready),
                            **KAFKA})
            x = t + w.u(1, 3)
            for _ in ready:
                x = w.http_external("notifications", span, x + w.u(0.2, 1), w.u(30, 90), "POST",
                                    "https://api.mailer.example/v3/send", "api.mailer.example", 202)
            span.end(end_time=x + w.u(0.5, 2))
            batches += 1
        t += 10_000 * MS
    return batches


# ---------------------------------------------------------------------- workflows 3 and 4: scheduler jobs
def janitor_run(w: World, t: int) -> None:
    # the cron job issues one statement with no span of its own around it: a root CLIENT span
    w.db("janitor", None, t, w.u(20, 90),
         "DELETE FROM jobs WHERE finished_at < now() - interval '7 days'", "DELETE", "jobs")


def sitemap_run(w: World, t: int) -> None:
    root = w.tracer("sitemap-builder", "job").start_span(
        "rebuild-sitemap", context=otel_context.Context(), kind=SpanKind.INTERNAL, start_time=t,
        attributes={"job.schedule": "*/40s +20s"})
    x = w.db("sitemap-builder", root, t + w.u(1, 3), w.u(8, 30),
             "SELECT release_id, property_id, origin FROM edge_configs ORDER BY release_id", "SELECT", "edge_configs")
    x = w.internal("sitemap-builder", root, "render sitemap.xml", x + w.u(0.5, 1), w.u(20, 80))
    x = w.http_external("sitemap-builder", root, x + w.u(0.5, 1), w.u(40, 120), "PUT",
                        "https://objects.bucketstore.example/media-sitemaps/sitemap.xml", "objects.bucketstore.example",
                        200)
    root.end(end_time=x + w.u(0.5, 2))


# ---------------------------------------------------------------------- the whole run
def export_lines(w: World) -> list[str]:
    """Per service version, spans batched by end time into 5 s windows (<= 512 each), as a BatchSpanProcessor sends."""
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


def generate(seed: int, instances: int, calm: bool = False) -> tuple[list[str], dict]:
    random.seed(seed)  # the SDK's RandomIdGenerator draws from the module-level generator
    w = World(rng=random.Random(f"media_release_grpc:{seed}"))
    n_rel, n_jobs = scaled(96, instances), scaled(16, instances)
    span_ns = instances * 4_000 * MS
    transcode_fail = set(w.rng.sample(range(instances), max(2, round(instances * 0.08))))
    edge_fail = set(w.rng.sample(range(n_rel), max(2, round(n_rel * 0.12))))
    retry_pool = [i for i in range(n_rel) if i not in edge_fail]
    retried = {i: w.rng.choice((1, 1, 2)) for i in w.rng.sample(retry_pool, max(2, round(n_rel * 0.1)))}
    if calm:  # drawn all the same, so that the calm run differs only where the plants were
        retried = {}
    events = [(EPOCH_NS + i * 4_000 * MS + w.u(0, 800), "ingest", i) for i in range(instances)]
    events += [(EPOCH_NS + 1_700 * MS + j * span_ns // n_rel + w.u(0, 600), "release", j) for j in range(n_rel)]
    for k in range(n_jobs):  # the scheduler: janitor at the cycle start, sitemap-builder 20 s later
        cycle = EPOCH_NS + 5_000 * MS + k * span_ns // n_jobs
        events += [(cycle + w.u(0, 40), "janitor", k), (cycle + 20_000 * MS + w.u(0, 40), "sitemap", k)]
    last = EPOCH_NS
    for t, what, i in sorted(events):
        if what == "ingest":
            last = max(last, title_ingest(w, t, i in transcode_fail)[1])
        elif what == "release":
            last = max(last, release(w, t, retried.get(i, 0), i in edge_fail, calm))
        elif what == "janitor":
            janitor_run(w, t)
        else:
            sitemap_run(w, t)
    batches = notification_batches(w, EPOCH_NS, last)
    for provider in w.providers.values():
        provider.shutdown()
    stats = {"ingests": instances, "releases": n_rel, "jobs": n_jobs, "transcode_failures": len(transcode_fail),
             "edge_failures": len(edge_fail), "retried": len(retried), "notification_batches": batches,
             "spans": sum(len(e.get_finished_spans()) for e in w.exporters.values())}
    return export_lines(w), stats


def write_dump(lines: list[str], out: Path) -> None:
    with open(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                               compresslevel=9) as fh:
        for line in lines:
            fh.write(line.encode() + b"\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--instances", type=int, default=BASE, help="title ingests (the other workflows scale)")
    ap.add_argument("--calm", action="store_true",
                    help="leave the plants out: no ChargeFee retries, and the release saga always refunds")
    ap.add_argument("--out", type=Path, default=HERE / "dump.otlp.jsonl.gz")
    args = ap.parse_args(argv)
    lines, stats = generate(args.seed, args.instances, args.calm)
    write_dump(lines, args.out)
    print(f"wrote {args.out}: {len(lines)} export requests, " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
