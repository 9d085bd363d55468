"""Event names as teams use them (collector/spanbatch.py `_destination_name`), and pika's nested
double producer span counted as one send (analysis/span_edges.py `NESTED_SEND_SQL`).

Real OpenTelemetry SDK spans with the attributes the instrumentations of sample_traces/captures
record -> OTLP JSON -> loader -> store (-> pipeline).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, set_span_in_context

from choreoscope.analysis.pipeline import STAGES, AnalysisContext
from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from choreoscope.sample_traces.generate import write_otlp_jsonl
from tests.stage_stores import sdk_tracer

BASE_NS = 1_736_000_000_000_000_000
MS = 1_000_000

# (span attributes, expected messaging_destination column)
CASES = {
    "amqplib old keys: routing key on a topic exchange": (
        {"messaging.system": "rabbitmq", "messaging.destination": "pay", "messaging.destination_kind": "topic",
         "messaging.rabbitmq.routing_key": "payment.requested"}, "payment.requested"),
    "new keys: exchange in destination.name, routing key": (
        {"messaging.system": "rabbitmq", "messaging.destination.name": "pay",
         "messaging.rabbitmq.destination.routing_key": "payment.succeeded"}, "payment.succeeded"),
    "new routing key wins over the old one": (
        {"messaging.system": "rabbitmq", "messaging.destination": "pay",
         "messaging.rabbitmq.destination.routing_key": "refund.requested",
         "messaging.rabbitmq.routing_key": "stale"}, "refund.requested"),
    "empty routing key (fanout): the exchange": (
        {"messaging.system": "rabbitmq", "messaging.destination.name": "broadcast",
         "messaging.rabbitmq.destination.routing_key": ""}, "broadcast"),
    "pika: the exchange only": (
        {"messaging.system": "rabbitmq", "messaging.destination": "shop", "messaging.temp_destination": True},
        "shop"),
    "a template still wins over the routing key": (
        {"messaging.system": "rabbitmq", "messaging.destination.name": "replies",
         "messaging.rabbitmq.destination.routing_key": "reply.42", "messaging.destination.template": "reply.{id}"},
        "reply.{id}"),
    "botocore SNS: the topic ARN under both keys": (
        {"messaging.system": "aws.sns", "aws.sns.topic.arn": "arn:aws:sns:us-east-1:123456789012:order-events",
         "messaging.destination": "arn:aws:sns:us-east-1:123456789012:order-events",
         "messaging.destination.name": "arn:aws:sns:us-east-1:123456789012:order-events"}, "order-events"),
    "an SQS queue ARN": (
        {"messaging.system": "aws.sqs", "messaging.destination.name": "arn:aws:sqs:eu-west-1:123456789012:jobs.fifo"},
        "jobs.fifo"),
    "boto3sqs: the queue name, URL beside it": (
        {"messaging.system": "aws.sqs", "messaging.destination": "inventory-q",
         "messaging.url": "http://127.0.0.1:5095/123456789012/inventory-q"}, "inventory-q"),
    "a queue URL as the destination": (
        {"messaging.system": "aws.sqs",
         "messaging.destination.name": "https://sqs.us-east-1.amazonaws.com/123456789012/shipping-q"}, "shipping-q"),
    "SQS with only the queue URL": (
        {"messaging.system": "aws.sqs", "aws.queue_url": "https://sqs.us-east-1.amazonaws.com/123456789012/loyalty-q"},
        "loyalty-q"),
    "another ARN is kept": (
        {"messaging.system": "aws.kinesis",
         "messaging.destination.name": "arn:aws:kinesis:us-east-1:123456789012:stream/clicks"},
        "arn:aws:kinesis:us-east-1:123456789012:stream/clicks"),
    "kafka topic unchanged": ({"messaging.system": "kafka", "messaging.destination.name": "orders.placed"},
                              "orders.placed"),
}


def _load(tmp_path: Path, spans) -> duckdb.DuckDBPyConnection:
    dump = write_otlp_jsonl(spans, tmp_path / "dump.otlp.jsonl")
    con = store.connect(tmp_path / "store.duckdb")
    result = load_paths(con, [str(dump)])
    assert result.ok, result.errors
    return con


@pytest.mark.parametrize("case", list(CASES))
def test_destination_column_holds_the_name_the_team_uses(tmp_path, case):
    attrs, expected = CASES[case]
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer("names").start_span("send", kind=SpanKind.PRODUCER, attributes=attrs).end()
    con = _load(tmp_path, exporter.get_finished_spans())
    destination, stored = con.execute("SELECT messaging_destination, attributes FROM spans").fetchone()
    assert destination == expected
    # the full ids (exchange, ARN, URL) stay in the attributes
    assert {k: v for k, v in json.loads(stored).items() if k in attrs} == attrs


def _pika_shop(orders: int) -> list:
    """pika as in sample_traces/captures/rabbitmq_pika: every publish is two nested identical
    PRODUCER spans (outer under the Flask span, inner under the outer), consumers under the inner.
    The first publish of each order is consumed by inventory; the second (no queue bound) by nobody."""
    exporter = InMemorySpanExporter()
    tracers = {}
    for service in ("shop-api", "inventory"):
        tracers[service] = sdk_tracer(exporter, service, "opentelemetry.instrumentation.pika.pika_instrumentor")
    attrs = {"messaging.system": "rabbitmq", "messaging.destination": "shop", "messaging.temp_destination": True,
             "net.peer.name": "127.0.0.1", "net.peer.port": 5681}
    for i in range(orders):
        t0 = BASE_NS + i * 1000 * MS
        api = tracers["shop-api"]
        server = api.start_span("POST /orders", kind=SpanKind.SERVER, start_time=t0,
                                attributes={"http.method": "POST", "http.route": "/orders"})
        for n, consumed in ((0, True), (1, False)):
            start = t0 + (10 + 10 * n) * MS
            outer = api.start_span("shop send", context=set_span_in_context(server), kind=SpanKind.PRODUCER,
                                   start_time=start, attributes={**attrs, "messaging.message.id": f"m{i}-{n}"})
            inner = api.start_span("shop send", context=set_span_in_context(outer), kind=SpanKind.PRODUCER,
                                   start_time=start + MS // 10,
                                   attributes={**attrs, "messaging.message.id": f"m{i}-{n}"})
            inner.end(start + MS // 5)
            outer.end(start + MS // 4)
            if consumed:
                receive = tracers["inventory"].start_span(
                    "shop receive", context=set_span_in_context(inner), kind=SpanKind.CONSUMER,
                    start_time=start + 2 * MS, attributes={**attrs, "messaging.operation": "receive",
                                                           "messaging.message.id": f"m{i}-{n}"})
                receive.end(start + 5 * MS)
        server.end(t0 + 40 * MS)
    return list(exporter.get_finished_spans())


def test_pikas_nested_double_producer_is_one_send(tmp_path):
    con = _load(tmp_path, _pika_shop(4))
    ctx = AnalysisContext()
    for stage in STAGES:
        stage.run(con, ctx)
    # only the inner span of the unconsumed publish is a send nobody answered: not the outer span
    # of every publish (the old false "uninstrumented peer" shop-api -> shop, twice per publish)
    assert con.execute("""
        SELECT count(*), count(*) FILTER (WHERE p.role = 'producer') FROM unanswered_spans u
        JOIN span_steps p ON p.trace_id = u.trace_id AND p.span_id = u.parent_span_id
        WHERE u.role = 'producer'""").fetchone() == (4, 4)
    assert con.execute("SELECT count(*) FROM unanswered_spans WHERE role = 'producer'").fetchone() == (4,)
    # the consumed exchange is not dead; the event catalog counts 8 sends, not 16 producer spans
    from choreoscope.analysis.detectors import event_catalog
    assert con.execute(f"SELECT count(*) FROM ({event_catalog.SENDS})").fetchone() == (8,)
    assert con.execute("SELECT count(*) FROM findings WHERE kind IN ('dead_event', 'orphan_event')").fetchone() == (0,)
