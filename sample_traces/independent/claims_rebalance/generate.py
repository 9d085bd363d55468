"""Generate the claims_rebalance scenario: a Kafka insurance-claims system traced with the OpenTelemetry Python SDK.

    python sample_traces/independent/claims_rebalance/generate.py [--seed 17] [--instances 200] [--out FILE]
                                                                  [--races N] [--kicks N]

Every span is made by the SDK API: one TracerProvider + Resource per service, version and replica (each
replica its own `service.instance.id`), the SDK's own random W3C ids (seeded), W3C TraceContext injected
into and extracted from Kafka headers and HTTP headers by the real propagator. Spans are finished into
in-memory exporters and written as the Collector file exporter writes: one OTLP ExportTraceServiceRequest
as JSON per line (the OTLP exporter's encoder, the JSON by `sample_traces/captures/otlp_sink.py`), gzip
mtime 0. Time is a simulated clock; payouts' node runs ahead (payouts-0 +560 ms, payouts-1 +640 ms):
every timestamp that service records is shifted by its skew, the causality is computed in true time.

    claims-api        POST /claims -> INSERT claims -> claim.filed              (old semantic conventions)
    claim.filed ->    coverage-check (3 replicas, old conventions; rebalances replay uncommitted offsets)
                      fraud-screen   (2 replicas, 3.1.0 then 3.2.0: values change, keys do not)
                      damage-assessor(replica 0 on 1.4.2, replicas 1-2 on 2.0.0: a payload key renamed)
                      claims-reporting (old conventions; a sink)
    coverage.checked, fraud.screened, assessment.done -> claim-coordinator: when all three are in
                      claim_progress, send payout.requested (an orchestrator nobody designed)
    payout.requested -> ledger (INSERT ledger_reservations), payouts (reads it; skewed clock; fails and
                      is redelivered when the reservation is late), repair-scheduler (books a garage)
    payout.failed   -> ledger releases the reservation (reservation.released); repair-scheduler does
                      not subscribe: its booking is never cancelled
    renewals          POST /renewals/{policy_id}: seven endpoints of policy-service (god coordinator)
    claims-desk       POST /claims/{claim_id}/close: one or two endpoints each of six services
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
import uuid
import zlib
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
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "captures"))
from otlp_sink import request_to_json_line  # the capture sink's OTLP -> JSON line encoding

EPOCH_NS = 1_796_205_600 * 10**9  # 2026-12-02T10:00:00Z
MS = 1_000_000
S = 1000 * MS
PROPAGATOR = TraceContextTextMapPropagator()
BROKER = ("kafka-0.claims.internal", 9092)
PARTITIONS = 6  # every topic; keys are claim ids, so the three done events of a claim are co-partitioned
EXPORT_WINDOW_NS = 5 * S
EXPORT_BATCH = 512
COMMIT_INTERVAL_NS = 10 * S  # coverage-check: enable.auto.commit, auto.commit.interval.ms=10000
OLD_CONVENTIONS = {"claims-api", "coverage-check", "claims-reporting"}
SKEW_NS = {("payouts", 0): 560 * MS, ("payouts", 1): 640 * MS}  # payouts' node clock runs ahead
REPLICAS = {"coverage-check": 3, "fraud-screen": 2, "damage-assessor": 3, "claim-coordinator": 2, "payouts": 2,
            "ledger": 2}
VERSIONS = {"claims-api": "2.3.0", "coverage-check": "4.0.2", "claims-reporting": "1.1.0",
            "claim-coordinator": "0.7.3", "ledger": "3.3.1", "payouts": "5.0.4", "repair-scheduler": "1.9.0",
            "policy-service": "8.2.0", "renewals": "2.2.1", "claims-desk": "1.5.0", "documents": "3.0.0",
            "customer-comms": "2.8.5"}
DATABASES = {  # service -> (system, database, host, port)
    "claims-api": ("postgresql", "claims", "pg-claims.internal", 5432),
    "coverage-check": ("postgresql", "coverage", "pg-coverage.internal", 5432),
    "fraud-screen": ("postgresql", "fraud", "pg-fraud.internal", 5432),
    "damage-assessor": ("postgresql", "assessments", "pg-assess.internal", 5432),
    "claims-reporting": ("clickhouse", "reporting", "ch-reporting.internal", 8123),
    "claim-coordinator": ("postgresql", "coordination", "pg-coord.internal", 5432),
    "ledger": ("postgresql", "money", "pg-money.internal", 5432),
    "payouts": ("postgresql", "money", "pg-money.internal", 5432),  # the same database as ledger
    "repair-scheduler": ("mysql", "repairs", "mysql-repairs.internal", 3306),
    "policy-service": ("postgresql", "policies", "pg-policies.internal", 5432),
    "documents": ("postgresql", "documents", "pg-docs.internal", 5432),
    "customer-comms": ("postgresql", "comms", "pg-comms.internal", 5432),
    "renewals": ("postgresql", "renewals", "pg-renewals.internal", 5432),
    "claims-desk": ("postgresql", "desk", "pg-desk.internal", 5432),
}
HOSTS = {"policy-service": "policy.claims.internal", "ledger": "ledger.claims.internal",
         "documents": "documents.claims.internal", "repair-scheduler": "repairs.claims.internal",
         "fraud-screen": "fraud.claims.internal", "customer-comms": "comms.claims.internal"}


class ReservationNotFound(LookupError):
    """payouts' error when the ledger reservation of a payout request is not (yet) in ledger_reservations."""


ReservationNotFound.__module__ = "payouts.handlers"


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: str
    msg_id: str
    headers: dict
    size: int
    available: int  # true ns: when consumers can poll it


class Sp:
    """An SDK span of one service replica, whose recorded timestamps carry that replica's clock skew."""

    def __init__(self, span: trace.Span, skew: int):
        self.span, self.skew = span, skew

    @property
    def ctx(self):
        return trace.set_span_in_context(self.span)

    def end(self, t: int) -> int:
        self.span.end(end_time=t + self.skew)
        return t

    def fail(self, exc: Exception, t: int, error_type: str) -> None:
        self.span.record_exception(exc, timestamp=t + self.skew)
        self.span.set_attribute("error.type", error_type)
        self.span.set_status(Status(StatusCode.ERROR, str(exc)))


@dataclass
class World:
    rng: random.Random
    providers: dict = field(default_factory=dict)
    exporters: dict = field(default_factory=dict)
    offsets: dict = field(default_factory=lambda: defaultdict(int))
    kicks: list = field(default_factory=list)  # (true ns, replica) a coverage-check replica left the group
    coverage_runs: list = field(default_factory=list)
    coordinator_state: dict = field(default_factory=dict)
    stats: dict = field(default_factory=lambda: defaultdict(int))

    def version(self, service: str, replica: int, t: int, t_mid: int) -> str:
        if service == "damage-assessor":
            return "1.4.2" if replica == 0 else "2.0.0"
        if service == "fraud-screen":
            return "3.1.0" if t < t_mid else "3.2.0"
        return VERSIONS[service]

    def tracer(self, service: str, version: str, replica: int, scope: str) -> trace.Tracer:
        key = (service, version, replica)
        if key not in self.providers:
            resource = Resource.create({
                "service.name": service, "service.version": version, "service.namespace": "claims",
                "service.instance.id": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{service}-{replica}.claims")),
                "host.name": f"{service}-{zlib.crc32(service.encode()) % 9000 + 1000:x}-{replica}",
                "k8s.pod.name": f"{service}-{replica}", "deployment.environment.name": "production",
                "process.runtime.name": "cpython", "process.runtime.version": "3.11.9"})
            exporter = InMemorySpanExporter()
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            self.providers[key], self.exporters[key] = provider, exporter
        return self.providers[key].get_tracer(f"claims.{scope}", "1.0.0")

    def u(self, lo_ms: float, hi_ms: float) -> int:
        return int(self.rng.uniform(lo_ms, hi_ms) * MS)

    def ident(self, prefix: str) -> str:
        return prefix + "".join(self.rng.choice("0123456789abcdefghjkmnpqrstvwxyz") for _ in range(10))

    def start(self, who: tuple, scope: str, name: str, ctx, kind: SpanKind, t: int, attrs: dict) -> Sp:
        service, version, replica = who
        skew = SKEW_NS.get((service, replica), 0)
        span = self.tracer(service, version, replica, scope).start_span(
            name, context=ctx, kind=kind, start_time=t + skew, attributes=attrs)
        return Sp(span, skew)

    # ------------------------------------------------------------------ spans by kind
    def db(self, who: tuple, parent: Sp, t: int, dur: int, sql: str) -> int:
        system, database, host, port = DATABASES[who[0]]
        if who[0] in OLD_CONVENTIONS:
            attrs = {"db.system": system, "db.name": database, "db.statement": sql, "net.peer.name": host,
                     "net.peer.port": port}
        else:
            attrs = {"db.system.name": system, "db.namespace": database, "db.query.text": sql,
                     "server.address": host, "server.port": port}
        span = self.start(who, "db", sql.split()[0], parent.ctx, SpanKind.CLIENT, t, attrs)
        return span.end(t + dur)

    def call(self, who: tuple, parent: Sp, t: int, method: str, callee: str, route: str, path: str,
             sql: list[str], status: int = 200) -> int:
        """An HTTP call from `who` to an internal service: CLIENT span, the callee's SERVER span and its SQL."""
        host = HOSTS[callee]
        url = f"http://{host}:8080{path}"
        client = self.start(who, "http", method, parent.ctx, SpanKind.CLIENT, t,
                            {"http.request.method": method, "url.full": url, "server.address": host,
                             "server.port": 8080, "network.protocol.version": "1.1"})
        headers: dict = {}
        PROPAGATOR.inject(headers, context=client.ctx)
        s0 = t + self.u(0.6, 1.4)
        callee_who = (callee, VERSIONS.get(callee, "3.2.0"), 0)
        server = self.start(callee_who, "http", f"{method} {route}", PROPAGATOR.extract(headers), SpanKind.SERVER,
                            s0, {"http.request.method": method, "http.route": route, "url.path": path,
                                 "url.scheme": "http", "server.address": host, "server.port": 8080,
                                 "network.protocol.version": "1.1", "http.response.status_code": status})
        c = s0 + self.u(0.2, 0.5)
        for stmt in sql:
            c = self.db(callee_who, server, c + self.u(0.1, 0.4), self.u(1, 4), stmt)
        s1 = server.end(c + self.u(0.3, 1.0))
        client.span.set_attribute("http.response.status_code", status)
        return client.end(s1 + self.u(0.6, 1.4))

    def external(self, who: tuple, parent: Sp, t: int, dur: int, method: str, url: str, host: str,
                 status: int) -> int:
        span = self.start(who, "http", method, parent.ctx, SpanKind.CLIENT, t,
                          {"http.request.method": method, "url.full": url, "server.address": host,
                           "server.port": 443, "http.response.status_code": status,
                           "network.protocol.version": "1.1"})
        if status >= 400:
            span.span.set_attribute("error.type", str(status))
            span.span.set_status(Status(StatusCode.ERROR))
        return span.end(t + dur)

    def send(self, who: tuple, parent: Sp, t: int, topic: str, key: str, payload: dict, size: int) -> Message:
        partition = zlib.crc32(key.encode()) % PARTITIONS
        offset = self.offsets[(topic, partition)]
        self.offsets[(topic, partition)] += 1
        msg_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        host, port = BROKER
        if who[0] in OLD_CONVENTIONS:
            name = f"{topic} send"
            attrs = {"messaging.system": "kafka", "messaging.destination": topic,
                     "messaging.destination_kind": "topic", "messaging.operation": "send",
                     "messaging.kafka.partition": partition, "messaging.kafka.message_key": key,
                     "messaging.message_id": msg_id, "messaging.message_payload_size_bytes": size,
                     "net.peer.name": host, "net.peer.port": port}
        else:
            name = f"send {topic}"
            attrs = {"messaging.system": "kafka", "messaging.destination.name": topic,
                     "messaging.operation.type": "send", "messaging.operation.name": "send",
                     "messaging.destination.partition.id": str(partition), "messaging.kafka.message.key": key,
                     "messaging.message.id": msg_id, "messaging.message.body.size": size,
                     "server.address": host, "server.port": port}
        attrs.update(payload)
        span = self.start(who, "kafka", name, parent.ctx, SpanKind.PRODUCER, t, attrs)
        headers: dict = {"ce_id": msg_id, "ce_type": topic}
        PROPAGATOR.inject(headers, context=span.ctx)
        end = t + self.u(1.0, 3.0)
        span.end(end)
        return Message(topic, partition, offset, key, msg_id, headers, size, end + self.u(0.5, 2.0))

    def process(self, who: tuple, msg: Message, t: int) -> Sp:
        service, _, replica = who
        host, port = BROKER
        if service in OLD_CONVENTIONS:
            name = f"{msg.topic} process"
            attrs = {"messaging.system": "kafka", "messaging.destination": msg.topic,
                     "messaging.destination_kind": "topic", "messaging.operation": "process",
                     "messaging.kafka.partition": msg.partition, "messaging.kafka.consumer_group": service,
                     "messaging.kafka.message_offset": msg.offset, "messaging.kafka.message_key": msg.key,
                     "messaging.message_id": msg.msg_id, "messaging.message_payload_size_bytes": msg.size,
                     "messaging.kafka.client_id": f"{service}-{replica}", "net.peer.name": host,
                     "net.peer.port": port}
        else:
            name = f"process {msg.topic}"
            attrs = {"messaging.system": "kafka", "messaging.destination.name": msg.topic,
                     "messaging.operation.type": "process", "messaging.operation.name": "process",
                     "messaging.destination.partition.id": str(msg.partition),
                     "messaging.consumer.group.name": service, "messaging.kafka.offset": msg.offset,
                     "messaging.kafka.message.key": msg.key, "messaging.message.id": msg.msg_id,
                     "messaging.message.body.size": msg.size, "messaging.client.id": f"{service}-{replica}",
                     "server.address": host, "server.port": port}
        return self.start(who, "kafka", name, PROPAGATOR.extract(msg.headers), SpanKind.CONSUMER, t, attrs)

    def internal(self, who: tuple, parent: Sp, name: str, t: int, dur: int) -> int:
        span = self.start(who, "app", name, parent.ctx, SpanKind.INTERNAL, t, {})
        return span.end(t + dur)

    def owner(self, service: str, partition: int, t: int) -> int:
        """The replica a range assignor gives `partition` at true time t (coverage-check: minus kicked ones)."""
        live = list(range(REPLICAS[service]))
        if service == "coverage-check":
            for at, replica in self.kicks:
                if at <= t < at + 30 * S and replica in live and len(live) > 1:
                    live.remove(replica)
        per = -(-PARTITIONS // len(live))
        return live[partition // per]


# ---------------------------------------------------------------------- the claim workflow
def coverage(w: World, filed: Message, t: int, replica: int, duplicate: bool, claim: dict) -> Message:
    who = ("coverage-check", VERSIONS["coverage-check"], replica)
    span = w.process(who, filed, t)
    c = w.db(who, span, t + w.u(0.2, 0.5), w.u(2, 6),
             "SELECT limit_cents, deductible_cents FROM policy_limits WHERE policy_id = $1 AND peril = $2")
    c = w.db(who, span, c + w.u(0.1, 0.4), w.u(2, 5),
             "INSERT INTO coverage_decisions (claim_id, covered, limit_cents) VALUES ($1, $2, $3) "
             "ON CONFLICT (claim_id) DO NOTHING")
    checked = w.send(who, span, c + w.u(0.2, 0.6), "coverage.checked", claim["id"],
                     {"claims.claim.id": claim["id"], "claims.coverage.covered": True,
                      "claims.coverage.limit_cents": claim["limit"]}, w.rng.randint(240, 300))
    end = span.end(checked.available + w.u(0.3, 1.0))
    if not duplicate:
        w.coverage_runs.append({"filed": filed, "replica": replica, "end": end, "claim": claim, "trace_of": span})
    return checked


def coordinator(w: World, msg: Message, producer: str, t: int, t_mid: int) -> tuple[Message | None, int]:
    """claim-coordinator: record the step in claim_progress; when all three are in, send payout.requested."""
    claim = msg.key
    replica = w.owner("claim-coordinator", msg.partition, t)
    who = ("claim-coordinator", VERSIONS["claim-coordinator"], replica)
    span = w.process(who, msg, t)
    c = w.db(who, span, t + w.u(0.2, 0.5), w.u(1.5, 4),
             "SELECT coverage_at, fraud_at, assessment_at FROM claim_progress WHERE claim_id = $1 FOR UPDATE")
    state = w.coordinator_state.setdefault(claim, set())
    out = None
    if producer in state:  # an at-least-once duplicate: already recorded, nothing to do
        w.stats["coordinator_duplicates"] += 1
    else:
        state.add(producer)
        column = {"coverage-check": "coverage_at", "fraud-screen": "fraud_at", "damage-assessor": "assessment_at"}
        c = w.db(who, span, c + w.u(0.1, 0.3), w.u(1.5, 4),
                 f"UPDATE claim_progress SET {column[producer]} = now() WHERE claim_id = $1")
        if len(state) == 3:
            out = w.send(who, span, c + w.u(0.2, 0.6), "payout.requested", claim,
                         {"claims.claim.id": claim, "claims.payout.amount_cents": w.rng.randint(20_000, 900_000)},
                         w.rng.randint(300, 380))
            c = out.available
    return out, span.end(c + w.u(0.3, 1.0))


def reporting(w: World, msg: Message, t: int) -> None:
    who = ("claims-reporting", VERSIONS["claims-reporting"], 0)
    span = w.process(who, msg, t)
    c = w.db(who, span, t + w.u(0.3, 1.0), w.u(3, 9),
             f"INSERT INTO claim_report (claim_id, step, at) VALUES ('{msg.key}', '{msg.topic}', now())")
    span.end(c + w.u(0.3, 1.0))


def claim_instance(w: World, t: int, race: bool, decline: bool, t_mid: int, kick: bool) -> dict:
    claim = {"id": w.ident("clm_"), "limit": w.rng.randint(50_000, 2_000_000)}
    api_who = ("claims-api", VERSIONS["claims-api"], 0)
    api = w.start(api_who, "http", "POST /claims", otel_context.Context(), SpanKind.SERVER, t,
                  {"http.method": "POST", "http.route": "/claims", "http.target": "/claims", "http.scheme": "https",
                   "http.host": "api.claims.example", "net.host.port": 443, "http.flavor": "2",
                   "http.user_agent": "ClaimsApp/3.1 (Android 15)"})
    c = w.db(api_who, api, t + w.u(1, 3), w.u(2, 6),
             "INSERT INTO claims (id, policy_id, peril, reported_at, status) VALUES ($1, $2, $3, now(), 'filed')")
    filed = w.send(api_who, api, c + w.u(0.2, 0.8), "claim.filed", claim["id"],
                   {"claims.claim.id": claim["id"], "claims.policy.id": w.ident("pol_"),
                    "claims.claim.peril": w.rng.choice(["water", "fire", "theft", "storm"])}, w.rng.randint(900, 1300))
    api.span.set_attribute("http.status_code", 202)
    api.end(filed.available + w.u(0.3, 1.0))
    done: list[tuple[int, str, Message]] = []  # (available, producer, message)

    # coverage-check: a consumer group of three replicas
    t_cov = filed.available + w.u(2, 10)
    replica = w.owner("coverage-check", filed.partition, t_cov)
    checked = coverage(w, filed, t_cov, replica, False, claim)
    done.append((checked.available, "coverage-check", checked))
    if kick:  # this replica misses max.poll.interval right after: kicked out before its next commit
        w.kicks.append((checked.available + w.u(500, 2500), replica))

    # fraud-screen: values change between 3.1.0 and 3.2.0, keys do not
    t_fr = filed.available + w.u(2, 10)
    replica = w.owner("fraud-screen", filed.partition, t_fr)
    version = w.version("fraud-screen", replica, t, t_mid)
    who = ("fraud-screen", version, replica)
    span = w.process(who, filed, t_fr)
    c = w.db(who, span, t_fr + w.u(0.2, 0.5), w.u(3, 8),
             "SELECT count(*) FROM claims_history WHERE policy_id = $1 AND reported_at > now() - interval '2 years'")
    c = w.internal(who, span, "score claim", c + w.u(0.1, 0.3), w.u(15, 40))
    risk = w.rng.choice(["low", "low", "medium"] if version == "3.1.0" else ["low", "medium", "elevated"])
    screened = w.send(who, span, c + w.u(0.2, 0.6), "fraud.screened", claim["id"],
                      {"claims.claim.id": claim["id"], "claims.fraud.risk": risk,
                       "claims.fraud.model": "gbm-2025.3" if version == "3.1.0" else "gbm-2026.1"},
                      w.rng.randint(200, 260))
    span.end(screened.available + w.u(0.3, 1.0))
    done.append((screened.available, "fraud-screen", screened))

    # damage-assessor: 2.0.0 renamed the estimate key; replica 0 still runs 1.4.2
    t_da = filed.available + w.u(2, 10)
    replica = w.owner("damage-assessor", filed.partition, t_da)
    version = w.version("damage-assessor", replica, t, t_mid)
    who = ("damage-assessor", version, replica)
    span = w.process(who, filed, t_da)
    c = w.db(who, span, t_da + w.u(0.2, 0.5), w.u(2, 6),
             "SELECT labour_rate_cents, region FROM repair_rates WHERE peril = $1 AND region = $2")
    c = w.internal(who, span, "estimate damage", c + w.u(0.1, 0.3), w.u(40, 120))
    c = w.db(who, span, c + w.u(0.1, 0.3), w.u(2, 5),
             "INSERT INTO assessments (claim_id, estimate_cents, method) VALUES ($1, $2, 'desk')")
    estimate = w.rng.randint(20_000, 900_000)
    key = "claims.assessment.estimate_cents" if version == "1.4.2" else "claims.assessment.estimated_amount_cents"
    assessed = w.send(who, span, c + w.u(0.2, 0.6), "assessment.done", claim["id"],
                      {"claims.claim.id": claim["id"], key: estimate, "claims.assessment.method": "desk"},
                      w.rng.randint(260, 320))
    span.end(assessed.available + w.u(0.3, 1.0))
    done.append((assessed.available, "damage-assessor", assessed))

    # claims-reporting: the sink, for claim.filed and the three done events
    reporting(w, filed, filed.available + w.u(3, 20))
    requested = None
    for avail, _, msg in done:
        reporting(w, msg, avail + w.u(3, 20))
    arrivals = sorted((avail + w.u(1, 6), producer, msg) for avail, producer, msg in done)
    for start, producer, msg in arrivals:  # claim_progress is locked FOR UPDATE: handled in arrival order
        out, _ = coordinator(w, msg, producer, start, t_mid)
        requested = out or requested
    assert requested is not None
    payout_leg(w, requested, claim, race, decline)
    return claim


def payout_leg(w: World, req: Message, claim: dict, race: bool, decline: bool) -> None:
    """payout.requested: ledger reserves, payouts reads the reservation and transfers, repair-scheduler books."""
    lwho = ("ledger", VERSIONS["ledger"], w.owner("ledger", req.partition, req.available))
    t_l = req.available + (w.u(150, 400) if race else w.u(2, 10))
    ls = w.process(lwho, req, t_l)
    c = w.db(lwho, ls, t_l + w.u(0.2, 0.5), w.u(2, 5),
             "SELECT balance_cents FROM claim_accounts WHERE claim_id = $1 FOR UPDATE")
    written = w.db(lwho, ls, c + w.u(0.1, 0.4), w.u(2, 6),
                   "INSERT INTO ledger_reservations (claim_id, amount_cents, status) VALUES ($1, $2, 'held')")
    ls.end(written + w.u(0.3, 1.0))

    # repair-scheduler: books a garage slot and never hears of a failed payout
    rwho = ("repair-scheduler", VERSIONS["repair-scheduler"], 0)
    t_r = req.available + w.u(2, 10)
    rs = w.process(rwho, req, t_r)
    c = w.db(rwho, rs, t_r + w.u(0.2, 0.5), w.u(2, 5),
             "INSERT INTO repair_bookings (claim_id, garage_id, slot_at, status) VALUES (?, ?, ?, 'booked')")
    c = w.external(rwho, rs, c + w.u(0.2, 0.5), w.u(20, 80), "POST", "https://api.garagenet.example/v1/slots",
                   "api.garagenet.example", 201)
    rs.end(c + w.u(0.3, 1.0))

    # payouts: skewed clock; needs the reservation; on ReservationNotFound the offset is not committed and
    # the same message comes again after a back-off, as often as it takes
    replica = w.owner("payouts", req.partition, req.available)
    pwho = ("payouts", VERSIONS["payouts"], replica)
    t_p = req.available + w.u(2, 10)
    attempts = 0
    while True:
        attempts += 1
        ps = w.process(pwho, req, t_p)
        c = w.db(pwho, ps, t_p + w.u(0.2, 0.5), w.u(1.5, 4), "SELECT status FROM payouts WHERE claim_id = $1")
        c = w.call(pwho, ps, c + w.u(0.2, 0.5), "GET", "policy-service", "/policies/{policy_id}/bank-account",
                   f"/policies/{w.ident('pol_')}/bank-account",
                   ["SELECT iban, holder FROM bank_accounts WHERE policy_id = $1"])
        c = w.internal(pwho, ps, "check sanctions list", c + w.u(0.1, 0.3), w.u(25, 45))
        read = c + w.u(0.2, 0.5)
        c = w.db(pwho, ps, read, w.u(1.5, 4),
                 "SELECT amount_cents FROM ledger_reservations WHERE claim_id = $1 AND status = 'held'")
        if read < written:
            if not race:
                raise AssertionError(f"a read before the write in an instance without a race: {claim['id']}")
            exc = ReservationNotFound(f"no held reservation for claim {claim['id']}")
            ps.fail(exc, c + w.u(0.1, 0.3), "payouts.handlers.ReservationNotFound")
            t_p = ps.end(c + w.u(0.4, 1.0)) + w.u(70, 130)  # back-off, seek to the uncommitted offset
            continue
        status = 422 if decline else 201
        c = w.external(pwho, ps, c + w.u(0.2, 0.5), w.u(120, 300), "POST", "https://api.bank.example/v2/transfers",
                       "api.bank.example", status)
        if decline:
            c = w.db(pwho, ps, c + w.u(0.2, 0.5), w.u(2, 5),
                     "INSERT INTO payouts (claim_id, status, reason) VALUES ($1, 'declined', $2)")
            out = w.send(pwho, ps, c + w.u(0.2, 0.6), "payout.failed", claim["id"],
                         {"claims.claim.id": claim["id"], "claims.payout.reason": "account_closed"}, 220)
        else:
            c = w.db(pwho, ps, c + w.u(0.2, 0.5), w.u(2, 5),
                     "INSERT INTO payouts (claim_id, status, bank_ref) VALUES ($1, 'paid', $2)")
            out = w.send(pwho, ps, c + w.u(0.2, 0.6), "payout.completed", claim["id"],
                         {"claims.claim.id": claim["id"], "claims.payout.bank_ref": w.ident("trf_")}, 240)
        ps.end(out.available + w.u(0.3, 1.0))
        break
    if race and attempts < 2:
        raise AssertionError(f"race instance without a failed read: {claim['id']}")
    w.stats[f"payout_attempts_{attempts}"] += 1
    reporting(w, out, out.available + w.u(3, 20))
    if decline:  # the compensation: ledger releases its reservation
        t_c = out.available + w.u(2, 10)
        lwho = ("ledger", VERSIONS["ledger"], w.owner("ledger", out.partition, t_c))
        cs = w.process(lwho, out, t_c)
        c = w.db(lwho, cs, t_c + w.u(0.2, 0.5), w.u(2, 5),
                 "UPDATE ledger_reservations SET status = 'released' WHERE claim_id = $1")
        rel = w.send(lwho, cs, c + w.u(0.2, 0.6), "reservation.released", claim["id"],
                     {"claims.claim.id": claim["id"]}, 180)
        cs.end(rel.available + w.u(0.3, 1.0))
        reporting(w, rel, rel.available + w.u(3, 20))


def duplicates(w: World, t_mid: int) -> int:
    """Rebalances: a kicked replica's uncommitted offsets are processed again by the partitions' new owners."""
    count = 0
    for at, kicked in w.kicks:
        last_commit = (at - EPOCH_NS) // COMMIT_INTERVAL_NS * COMMIT_INTERVAL_NS + EPOCH_NS
        for run in w.coverage_runs:
            if run["replica"] != kicked or not (last_commit <= run["end"] < at):
                continue
            t = at + w.u(3000, 6000)  # session timeout, join, sync, fetch from the committed offset
            replica = w.owner("coverage-check", run["filed"].partition, t)
            assert replica != kicked
            checked = coverage(w, run["filed"], t, replica, True, run["claim"])
            reporting(w, checked, checked.available + w.u(3, 20))
            out, _ = coordinator(w, checked, "coverage-check", checked.available + w.u(1, 6), t_mid)
            assert out is None
            count += 1
    return count


# ---------------------------------------------------------------------- renewals and closures
def renewal(w: World, t: int) -> None:
    """renewals: one workflow driving seven distinct endpoints of policy-service."""
    who = ("renewals", VERSIONS["renewals"], 0)
    pol = w.ident("pol_")
    root = w.start(who, "http", "POST /renewals/{policy_id}", otel_context.Context(), SpanKind.SERVER, t,
                   {"http.request.method": "POST", "http.route": "/renewals/{policy_id}",
                    "url.path": f"/renewals/{pol}", "url.scheme": "http", "server.address": "renewals.claims.internal",
                    "server.port": 8080, "user_agent.original": "renewal-scheduler/1.0"})
    steps = [("GET", "/policies/{policy_id}", "", ["SELECT * FROM policies WHERE id = $1"]),
             ("GET", "/policies/{policy_id}/coverages", "/coverages",
              ["SELECT peril, limit_cents FROM coverages WHERE policy_id = $1"]),
             ("GET", "/policies/{policy_id}/claims", "/claims",
              ["SELECT claim_id, paid_cents FROM policy_claims WHERE policy_id = $1"]),
             ("POST", "/policies/{policy_id}/quotes", "/quotes",
              ["INSERT INTO quotes (policy_id, premium_cents) VALUES ($1, $2)"]),
             ("PUT", "/policies/{policy_id}/premium", "/premium",
              ["UPDATE policies SET premium_cents = $2 WHERE id = $1"]),
             ("POST", "/policies/{policy_id}/endorsements", "/endorsements",
              ["INSERT INTO endorsements (policy_id, code) VALUES ($1, $2)"]),
             ("POST", "/policies/{policy_id}/renewal-notice", "/renewal-notice",
              ["INSERT INTO policy_letters (policy_id, kind) VALUES ($1, 'renewal')"])]
    c = t + w.u(0.5, 1.5)
    for method, route, suffix, sql in steps:
        c = w.call(who, root, c + w.u(0.2, 1.0), method, "policy-service", route, f"/policies/{pol}{suffix}", sql)
    c = w.db(who, root, c + w.u(0.2, 0.5), w.u(2, 5), "UPDATE renewal_runs SET done_at = now() WHERE policy_id = $1")
    root.span.set_attribute("http.response.status_code", 200)
    root.end(c + w.u(0.3, 1.0))


def closure(w: World, t: int) -> None:
    """claims-desk: closing a claim touches six services, one or two endpoints each."""
    who = ("claims-desk", VERSIONS["claims-desk"], 0)
    clm, pol = w.ident("clm_"), w.ident("pol_")
    root = w.start(who, "http", "POST /claims/{claim_id}/close", otel_context.Context(), SpanKind.SERVER, t,
                   {"http.request.method": "POST", "http.route": "/claims/{claim_id}/close",
                    "url.path": f"/claims/{clm}/close", "url.scheme": "https", "server.address": "desk.claims.example",
                    "server.port": 443, "user_agent.original": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"})
    steps = [("GET", "policy-service", "/policies/{policy_id}", f"/policies/{pol}",
              ["SELECT * FROM policies WHERE id = $1"]),
             ("GET", "ledger", "/ledger/claims/{claim_id}/balance", f"/ledger/claims/{clm}/balance",
              ["SELECT balance_cents FROM claim_accounts WHERE claim_id = $1"]),
             ("GET", "documents", "/documents/{claim_id}", f"/documents/{clm}",
              ["SELECT doc_id, kind FROM claim_documents WHERE claim_id = $1"]),
             ("POST", "documents", "/documents/{claim_id}/archive", f"/documents/{clm}/archive",
              ["UPDATE claim_documents SET archived = true WHERE claim_id = $1"]),
             ("GET", "repair-scheduler", "/repair-bookings/{claim_id}", f"/repair-bookings/{clm}",
              ["SELECT status FROM repair_bookings WHERE claim_id = ?"]),
             ("GET", "fraud-screen", "/fraud/cases/{claim_id}", f"/fraud/cases/{clm}",
              ["SELECT open FROM fraud_cases WHERE claim_id = $1"]),
             ("POST", "customer-comms", "/messages", "/messages",
              ["INSERT INTO messages (claim_id, template) VALUES ($1, 'claim_closed')"])]
    c = t + w.u(0.5, 1.5)
    for method, callee, route, path, sql in steps:
        c = w.call(who, root, c + w.u(0.2, 1.0), method, callee, route, path, sql)
    c = w.db(who, root, c + w.u(0.2, 0.5), w.u(2, 5), "UPDATE desk_cases SET closed_at = now() WHERE claim_id = $1")
    root.span.set_attribute("http.response.status_code", 200)
    root.end(c + w.u(0.3, 1.0))


# ---------------------------------------------------------------------- export
def export_lines(w: World) -> list[str]:
    """Per provider, spans batched by end time into 5 s windows (<= 512 each), as a BatchSpanProcessor sends."""
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


def generate(seed: int, instances: int, races: int | None = None, kicks: int | None = None) -> tuple[list[str], dict]:
    random.seed(seed)  # the SDK's RandomIdGenerator draws from the module-level generator
    w = World(rng=random.Random(f"claims_rebalance:{seed}"))
    races = max(1, round(instances * 16 / 200)) if races is None else races
    kicks = max(1, round(instances * 5 / 200)) if kicks is None else kicks
    declines = max(1, round(instances * 24 / 200))
    race_at = set(w.rng.sample(range(instances), races))
    decline_at = set(w.rng.sample(sorted(set(range(instances)) - race_at), declines))
    kick_at = set(w.rng.sample(range(2, instances), kicks)) if instances > 2 else set()
    t = EPOCH_NS + w.u(500, 1500)
    span_ns = instances * 2_400 * MS
    t_mid = t + span_ns // 2
    first = t
    for i in range(instances):
        claim_instance(w, t, i in race_at, i in decline_at, t_mid, i in kick_at)
        t += int(w.rng.expovariate(1 / 2000) * MS) + 400 * MS
    dups = duplicates(w, t_mid)
    for n in range(max(1, round(instances * 40 / 200))):
        renewal(w, first + int(w.rng.uniform(0, t - first)))
        closure(w, first + int(w.rng.uniform(0, t - first)))
    for provider in w.providers.values():
        provider.shutdown()
    stats = {"instances": instances, "races": sorted(race_at), "declines": len(decline_at), "kicks": len(w.kicks),
             "duplicates": dups, **w.stats, "spans": sum(len(e.get_finished_spans()) for e in w.exporters.values())}
    return export_lines(w), stats


def write_dump(lines: list[str], out: Path) -> None:
    with open(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                               compresslevel=9) as fh:
        for line in lines:
            fh.write(line.encode() + b"\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--races", type=int, default=None, help="instances where ledger is late (default 16 per 200)")
    ap.add_argument("--kicks", type=int, default=None, help="coverage-check rebalances (default 5 per 200)")
    ap.add_argument("--out", type=Path, default=HERE / "dump.otlp.jsonl.gz")
    args = ap.parse_args(argv)
    lines, stats = generate(args.seed, args.instances, args.races, args.kicks)
    write_dump(lines, args.out)
    print(f"wrote {args.out}: {len(lines)} export requests, {stats.pop('spans')} spans, {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
