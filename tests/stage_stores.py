"""Small real stores for the stage tests: a few services recorded by the real OpenTelemetry SDK
(one TracerProvider per service, explicit times), written as OTLP JSON lines, loaded by the real
loader into a DuckDB file, then the pipeline's stages run up to the one under test.

The system (every instance the same shape, times in ms from the instance start):
  api     SERVER  POST /orders          0..100
  api     PRODUCER orders.placed        10..20    (message id m<i>)
  stock   CONSUMER orders.placed        30..60    child of the producer
  stock   CLIENT  INSERT reservations   40..50
  ship    CONSUMER orders.placed        70..90    child of the producer, after stock in every instance
  ship    CLIENT  SELECT reservations   75..80
  mail    CONSUMER orders.placed        25..35    a new trace, linked to the producer
  audit   CONSUMER orders.placed        40..45    a new trace, tied only by the message id
"""

from __future__ import annotations

from pathlib import Path

import duckdb
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, set_span_in_context

from choreoscope.analysis.pipeline import STAGES, AnalysisContext
from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from choreoscope.sample_traces.generate import write_otlp_jsonl

BASE_NS = 1_736_000_000_000_000_000
INSTANCE_GAP_NS = 10_000_000_000  # 10 s apart: the inference window never reaches the next one
MS = 1_000_000
SERVICES = ("api", "stock", "ship", "mail", "audit")
EVENT = {"messaging.system": "kafka", "messaging.destination.name": "orders.placed"}


def sdk_tracer(exporter: InMemorySpanExporter, service: str, scope: str):
    """A tracer of its own TracerProvider for `service` (one provider per service, as real
    services have), exporting synchronously into `exporter`."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer(scope)


def record_order_flow(instances: int = 3) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    tracers = {}
    for service in SERVICES:
        tracers[service] = sdk_tracer(exporter, service, "stage-tests")
    for i in range(instances):
        t0 = BASE_NS + i * INSTANCE_GAP_NS

        def at(ms: int) -> int:
            return t0 + ms * MS  # noqa: B023 - used inside this iteration only

        api, stock, ship = tracers["api"], tracers["stock"], tracers["ship"]
        server = api.start_span("POST /orders", kind=SpanKind.SERVER, start_time=at(0),
                                attributes={"http.request.method": "POST", "http.route": "/orders"})
        send = api.start_span("orders.placed send", context=set_span_in_context(server), kind=SpanKind.PRODUCER,
                              start_time=at(10), attributes={**EVENT, "messaging.operation.type": "send",
                                                             "messaging.message.id": f"m{i}"})
        send.end(at(20))
        for tracer, start, end, db_op, db_start in ((stock, 30, 60, "INSERT", 40), (ship, 70, 90, "SELECT", 75)):
            consumer = tracer.start_span("orders.placed process", context=set_span_in_context(send),
                                         kind=SpanKind.CONSUMER, start_time=at(start),
                                         attributes={**EVENT, "messaging.operation.type": "process"})
            query = tracer.start_span(f"{db_op} reservations", context=set_span_in_context(consumer),
                                      kind=SpanKind.CLIENT, start_time=at(db_start),
                                      attributes={"db.system.name": "postgresql", "db.operation.name": db_op,
                                                  "db.collection.name": "reservations"})
            query.end(at(db_start + 5))
            consumer.end(at(end))
        linked = tracers["mail"].start_span("orders.placed process", context=None, kind=SpanKind.CONSUMER,
                                            start_time=at(25), links=[Link(send.get_span_context())],
                                            attributes={**EVENT, "messaging.operation.type": "process"})
        linked.end(at(35))
        by_id = tracers["audit"].start_span("orders.placed process", context=None, kind=SpanKind.CONSUMER,
                                            start_time=at(40),
                                            attributes={**EVENT, "messaging.operation.type": "process",
                                                        "messaging.message.id": f"m{i}"})
        by_id.end(at(45))
        server.end(at(100))
    return list(exporter.get_finished_spans())


def order_flow_store(tmp_path: Path, until: str, instances: int = 3) -> duckdb.DuckDBPyConnection:
    """A store of `record_order_flow`, analysed by the pipeline's stages up to and including `until`."""
    dump = write_otlp_jsonl(record_order_flow(instances), tmp_path / "orders.otlp.jsonl")
    con = store.connect(tmp_path / "orders.duckdb")
    result = load_paths(con, [str(dump)])
    assert result.ok, result.errors
    ctx = AnalysisContext()
    names = [s.name for s in STAGES]
    for stage in STAGES[: names.index(until) + 1]:
        stage.run(con, ctx)
    return con


def rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()
