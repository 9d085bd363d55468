"""Jaeger JSON and OTLP protobuf dumps of spans recorded by the real OpenTelemetry SDK load into
the same rows as the spans themselves (Jaeger's microsecond times and string-encoded arrays
aside), in every framing the formats allow, gzipped or not."""

from __future__ import annotations

import gzip
import json

import pytest

from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from tests.sdk_dumps import record_spans, to_jaeger_json, to_otlp_proto, to_otlp_proto_framed

COMPARED = ("trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "status_code",
            "status_message", "service_name", "service_version", "scope_name", "scope_version",
            "messaging_system", "messaging_destination", "messaging_operation", "messaging_message_id",
            "messaging_consumer_group", "http_method", "http_route", "http_status_code", "server_address",
            "retry_attempt", "attributes", "resource_attributes", "events")


@pytest.fixture(scope="module")
def spans():
    return record_spans()


def _rows(con, micros: bool = False) -> dict:
    cols = ", ".join(COMPARED)
    out = {}
    for row in con.execute(f"SELECT {cols} FROM spans ORDER BY trace_id, span_id").fetchall():
        rec = dict(zip(COMPARED, row))
        rec["attributes"] = json.loads(rec["attributes"])
        rec["resource_attributes"] = json.loads(rec["resource_attributes"])
        rec["events"] = json.loads(rec["events"])
        if micros:  # as Jaeger's translator does: start and duration each cut to microseconds
            rec["end_ns"] = rec["start_ns"] // 1000 + (rec["end_ns"] - rec["start_ns"]) // 1000
            rec["start_ns"] //= 1000
            for e in rec["events"]:
                e["time_ns"] //= 1000
            rec["attributes"] = {k: json.dumps(v) if isinstance(v, list) else v
                                 for k, v in rec["attributes"].items()}
        out[(rec["trace_id"], rec["span_id"])] = rec
    return out


def _links(con) -> list:
    return con.execute("SELECT trace_id, span_id, linked_trace_id, linked_span_id FROM span_links "
                       "ORDER BY ALL").fetchall()


def _expected(spans) -> dict:
    return {(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}"): s for s in spans}


def test_otlp_proto_single_framed_and_gzip_load_identically(tmp_path, spans):
    single = tmp_path / "single.binpb"
    single.write_bytes(to_otlp_proto(spans))
    framed = tmp_path / "framed.proto"
    framed.write_bytes(to_otlp_proto_framed(spans, per_message=2))
    zipped = tmp_path / "framed.proto.gz"
    zipped.write_bytes(gzip.compress(framed.read_bytes()))
    results = {}
    for f in (single, framed, zipped):
        con = store.connect(tmp_path / f"{f.name}.duckdb")
        res = load_paths(con, [f])
        assert res.ok, res.errors
        assert res.files[0].format == "otlp-proto"
        assert res.spans_loaded == len(spans)
        results[f.name] = (_rows(con), _links(con))
        con.close()
    assert results["single.binpb"] == results["framed.proto"] == results["framed.proto.gz"]
    rows, links = results["single.binpb"]
    expected = _expected(spans)
    assert set(rows) == set(expected)
    for key, s in expected.items():
        row = rows[key]
        assert row["name"] == s.name
        assert row["start_ns"] == s.start_time and row["end_ns"] == s.end_time
        assert row["service_name"] == s.resource.attributes["service.name"]
        parent = f"{s.parent.span_id:016x}" if s.parent and s.parent.is_valid else None
        assert row["parent_span_id"] == parent
    consumer = next(r for r in rows.values() if r["kind"] == "CONSUMER")
    producer = next(r for r in rows.values() if r["kind"] == "PRODUCER")
    assert links == [(consumer["trace_id"], consumer["span_id"], producer["trace_id"], producer["span_id"])]
    assert (producer["messaging_system"], producer["messaging_destination"], producer["messaging_operation"],
            producer["messaging_message_id"]) == ("kafka", "orders", "send", "m-1")
    assert consumer["messaging_consumer_group"] == "shipping"


def test_jaeger_query_api_json_round_trips_to_the_same_rows_as_otlp(tmp_path, spans):
    jaeger_file = tmp_path / "trace.json"
    jaeger_file.write_text(json.dumps(to_jaeger_json(spans), indent=2))
    proto_file = tmp_path / "trace.binpb"
    proto_file.write_bytes(to_otlp_proto(spans))

    con_j = store.connect(tmp_path / "j.duckdb")
    res = load_paths(con_j, [jaeger_file])
    assert res.ok, res.errors
    assert res.files[0].format == "jaeger"
    assert res.spans_loaded == len(spans)
    con_p = store.connect(tmp_path / "p.duckdb")
    assert load_paths(con_p, [proto_file]).ok

    from_jaeger, from_otlp = _rows(con_j), _rows(con_p, micros=True)
    for row in from_jaeger.values():
        row["start_ns"] //= 1000
        row["end_ns"] //= 1000
        for e in row["events"]:
            e["time_ns"] //= 1000
    assert from_jaeger.keys() == from_otlp.keys()
    for key in from_otlp:
        assert from_jaeger[key] == from_otlp[key], key
    assert _links(con_j) == _links(con_p)
    errored = [r for r in from_jaeger.values() if r["status_code"] == "ERROR"]
    assert [(r["name"], r["status_message"]) for r in errored] == [("POST /payments", "payment declined")]
    assert errored[0]["events"][0]["name"] == "card.declined"


def test_jaeger_single_trace_and_64bit_ids_are_accepted(tmp_path, spans):
    doc = to_jaeger_json(spans)
    trace = doc["data"][0]
    for s in trace["spans"]:  # a Jaeger client with 64-bit trace ids, leading zeros dropped
        s["traceID"] = s["traceID"][16:].lstrip("0")
        for r in s["references"]:
            r["traceID"] = r["traceID"][16:].lstrip("0")
    path = tmp_path / "one-trace.json"
    path.write_text(json.dumps(trace))
    con = store.connect(tmp_path / "s.duckdb")
    res = load_paths(con, [path])
    assert res.ok, res.errors
    assert res.spans_loaded == len(trace["spans"])
    ids = {r[0] for r in con.execute("SELECT trace_id FROM spans").fetchall()}
    assert all(len(t) == 32 and t.startswith("0" * 16) for t in ids)
    orphans = store.scalar(con, "SELECT count(*) FROM spans c WHERE parent_span_id IS NOT NULL AND NOT EXISTS "
                                "(SELECT 1 FROM spans p WHERE p.span_id = c.parent_span_id)")
    assert orphans == 0
