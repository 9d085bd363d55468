"""Implicit ordering, consequence first, on small real stores (OpenTelemetry SDK spans -> OTLP JSON
lines -> loader -> every pipeline stage): `step_orderings` judges the order on the table A writes
and B reads, counts what happened to B when the order broke, and places each step in hops below
the common cause; the detector reports a dependency a few instances lose (and pay for), and stays
silent on latency, concurrency and a B that fails for its own reasons.

Every system is an `api` POST /orders publishing orders.placed (message id m<i>) to consumers;
times are ms from the instance start, instances 10 s apart."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

from choreoscope.analysis.detectors import implicit_ordering
from choreoscope.analysis.pipeline import run_pipeline
from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from choreoscope.sample_traces.generate import write_otlp_jsonl

BASE_NS = 1_736_000_000_000_000_000
GAP_NS = 10_000_000_000
MS = 1_000_000


class Recorder:
    """One TracerProvider per service, one in-memory exporter, explicit times (ms into instance i)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracers: dict[str, object] = {}
        self.t0 = BASE_NS

    def instance(self, i: int) -> None:
        self.t0 = BASE_NS + i * GAP_NS

    def tracer(self, service: str):
        if service not in self.tracers:
            provider = TracerProvider(resource=Resource.create({"service.name": service}))
            provider.add_span_processor(SimpleSpanProcessor(self.exporter))
            self.tracers[service] = provider.get_tracer("ordering-tests")
        return self.tracers[service]

    def span(self, service, name, kind, start, end, parent=None, attrs=None, error=False, export=True):
        span = self.tracer(service).start_span(
            name, context=set_span_in_context(parent) if parent is not None else None, kind=kind,
            start_time=self.t0 + int(start * MS), attributes=attrs or {})
        if error:
            span.set_status(Status(StatusCode.ERROR, "reservation not found"))
        if export:  # a span never ended is never exported: its children become orphans
            span.end(self.t0 + int(end * MS))
        return span

    def entry(self, i: int, event: str = "orders.placed", publish_at: float = 5.0):
        server = self.span("api", "POST /orders", SpanKind.SERVER, 0, 30,
                           attrs={"http.request.method": "POST", "http.route": "/orders"})
        send = self.publish("api", event, publish_at, server, f"m{i}")
        return server, send

    def publish(self, service, event, at, parent, message_id):
        return self.span(service, f"{event} send", SpanKind.PRODUCER, at, at + 1, parent,
                         {"messaging.system": "kafka", "messaging.destination.name": event,
                          "messaging.operation.type": "send", "messaging.message.id": message_id})

    def consume(self, service, event, start, end, parent, message_id, error=False, export=True):
        attrs = {"messaging.system": "kafka", "messaging.destination.name": event,
                 "messaging.operation.type": "process"}
        if message_id:
            attrs["messaging.message.id"] = message_id
        return self.span(service, f"{event} process", SpanKind.CONSUMER, start, end, parent, attrs, error, export)

    def query(self, service, op, table, start, parent):
        return self.span(service, f"{op} {table}", SpanKind.CLIENT, start, start + 2, parent,
                         {"db.system.name": "postgresql", "db.operation.name": op, "db.collection.name": table})

    def analysed(self, tmp_path: Path, name: str) -> duckdb.DuckDBPyConnection:
        dump = write_otlp_jsonl(list(self.exporter.get_finished_spans()), tmp_path / f"{name}.otlp.jsonl")
        con = store.connect(tmp_path / f"{name}.duckdb")
        result = load_paths(con, [str(dump)])
        assert result.ok, result.errors
        run_pipeline(con)
        return con


def ordering(con, service_a: str, service_b: str) -> dict:
    cur = con.execute("SELECT * FROM step_orderings WHERE service_a = ? AND service_b = ?", [service_a, service_b])
    names = [d[0] for d in cur.description]
    found = [dict(zip(names, row)) for row in cur.fetchall()]
    assert len(found) == 1, found
    return found[0]


def orderings_reported(con) -> dict[tuple[str, ...], dict]:
    return {tuple(json.loads(s) if isinstance(s, str) else s): {"event": e, "evidence": json.loads(ev)}
            for s, e, ev in con.execute("SELECT services, event, evidence FROM detector_findings "
                                        "WHERE kind = 'implicit_ordering'").fetchall()}


RACED = {5, 17, 29}   # the instances where stock is slow and ship reads before the row is there


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> duckdb.DuckDBPyConnection:
    """40 orders. stock INSERTs reservations ~45 ms in (in 3 orders ~95 ms); ship starts at 12 ms
    (a callback, work) and SELECTs reservations at ~60 ms: in the 3 slow orders the row is missing,
    ship nacks (no error status) and the redelivery (same message id, same parent) reads it. Both
    consumer spans overlap in every order. billing is independent (its own table, any order)."""
    rec = Recorder()
    for i in range(40):
        rec.instance(i)
        _, send = rec.entry(i)
        slow = i in RACED
        write_at = (92 if slow else 40) + (i * 7) % 5
        stock = rec.consume("stock", "orders.placed", 10, write_at + 3, send, f"m{i}")
        rec.query("stock", "INSERT", "reservations", write_at, stock)
        read_at = 55 + (i * 11) % 10
        first = rec.consume("ship", "orders.placed", 12, read_at + 4 if slow else read_at + 10, send, f"m{i}")
        rec.query("ship", "SELECT", "reservations", read_at, first)
        if slow:
            again = rec.consume("ship", "orders.placed", read_at + 60, read_at + 75, send, f"m{i}")
            rec.query("ship", "SELECT", "reservations", read_at + 61, again)
            rec.query("ship", "INSERT", "shipments", read_at + 65, again)
        else:
            rec.query("ship", "INSERT", "shipments", read_at + 5, first)
        billing_end = 20 + (i * 37) % 90
        billing = rec.consume("billing", "orders.placed", 11, billing_end, send, f"m{i}")
        rec.query("billing", "INSERT", "invoices", billing_end - 3, billing)
    return rec.analysed(tmp_path_factory.mktemp("shop"), "shop")


def test_the_order_is_judged_on_the_shared_table_not_on_overlapping_spans(shop):
    r = ordering(shop, "stock", "ship")
    assert r["both_instances"] == 40 and r["b_started_early"] == 40   # the spans overlap every time
    assert r["data_instances"] == 40 and r["shared_tables"] == ["reservations"]
    assert r["reads_before_write"] == r["broken_instances"] == len(RACED)
    assert r["broken_harmed"] == r["broken_retries"] == r["broken_rereads"] == len(RACED)
    assert r["broken_errors"] == 0 and r["ordered_harmed"] == 0
    assert r["final_ordered"] == 40                                    # the redelivery read after the write
    assert (r["common_cause"], r["hops_a"], r["hops_b"]) == ("api producer orders.placed", 1, 1)
    assert (r["depth_a"], r["depth_b"]) == (1, 1)


def test_a_race_lost_in_a_few_percent_is_reported_with_its_consequence(shop):
    found = orderings_reported(shop)
    f = found[("stock", "ship")]
    ev = f["evidence"]
    assert f["event"] == "orders.placed"
    assert ev["decided_by"] == "consequence" and ev["basis"] == "shared table"
    assert ev["broken"] == ev["harmed_when_broken"] == len(RACED) and ev["harmed_when_ordered"] == 0
    assert ev["when_broken"]["retries"] == len(RACED) and ev["shared_resources"] == ["reservations"]
    assert ev["hops_from_common_cause"] == [1, 1]


def test_concurrent_consumers_stay_silent(shop):
    found = orderings_reported(shop)
    assert not [pair for pair in found if "billing" in pair]
    r = ordering(shop, "billing", "ship")     # ship is redelivered, but the order with billing says nothing
    assert implicit_ordering.judge(r)["verdict"] == "refuted"


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> duckdb.DuckDBPyConnection:
    """30 orders under a load factor L (1..2.8) that slows every service alike. mail consumes
    orders.placed and ends at 5 + 10L; stock consumes it and publishes stock.reserved; pack consumes
    that (10L ms) and publishes parcel.packed; ship consumes parcel.packed at 10 + 10L: always 5 ms
    after mail ended, moving one for one with it, and never hurt: three hops down, not waiting."""
    rec = Recorder()
    for i in range(30):
        rec.instance(i)
        load = 1 + (i % 10) / 5
        _, send = rec.entry(i, publish_at=2)
        rec.consume("mail", "orders.placed", 5, 5 + 10 * load, send, f"m{i}")
        stock = rec.consume("stock", "orders.placed", 5, 8, send, f"m{i}")
        reserved = rec.publish("stock", "stock.reserved", 6, stock, f"s{i}")
        pack = rec.consume("pack", "stock.reserved", 9, 9 + 10 * load, reserved, f"s{i}")
        packed = rec.publish("pack", "parcel.packed", 8 + 10 * load, pack, f"p{i}")
        rec.consume("ship", "parcel.packed", 10 + 10 * load, 20 + 10 * load, packed, f"p{i}")
    return rec.analysed(tmp_path_factory.mktemp("chain"), "chain")


def test_always_after_because_more_hops_down_is_latency_not_dependency(chain):
    r = ordering(chain, "mail", "ship")
    assert r["both_instances"] == 30 and r["final_ordered"] == 30 and r["broken_instances"] == 0
    assert (r["common_cause"], r["hops_a"], r["hops_b"]) == ("api producer orders.placed", 1, 3)
    assert r["cause_follow_corr"] > 0.99 and 0.9 < r["cause_follow_slope"] < 1.1   # the clock alone says "follows"
    verdict = implicit_ordering.judge(r)
    assert verdict["verdict"] == "refuted" and verdict["reason"].startswith("latency")
    # the same timing at the same depth would have been a (timing-only) claim: the hops decide here
    assert implicit_ordering.judge(r | {"hops_b": 1})["reason"] == "timing"
    assert not orderings_reported(chain)


LOST = {2, 9, 15}   # the orders where ship's first attempt read too early and was lost


@pytest.fixture(scope="module")
def orphaned(tmp_path_factory) -> duckdb.DuckDBPyConnection:
    """20 orders, as boto3sqs records SQS: ship's failed attempt (row missing, message not deleted)
    has its consumer span never exported, so its SELECT is an orphan; the redelivery's spans hang
    below the same lost span, with an empty long poll (a consumer span without message id)."""
    rec = Recorder()
    for i in range(20):
        rec.instance(i)
        _, send = rec.entry(i)
        slow = i in LOST
        write_at = 80 if slow else 30 + i % 4
        stock = rec.consume("stock", "orders.placed", 10, write_at + 3, send, f"m{i}")
        rec.query("stock", "INSERT", "reservations", write_at, stock)
        lost = rec.consume("ship", "orders.placed", 40, 50, send, f"m{i}", export=not slow)
        rec.query("ship", "SELECT", "reservations", 45, lost)
        if slow:
            rec.consume("ship", "orders.placed", 52, 1052, lost, None)          # an empty poll
            again = rec.consume("ship", "orders.placed", 1100, 1120, lost, f"m{i}")
            rec.query("ship", "SELECT", "reservations", 1105, again)
    return rec.analysed(tmp_path_factory.mktemp("orphaned"), "orphaned")


def test_a_failed_attempt_whose_span_was_never_exported_shows_as_a_re_read(orphaned):
    r = ordering(orphaned, "stock", "ship")
    assert r["broken_instances"] == r["broken_rereads"] == r["broken_harmed"] == len(LOST)
    assert r["broken_retries"] == 0          # one exported delivery: the empty poll is no attempt
    assert r["final_ordered"] == 20 and r["ordered_harmed"] == 0
    ev = orderings_reported(orphaned)[("stock", "ship")]["evidence"]
    assert ev["decided_by"] == "consequence" and ev["when_broken"]["rereads"] == len(LOST)


@pytest.fixture(scope="module")
def flaky(tmp_path_factory) -> duckdb.DuckDBPyConnection:
    """30 orders: ship reads reservations after stock's write except in 4 orders, and is retried in
    10 orders for reasons of its own (2 of the 4 early ones, 8 of the 26 others)."""
    rec = Recorder()
    early, retried = {3, 11, 19, 27}, {3, 11, 0, 4, 8, 12, 16, 20, 24, 28}
    for i in range(30):
        rec.instance(i)
        _, send = rec.entry(i)
        stock = rec.consume("stock", "orders.placed", 10, 43, send, f"m{i}")
        rec.query("stock", "INSERT", "reservations", 40, stock)
        read_at = 30 if i in early else 50
        first = rec.consume("ship", "orders.placed", 25, read_at + 10, send, f"m{i}", error=i in retried)
        rec.query("ship", "SELECT", "reservations", read_at, first)
        end = read_at + 10
        if i in retried:
            again = rec.consume("ship", "orders.placed", end + 20, end + 40, send, f"m{i}")
            rec.query("ship", "SELECT", "reservations", end + 21, again)
    return rec.analysed(tmp_path_factory.mktemp("flaky"), "flaky")


def test_a_consumer_failing_as_often_when_the_order_held_is_not_hurt_by_it(flaky):
    r = ordering(flaky, "stock", "ship")
    assert r["broken_instances"] == 4 and r["broken_harmed"] == 2 and r["ordered_harmed"] == 8
    verdict = implicit_ordering.judge(r)
    assert verdict["verdict"] == "refuted"
    assert ("stock", "ship") not in orderings_reported(flaky)


@pytest.fixture(scope="module")
def handler_race(tmp_path_factory) -> duckdb.DuckDBPyConnection:
    """100 orders and no table in common: ship starts after stock ended, except in 4 orders where
    it starts first, errs, and its retry (same message id) comes after stock."""
    rec = Recorder()
    for i in range(100):
        rec.instance(i)
        _, send = rec.entry(i)
        stock_end = 20 + (i * 13) % 15
        rec.consume("stock", "orders.placed", 8, stock_end, send, f"m{i}")
        if i % 25 == 7:
            rec.consume("ship", "orders.placed", 10, 14, send, f"m{i}", error=True)
            rec.consume("ship", "orders.placed", stock_end + 30, stock_end + 40, send, f"m{i}")
        else:
            rec.consume("ship", "orders.placed", stock_end + 3, stock_end + 12, send, f"m{i}")
    return rec.analysed(tmp_path_factory.mktemp("handler_race"), "handler_race")


def test_four_lost_races_in_a_hundred_on_the_handler_spans_are_reported(handler_race):
    r = ordering(handler_race, "stock", "ship")
    assert r["data_instances"] == 0 and r["broken_instances"] == r["broken_errors"] == r["broken_retries"] == 4
    assert r["final_ordered"] == 100 and r["ordered_harmed"] == 0
    ev = orderings_reported(handler_race)[("stock", "ship")]["evidence"]
    assert ev["decided_by"] == "consequence" and ev["basis"] == "handler spans" and ev["broken"] == 4
