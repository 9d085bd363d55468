"""Span limits (collector/spanbatch.py LIMITS): a span beyond them, sent by the real SDK exporters
or as a raw OTLP request to a real receiver, or read from a dump, is stored cut to the limits with
what was cut counted (plus the sender's own counts); the request is answered 200/OK and the other
spans are stored exactly. Attribute values nested beyond the depth limit never crash a decoder."""

from __future__ import annotations

import json

import grpc
import pytest
import requests
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext
from receiver_fixtures import assert_stored_exactly, make_spans, running_receiver

from choreoscope.collector import spanbatch, store
from choreoscope.collector.loaders import load_paths
from choreoscope.collector.spanbatch import (
    MAX_ATTRIBUTES,
    MAX_EVENT_ATTRIBUTES,
    MAX_EVENTS,
    MAX_LINK_ATTRIBUTES,
    MAX_LINKS,
    MAX_VALUE_DEPTH,
    MAX_VALUE_LENGTH,
)

PROTOBUF = {"Content-Type": "application/x-protobuf"}

def big_spans() -> list:
    """One span beyond every limit of ours, made by the real SDK with its limits set above them, and
    one the SDK itself cut (its own count must be stored). (The Python SDK drops the oldest
    attributes beyond its limit; choreoscope, like the Java, Go and JS SDKs, keeps the first.)"""
    mem = InMemorySpanExporter()
    limits = SpanLimits(max_span_attributes=1000, max_events=1000, max_links=1000,
                        max_event_attributes=1000, max_link_attributes=1000)
    provider = TracerProvider(resource=Resource.create({"service.name": "hoarder"}), span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(mem))
    tracer = provider.get_tracer("choreoscope.tests.limits")
    links = [Link(SpanContext(0xA000 + i, 0xB000 + i, is_remote=True),
                  {f"l{j}": j for j in range(MAX_LINK_ATTRIBUTES + 3 if i == 0 else 1)})
             for i in range(MAX_LINKS + 12)]
    with tracer.start_as_current_span("hoard", links=links) as span:
        span.set_attribute("messaging.system", "kafka")  # typed columns come from what is kept
        span.set_attribute("long", "x" * (MAX_VALUE_LENGTH + 5000))
        span.set_attribute("long.list", ["short", "y" * (MAX_VALUE_LENGTH + 1)])
        for i in range(SENT_ATTRIBUTES - 3):
            span.set_attribute(f"a{i:03d}", i)
        span.add_event("crowded", {f"e{j}": j for j in range(MAX_EVENT_ATTRIBUTES + 7)})
        for i in range(MAX_EVENTS + 21):
            span.add_event(f"event {i}")
    provider.shutdown()
    sdk_cut = TracerProvider(resource=Resource.create({"service.name": "hoarder"}),
                             span_limits=SpanLimits(max_span_attributes=SDK_MAX_ATTRIBUTES))
    mem_cut = InMemorySpanExporter()  # (a provider's shutdown stops its exporter)
    sdk_cut.add_span_processor(SimpleSpanProcessor(mem_cut))
    with sdk_cut.get_tracer("choreoscope.tests.limits").start_as_current_span("sdk cut") as span:
        for i in range(SDK_MAX_ATTRIBUTES + 3):
            span.set_attribute(f"b{i}", i)
    sdk_cut.shutdown()
    return list(mem.get_finished_spans()) + list(mem_cut.get_finished_spans())


SENT_ATTRIBUTES = 250
SDK_MAX_ATTRIBUTES = 5


def _row(con, name: str) -> dict:
    cur = con.cursor()
    try:
        cols = ("attributes, events, messaging_system, dropped_attributes_count, dropped_events_count, "
                "dropped_links_count, trace_id, span_id")
        row = cur.execute(f"SELECT {cols} FROM spans WHERE name = ?", [name]).fetchone()
        assert row is not None, f"span {name!r} not stored"
        out = dict(zip([c.strip() for c in cols.split(",")], row))
        out["links"] = [json.loads(a) for (a,) in cur.execute(
            "SELECT attributes FROM span_links WHERE trace_id = ? AND span_id = ? ORDER BY linked_span_id",
            [out["trace_id"], out["span_id"]]).fetchall()]
        return out
    finally:
        cur.close()


def assert_limited(row: dict) -> None:
    attrs = json.loads(row["attributes"])
    assert len(attrs) == MAX_ATTRIBUTES
    assert list(attrs)[:3] == ["messaging.system", "long", "long.list"]  # the first ones sent are kept
    assert attrs["long"] == "x" * MAX_VALUE_LENGTH
    assert attrs["long.list"] == ["short", "y" * MAX_VALUE_LENGTH]
    assert row["messaging_system"] == "kafka"
    events = json.loads(row["events"])
    assert len(events) == MAX_EVENTS
    assert events[0]["name"] == "crowded" and len(events[0]["attributes"]) == MAX_EVENT_ATTRIBUTES
    assert len(row["links"]) == MAX_LINKS
    assert len(row["links"][0]) == MAX_LINK_ATTRIBUTES
    # the span's beyond 128, its 2 truncated values, and the crowded event's and first link's extra
    assert row["dropped_attributes_count"] == (SENT_ATTRIBUTES - MAX_ATTRIBUTES) + 2 + 7 + 3
    assert row["dropped_events_count"] == 1 + MAX_EVENTS + 21 - MAX_EVENTS
    assert row["dropped_links_count"] == 12


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sdk_exporter_span_beyond_the_limits_is_stored_cut_and_counted(tmp_path, protocol):
    big = big_spans()
    assert [s.dropped_attributes for s in big] == [0, 3]  # the SDK's own counts
    normal = make_spans()
    with running_receiver(tmp_path) as rec:
        exporter = HttpExporter(endpoint=rec.http_url) if protocol == "http" else \
            GrpcExporter(endpoint=rec.grpc_address, insecure=True)
        assert exporter.export(normal[:3] + big + normal[3:]) == SpanExportResult.SUCCESS
        exporter.shutdown()
        assert_limited(_row(rec.con, "hoard"))
        sdk_cut = _row(rec.con, "sdk cut")
        assert len(json.loads(sdk_cut["attributes"])) == SDK_MAX_ATTRIBUTES
        assert (sdk_cut["dropped_attributes_count"], sdk_cut["dropped_events_count"]) == (3, 0)
        assert_stored_exactly(rec.con, normal)
        counts = rec.con.cursor().execute(
            "SELECT DISTINCT dropped_attributes_count, dropped_events_count, dropped_links_count FROM spans "
            "WHERE service_name <> 'hoarder'").fetchall()
        assert counts == [(0, 0, 0)]


def _nested_array(depth: int, leaf: str = "deep"):
    """An AnyValue of `depth` array levels around a string (protobuf message)."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    value = AnyValue(string_value=leaf)
    for _ in range(depth):
        outer = AnyValue()
        outer.array_value.values.add().CopyFrom(value)
        value = outer
    return value


def _request_with(values: dict) -> ExportTraceServiceRequest:
    """The SDK's encoding of one normal span, with extra attributes (AnyValues) added to it."""
    request = encode_spans([s for s in make_spans(n_traces=1) if s.name == "POST /orders"])
    span = request.resource_spans[0].scope_spans[0].spans[0]
    for key, value in values.items():
        span.attributes.add(key=key).value.CopyFrom(value)
    return request


def _array_depth(value) -> int:
    depth = 0
    while isinstance(value, list):
        depth, value = depth + 1, value[0]
    return depth


def test_attribute_nested_beyond_the_depth_limit_is_dropped_and_counted(tmp_path):
    request = _request_with({"at.limit": _nested_array(MAX_VALUE_DEPTH), "too.deep": _nested_array(MAX_VALUE_DEPTH + 8)})
    request.resource_spans[0].scope_spans[0].spans[0].dropped_attributes_count = 4  # the sender's
    with running_receiver(tmp_path) as rec:
        response = requests.post(rec.http_url, data=request.SerializeToString(), headers=PROTOBUF, timeout=10)
        assert response.status_code == 200, response.text
        row = rec.con.cursor().execute("SELECT attributes, dropped_attributes_count FROM spans").fetchall()
        assert len(row) == 1
        attrs = json.loads(row[0][0])
        assert "too.deep" not in attrs and _array_depth(attrs["at.limit"]) == MAX_VALUE_DEPTH
        assert attrs["http.route"] == "/orders"  # the span's other attributes are kept
        assert row[0][1] == 4 + 1


def test_nesting_protobuf_cannot_decode_is_a_bad_request_not_500_and_the_receiver_goes_on(tmp_path):
    """Maps nested beyond protobuf's recursion limit (100 messages) fail to decode: the request is
    refused as the client's fault, on both protocols, and the next request is stored."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    value = AnyValue(string_value="deep")
    for _ in range(60):
        outer = AnyValue()
        outer.kvlist_value.values.add(key="k").value.CopyFrom(value)
        value = outer
    body = _request_with({"very.deep": value}).SerializeToString()
    with running_receiver(tmp_path) as rec:
        response = requests.post(rec.http_url, data=body, headers=PROTOBUF, timeout=10)
        assert response.status_code == 400, response.text
        channel = grpc.insecure_channel(rec.grpc_address)
        try:
            with pytest.raises(grpc.RpcError) as err:
                export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                             request_serializer=None,  # the body's bytes as they are
                                             response_deserializer=ExportTraceServiceResponse.FromString)
                export(body, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        finally:
            channel.close()
        ok = HttpExporter(endpoint=rec.http_url)
        normal = make_spans(n_traces=1)
        assert ok.export(normal) == SpanExportResult.SUCCESS
        ok.shutdown()
        assert_stored_exactly(rec.con, normal)


def test_deep_otlp_json_body_is_stored_cut_or_refused_never_500(tmp_path):
    """OTLP JSON nests two objects per array level: the decoder's own depth limit refuses a body
    deeper than it reads (400); anything it reads is cut to the depth limit (200)."""
    def deep(depth) -> str:  # as text: the client's json.dumps would not go 5000 levels deep either
        return '{"arrayValue": {"values": [' * depth + '{"stringValue": "deep"}' + "]}}" * depth

    with running_receiver(tmp_path) as rec:
        for depth in (MAX_VALUE_DEPTH + 1, 45, 200, 5000):
            body = json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": [{
                "traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": f"{depth:016x}", "name": f"d{depth}",
                "attributes": [{"key": "deep", "value": "DEEP"}, {"key": "kept", "value": {"intValue": "1"}}],
            }]}]}]}).replace('"DEEP"', deep(depth))
            response = requests.post(rec.http_url, data=body, timeout=10,
                                     headers={"Content-Type": "application/json"})
            assert response.status_code in (200, 400), (depth, response.status_code, response.text)
            rows = rec.con.cursor().execute("SELECT attributes, dropped_attributes_count FROM spans WHERE name = ?",
                                            [f"d{depth}"]).fetchall()
            if response.status_code == 200:
                assert json.loads(rows[0][0]) == {"kept": 1} and rows[0][1] == 1
            else:
                assert rows == []
        assert response.status_code == 400  # 5000 levels: beyond any decoder


def test_dump_loaders_cut_deep_long_and_many_alike(tmp_path):
    """An OTLP JSON dump (no protobuf recursion limit on this path) with a value 300 levels deep,
    a Jaeger and a Zipkin span carrying the sender's counts as the non-OTLP tags."""
    value = "leaf"
    for _ in range(300):
        value = {"arrayValue": {"values": [{"stringValue": "x"} if isinstance(value, str) else value]}}
    otlp = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "s"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708", "name": "deep",
                "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000000001000",
                "droppedAttributesCount": 4, "droppedEventsCount": 1,
                "attributes": [{"key": "deep", "value": value}, {"key": "kept", "value": {"stringValue": "k"}}],
            }]}]}]}
    (tmp_path / "deep.json").write_text(json.dumps(otlp))
    jaeger = {"data": [{"traceID": "0a" * 16, "processes": {"p1": {"serviceName": "j"}}, "spans": [{
        "traceID": "0a" * 16, "spanID": "0b" * 8, "operationName": "jaeger span", "startTime": 1700000000000000,
        "duration": 5, "processID": "p1",
        "tags": [{"key": "otel.dropped_attributes_count", "type": "int64", "value": 3},
                 {"key": "otel.dropped_links_count", "type": "int64", "value": 2},
                 {"key": "long", "type": "string", "value": "z" * (MAX_VALUE_LENGTH + 1)}]}]}]}
    (tmp_path / "jaeger.json").write_text(json.dumps(jaeger))
    zipkin = [{"traceId": "0c" * 16, "id": "0d" * 8, "name": "zipkin span", "timestamp": 1700000000000000,
               "duration": 5, "localEndpoint": {"serviceName": "z"},
               "tags": {"otel.dropped_events_count": "6", **{f"t{i}": "v" for i in range(MAX_ATTRIBUTES + 1)}}}]
    (tmp_path / "zipkin.json").write_text(json.dumps(zipkin))
    con = store.connect(tmp_path / "s.duckdb")
    result = load_paths(con, [tmp_path / "deep.json", tmp_path / "jaeger.json", tmp_path / "zipkin.json"])
    assert result.ok, result.errors
    rows = {name: (json.loads(a), da, de, dl) for name, a, da, de, dl in con.execute(
        "SELECT name, attributes, dropped_attributes_count, dropped_events_count, dropped_links_count "
        "FROM spans").fetchall()}
    assert rows["deep"] == ({"kept": "k"}, 4 + 1, 1, 0)
    attrs, *counts = rows["jaeger span"]
    assert attrs == {"long": "z" * MAX_VALUE_LENGTH} and counts == [3 + 1, 0, 2]
    attrs, *counts = rows["zipkin span"]
    assert len(attrs) == MAX_ATTRIBUTES and "otel.dropped_events_count" not in attrs and counts == [1, 6, 0]
    con.close()


def test_normal_spans_pass_the_limits_untouched():
    """The cheap test lets a span through as it is (the same dict: nothing copied)."""
    attrs = {"db.query.text": "SELECT [a] FROM {b}", "tags": ["a", ["b", ["c"]]], "n": 1}
    batch = spanbatch.SpanBatch()
    assert batch.add(trace_id="01" * 16, span_id="02" * 8, attributes=attrs, events=[
        {"name": "e", "time_ns": 1, "attributes": {"k": {"m": [1, 2]}}}])
    row = dict(zip(store.SPAN_COLUMN_NAMES, batch.rows[0]))
    assert json.loads(row["attributes"]) == attrs
    assert (row["dropped_attributes_count"], row["dropped_events_count"], row["dropped_links_count"]) == (0, 0, 0)
    assert spanbatch.limit_attributes(attrs) == (attrs, 0)
    assert spanbatch.limit_attributes(attrs)[0] is attrs


def test_hostile_sender_counts_are_kept_in_range():
    batch = spanbatch.SpanBatch()
    assert batch.add(trace_id="01" * 16, span_id="02" * 8, dropped_attributes_count=2**70,
                     dropped_events_count=-5, dropped_links_count="7")
    row = dict(zip(store.SPAN_COLUMN_NAMES, batch.rows[0]))
    assert (row["dropped_attributes_count"], row["dropped_events_count"], row["dropped_links_count"]) == \
        (2**31 - 1, 0, 7)
    spans, _ = batch.to_arrow()  # the INTEGER columns take them
    assert spans.num_rows == 1


def test_store_of_schema_2_is_migrated_once_with_a_message(tmp_path, capfd):
    path = tmp_path / "old.duckdb"
    con = store.connect(path)
    batch = spanbatch.SpanBatch(source="t")
    batch.add(trace_id="01" * 16, span_id="02" * 8, name="before")
    con.execute("BEGIN TRANSACTION")
    store.insert_arrow(con, *batch.to_arrow())
    con.execute("COMMIT")
    for name in store.DROPPED_COUNT_COLUMNS:  # what a store written by schema 2 looks like
        con.execute(f"ALTER TABLE spans DROP COLUMN {name}")
    con.execute(f"UPDATE {store.STORE_META_TABLE} SET schema_version = 2")
    con.close()
    capfd.readouterr()
    con = store.connect(path, read_only=True)  # read-only: read as it is, nothing said
    assert "dropped_attributes_count" not in [c for (c,) in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'spans'").fetchall()]
    con.close()
    assert "upgrading" not in capfd.readouterr().err
    con = store.connect(path)
    err = capfd.readouterr().err
    assert "upgrading store" in err and "dropped_attributes_count" in err and "1 spans" in err
    assert [c for (c,) in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = "
                                      "'spans' ORDER BY ordinal_position").fetchall()] == store.SPAN_COLUMN_NAMES
    assert con.execute("SELECT name, dropped_attributes_count FROM spans").fetchall() == [("before", None)]
    assert store.scalar(con, f"SELECT schema_version FROM {store.STORE_META_TABLE}") == store.STORE_SCHEMA_VERSION
    batch = spanbatch.SpanBatch(source="t")
    batch.add(trace_id="01" * 16, span_id="03" * 8, name="after")
    con.execute("BEGIN TRANSACTION")
    assert store.insert_arrow(con, *batch.to_arrow()) == 1
    con.execute("COMMIT")
    con.close()
    con = store.connect(path)
    assert "upgrading" not in capfd.readouterr().err  # once
    assert con.execute("SELECT name, dropped_attributes_count FROM spans ORDER BY name").fetchall() == \
        [("after", 0), ("before", None)]
    con.close()


def test_dropped_counts_survive_export_parquet_and_load(tmp_path):
    from choreoscope.analysis.parquet_export import export_parquet

    con = store.connect(tmp_path / "a.duckdb")
    batch = spanbatch.SpanBatch(source="t")
    batch.add(trace_id="01" * 16, span_id="02" * 8, name="cut", attributes={f"a{i}": i for i in range(130)},
              dropped_events_count=3)
    batch.add(trace_id="01" * 16, span_id="03" * 8, name="unknown", dropped_attributes_count=None,
              dropped_events_count=None, dropped_links_count=None)
    con.execute("BEGIN TRANSACTION")
    store.insert_arrow(con, *batch.to_arrow())
    con.execute("COMMIT")
    export_parquet(con, str(tmp_path / "out"))
    query = ("SELECT name, attributes, dropped_attributes_count, dropped_events_count, dropped_links_count "
             "FROM spans ORDER BY name")
    before = con.execute(query).fetchall()
    assert before[0][2:] == (2, 3, 0) and before[1][2:] == (None, None, None)
    con.close()
    again = store.connect(tmp_path / "b.duckdb")
    result = load_paths(again, [tmp_path / "out" / "spans"])
    assert result.ok, result.errors
    assert again.execute(query).fetchall() == before
    again.close()


def test_receiver_and_dump_loaders_store_the_same_cut_rows(tmp_path):
    """The spans beyond the limits, received over OTLP/HTTP and loaded from an OTLP protobuf and an
    OTLP JSON dump of the same export, give identical rows (attributes, events, links, counts)."""
    from google.protobuf import json_format

    spans = big_spans() + make_spans(n_traces=1)
    request = encode_spans(spans)
    (tmp_path / "dump.binpb").write_bytes(request.SerializeToString())
    doc = json_format.MessageToDict(request)

    def hexify(node):
        if isinstance(node, dict):
            return {k: _b64_hex(v) if k in ("traceId", "spanId", "parentSpanId") else hexify(v)
                    for k, v in node.items()}
        return [hexify(v) for v in node] if isinstance(node, list) else node

    (tmp_path / "dump.json").write_text(json.dumps(hexify(doc)))
    query = ("SELECT trace_id, span_id, attributes, events, messaging_system, dropped_attributes_count, "
             "dropped_events_count, dropped_links_count FROM spans ORDER BY trace_id, span_id")
    link_query = "SELECT * FROM span_links ORDER BY ALL"
    results = {}
    with running_receiver(tmp_path) as rec:
        exporter = HttpExporter(endpoint=rec.http_url)
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
        cur = rec.con.cursor()
        results["receiver"] = (cur.execute(query).fetchall(), cur.execute(link_query).fetchall())
        cur.close()
    for name in ("dump.binpb", "dump.json"):
        con = store.connect(tmp_path / f"{name}.duckdb")
        assert load_paths(con, [tmp_path / name]).ok
        results[name] = (con.execute(query).fetchall(), con.execute(link_query).fetchall())
        con.close()
    assert results["receiver"] == results["dump.binpb"] == results["dump.json"]
    assert any(row[5] for row in results["receiver"][0])  # something was cut and counted


def _b64_hex(value: str) -> str:
    import base64

    return base64.b64decode(value).hex()
