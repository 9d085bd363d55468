"""The critical path stage: on a small store recorded by the real OpenTelemetry SDK (tests/stage_stores.py
shows how), and on the samples against their truth.

The small system (ms from the instance start; every instance the same):
  api   SERVER   POST /orders          0..20
  api   PRODUCER orders.placed          5..10     message id m<i>
  stock CONSUMER orders.placed         30..60     child of the producer
  stock CLIENT   INSERT reservations   40..50
  ship  CONSUMER orders.placed         32..36     child of the producer, too early: errs, is redelivered
  ship  CLIENT   SELECT reservations   33..35
  ship  CONSUMER orders.placed         70..90     child of the producer, after stock
  ship  CLIENT   SELECT reservations   75..80
  ship  CLIENT   GET /orders/{id}      80..88
  api   SERVER   GET /orders/{id}      81..87     child of ship's call
  mail  CONSUMER orders.placed         25..500    a new trace linked to the producer: a side sink
The path ends at ship's end (90), not at mail's (500): ship 88..90 work, network 87..88, api GET
81..87 work, network 80..81, SELECT 75..80, ship 70..75 work, ship waits on stock 60..70, stock
50..60 and 30..40 work, INSERT 40..50, queue 5..30 (send start to stock's start), api 0..5 work.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context

from choreoscope.analysis.report import build_report, validate_report
from choreoscope.sample_traces.generate import write_otlp_jsonl
from tests.analysis_fixtures import analysed_store, scenario_report
from tests.stage_stores import BASE_NS, INSTANCE_GAP_NS, MS, rows, sdk_tracer

EVENT = {"messaging.system": "kafka", "messaging.destination.name": "orders.placed"}
INSTANCES = 8


def _record():
    exporter = InMemorySpanExporter()
    tracers = {}
    for service in ("api", "stock", "ship", "mail"):
        tracers[service] = sdk_tracer(exporter, service, "critical-path-tests")
    for i in range(INSTANCES):
        t0 = BASE_NS + i * INSTANCE_GAP_NS

        def at(ms: float) -> int:
            return t0 + int(ms * MS)  # noqa: B023 - used inside this iteration only

        api, stock, ship = tracers["api"], tracers["stock"], tracers["ship"]
        server = api.start_span("POST /orders", kind=SpanKind.SERVER, start_time=at(0),
                                attributes={"http.request.method": "POST", "http.route": "/orders"})
        send = api.start_span("orders.placed send", context=set_span_in_context(server), kind=SpanKind.PRODUCER,
                              start_time=at(5), attributes={**EVENT, "messaging.operation.type": "send",
                                                            "messaging.message.id": f"m{i}"})
        send.end(at(10))
        server.end(at(20))

        def consume(tracer, start, end):
            return tracer.start_span("orders.placed process", context=set_span_in_context(send),  # noqa: B023
                                     kind=SpanKind.CONSUMER, start_time=at(start),
                                     attributes={**EVENT, "messaging.operation.type": "process",
                                                 "messaging.message.id": f"m{i}"})  # noqa: B023

        def query(tracer, parent, op, start, end):
            span = tracer.start_span(f"{op} reservations", context=set_span_in_context(parent),
                                     kind=SpanKind.CLIENT, start_time=at(start),
                                     attributes={"db.system.name": "postgresql", "db.operation.name": op,
                                                 "db.collection.name": "reservations"})
            span.end(at(end))

        first = consume(stock, 30, 60)
        query(stock, first, "INSERT", 40, 50)
        first.end(at(60))
        early = consume(ship, 32, 36)
        query(ship, early, "SELECT", 33, 35)
        early.set_status(Status(StatusCode.ERROR, "reservation not found"))
        early.end(at(36))
        final = consume(ship, 70, 90)
        query(ship, final, "SELECT", 75, 80)
        call = ship.start_span("GET", context=set_span_in_context(final), kind=SpanKind.CLIENT, start_time=at(80),
                               attributes={"http.request.method": "GET", "url.template": "/orders/{id}",
                                           "server.address": "api"})
        answer = api.start_span("GET /orders/{id}", context=set_span_in_context(call), kind=SpanKind.SERVER,
                                start_time=at(81), attributes={"http.request.method": "GET",
                                                               "http.route": "/orders/{id}"})
        answer.end(at(87))
        call.end(at(88))
        final.end(at(90))
        mail = tracers["mail"].start_span("orders.placed process", context=None, kind=SpanKind.CONSUMER,
                                          start_time=at(25), links=[Link(send.get_span_context())],
                                          attributes={**EVENT, "messaging.operation.type": "process"})
        mail.end(at(500))
    return list(exporter.get_finished_spans())


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    tmp = Path(tmp_path_factory.mktemp("critical_path"))
    connection = analysed_store([write_otlp_jsonl(_record(), tmp / "orders.otlp.jsonl")], tmp / "orders.duckdb")
    yield connection
    connection.close()


def _path(con, instance_id):
    return con.execute("SELECT kind, service, step_id, round((g.start_adj - i.start_adj) / 1e6, 3), "
                       "round((g.end_adj - i.start_adj) / 1e6, 3), waits_on FROM critical_path_segments g "
                       "JOIN instances i USING (instance_id) WHERE instance_id = ? ORDER BY seq DESC",
                       [instance_id]).fetchall()


def test_the_path_tiles_each_instance_from_its_start_to_its_last_end_outside_side_sinks(con):
    totals = rows(con, """
        SELECT round(sum(duration_ms), 3), any_value(round((i.end_adj - i.start_adj) / 1e6, 3))
        FROM critical_path_segments JOIN instances i USING (instance_id) GROUP BY instance_id""")
    assert len(totals) == INSTANCES
    # mail's linked trace (it ends at 500 ms) is a side sink: the instance's path ends at ship's 90 ms
    assert {t for t, _ in totals} == {90.0}
    assert {e for _, e in totals} == {500.0}


def test_the_walk_crosses_the_event_to_the_sibling_it_waits_on(con):
    findings = rows(con, "SELECT services FROM detector_findings WHERE kind = 'implicit_ordering'")
    assert [["stock", "ship"]] == [list(f) for (f,) in findings]
    instance = rows(con, "SELECT min(instance_id) FROM instances")[0][0]
    path = [(k, svc, start, end, w) for k, svc, _, start, end, w in _path(con, instance)]
    assert path == [
        ("work", "api", 0.0, 5.0, None),
        ("queue", "stock", 5.0, 30.0, None),
        ("work", "stock", 30.0, 40.0, None),
        ("work", "stock", 40.0, 50.0, None),
        ("work", "stock", 50.0, 60.0, None),
        ("wait", "ship", 60.0, 70.0, "stock consumer orders.placed"),
        ("work", "ship", 70.0, 75.0, None),
        ("work", "ship", 75.0, 80.0, None),
        ("network", "ship", 80.0, 81.0, None),
        ("work", "api", 81.0, 87.0, None),
        ("network", "ship", 87.0, 88.0, None),
        ("work", "ship", 88.0, 90.0, None),
    ]


def test_the_typical_path_is_in_the_report_in_path_order(con):
    report = build_report(con)
    validate_report(report)
    (wf,) = report["workflows"]
    kinds = [(p["service"], p["kind"]) for p in wf["critical_path"]]
    assert kinds[:3] == [("api", "work"), ("stock", "queue"), ("stock", "work")]
    wait = next(p for p in wf["critical_path"] if p["kind"] == "wait")
    assert wait == {"step": "ship consumer orders.placed", "service": "ship", "kind": "wait", "p50_ms": 10.0,
                    "share": 1.0, "waits_on": "stock consumer orders.placed"}
    assert {p["service"] for p in wf["critical_path"]} == {"api", "stock", "ship"}  # not mail


@pytest.mark.parametrize("scenario", ["ecommerce", "event_router", "notification_fanout", "hybrid_billing"])
def test_event_driven_samples_show_their_queue_segments(scenario, tmp_path_factory):
    report = scenario_report(scenario, str(tmp_path_factory.mktemp(scenario)))
    for wf in report["workflows"]:
        if wf["metrics"]["events"]:
            # every instance's path crosses an event: the queue shares (split over the consumers that
            # were last in different instances, e.g. status-page's three senders) cover all instances
            assert sum(p["share"] for p in wf["critical_path"] if p["kind"] == "queue") >= 0.99, wf["id"]


def test_ecommerce_shipping_waits_on_inventory(tmp_path_factory):
    report = scenario_report("ecommerce", str(tmp_path_factory.mktemp("ecommerce")))
    (wf,) = [w for w in report["workflows"] if w["entry"]["service"] == "storefront"]
    waits = [p for p in wf["critical_path"] if p["kind"] == "wait"]
    assert [(p["service"], p["waits_on"]) for p in waits] == [
        ("shipping-service", "inventory-service consumer orders.placed")]
    # analytics-service's poller starts a linked trace 1.8 s later: it does not end the path
    assert "analytics-service" not in {p["service"] for p in wf["critical_path"]}


def test_the_orchestrated_saga_is_calls_and_work_only(tmp_path_factory):
    report = scenario_report("loan_saga", str(tmp_path_factory.mktemp("loan_saga")))
    (wf,) = report["workflows"]
    assert {p["kind"] for p in wf["critical_path"]} == {"work", "network"}
    assert {p["service"] for p in wf["critical_path"] if p["share"] == 1.0} >= {
        "loan-orchestrator", "identity-service", "fraud-service", "credit-service", "approval-service"}


def test_compare_names_the_critical_path_entries_that_moved(tmp_path_factory):
    import copy

    from choreoscope.analysis.compare_cmd import compare_reports

    before = scenario_report("ecommerce", str(tmp_path_factory.mktemp("ecommerce")))
    assert compare_reports(before, before)["workflows_changed"] == []
    after = copy.deepcopy(before)
    wf = next(w for w in after["workflows"] if w["entry"]["service"] == "storefront")
    charge = next(p for p in wf["critical_path"] if p["step"] == "payment-service client POST /v1/charges")
    charge["p50_ms"] *= 2
    (changed,) = compare_reports(before, after)["workflows_changed"]
    assert [(c["step"], c["kind"]) for c in changed["critical_path_changed"]] == [
        ("payment-service client POST /v1/charges", "work")]
    assert changed["critical_path_changed"][0]["p50_ms"]["after"] == charge["p50_ms"]
