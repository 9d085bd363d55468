"""The deliveries stage and what reads it (retry_loop, event relays) on small real stores: spans
recorded by the OpenTelemetry SDK in the shapes the live captures show (sample_traces/captures),
written as OTLP JSON, loaded, analysed by the whole pipeline.

Per instance i (10 s apart), one trace:
  api   SERVER  POST /orders, PRODUCER orders (message id m<i>)
  ship  CONSUMER orders, child of the publish: SELECT reservations; when i is even the first
        delivery nacks silently (no INSERT) and a second delivery, same parent and id, does
        SELECT + INSERT shipments (RabbitMQ redelivery: nothing marks it)
  bill  CONSUMER orders: INSERT invoices; when i == 1 the same message again after complete work
        (an at-least-once duplicate)
  ledger CONSUMER orders: ERROR on the first delivery when i % 3 == 0, then OK (a raise + requeue)
  tax   CONSUMER orders: when i is even its POST fails (503), it raises, one redelivery works
  points CONSUMER loyalty (Celery shape): when i is odd the run ends celery.state=RETRY and
        republishes the same task id to loyalty; the next run is that publish's child with
        celery.retries=1
  pick  SQS shape: `pick-q receive` CONSUMER wrapping `SQS.ReceiveMessage` (message id s<i>) and
        `pick-q process`; when i < 2 the first attempt's process span is never ended (so never
        exported): its GET and SELECT are orphans, and the next poll runs as its child
"""

from __future__ import annotations

import duckdb
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

from choreoscope.analysis.detectors import event_cycle, retry_loop
from choreoscope.sample_traces.generate import write_otlp_jsonl
from tests.analysis_fixtures import analysed_store
from tests.stage_stores import BASE_NS, INSTANCE_GAP_NS, MS, rows, sdk_tracer

INSTANCES = 6
RABBIT = {"messaging.system": "rabbitmq", "messaging.destination": "orders"}
SQS = {"messaging.system": "aws.sqs", "messaging.destination": "pick-q"}


def _record() -> list:
    exporter = InMemorySpanExporter()
    tracers = {}
    for service in ("api", "ship", "bill", "ledger", "tax", "points", "pick"):
        tracers[service] = sdk_tracer(exporter, service, "delivery-tests")
    for i in range(INSTANCES):
        t0 = BASE_NS + i * INSTANCE_GAP_NS

        def at(ms: float) -> int:
            return t0 + int(ms * MS)  # noqa: B023 - used inside this iteration only

        def span(service, name, parent, kind, start, end, attributes=None, error=None):
            s = tracers[service].start_span(name, context=set_span_in_context(parent) if parent else None,
                                            kind=kind, start_time=at(start), attributes=attributes or {})
            if error:
                s.set_status(Status(StatusCode.ERROR, error))
            if end is not None:
                s.end(at(end))
            return s

        def sql(service, parent, statement, start):
            span(service, statement.split()[0], parent, SpanKind.CLIENT, start, start + 1,
                 {"db.system": "sqlite", "db.statement": statement})

        server = span("api", "POST /orders", None, SpanKind.SERVER, 0, None,
                      {"http.request.method": "POST", "http.route": "/orders"})
        send = span("api", "orders send", server, SpanKind.PRODUCER, 5, 6, {**RABBIT, "messaging.message.id": f"m{i}"})
        consumer = {**RABBIT, "messaging.operation": "receive", "messaging.message.id": f"m{i}"}

        first = span("ship", "orders receive", send, SpanKind.CONSUMER, 10, None, consumer)
        sql("ship", first, "SELECT status FROM reservations WHERE order_id = ?", 12)
        if i % 2 == 0:   # row missing: nack, redelivered
            first.end(at(20))
            again = span("ship", "orders receive", send, SpanKind.CONSUMER, 21, None, consumer)
            sql("ship", again, "SELECT status FROM reservations WHERE order_id = ?", 22)
            sql("ship", again, "INSERT INTO shipments (order_id) VALUES (?)", 24)
            again.end(at(30))
        else:
            sql("ship", first, "INSERT INTO shipments (order_id) VALUES (?)", 14)
            first.end(at(20))

        for start in ((10, 40) if i == 1 else (10,)):   # a duplicate after complete work
            bill = span("bill", "orders receive", send, SpanKind.CONSUMER, start, None, consumer)
            sql("bill", bill, "INSERT INTO invoices (order_id) VALUES (?)", start + 2)
            bill.end(at(start + 5))

        if i % 3 == 0:
            failed = span("ledger", "orders receive", send, SpanKind.CONSUMER, 10, None, consumer,
                          error="PaymentNotYetRecorded: m-17")
            sql("ledger", failed, "SELECT amount FROM payments WHERE id = ?", 11)
            failed.end(at(15))
        ok = span("ledger", "orders receive", send, SpanKind.CONSUMER, 16, None, consumer)
        sql("ledger", ok, "SELECT amount FROM payments WHERE id = ?", 17)
        sql("ledger", ok, "INSERT INTO ledger_entries (id) VALUES (?)", 18)
        ok.end(at(20))

        if i % 2 == 0:   # a call fails (503), the handler raises, one redelivery works: a transient fault
            flaky = span("tax", "orders receive", send, SpanKind.CONSUMER, 10, None, consumer, error="HTTP 503")
            span("tax", "POST", flaky, SpanKind.CLIENT, 11, 12, {"http.request.method": "POST",
                                                                "url.full": "http://rates/quote"}, error="503")
            flaky.end(at(13))
        calm = span("tax", "orders receive", send, SpanKind.CONSUMER, 14, None, consumer)
        span("tax", "POST", calm, SpanKind.CLIENT, 15, 16, {"http.request.method": "POST", "url.full": "http://rates/quote"})
        calm.end(at(17))

        task = {"celery.action": "apply_async", "celery.task_name": "award", "messaging.message.id": f"t{i}",
                "messaging.destination": "loyalty"}
        run = {"celery.action": "run", "celery.task_name": "award", "messaging.message.id": f"t{i}",
               "messaging.destination": "loyalty"}
        publish = span("api", "apply_async/award", server, SpanKind.PRODUCER, 7, 8, task)
        if i % 2 == 1:
            retry = span("points", "run/award", publish, SpanKind.CONSUMER, 10, None,
                         {**run, "celery.state": "RETRY", "celery.retry.reason": "Retry in 0.2s"})
            sql("points", retry, "SELECT total FROM order_stats WHERE id = ?", 11)
            publish = span("points", "apply_async/award", retry, SpanKind.PRODUCER, 12, 13, task)
            retry.end(at(14))
            run = {**run, "celery.retries": 1}
        done = span("points", "run/award", publish, SpanKind.CONSUMER, 30, None, {**run, "celery.state": "SUCCESS"})
        sql("points", done, "SELECT total FROM order_stats WHERE id = ?", 31)
        sql("points", done, "INSERT INTO points (id) VALUES (?)", 32)
        done.end(at(35))
        server.end(at(100))

        # SQS: each consumer trace starts at a poll; nothing ties it to the publish.
        receive = {"rpc.system": "aws-api", "rpc.service": "SQS", "rpc.method": "ReceiveMessage", **SQS,
                   "messaging.message.id": f"s{i}"}
        process = {**SQS, "messaging.operation": "process", "messaging.message.id": f"s{i}"}
        poll = span("pick", "pick-q receive", None, SpanKind.CONSUMER, 1, 3, {**SQS, "messaging.operation": "receive"})
        span("pick", "SQS.ReceiveMessage", poll, SpanKind.CLIENT, 1.5, 2.5, receive)
        handler = span("pick", "pick-q process", poll, SpanKind.CONSUMER, 3, None, process)
        span("pick", "GET", handler, SpanKind.CLIENT, 4, 5, {"http.request.method": "GET",
                                                            "url.full": f"http://api/orders/{i}"})
        sql("pick", handler, "SELECT status FROM reservations WHERE order_id = ?", 6)
        if i < 2:   # not deleted: the process span leaks, the next polls run in its context
            empty = span("pick", "pick-q receive", handler, SpanKind.CONSUMER, 8, 1008,
                         {**SQS, "messaging.operation": "receive"})
            span("pick", "SQS.ReceiveMessage", empty, SpanKind.CLIENT, 8.5, 1007, {k: v for k, v in receive.items()
                                                                                 if k != "messaging.message.id"})
            poll = span("pick", "pick-q receive", handler, SpanKind.CONSUMER, 1010, 1012,
                        {**SQS, "messaging.operation": "receive"})
            span("pick", "SQS.ReceiveMessage", poll, SpanKind.CLIENT, 1010.5, 1011.5, receive)
            handler = span("pick", "pick-q process", poll, SpanKind.CONSUMER, 1012, None, process)
            span("pick", "GET", handler, SpanKind.CLIENT, 1013, 1014, {"http.request.method": "GET",
                                                                     "url.full": f"http://api/orders/{i}"})
            sql("pick", handler, "SELECT status FROM reservations WHERE order_id = ?", 1015)
            sql("pick", handler, "INSERT INTO picks (order_id) VALUES (?)", 1016)
            handler.end(at(1020))
        else:
            sql("pick", handler, "INSERT INTO picks (order_id) VALUES (?)", 7)
            handler.end(at(9))
    return list(exporter.get_finished_spans())


@pytest.fixture(scope="module")
def con(tmp_path_factory) -> duckdb.DuckDBPyConnection:
    tmp = tmp_path_factory.mktemp("deliveries")
    con = analysed_store([write_otlp_jsonl(_record(), tmp / "deliveries.otlp.jsonl")], tmp / "deliveries.duckdb")
    yield con
    con.close()


def by_service(con, where: str = "true") -> dict:
    return dict(rows(con, f"SELECT service, count(*) FROM deliveries WHERE {where} GROUP BY ALL"))


def test_one_delivery_per_handled_message_numbered_per_message(con):
    # ship: 6 messages + 3 redeliveries; bill: 6 + 1 duplicate; ledger 6 + 2; points 6 + 3 retries;
    # pick: 6 messages + 2 attempts seen only through their receive span
    assert by_service(con) == {"ship": 9, "bill": 7, "ledger": 8, "tax": 9, "points": 9, "pick": 8}
    assert by_service(con, "is_redelivery") == {"ship": 3, "bill": 1, "ledger": 2, "tax": 3, "points": 3, "pick": 2}
    assert rows(con, "SELECT DISTINCT key_kind FROM deliveries") == [("message_id",)]
    assert rows(con, "SELECT max(attempts), count(DISTINCT step_id) FROM deliveries WHERE service = 'pick'") == [
        (2, 1)]   # the receive-only attempt carries the message's consumer step
    assert rows(con, "SELECT DISTINCT step_id FROM deliveries WHERE service = 'pick'") == [
        ("pick consumer pick-q",)]
    # empty polls are no deliveries
    assert rows(con, "SELECT count(*) FROM deliveries WHERE message_key IS NULL") == [(0,)]


def test_how_each_attempt_ended(con):
    ended = set(rows(con, "SELECT service, attempt, ended, gave_up FROM deliveries WHERE attempts > 1"))
    assert ended == {
        ("ship", 1, "redelivered", True), ("ship", 2, "done", False),       # lacked the INSERT
        ("bill", 1, "redelivered", False), ("bill", 2, "done", False),      # a duplicate, complete work
        ("ledger", 1, "error", True), ("ledger", 2, "done", False),
        ("tax", 1, "error", True), ("tax", 2, "done", False),
        ("points", 1, "retry", True), ("points", 2, "done", False),
        ("pick", 1, "unfinished", True), ("pick", 2, "done", False),
    }
    assert rows(con, "SELECT DISTINCT missing_steps FROM deliveries WHERE service = 'ship' AND gave_up") == [
        (["ship client INSERT shipments"],)]
    # Celery: the retry counter on the next attempt, the RETRY state on the previous one
    assert rows(con, "SELECT attempt, retry_count, explicit_retry, state FROM deliveries "
                     "WHERE service = 'points' AND attempts > 1 GROUP BY ALL ORDER BY ALL") == [
        (1, 0, False, "RETRY"), (2, 1, True, "SUCCESS")]


def test_failed_calls_tell_a_transient_fault_from_waiting(con):
    assert rows(con, "SELECT service, failed_calls FROM deliveries WHERE gave_up AND service IN ('tax', 'ledger') "
                     "GROUP BY ALL ORDER BY ALL") == [("ledger", 0), ("tax", 1)]


def test_orphans_of_an_unexported_attempt_are_its_work(con):
    assert rows(con, "SELECT handler_exported, orphaned_spans, work_steps FROM deliveries "
                     "WHERE service = 'pick' AND ended = 'unfinished' GROUP BY ALL") == [
        (False, 2, ["pick client GET /orders/{id}", "pick client SELECT reservations"])]
    assert rows(con, "SELECT service, count(*), count(delivery_span_id), sum(spans), sum(polls) "
                     "FROM delivery_orphans GROUP BY ALL") == [("pick", 2, 2, 4, 4)]


def test_the_retry_republish_is_no_event_relay_and_no_cycle(con):
    assert rows(con, "SELECT count(*) FROM event_relays WHERE service = 'points'") == [(0,)]
    assert not [f for f in event_cycle.detect(con) if "points" in f.services]


def test_retry_loop_counts_redeliveries_that_gave_up(con):
    found = {f.services[0]: f for f in retry_loop.detect(con)}
    # not bill: its duplicate did all the work; not tax: it gave up once per message because a call failed
    assert set(found) == {"ship", "ledger", "points", "pick"}
    ship = found["ship"].evidence
    assert (ship["messages"], ship["retried_messages"], ship["max_attempts"], ship["p50_attempts"]) == (6, 3, 2, 2.0)
    assert ship["missing_steps"] == ["ship client INSERT shipments"] and ship["recovered_messages"] == 3
    assert found["ledger"].evidence["failed_attempts"] == {"error status": 2}
    assert found["ledger"].evidence["errors"] == {"PaymentNotYetRecorded: m-{id}": 2}
    assert found["points"].evidence["failed_attempts"] == {"RETRY state": 3}
    pick = found["pick"].evidence
    assert pick["failed_attempts"] == {"consumer span never exported": 2} and pick["orphaned_spans"] == 4
    traces = {t for (t,) in rows(con, "SELECT DISTINCT trace_id FROM spans")}
    assert all(f.trace_ids and set(f.trace_ids) <= traces for f in found.values())
