"""Every real dump in ../shared/real_traces loads with exactly the span counts its SOURCES.md
gives, and the loaders carry over what analysis needs: kinds, messaging destinations, links, the
server halves of shared Zipkin spans."""

from __future__ import annotations

import gzip
import json

import pytest

from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from tests.paths import REAL_TRACES as REAL

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} (the real trace dumps) is not present")

EXPECTED = {  # file -> (format, spans to store), from SOURCES.md
    "zipkin-lens/smartthings-mobile-web-install.json": ("zipkin", 957),
    "zipkin-lens/smartthings-oauth-authorization.json": ("zipkin", 175),
    "zipkin-lens/messaging-kafka.json": ("zipkin", 28),
    "zipkin-lens/messaging2.json": ("zipkin", 11),
    "zipkin-lens/messaging.json": ("zipkin", 4),
    "zipkin-lens/yelp.json": ("zipkin", 16),
    "zipkin-lens/ascend.json": ("zipkin", 8),
    "jaeger-skill-fixtures/n_plus_one_full_serial.json": ("otlp-json", 40),
    "jaeger-skill-fixtures/n_plus_one_full_concurrent.json": ("otlp-json", 40),
    "jaeger-skill-fixtures/error_timeout_masked.json": ("otlp-json", 26),
    "jaeger-ui/getTrace-response.json": ("otlp-json", 40),
    "otel-tui/test_data.json": ("otlp-json", 547),
    "holmesgpt/trace_data.input.json": ("otlp-json", 10),
}


def _load(tmp_path, rel: str):
    con = store.connect(tmp_path / "s.duckdb")
    return con, load_paths(con, [REAL / rel])


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_file_loads_with_the_documented_span_count(tmp_path, rel):
    fmt, count = EXPECTED[rel]
    con, res = _load(tmp_path, rel)
    f = res.files[0]
    assert f.errors == [] and f.spans_rejected == 0
    assert f.format == fmt
    assert f.spans_loaded == count
    assert store.scalar(con, "SELECT count(*) FROM spans") == count
    assert store.scalar(con, "SELECT count(*) FROM spans WHERE service_name = 'unknown_service'") == 0


def test_all_files_together_then_again_count_each_span_once(tmp_path):
    con = store.connect(tmp_path / "all.duckdb")
    files = [REAL / rel for rel in sorted(EXPECTED)]
    first = load_paths(con, files)
    assert first.ok, first.errors
    assert first.spans_loaded == sum(c for _, c in EXPECTED.values())
    second = load_paths(con, files)
    assert second.ok
    assert second.spans_loaded == 0
    assert second.duplicates_skipped == first.spans_loaded
    assert store.scalar(con, "SELECT count(*) FROM spans") == first.spans_loaded


def test_otel_tui_json_lines_keep_53_linked_spans_and_skip_metrics_and_logs(tmp_path):
    con, res = _load(tmp_path, "otel-tui/test_data.json")
    assert res.ok and res.spans_loaded == 547
    assert store.scalar(con, "SELECT count(DISTINCT (trace_id, span_id)) FROM span_links") == 53
    assert store.scalar(con, "SELECT count(*) FROM spans WHERE status_code = 'ERROR'") == 107
    assert store.scalar(con, "SELECT count(DISTINCT trace_id) FROM spans") == 141
    linked = con.execute("SELECT DISTINCT s.service_name FROM span_links l JOIN spans s USING (trace_id, span_id)"
                         ).fetchall()
    assert linked == [("frontend",)]


def test_zipkin_kafka_producers_and_consumers_get_messaging_columns(tmp_path):
    con, res = _load(tmp_path, "zipkin-lens/messaging-kafka.json")
    assert res.ok
    rows = con.execute("SELECT kind, name, messaging_system, messaging_destination, messaging_operation, "
                       "count(*) FROM spans WHERE kind IN ('PRODUCER', 'CONSUMER') GROUP BY ALL ORDER BY ALL"
                       ).fetchall()
    assert rows == [
        ("CONSUMER", "poll", "kafka", "messages", "receive", 7),
        ("PRODUCER", "send", "kafka", "central.messages", "send", 3),
        ("PRODUCER", "send", "kafka", "command-messages", "send", 3),
        ("PRODUCER", "send", "kafka", "messages", "send", 3),
    ]
    errors = con.execute("SELECT status_message FROM spans WHERE status_code = 'ERROR' ORDER BY ALL NULLS FIRST").fetchall()
    assert errors == [(None,), ("some error",), ("some error",)]
    assert store.scalar(con, "SELECT count(*) FROM spans WHERE peer_service = 'kafka'") == 16


def test_zipkin_rabbitmq_destinations_follow_the_documented_rule(tmp_path):
    con, res = _load(tmp_path, "zipkin-lens/messaging2.json")
    assert res.ok
    rows = con.execute("SELECT service_name, kind, messaging_system, messaging_destination, messaging_operation "
                       "FROM spans WHERE kind IN ('PRODUCER', 'CONSUMER') ORDER BY kind").fetchall()
    # The consumer names its queue; the producer has no tags, so only the system (from its remote
    # endpoint, rabbitmq) is known.
    assert rows == [("notification-service", "CONSUMER", "rabbitmq", "notification", "receive"),
                    ("transfer-service", "PRODUCER", "rabbitmq", None, "send")]
    con2 = store.connect(tmp_path / "m.duckdb")
    assert load_paths(con2, [REAL / "zipkin-lens/messaging.json"]).ok
    rows = con2.execute("SELECT kind, messaging_system, messaging_destination FROM spans "
                        "WHERE kind IN ('PRODUCER', 'CONSUMER') ORDER BY kind").fetchall()
    assert rows == [("CONSUMER", "rabbitmq", "backend"), ("PRODUCER", "rabbitmq", None)]


def test_smartthings_kafka_receive_spans_become_consumers_of_their_topic(tmp_path):
    con, res = _load(tmp_path, "zipkin-lens/smartthings-mobile-web-install.json")
    assert res.ok
    consumers = con.execute("SELECT service_name, messaging_system, messaging_destination, messaging_operation, "
                            "parent_span_id FROM spans WHERE kind = 'CONSUMER'").fetchall()
    assert len(consumers) == 5
    assert {c[:4] for c in consumers} == {("pusher", "kafka", "iot-events360", "receive")}
    producer = con.execute("SELECT span_id, service_name, messaging_destination FROM spans "
                           "WHERE kind = 'PRODUCER'").fetchall()
    assert [p[1:] for p in producer] == [("bouncer", "iot-events360")]
    assert {c[4] for c in consumers} == {producer[0][0]}  # each consumer is a child of the send
    kinds = json.loads(store.scalar(con, "SELECT attributes FROM spans WHERE kind = 'CONSUMER' LIMIT 1"))
    assert kinds["zipkin.kind"] == "SERVER" and kinds["kafka.partition"] == "276"


def test_brave_sql_query_tags_become_database_spans_with_tables_from_the_statement(tmp_path):
    """SmartThings' bookie records its JDBC statements only as Brave's `sql.query` (no system):
    they become database spans of an unnamed SQL system, their tables read from the text."""
    con, res = _load(tmp_path, "zipkin-lens/smartthings-mobile-web-install.json")
    assert res.ok
    tagged = store.scalar(con, "SELECT count(*) FROM spans WHERE json_exists(attributes, '$.\"sql.query\"')")
    rows = con.execute("SELECT DISTINCT service_name, db_system, db_operation, db_collection FROM spans "
                       "WHERE db_system IS NOT NULL ORDER BY ALL").fetchall()
    assert tagged == 120 == store.scalar(con, "SELECT count(*) FROM spans WHERE db_system = 'other_sql'")
    assert ("bookie", "other_sql", "INSERT", "config") in rows
    assert ("bookie", "other_sql", "SELECT", "installed_app") in rows
    assert {r[0] for r in rows} == {"bookie"}


def test_shared_zipkin_spans_split_into_client_and_server_halves(tmp_path):
    con, res = _load(tmp_path, "zipkin-lens/ascend.json")
    assert res.ok
    raw = json.loads((REAL / "zipkin-lens/ascend.json").read_text())
    shared_ids = {r["id"] for r in raw if r.get("shared")}
    for sid in shared_ids:
        client = con.execute("SELECT service_name, kind FROM spans WHERE span_id = ?", [sid]).fetchall()
        assert client[0][1] == "CLIENT"
        server = con.execute("SELECT span_id, service_name, kind FROM spans WHERE parent_span_id = ? "
                             "AND kind = 'SERVER'", [sid]).fetchall()
        assert len(server) == 1 and server[0][0] != sid
        server_id, server_service = server[0][0], server[0][1]
        # Children the server's service recorded under the shared id hang under the server half.
        recorded_children = [r for r in raw if r.get("parentId") == sid and
                             r["localEndpoint"]["serviceName"] == server_service and not r.get("shared")]
        stored = {r[0] for r in con.execute("SELECT span_id FROM spans WHERE parent_span_id = ?",
                                            [server_id]).fetchall()}
        assert {r["id"] for r in recorded_children} <= stored
    # Every parent a span names is stored (the file is one whole trace).
    assert store.scalar(con, "SELECT count(*) FROM spans c WHERE parent_span_id IS NOT NULL AND NOT EXISTS "
                             "(SELECT 1 FROM spans p WHERE p.span_id = c.parent_span_id)") == 0


def test_zipkin_span_parts_merge_annotations_and_tags(tmp_path):
    con, res = _load(tmp_path, "zipkin-lens/smartthings-mobile-web-install.json")
    assert res.ok
    # a0dc23f22c4fee3f: a CLIENT record (strongman), a shared SERVER record and a kindless part
    # (platformapi); the kindless part merges into the server half, not into a span of its own.
    rows = con.execute("SELECT service_name, kind, name FROM spans WHERE span_id = 'a0dc23f22c4fee3f' "
                       "OR parent_span_id = 'a0dc23f22c4fee3f' AND kind = 'SERVER' ORDER BY kind").fetchall()
    assert rows == [("strongman", "CLIENT", "post /app-execute"), ("platformapi", "SERVER", "post")]
    assert store.scalar(con, "SELECT count(*) FROM spans WHERE kind = 'INTERNAL' AND name = 'post' "
                             "AND service_name = 'platformapi'") == 0


def test_older_and_wrapped_shapes_of_the_same_dumps(tmp_path):
    """Tempo's pre-1.0 `instrumentationLibrarySpans`, Zipkin's list of traces, a pretty-printed
    OTLP document turned into one line, and gzip all load the same spans."""
    tempo = json.loads((REAL / "holmesgpt/trace_data.input.json").read_text())
    for batch in tempo["batches"]:
        batch["instrumentationLibrarySpans"] = [
            {"instrumentationLibrary": ss.get("scope", {}), "spans": ss["spans"]} for ss in batch.pop("scopeSpans")
        ]
    old = tmp_path / "tempo-old.json"
    old.write_text(json.dumps(tempo, indent=1))
    zipkin_traces = tmp_path / "zipkin-traces.json.gz"

    records = json.loads((REAL / "zipkin-lens/yelp.json").read_text())
    zipkin_traces.write_bytes(gzip.compress(json.dumps([records[:8], records[8:]]).encode()))
    one_line = tmp_path / "v3.json"
    one_line.write_text(json.dumps(json.loads((REAL / "jaeger-ui/getTrace-response.json").read_text())))
    con = store.connect(tmp_path / "s.duckdb")
    res = load_paths(con, [old, zipkin_traces, one_line])
    assert res.ok, res.errors
    assert [(f.format, f.spans_loaded) for f in res.files] == [("otlp-json", 10), ("zipkin", 16), ("otlp-json", 40)]
    scopes = store.scalar(con, "SELECT count(*) FROM spans WHERE source = ? AND scope_name IS NOT NULL", [str(old)])
    assert scopes == 10


@pytest.mark.parametrize("rel", sorted(r for r, (fmt, _) in EXPECTED.items() if fmt == "otlp-json"))
def test_otlp_json_rows_equal_the_receivers_decoding(tmp_path, rel):
    """The loader's direct OTLP JSON walk gives exactly the rows the receiver's protobuf path gives."""
    from choreoscope.collector.loaders.otlp_json import resource_spans_of
    from choreoscope.collector.otlp import add_resource_spans, traces_data_from_json
    from choreoscope.collector.spanbatch import SpanBatch

    text = (REAL / rel).read_text()
    try:
        docs = [json.loads(text)]
    except json.JSONDecodeError:
        docs = [json.loads(line) for line in text.splitlines() if line.strip()]
    batch = SpanBatch(source=str(REAL / rel))
    for doc in docs:
        rs = resource_spans_of(doc)
        if rs:
            add_resource_spans(batch, traces_data_from_json({"resourceSpans": rs}).resource_spans)
    expected_spans, expected_links = batch.to_arrow()

    con, res = _load(tmp_path, rel)
    assert res.ok
    cols = ", ".join(expected_spans.column_names)
    got = con.execute(f"SELECT {cols} FROM spans ORDER BY trace_id, span_id").fetchall()
    want = sorted(tuple(r.values()) for r in expected_spans.to_pylist())
    assert got == want
    got_links = con.execute("SELECT * FROM span_links ORDER BY ALL").fetchall()
    assert got_links == sorted(tuple(r.values()) for r in expected_links.to_pylist())


@pytest.mark.parametrize("rel", ["jaeger-skill-fixtures/error_timeout_masked.json", "zipkin-lens/messaging-kafka.json"])
def test_a_document_on_one_line_or_many_with_any_line_ends_and_a_bom_gives_the_same_rows(tmp_path, rel):
    """A JSON document's first line is read as bytes past the text reader (the whole document when
    it is on one line) unless it holds a CR: every way of writing the same document stores the
    same rows, and a broken one is named at the line the text reader counts."""
    doc = json.loads((REAL / rel).read_text())
    pretty = json.dumps(doc, indent=2)
    shapes = {
        "pretty.json": pretty.encode(),
        "one-line-bom.json": b"\xef\xbb\xbf" + json.dumps(doc).encode(),
        "crlf.json": pretty.replace("\n", "\r\n").encode(),
        "lone-cr.json.gz": gzip.compress(pretty.replace("\n", "\r").encode()),
    }
    rows = {}
    for name, data in shapes.items():
        (tmp_path / name).write_bytes(data)
        con = store.connect(tmp_path / f"{name}.duckdb")
        res = load_paths(con, [tmp_path / name])
        assert res.ok and res.files[0].spans_loaded, (name, res.errors)
        rows[name] = con.execute("SELECT * EXCLUDE (source) FROM spans ORDER BY trace_id, span_id").fetchall()
        con.close()
    assert all(r == rows["pretty.json"] for r in rows.values())
    lines = pretty.split("\n")
    lines[3] = lines[3][:-2]  # a broken line; the first ended by LF, the others by a lone CR
    with pytest.raises(json.JSONDecodeError) as where:
        json.loads("\n".join(lines))
    broken = tmp_path / "broken.json"
    broken.write_bytes((lines[0] + "\n" + "\r".join(lines[1:])).encode())
    con = store.connect(tmp_path / "broken.duckdb")
    res = load_paths(con, [broken])
    assert res.files[0].errors[0].startswith(f"{broken}:{where.value.lineno}: not valid JSON"), res.files[0].errors
    assert store.scalar(con, "SELECT count(*) FROM spans") == 0
