"""Inferred subscription hops (analysis/edges.py `_infer_subscriptions`) on a small real store.

SNS -> SQS as botocore and boto3sqs record it (sample_traces/captures/sns_sqs_moto): the publish
names the topic ARN; with raw delivery off the queue's consumer spans (`X receive` root, `X process`
child with the SQS message id) have no parent, no link and a new trace; with raw delivery on the
process span links to the publish. Real OpenTelemetry SDK spans -> OTLP JSON -> loader -> pipeline.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, set_span_in_context

from choreoscope.analysis.pipeline import STAGES, AnalysisContext
from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from choreoscope.sample_traces.generate import write_otlp_jsonl
from tests.stage_stores import sdk_tracer

BASE_NS = 1_736_000_000_000_000_000
GAP_MS = 1200  # one order every 1.2 s, as in the capture
MS = 1_000_000
ARN = "arn:aws:sns:us-east-1:123456789012:"
QUEUE_URL = "http://127.0.0.1:5095/123456789012/"


def _record(orders: int, *, audit_every: int | None = None) -> list:
    """`orders` POST /orders publishing order-events, payment-events (raw delivery: linked) and
    order-audit (published after the queues already received order-events). inventory-q and
    loyalty-q subscribe order-events (no context), email-q payment-events (link); refund-q is fed
    by an uninstrumented publisher half-way between orders. With `audit_every`, audit-q receives
    every `audit_every`-th order-audit publish (a filter policy)."""
    exporter = InMemorySpanExporter()
    tracers = {}

    def tracer(service):
        if service not in tracers:
            tracers[service] = sdk_tracer(exporter, service, "subscription-tests")
        return tracers[service]

    def publish(parent, topic, start):
        attrs = {"rpc.system": "aws-api", "rpc.service": "SNS", "rpc.method": "Publish",
                 "messaging.system": "aws.sns", "aws.sns.topic.arn": ARN + topic,
                 "messaging.destination_kind": "topic", "messaging.destination": ARN + topic,
                 "messaging.destination.name": ARN + topic}
        span = tracer("orders-api").start_span(f"{topic} send", context=set_span_in_context(parent),
                                               kind=SpanKind.PRODUCER, start_time=start, attributes=attrs)
        span.end(start + 5 * MS)
        return span

    def consume(service, queue, poll_start, arrived, message_id, links=()):
        base = {"messaging.system": "aws.sqs", "messaging.destination": queue,
                "messaging.destination_kind": "queue", "messaging.url": QUEUE_URL + queue}
        t = tracer(service)
        receive = t.start_span(f"{queue} receive", context=None, kind=SpanKind.CONSUMER, start_time=poll_start,
                               attributes={**base, "messaging.operation": "receive"})
        call = t.start_span("SQS.ReceiveMessage", context=set_span_in_context(receive), kind=SpanKind.CLIENT,
                            start_time=poll_start + MS,
                            attributes={"rpc.system": "aws-api", "rpc.service": "SQS", "rpc.method": "ReceiveMessage",
                                        "messaging.system": "aws.sqs", "messaging.destination": queue,
                                        "aws.queue_url": QUEUE_URL + queue, "messaging.message.id": message_id})
        call.end(arrived)
        process = t.start_span(f"{queue} process", context=set_span_in_context(receive), kind=SpanKind.CONSUMER,
                               start_time=arrived + MS, links=list(links),
                               attributes={**base, "messaging.operation": "process",
                                           "messaging.message.id": message_id})
        process.end(arrived + 20 * MS)
        receive.end(arrived + 21 * MS)

    def empty_poll(service, queue, start):
        receive = tracer(service).start_span(
            f"{queue} receive", context=None, kind=SpanKind.CONSUMER, start_time=start,
            attributes={"messaging.system": "aws.sqs", "messaging.destination": queue,
                        "messaging.operation": "receive", "messaging.url": QUEUE_URL + queue})
        receive.end(start + 1000 * MS)

    for i in range(orders):
        t0 = BASE_NS + i * GAP_MS * MS
        server = tracer("orders-api").start_span("POST /orders", kind=SpanKind.SERVER, start_time=t0,
                                                 attributes={"http.request.method": "POST", "http.route": "/orders"})
        publish(server, "order-events", t0 + 10 * MS)
        payment = publish(server, "payment-events", t0 + 20 * MS)
        publish(server, "order-audit", t0 + 90 * MS)
        server.end(t0 + 100 * MS)
        # the long polls start before the publish; the messages arrive 25-60 ms after it
        consume("inventory", "inventory-q", t0 - 300 * MS, t0 + (35 + 3 * i % 20) * MS, f"inv-{i}")
        consume("loyalty", "loyalty-q", t0 - 200 * MS, t0 + (40 + 7 * i % 25) * MS, f"loy-{i}")
        consume("notifier", "email-q", t0 - 100 * MS, t0 + 45 * MS, f"em-{i}",
                links=[Link(payment.get_span_context())])
        consume("refunds", "refund-q", t0 + 500 * MS, t0 + (600 + 5 * i) * MS, f"ref-{i}")
        if audit_every and i % audit_every == 0:
            consume("auditor", "audit-q", t0 + 50 * MS, t0 + 120 * MS, f"aud-{i}")
        empty_poll("inventory", "inventory-q", t0 + 200 * MS)
    return list(exporter.get_finished_spans())


def _store(tmp_path: Path, **kwargs) -> duckdb.DuckDBPyConnection:
    dump = write_otlp_jsonl(_record(8, **kwargs), tmp_path / "sns.otlp.jsonl")
    con = store.connect(tmp_path / "sns.duckdb")
    result = load_paths(con, [str(dump)])
    assert result.ok, result.errors
    ctx = AnalysisContext()
    for stage in STAGES:
        stage.run(con, ctx)
    return con


def _event_edges(con) -> list[tuple]:
    return con.execute("""
        SELECT s.messaging_destination, d.messaging_destination, e.evidence, e.inferred, e.confidence, count(*)
        FROM causal_edges e
        JOIN span_labels s ON s.trace_id = e.src_trace_id AND s.span_id = e.src_span_id
        JOIN span_labels d ON d.trace_id = e.dst_trace_id AND d.span_id = e.dst_span_id
        WHERE e.via = 'event' GROUP BY ALL ORDER BY ALL""").fetchall()


def _findings(con, kinds=("dead_event", "orphan_event")) -> list[tuple]:
    return con.execute("SELECT kind, services, event FROM findings WHERE list_contains(?, kind) ORDER BY ALL",
                       [list(kinds)]).fetchall()


def test_a_topic_feeding_queues_without_context_is_inferred_per_delivery(tmp_path):
    con = _store(tmp_path)
    # order-events feeds both queues (one edge per delivered message, to its process span); the
    # linked raw-delivery queue keeps its link; order-audit, published after the queues received
    # their message, and refund-q, half a gap after every publish, are tied to nothing.
    assert _event_edges(con) == [
        ("order-events", "inventory-q", "subscription", True, 0.8, 8),
        ("order-events", "loyalty-q", "subscription", True, 0.8, 8),
        ("payment-events", "email-q", "link", False, 1.0, 8),
    ]
    # each delivery is tied to the publish of its own request
    assert con.execute("""
        SELECT count(*) FROM causal_edges e
        JOIN span_labels s ON s.trace_id = e.src_trace_id AND s.span_id = e.src_span_id
        JOIN span_labels d ON d.trace_id = e.dst_trace_id AND d.span_id = e.dst_span_id
        WHERE e.evidence = 'subscription' AND d.start_ns - s.start_ns BETWEEN 0 AND 100 * 1000000""").fetchone() == (16,)


def test_dead_and_orphan_count_destinations_reached_through_a_subscription(tmp_path):
    con = _store(tmp_path)
    assert _findings(con) == [
        ("dead_event", ["orders-api"], "order-audit"),
        ("orphan_event", ["refunds"], "refund-q"),
    ]
    # the workflow edges name the event by the topic
    assert set(con.execute("SELECT DISTINCT event FROM span_edges WHERE evidence IN ('subscription', 'link')")
               .fetchall()) == {("order-events",), ("payment-events",)}


def test_a_queue_receiving_far_fewer_messages_than_the_topic_publishes_is_not_inferred(tmp_path):
    # audit-q gets every other order-audit publish (a filter policy), right after it: the time
    # order fits but the counts over the period disagree (4 messages, 7 publishes), so no
    # subscription is inferred: order-audit stays dead and audit-q an orphan.
    con = _store(tmp_path, audit_every=2)
    assert not [e for e in _event_edges(con) if e[1] == "audit-q"]
    assert ("dead_event", ["orders-api"], "order-audit") in _findings(con)
    assert ("orphan_event", ["auditor"], "audit-q") in _findings(con)
