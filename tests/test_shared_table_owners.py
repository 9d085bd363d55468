"""shared_data_coupling on a table many services share: one finding for the table, naming every
service (writers first), not one per pair; a table two services share is still a pair. Spans from
the real OpenTelemetry SDK, through the loader and the whole pipeline."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, set_span_in_context

from choreoscope.analysis.findings import load_findings
from choreoscope.sample_traces.generate import write_otlp_jsonl
from tests.analysis_fixtures import analysed_store
from tests.stage_stores import BASE_NS, EVENT, INSTANCE_GAP_NS, MS, sdk_tracer

# (service, consumer start ms, statements on the tables as (operation, table, start ms))
CONSUMERS = (
    ("stock", 30, (("INSERT", "ledger", 35), ("INSERT", "reservations", 40))),
    ("billing", 50, (("UPDATE", "ledger", 55),)),
    ("loyalty", 70, (("INSERT", "ledger", 72),)),
    ("reports", 90, (("SELECT", "ledger", 95),)),
    ("ship", 110, (("SELECT", "reservations", 115),)),
)


def _named_table(op: str, table: str, _database: str | None) -> dict:
    """A database span naming its table in `db.collection.name`."""
    return {"db.system.name": "postgresql", "db.operation.name": op, "db.collection.name": table}


def _statement_text(op: str, table: str, database: str | None) -> dict:
    """A database span with the table only in its statement, and its database when given."""
    text = f"{op} * FROM {table}" if op == "SELECT" else f"{op} INTO {table} VALUES (1)"
    return {"db.system.name": "postgresql", "db.query.text": text, **({"db.namespace": database} if database else {})}


def _record(consumers=CONSUMERS, query_attributes=_named_table, instances: int = 6):
    """`instances` orders, each sent as an event to `consumers`, (service, consumer start ms,
    statements as (operation, table, start ms[, database])); `query_attributes` makes a statement's
    span attributes."""
    exporter = InMemorySpanExporter()
    tracers = {name: sdk_tracer(exporter, name, "owner-tests") for name in ("api", *(c[0] for c in consumers))}
    for i in range(instances):
        t0 = BASE_NS + i * INSTANCE_GAP_NS
        server = tracers["api"].start_span("POST /orders", kind=SpanKind.SERVER, start_time=t0,
                                           attributes={"http.request.method": "POST", "http.route": "/orders"})
        send = tracers["api"].start_span("orders.placed send", context=set_span_in_context(server),
                                         kind=SpanKind.PRODUCER, start_time=t0 + 10 * MS,
                                         attributes={**EVENT, "messaging.operation.type": "send",
                                                     "messaging.message.id": f"m{i}"})
        send.end(t0 + 20 * MS)
        for service, start, statements in consumers:
            consumer = tracers[service].start_span("orders.placed process", context=set_span_in_context(send),
                                                   kind=SpanKind.CONSUMER, start_time=t0 + start * MS,
                                                   attributes={**EVENT, "messaging.operation.type": "process"})
            for op, table, at, *database in statements:
                query = tracers[service].start_span(f"{op} {table}", context=set_span_in_context(consumer),
                                                    kind=SpanKind.CLIENT, start_time=t0 + at * MS,
                                                    attributes=query_attributes(op, table, *(database or [None])))
                query.end(t0 + (at + 2) * MS)
            consumer.end(t0 + (start + 15) * MS)
        server.end(t0 + 200 * MS)
    return exporter.get_finished_spans()


def test_a_table_of_four_services_is_one_finding_and_a_table_of_two_a_pair(tmp_path):
    dump = tmp_path / "owners.otlp.jsonl"
    write_otlp_jsonl(_record(), dump)
    con = analysed_store([dump], tmp_path / "owners.duckdb")
    shared = {f.resource: f for f in load_findings(con) if f.kind == "shared_data_coupling"}
    ledger = shared.pop("ledger")
    # writers first, most accesses first (all equal here: by name), then the services that only read
    assert ledger.services == ["billing", "loyalty", "stock", "reports"]
    assert ledger.evidence["writers"] == ["billing", "loyalty", "stock"]
    assert ledger.evidence["readers"] == ["reports"]
    assert ledger.evidence["pairs"] == 6  # each writer with each other service
    assert "4 services share ledger" in ledger.summary and "no owner" in ledger.summary
    assert list(shared) == ["reservations"]
    assert shared["reservations"].services == ["stock", "ship"]


# stock writes `outbox` and `reservations` in database `stock`; ship reads an `outbox` of its own
# database `ship`; reports reads `reservations` with no database recorded.
DATABASE_CONSUMERS = (
    ("stock", 30, (("INSERT", "outbox", 32, "stock"), ("INSERT", "reservations", 35, "stock"))),
    ("ship", 60, (("SELECT", "outbox", 62, "ship"),)),
    ("reports", 90, (("SELECT", "reservations", 92, None),)),
)


def test_same_named_tables_of_two_databases_are_not_shared(tmp_path):
    """A table is its database and its name: ship's own `outbox` is not stock's. A span that
    records no database is matched by the name alone (nothing says the tables differ)."""
    dump = tmp_path / "databases.otlp.jsonl"
    write_otlp_jsonl(_record(DATABASE_CONSUMERS, _statement_text), dump)
    con = analysed_store([dump], tmp_path / "databases.duckdb")
    shared = {f.resource: f.services for f in load_findings(con) if f.kind == "shared_data_coupling"}
    assert shared == {"reservations": ["stock", "reports"]}
    assert con.execute("SELECT DISTINCT resource, namespace FROM data_access ORDER BY ALL").fetchall() == [
        ("outbox", "ship"), ("outbox", "stock"), ("reservations", "stock"), ("reservations", None)]
