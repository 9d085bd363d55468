"""Generate the race_8_of_200 scenario: a Kafka ticketing system traced with the OpenTelemetry Python SDK.

    python sample_traces/independent/race_8_of_200/generate.py [--seed 8] [--instances 200] [--out FILE]

Every span is made by the SDK API (one TracerProvider + Resource per service and version, the SDK's own
random W3C ids, W3C TraceContext injected into and extracted from Kafka message headers and HTTP
headers by the real propagator), finished into an in-memory exporter and written as the Collector
file exporter writes: one OTLP ExportTraceServiceRequest as JSON per line (the request is built by the
OTLP exporter's own encoder, the JSON by `sample_traces/captures/otlp_sink.py`), gzipped with mtime 0.
Time is a simulated clock (nanoseconds from a fixed epoch), so the same --seed gives the same bytes.

The system (README.md has the picture and what was planted):

    booking-api   POST /bookings -> INSERT bookings -> send booking.created
    booking.created consumers (Kafka consumer groups):
      seat-allocator  SELECT seats FOR UPDATE, INSERT seat_holds, send seat.held (nobody consumes it)
      ticket-issuer   compile template, SELECT seat_holds (fails when the hold is not there yet:
                      the offset is not committed, the same message is polled again), INSERT tickets
      notifier        INSERT outbox (its own database), POST to an external mail API
      payments        charge at an external PSP, INSERT payments, send payment.captured (thin)
      analytics       batch consumer: one new trace per poll, span links to every message's producer
    invoicing     consumes payment.captured, calls back GET /payments/{payment_id}, send invoice.issued
    loyalty       consumes invoice.issued (three event hops below booking.created)
    payments      also consumes chargeback.received from an uninstrumented bank bridge (no context)
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
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "captures"))
from otlp_sink import request_to_json_line  # the capture sink's OTLP -> JSON line encoding

EPOCH_NS = 1_796_032_800 * 10**9  # 2026-11-30T10:00:00Z
MS = 1_000_000
PROPAGATOR = TraceContextTextMapPropagator()
KAFKA = {"server.address": "kafka-1.internal", "server.port": 9092}
PARTITIONS = {"booking.created": 6, "seat.held": 3, "payment.captured": 3, "invoice.issued": 3,
              "chargeback.received": 1}
EXPORT_WINDOW_NS = 5_000 * MS  # BatchSpanProcessor's default schedule delay
EXPORT_BATCH = 512             # ... and its default max export batch size

SERVICES = {  # service -> (version, host); one TracerProvider and Resource each
    "booking-api": ("3.2.0", "booking-api-7d9f8-x2kq"),
    "seat-allocator": ("1.8.4", "seat-allocator-5c4b-m8rt"),
    "ticket-issuer": ("2.0.1", "ticket-issuer-6f7c-pp3z"),
    "notifier": ("4.11.0", "notifier-84d2-qq7v"),
    "payments": ("5.3.2", "payments-59bd-k1wd"),
    "invoicing": ("1.2.0", "invoicing-7a61-jj4n"),
    "loyalty": ("0.9.7", "loyalty-66c9-z5hb"),
    "analytics": ("2.4.0", "analytics-9e0f-c3ls"),
}
DATABASES = {  # service -> (db.system.name, db.namespace, server.address, server.port)
    "booking-api": ("postgresql", "bookings", "pg-bookings.internal", 5432),
    "seat-allocator": ("postgresql", "venue", "pg-venue.internal", 5432),
    "ticket-issuer": ("postgresql", "venue", "pg-venue.internal", 5432),  # the same database as seat-allocator
    "notifier": ("postgresql", "notify", "pg-notify.internal", 5432),
    "payments": ("postgresql", "payments", "pg-payments.internal", 5432),
    "invoicing": ("postgresql", "billing", "pg-billing.internal", 5432),
    "loyalty": ("postgresql", "loyalty", "pg-loyalty.internal", 5432),
    "analytics": ("clickhouse", "analytics", "ch-analytics.internal", 8123),
}


class SeatHoldNotFound(LookupError):
    """ticket-issuer's error when the seat hold of a booking is not (yet) in seat_holds."""


SeatHoldNotFound.__module__ = "ticket_issuer.handlers"


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: str
    msg_id: str
    headers: dict
    body_size: int
    available: int  # ns: when consumers can poll it


@dataclass
class World:
    seed: int
    rng: random.Random
    providers: dict = field(default_factory=dict)
    exporters: dict = field(default_factory=dict)
    offsets: dict = field(default_factory=lambda: defaultdict(int))
    booking_created: list = field(default_factory=list)

    def tracer(self, service: str, scope: str) -> trace.Tracer:
        if service not in self.providers:
            version, host = SERVICES[service]
            resource = Resource.create({
                "service.name": service, "service.version": version, "service.namespace": "ticketing",
                "service.instance.id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "deployment.environment.name": "production", "host.name": host,
                "process.runtime.name": "cpython", "process.runtime.version": "3.12.7",
            })
            exporter = InMemorySpanExporter()
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            self.providers[service], self.exporters[service] = provider, exporter
        return self.providers[service].get_tracer(f"ticketing.{scope}", "1.0.0")

    def u(self, lo_ms: float, hi_ms: float) -> int:
        return int(self.rng.uniform(lo_ms, hi_ms) * MS)

    def ident(self, prefix: str) -> str:
        return prefix + "".join(self.rng.choice("0123456789abcdefghjkmnpqrstvwxyz") for _ in range(12))

    # ------------------------------------------------------------------ spans by kind
    def db(self, service: str, parent: trace.Span, start: int, dur: int, sql: str) -> int:
        system, namespace, host, port = DATABASES[service]
        span = self.tracer(service, "db").start_span(
            sql.split()[0], context=trace.set_span_in_context(parent), kind=SpanKind.CLIENT, start_time=start,
            attributes={"db.system.name": system, "db.namespace": namespace, "db.query.text": sql,
                        "server.address": host, "server.port": port})
        span.end(end_time=start + dur)
        return start + dur

    def http_client(self, service: str, parent: trace.Span, start: int, dur: int, method: str, url: str,
                    host: str, port: int, status: int) -> tuple[trace.Span, dict, int]:
        span = self.tracer(service, "http").start_span(
            method, context=trace.set_span_in_context(parent), kind=SpanKind.CLIENT, start_time=start,
            attributes={"http.request.method": method, "url.full": url, "server.address": host,
                        "server.port": port, "http.response.status_code": status,
                        "network.protocol.version": "1.1"})
        headers: dict = {}
        PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))
        span.end(end_time=start + dur)
        return span, headers, start + dur

    def send(self, service: str, parent: trace.Span, start: int, topic: str, key: str, body_size: int) -> Message:
        partition = zlib.crc32(key.encode()) % PARTITIONS[topic]
        offset = 10_000 * (1 + sorted(PARTITIONS).index(topic)) + self.offsets[(topic, partition)]
        self.offsets[(topic, partition)] += 1
        msg_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        span = self.tracer(service, "kafka").start_span(
            f"send {topic}", context=trace.set_span_in_context(parent), kind=SpanKind.PRODUCER,
            start_time=start,
            attributes={"messaging.system": "kafka", "messaging.operation.type": "send",
                        "messaging.operation.name": "send", "messaging.destination.name": topic,
                        "messaging.destination.partition.id": str(partition),
                        "messaging.kafka.message.key": key, "messaging.message.id": msg_id,
                        "messaging.message.body.size": body_size, "messaging.client.id": f"{service}-producer",
                        **KAFKA})
        headers: dict = {"ce_id": msg_id, "ce_type": topic}
        PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))
        end = start + self.u(1.0, 3.5)  # until the broker acks (acks=all)
        span.set_attribute("messaging.kafka.offset", offset)
        span.end(end_time=end)
        return Message(topic, partition, offset, key, msg_id, headers, body_size, end + self.u(0.5, 2.0))

    def process(self, service: str, msg: Message, start: int) -> trace.Span:
        """A consumer's process span, the child of the producer span whose context is in the headers."""
        return self.tracer(service, "kafka").start_span(
            f"process {msg.topic}", context=PROPAGATOR.extract(msg.headers), kind=SpanKind.CONSUMER,
            start_time=start,
            attributes={"messaging.system": "kafka", "messaging.operation.type": "process",
                        "messaging.operation.name": "process", "messaging.destination.name": msg.topic,
                        "messaging.destination.partition.id": str(msg.partition),
                        "messaging.consumer.group.name": service, "messaging.kafka.offset": msg.offset,
                        "messaging.kafka.message.key": msg.key, "messaging.message.id": msg.msg_id,
                        "messaging.message.body.size": msg.body_size, "messaging.client.id": f"{service}-1",
                        **KAFKA})

    def internal(self, service: str, parent: trace.Span, name: str, start: int, dur: int) -> int:
        span = self.tracer(service, "app").start_span(
            name, context=trace.set_span_in_context(parent), kind=SpanKind.INTERNAL, start_time=start)
        span.end(end_time=start + dur)
        return start + dur


# ---------------------------------------------------------------------- one workflow instance
def booking(w: World, t: int, race: bool) -> dict:
    """POST /bookings and everything its booking.created causes (except analytics, which batches)."""
    booking_id = w.ident("bk_")
    api = w.tracer("booking-api", "http").start_span(
        "POST /bookings", context=otel_context.Context(), kind=SpanKind.SERVER, start_time=t,
        attributes={"http.request.method": "POST", "http.route": "/bookings", "url.path": "/bookings",
                    "url.scheme": "https", "server.address": "api.tickets.example", "server.port": 443,
                    "network.protocol.version": "2", "user_agent.original": "TicketsApp/5.2 (iOS 18.1)",
                    "client.address": f"10.20.{w.rng.randint(0, 255)}.{w.rng.randint(1, 254)}"})
    c = w.db("booking-api", api, t + w.u(1, 3), w.u(2, 6),
             "INSERT INTO bookings (id, event_id, customer_id, seat_count, status) "
             "VALUES ($1, $2, $3, $4, 'pending')")
    created = w.send("booking-api", api, c + w.u(0.2, 0.8), "booking.created", booking_id, w.rng.randint(1100, 1500))
    api.set_attribute("http.response.status_code", 202)
    api.end(end_time=created.available + w.u(0.3, 1.0))
    w.booking_created.append(created)
    out = {"booking": booking_id}

    # seat-allocator (B): writes the hold. Late in race instances (its consumer is lagging).
    t_b = created.available + (w.u(90, 220) if race else w.u(2, 12))
    b = w.process("seat-allocator", created, t_b)
    c = w.db("seat-allocator", b, t_b + w.u(0.2, 0.5), w.u(3, 9),
             "SELECT id FROM seats WHERE event_id = $1 AND status = 'free' ORDER BY row_no, seat_no "
             "LIMIT $2 FOR UPDATE SKIP LOCKED")
    c = w.db("seat-allocator", b, c + w.u(0.1, 0.4), w.u(1, 3), "UPDATE seats SET status = 'held' WHERE id = ANY($1)")
    c = w.db("seat-allocator", b, c + w.u(0.1, 0.4), w.u(2, 6),
             "INSERT INTO seat_holds (booking_id, seat_id, expires_at) SELECT $1, unnest($2::bigint[]), now() + "
             "interval '15 minutes'")
    hold_written = c
    held = w.send("seat-allocator", b, c + w.u(0.2, 0.6), "seat.held", booking_id, w.rng.randint(300, 420))
    b.end(end_time=held.available + w.u(0.5, 1.5))
    out["b_write_end"] = hold_written

    # ticket-issuer (C): reads the hold. Fails before the hold is written; Kafka then re-polls the same
    # offset (the consumer seeks back after an error: no commit) after a back-off.
    t_c = created.available + w.u(2, 12)
    attempts = 0
    while True:
        attempts += 1
        cspan = w.process("ticket-issuer", created, t_c)
        c = w.db("ticket-issuer", cspan, t_c + w.u(0.2, 0.5), w.u(4, 9),
                 "SELECT body, version FROM ticket_templates WHERE event_id = $1 AND active")
        c = w.internal("ticket-issuer", cspan, "compile ticket template", c + w.u(0.1, 0.3), w.u(32, 50))
        read_start = c + w.u(0.1, 0.3)
        c = w.db("ticket-issuer", cspan, read_start, w.u(1.5, 4),
                 "SELECT seat_id, expires_at FROM seat_holds WHERE booking_id = $1")
        if read_start < hold_written:
            if not race:
                raise AssertionError(f"instance without a race read before the write: {booking_id}")
            exc = SeatHoldNotFound(f"no seat hold for booking {booking_id}")
            cspan.record_exception(exc, timestamp=c + w.u(0.1, 0.3))
            cspan.set_attribute("error.type", "ticket_issuer.handlers.SeatHoldNotFound")
            cspan.set_status(Status(StatusCode.ERROR, str(exc)))
            cspan.end(end_time=c + w.u(0.5, 1.0))
            out.setdefault("c_failed_reads", []).append(read_start)
            t_c = c + w.u(400, 700)  # consumer back-off, seek to the uncommitted offset, poll again
            continue
        c = w.db("ticket-issuer", cspan, c + w.u(0.2, 0.5), w.u(2, 5),
                 "INSERT INTO tickets (booking_id, seat_id, barcode, template_version) VALUES ($1, $2, $3, $4)")
        cspan.end(end_time=c + w.u(0.5, 1.5))
        break
    if race and attempts < 2:
        raise AssertionError(f"race instance without a failed read: {booking_id}")
    out["c_attempts"] = attempts

    # notifier (S): the short sibling branch; its own database has its own `outbox` table
    t_s = created.available + w.u(2, 12)
    s = w.process("notifier", created, t_s)
    c = w.db("notifier", s, t_s + w.u(0.2, 0.5), w.u(2, 5),
             "INSERT INTO outbox (aggregate_id, kind, payload) VALUES ($1, 'booking_confirmation', $2)")
    _, _, c = w.http_client("notifier", s, c + w.u(0.2, 0.5), w.u(15, 55), "POST",
                            "https://api.mailer.example/v3/mail/send", "api.mailer.example", 443, 202)
    s_end = c + w.u(0.5, 1.5)
    s.end(end_time=s_end)
    out["s_end"] = s_end

    # payments (X): a slow external charge, then the thin payment.captured {payment_id, booking_id}
    payment_id = w.ident("pay_")
    t_x = created.available + w.u(2, 12)
    x = w.process("payments", created, t_x)
    c = w.db("payments", x, t_x + w.u(0.2, 0.5), w.u(3, 8),
             "SELECT token, brand FROM payment_methods WHERE customer_id = $1 AND is_default")
    _, _, c = w.http_client("payments", x, c + w.u(0.2, 0.5), w.u(150, 400), "POST",
                            "https://api.psp.example/v1/charges", "api.psp.example", 443, 201)
    c = w.db("payments", x, c + w.u(0.2, 0.5), w.u(3, 8),
             "INSERT INTO payments (id, booking_id, amount_cents, currency, psp_charge_id, status) "
             "VALUES ($1, $2, $3, $4, $5, 'captured')")
    captured = w.send("payments", x, c + w.u(0.2, 0.6), "payment.captured", payment_id, w.rng.randint(90, 130))
    x.end(end_time=captured.available)

    # invoicing (Y): the event is thin, so it calls the producer back for the amount and currency
    t_y = captured.available + w.u(3, 15)
    y = w.process("invoicing", captured, t_y)
    cb_start = t_y + w.u(0.3, 0.8)
    cb_dur = w.u(8, 25)
    _, headers, _ = w.http_client("invoicing", y, cb_start, cb_dur, "GET",
                                    f"http://payments.internal:8080/payments/{payment_id}",
                                    "payments.internal", 8080, 200)
    srv_start = cb_start + w.u(0.8, 1.5)
    srv = w.tracer("payments", "http").start_span(
        "GET /payments/{payment_id}", context=PROPAGATOR.extract(headers), kind=SpanKind.SERVER,
        start_time=srv_start,
        attributes={"http.request.method": "GET", "http.route": "/payments/{payment_id}",
                    "url.path": f"/payments/{payment_id}", "url.scheme": "http",
                    "server.address": "payments.internal", "server.port": 8080,
                    "network.protocol.version": "1.1", "http.response.status_code": 200})
    w.db("payments", srv, srv_start + w.u(0.2, 0.5), w.u(1, 3),
         "SELECT amount_cents, currency, booking_id FROM payments WHERE id = $1")
    srv.end(end_time=cb_start + cb_dur - w.u(0.3, 0.7))
    c = w.db("invoicing", y, cb_start + cb_dur + w.u(0.2, 0.5), w.u(3, 7),
             "INSERT INTO invoices (payment_id, booking_id, number, amount_cents, currency) "
             "VALUES ($1, $2, nextval('invoice_no'), $3, $4)")
    issued = w.send("invoicing", y, c + w.u(0.2, 0.6), "invoice.issued", booking_id, w.rng.randint(400, 600))
    y.end(end_time=issued.available)

    # loyalty (D): three event hops below booking.created; touches only its own database
    t_d = issued.available + w.u(3, 15)
    d = w.process("loyalty", issued, t_d)
    c = w.db("loyalty", d, t_d + w.u(0.2, 0.5), w.u(2, 5),
             "SELECT points, tier FROM loyalty_accounts WHERE customer_id = $1")
    c = w.db("loyalty", d, c + w.u(0.2, 0.5), w.u(2, 5),
             "UPDATE loyalty_accounts SET points = points + $2 WHERE customer_id = $1")
    c = w.db("loyalty", d, c + w.u(0.2, 0.5), w.u(2, 4),
             "INSERT INTO outbox (aggregate_id, kind, payload) VALUES ($1, 'points_awarded', $2)")
    d.end(end_time=c + w.u(0.5, 1.5))
    if t_d <= s_end:
        raise AssertionError(f"loyalty started before notifier ended: {booking_id}")
    out["d_start"] = t_d
    return out


def analytics_batches(w: World, first: int, last: int) -> int:
    """analytics polls booking.created every 5 s; one new trace per non-empty batch, linked to its messages."""
    pending = sorted(w.booking_created, key=lambda m: m.available)
    tick = first + w.u(0, 5000)
    batches = 0
    while pending:
        batch = [m for m in pending if m.available <= tick]
        pending = [m for m in pending if m.available > tick]
        if batch:
            start = tick + w.u(1, 4)
            links = [Link(trace.get_current_span(PROPAGATOR.extract(m.headers)).get_span_context())
                     for m in batch]
            span = w.tracer("analytics", "kafka").start_span(
                "process booking.created", context=otel_context.Context(), kind=SpanKind.CONSUMER,
                start_time=start, links=links,
                attributes={"messaging.system": "kafka", "messaging.operation.type": "process",
                            "messaging.operation.name": "process", "messaging.destination.name": "booking.created",
                            "messaging.consumer.group.name": "analytics", "messaging.batch.message_count": len(batch),
                            "messaging.client.id": "analytics-1", **KAFKA})
            c = w.db("analytics", span, start + w.u(0.5, 1), w.u(5, 20),
                     "INSERT INTO booking_facts (booking_id, event_id, seat_count, created_at) VALUES")
            span.end(end_time=c + w.u(0.5, 1.5))
            batches += 1
        tick += 5000 * MS
    return batches


def chargebacks(w: World, first: int, last: int, count: int) -> None:
    """The bank bridge (not instrumented) publishes chargeback.received without any trace context."""
    for _ in range(count):
        t = first + int(w.rng.uniform(0, last - first))
        key = w.ident("ch_")
        partition = 0
        offset = 90_000 + w.offsets[("chargeback.received", partition)]
        w.offsets[("chargeback.received", partition)] += 1
        msg = Message("chargeback.received", partition, offset, key,
                      str(uuid.UUID(int=w.rng.getrandbits(128), version=4)),
                      {"ce_type": "chargeback.received"}, w.rng.randint(500, 700), t)
        start = t + w.u(2, 12)
        span = w.process("payments", msg, start)
        c = w.db("payments", span, start + w.u(0.2, 0.5), w.u(2, 6),
                 "UPDATE payments SET status = 'disputed' WHERE psp_charge_id = $1")
        c = w.db("payments", span, c + w.u(0.2, 0.5), w.u(2, 5),
                 "INSERT INTO payment_disputes (psp_charge_id, reason_code, amount_cents) VALUES ($1, $2, $3)")
        span.end(end_time=c + w.u(0.5, 1.5))


# ---------------------------------------------------------------------- export
def export_lines(w: World) -> list[str]:
    """Per service, spans batched by end time into 5 s windows (<= 512 each), as a BatchSpanProcessor sends."""
    requests: list[tuple[int, str, list[ReadableSpan]]] = []
    for service in sorted(w.exporters):
        spans = sorted(w.exporters[service].get_finished_spans(), key=lambda s: (s.end_time, s.start_time))
        windows: dict[int, list[ReadableSpan]] = defaultdict(list)
        for s in spans:
            windows[(s.end_time - EPOCH_NS) // EXPORT_WINDOW_NS].append(s)
        for window, group in windows.items():
            for i in range(0, len(group), EXPORT_BATCH):
                requests.append((window, service, group[i:i + EXPORT_BATCH]))
    requests.sort(key=lambda r: (r[0], r[1]))
    return [request_to_json_line(encode_spans(batch).SerializeToString(), "application/x-protobuf")
            for _, _, batch in requests]


def generate(seed: int, instances: int, races: int | None = None) -> tuple[list[str], dict]:
    random.seed(seed)  # the SDK's RandomIdGenerator draws from the module-level generator
    w = World(seed=seed, rng=random.Random(f"race_8_of_200:{seed}"))
    races = max(1, round(instances * 8 / 200)) if races is None else races
    race_at = set(w.rng.sample(range(instances), races))
    t = EPOCH_NS + w.u(500, 1500)
    outs = []
    for i in range(instances):
        outs.append(booking(w, t, i in race_at))
        t += int(w.rng.expovariate(1 / 3000) * MS) + 400 * MS  # arrivals ~ every 3.4 s
    last = t
    batches = analytics_batches(w, EPOCH_NS, last)
    chargebacks(w, EPOCH_NS, last, max(1, round(instances * 30 / 200)))
    for provider in w.providers.values():
        provider.shutdown()
    stats = {"instances": instances, "races": sorted(race_at), "analytics_batches": batches,
             "retried": sum(1 for o in outs if o["c_attempts"] > 1),
             "spans": sum(len(e.get_finished_spans()) for e in w.exporters.values())}
    return export_lines(w), stats


def write_dump(lines: list[str], out: Path) -> None:
    with open(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                               compresslevel=9) as fh:
        for line in lines:
            fh.write(line.encode() + b"\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--races", type=int, default=None, help="racing instances (default: 8 per 200)")
    ap.add_argument("--out", type=Path, default=HERE / "dump.otlp.jsonl.gz")
    args = ap.parse_args(argv)
    lines, stats = generate(args.seed, args.instances, args.races)
    write_dump(lines, args.out)
    print(f"wrote {args.out}: {len(lines)} export requests, {stats['spans']} spans, "
          f"{stats['instances']} instances, racing {len(stats['races'])} {stats['races']}, "
          f"retried {stats['retried']}, analytics batches {stats['analytics_batches']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
