"""Parquet in and out: `export parquet` -> `load` gives back the same rows, and the OpenTelemetry
Collector ClickHouse exporter's `otel_traces` table, exported by a real ClickHouse engine (chdb,
in-process), loads into the analysis the same spans as OTLP JSON give."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from choreoscope.analysis.analyze_cmd import analyze
from choreoscope.analysis.parquet_export import ExportError, export_parquet
from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from choreoscope.sample_traces.generate import DUMPS_DIR, generate_spans, write_otlp_jsonl
from tests.sdk_dumps import record_spans, to_otlp_proto

REPO = Path(__file__).resolve().parents[1]


def _rounded(report):
    """The report with floats to 12 significant digits: DuckDB's parallel aggregates (correlations,
    slopes) differ in the last bits from one run to the next, whatever the input."""
    if isinstance(report, dict):
        return {k: _rounded(v) for k, v in report.items()}
    if isinstance(report, list):
        return [_rounded(v) for v in report]
    return float(f"{report:.12g}") if isinstance(report, float) else report


def _table(con, name: str) -> list[tuple]:
    return con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall()


@pytest.fixture(scope="module")
def source_store(tmp_path_factory):
    """Every sample dump (2025-01-15) and the SDK's spans (recorded today): two days at least."""
    root = tmp_path_factory.mktemp("parquet_src")
    sdk = root / "sdk.binpb"
    sdk.write_bytes(to_otlp_proto(record_spans()))
    db = root / "src.duckdb"
    con = store.connect(db)
    result = load_paths(con, [*sorted(DUMPS_DIR.glob("*.jsonl")), sdk])
    assert result.ok, result.errors
    con.close()
    return db


def test_export_then_load_gives_back_the_same_rows(tmp_path, source_store):
    out = tmp_path / "pq"
    p = subprocess.run([sys.executable, "-m", "choreoscope.cli", "export", "parquet", str(source_store),
                        "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    days = sorted(d.name for d in (out / "spans").iterdir())
    assert len(days) >= 2 and "day=2025-01-15" in days
    assert sorted(d.name for d in (out / "span_links").iterdir()) <= days
    loaded = store.connect(tmp_path / "back.duckdb")
    result = load_paths(loaded, [out])
    assert result.ok, result.errors
    assert {f.format for f in result.files} == {"parquet (spans)", "parquet (span_links)"}
    src = store.connect(source_store, read_only=True)
    try:
        for name in ("spans", "span_links"):
            assert _table(loaded, name) == _table(src, name), name
        assert store.scalar(src, "SELECT count(*) FROM span_links") > 0
    finally:
        src.close()
        loaded.close()


def test_export_replaces_an_earlier_export_and_refuses_foreign_files(tmp_path, source_store):
    con = store.connect(source_store, read_only=True)
    try:
        first = export_parquet(con, str(tmp_path))
        again = export_parquet(con, str(tmp_path))
        assert first == again and first["spans"] > 0
        assert len(list((tmp_path / "spans").rglob("*.parquet"))) == first["days"]
        (tmp_path / "spans" / "notes.txt").write_text("mine")
        with pytest.raises(ExportError, match="notes.txt"):
            export_parquet(con, str(tmp_path))
    finally:
        con.close()


def test_analyze_reads_the_export_directory_like_the_dumps(tmp_path, source_store):
    dumps = [str(p) for p in sorted(DUMPS_DIR.glob("ecommerce*.jsonl"))]
    con = store.connect(tmp_path / "s.duckdb")
    assert load_paths(con, dumps).ok
    export_parquet(con, str(tmp_path / "pq"))
    con.close()
    assert _rounded(analyze([str(tmp_path / "pq")], "")) == _rounded(analyze(dumps, ""))


def test_bad_parquet_input_is_named(tmp_path):
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), other)
    text = tmp_path / "spans.json"
    text.write_text("[]")
    con = store.connect(tmp_path / "s.duckdb")
    try:
        res = load_paths(con, [other])
        assert "neither choreoscope's `spans`/`span_links` export nor the ClickHouse exporter's otel_traces" \
            in res.errors[0]
        res = load_paths(con, [text], fmt="parquet")
        assert "not parquet" in res.errors[0]
        res = load_paths(con, [other], fmt="zipkin")
        assert "this is parquet, not zipkin" in res.errors[0]
        truncated = tmp_path / "cut.parquet"
        truncated.write_bytes(other.read_bytes()[:20])
        assert "not a readable Parquet file" in load_paths(con, [truncated]).errors[0]
        text_times = tmp_path / "text_times.parquet"
        pq.write_table(pa.table({"Timestamp": ["yesterday"], "TraceId": ["a" * 32], "SpanId": ["b" * 16]}),
                       text_times)
        res = load_paths(con, [text_times])
        assert res.files[0].format == "parquet (otel_traces)"
        assert "row 0: cannot read the Parquet file from here on (a time column of type string" in res.errors[0]
    finally:
        con.close()


# --- The ClickHouse exporter's otel_traces ------------------------------------------------------

def _go_string(value) -> str:
    """An attribute value as the exporter writes it into Map(String, String): pcommon's AsString."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), separators=(",", ":"))
    return str(value)


def _go_map(attrs) -> dict[str, str]:
    return {k: _go_string(v) for k, v in (attrs or {}).items()}


def _seconds(ns: int) -> str:
    return f"{ns // 10**9}.{ns % 10**9:09d}"


_KINDS = {0: "SPAN_KIND_UNSPECIFIED", 1: "SPAN_KIND_INTERNAL", 2: "SPAN_KIND_SERVER", 3: "SPAN_KIND_CLIENT",
          4: "SPAN_KIND_PRODUCER", 5: "SPAN_KIND_CONSUMER"}
_STATUS = {0: "STATUS_CODE_UNSET", 1: "STATUS_CODE_OK", 2: "STATUS_CODE_ERROR"}


def otel_traces_row(span) -> dict:
    """One SDK span as the exporter inserts it (exporter_traces.go: pushTraceData)."""
    ctx = span.get_span_context()
    res = span.resource.attributes
    parent = span.parent
    return {
        "Timestamp": _seconds(span.start_time),
        "TraceId": f"{ctx.trace_id:032x}", "SpanId": f"{ctx.span_id:016x}",
        "ParentSpanId": f"{parent.span_id:016x}" if parent is not None and parent.is_valid else "",
        "TraceState": ctx.trace_state.to_header() if ctx.trace_state else "",
        "SpanName": span.name,
        "SpanKind": _KINDS[span.kind.value + 1],  # the SDK's SpanKind starts at INTERNAL = 0
        "ServiceName": str(res.get("service.name", "")),
        "ResourceAttributes": _go_map(res),
        "ScopeName": span.instrumentation_scope.name or "",
        "ScopeVersion": span.instrumentation_scope.version or "",
        "SpanAttributes": _go_map(span.attributes),
        "Duration": span.end_time - span.start_time,
        "StatusCode": _STATUS[span.status.status_code.value],
        "StatusMessage": span.status.description or "",
        "Events.Timestamp": [_seconds(e.timestamp) for e in span.events],
        "Events.Name": [e.name for e in span.events],
        "Events.Attributes": [_go_map(e.attributes) for e in span.events],
        "Links.TraceId": [f"{lk.context.trace_id:032x}" for lk in span.links],
        "Links.SpanId": [f"{lk.context.span_id:016x}" for lk in span.links],
        "Links.TraceState": [lk.context.trace_state.to_header() if lk.context.trace_state else ""
                             for lk in span.links],
        "Links.Attributes": [_go_map(lk.attributes) for lk in span.links],
    }


# The exporter's traces table (exporter/clickhouseexporter, internal/sql_templates/traces_table.sql),
# with its engine, partitioning and ordering; only the data-skipping indexes on the maps are left out.
OTEL_TRACES_DDL = """
CREATE TABLE otel.otel_traces (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)), SpanId String CODEC(ZSTD(1)), ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)), SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)), ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)), StatusMessage String CODEC(ZSTD(1)),
    Events Nested (Timestamp DateTime64(9), Name LowCardinality(String),
                   Attributes Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    Links Nested (TraceId String, SpanId String, TraceState String,
                  Attributes Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = MergeTree()
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""


@pytest.fixture(scope="module")
def clickhouse_export(tmp_path_factory):
    """The ecommerce scenario's and the SDK test spans, inserted into chdb's otel_traces as the
    exporter does, exported with `SELECT * … INTO OUTFILE … FORMAT Parquet`; and the same spans
    as OTLP JSON lines."""
    chdb_session = pytest.importorskip("chdb.session")
    root = tmp_path_factory.mktemp("otel_traces")
    spans = generate_spans("ecommerce") + record_spans()
    sess = chdb_session.Session()
    try:
        sess.query("CREATE DATABASE otel")
        sess.query(OTEL_TRACES_DDL)
        rows = "\n".join(json.dumps(otel_traces_row(s)) for s in spans)
        sess.query("INSERT INTO otel.otel_traces FORMAT JSONEachRow " + rows)
        out = root / "otel_traces.parquet"
        sess.query(f"SELECT * FROM otel.otel_traces INTO OUTFILE '{out}' FORMAT Parquet")
        assert int(str(sess.query("SELECT count() FROM otel.otel_traces", "CSV")).strip()) == len(spans)
    finally:
        sess.close()
    return out, write_otlp_jsonl(spans, root / "same.otlp.jsonl"), len(spans)


def test_otel_traces_parquet_from_clickhouse_analyses_like_otlp(clickhouse_export):
    parquet_file, otlp_file, _ = clickhouse_export
    report = analyze([str(parquet_file)], "")
    assert report["workflows"] and report["findings"]
    assert _rounded(report) == _rounded(analyze([str(otlp_file)], ""))


_SAME_AS_OTLP = ("trace_id", "span_id", "parent_span_id", "trace_state", "name", "kind", "start_ns", "end_ns",
                 "status_code", "status_message", "service_name", "service_version", "service_namespace",
                 "service_instance_id", "scope_name", "scope_version", "messaging_system",
                 "messaging_destination", "messaging_operation", "messaging_message_id",
                 "messaging_consumer_group", "db_system", "db_collection", "db_operation", "rpc_system",
                 "rpc_service", "rpc_method", "http_method", "http_route", "http_status_code", "server_address",
                 "peer_service", "retry_attempt")


def _as_text(value):
    """What the exporter's Map(String, String) makes of a JSON attribute value."""
    return value if isinstance(value, str) else _go_string(value)


def test_otel_traces_rows_equal_otlp_rows_but_for_stringified_attributes(tmp_path, clickhouse_export):
    parquet_file, otlp_file, count = clickhouse_export
    stores = {}
    for label, path in (("parquet", parquet_file), ("otlp", otlp_file)):
        con = store.connect(tmp_path / f"{label}.duckdb")
        result = load_paths(con, [path])
        assert result.ok, result.errors
        assert result.spans_loaded == count
        stores[label] = con
    cols = ", ".join(_SAME_AS_OTLP)
    pq_con, otlp_con = stores["parquet"], stores["otlp"]
    assert _table_cols(pq_con, cols) == _table_cols(otlp_con, cols)
    assert _table(pq_con, "span_links") == _table(otlp_con, "span_links")
    sql = "SELECT trace_id, span_id, attributes, resource_attributes, events FROM spans ORDER BY 1, 2"
    for (*key, attrs, res, events), (*key2, attrs2, res2, events2) in zip(
            pq_con.execute(sql).fetchall(), otlp_con.execute(sql).fetchall(), strict=True):
        assert key == key2
        assert json.loads(attrs) == {k: _as_text(v) for k, v in json.loads(attrs2).items()}
        assert json.loads(res) == {k: _as_text(v) for k, v in json.loads(res2).items()}
        assert json.loads(events) == [{**e, "attributes": {k: _as_text(v) for k, v in e["attributes"].items()}}
                                      for e in json.loads(events2)]
    assert pq_con.execute("SELECT count(*) FROM spans WHERE json_extract(attributes, '$.\"card.valid\"') "
                          "= '\"true\"'").fetchone()[0] == 1  # a boolean became text
    for con in stores.values():
        con.close()


def _table_cols(con, cols: str) -> list[tuple]:
    return con.execute(f"SELECT {cols} FROM spans ORDER BY trace_id, span_id").fetchall()


def test_otel_traces_variants_newer_enum_names_old_scope_attributes_and_struct_nested(tmp_path):
    """Newer exporters write `Server`/`Error` (pdata's String()); older ones put the scope in the
    span attributes; with flatten_nested = 0 the Nested columns are lists of structs."""
    events = pa.array([[{"Timestamp": 1_700_000_000_500_000_000, "Name": "retry",
                         "Attributes": [("n", "2")]}], []],
                      type=pa.list_(pa.struct([("Timestamp", pa.timestamp("ns", tz="UTC")), ("Name", pa.string()),
                                               ("Attributes", pa.map_(pa.string(), pa.string()))])))
    links = pa.array([[], [{"TraceId": "1" * 32, "SpanId": "2" * 16, "TraceState": "", "Attributes": []}]],
                     type=pa.list_(pa.struct([("TraceId", pa.string()), ("SpanId", pa.string()),
                                              ("TraceState", pa.string()),
                                              ("Attributes", pa.map_(pa.string(), pa.string()))])))
    table = pa.table({
        "Timestamp": pa.array([1_700_000_000_000_000_000, 1_700_000_001_000_000_000], pa.timestamp("ns", tz="UTC")),
        "TraceId": ["a" * 32, "b" * 32], "SpanId": ["c" * 16, "d" * 16], "ParentSpanId": ["", ""],
        "TraceState": ["", ""], "SpanName": ["queue send", "queue process"], "SpanKind": ["Producer", "Consumer"],
        "ServiceName": ["orders", "billing"],
        "ResourceAttributes": pa.array([[], [("service.name", "billing")]], pa.map_(pa.string(), pa.string())),
        "SpanAttributes": pa.array([[("otel.scope.name", "amqp"), ("otel.scope.version", "1.0"),
                                     ("messaging.system", "rabbitmq"), ("messaging.destination.name", "amq.gen-x"),
                                     ("messaging.destination.temporary", "true")],
                                    [("messaging.system", "rabbitmq"), ("http.status_code", "503")]],
                                   pa.map_(pa.string(), pa.string())),
        "Duration": pa.array([1000, 2000], pa.uint64()),
        "StatusCode": ["Unset", "Error"], "StatusMessage": ["", "boom"],
        "Events": events, "Links": links,
    })
    path = tmp_path / "old.parquet.gz"  # gzipped, through the command line
    with gzip.open(path, "wb") as out:
        pq.write_table(table, out)
    p = subprocess.run([sys.executable, "-m", "choreoscope.cli", "load", str(path), "--format", "parquet",
                        "--db", str(tmp_path / "s.duckdb")], cwd=REPO, capture_output=True, text=True,
                       timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    assert f"{path}: parquet (otel_traces), 2 spans loaded" in p.stdout
    con = store.connect(tmp_path / "s.duckdb")
    rows = con.execute("SELECT span_id, kind, status_code, status_message, service_name, scope_name, scope_version, "
                       "messaging_destination, http_status_code, end_ns - start_ns, attributes, events "
                       "FROM spans ORDER BY span_id").fetchall()
    assert rows[0][:10] == ("c" * 16, "PRODUCER", "UNSET", None, "orders", "amqp", "1.0", "(temporary)", None, 1000)
    assert json.loads(rows[0][10])["messaging.destination.temporary"] is True
    assert "otel.scope.name" not in json.loads(rows[0][10])
    assert json.loads(rows[0][11]) == [{"name": "retry", "time_ns": 1_700_000_000_500_000_000,
                                        "attributes": {"n": "2"}}]
    assert rows[1][:10] == ("d" * 16, "CONSUMER", "ERROR", "boom", "billing", None, None, None, 503, 2000)
    assert con.execute("SELECT linked_trace_id, linked_span_id FROM span_links").fetchall() == [("1" * 32, "2" * 16)]
    con.close()
