"""Bad input is reported where it is (file:line, record, frame) and costs only itself."""

from __future__ import annotations

import base64
import gzip
import json

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from tests.paths import REAL_TRACES as REAL
from tests.sdk_dumps import record_spans, to_otlp_proto, to_otlp_proto_framed

OTEL_TUI = REAL / "otel-tui/test_data.json"
YELP = REAL / "zipkin-lens/yelp.json"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} (the real trace dumps) is not present")


@pytest.fixture
def con(tmp_path):
    c = store.connect(tmp_path / "store.duckdb")
    yield c
    c.close()


def _count(con) -> int:
    return store.scalar(con, "SELECT count(*) FROM spans")


def _spans_in_line(line: str) -> int:
    obj = json.loads(line)
    return sum(len(ss.get("spans", [])) for rs in obj.get("resourceSpans", []) for ss in rs.get("scopeSpans", []))


@needs_real
@pytest.mark.parametrize("compress", [False, True])
def test_corrupt_line_in_the_middle_is_named_and_the_rest_loads(tmp_path, con, compress):
    lines = OTEL_TUI.read_text().splitlines(True)
    bad = next(i for i, ln in enumerate(lines) if i > 10 and _spans_in_line(ln))
    lost = _spans_in_line(lines[bad])
    lines[bad] = lines[bad][: len(lines[bad]) // 2] + "\n"  # cut in half, as a crashed writer leaves it
    path = tmp_path / ("dump.jsonl.gz" if compress else "dump.jsonl")
    data = "".join(lines).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    res = load_paths(con, [path], chunk_spans=50)  # several chunks, so chunks after the bad line count too
    f = res.files[0]
    assert len(f.errors) == 1
    assert f.errors[0].startswith(f"{path}:{bad + 1}: not valid JSON")
    assert f.spans_loaded == 547 - lost == _count(con)
    assert not res.ok


def test_empty_file_says_it_is_empty(tmp_path, con):
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    blank = tmp_path / "blank.json"
    blank.write_text("\n  \n")
    zipped = tmp_path / "empty.json.gz"
    zipped.write_bytes(gzip.compress(b""))
    res = load_paths(con, [empty, blank, zipped])
    assert [f.errors for f in res.files] == [
        [f"{empty}: the file is empty; nothing to load"],
        [f"{blank}: the file is empty (whitespace only); nothing to load"],
        [f"{zipped}: the file is empty after decompression; nothing to load"],
    ]


def test_unknown_format_names_the_formats_tried(tmp_path, con):
    text = tmp_path / "notes.txt"
    text.write_text("hello, these are not spans\n")
    other_json = tmp_path / "config.json"
    other_json.write_text('{"service": "x", "replicas": 3}')
    res = load_paths(con, [text, other_json])
    for f in res.files:
        assert len(f.errors) == 1
        for name in ("OTLP JSON", "OTLP protobuf", "Jaeger JSON", "Zipkin v2 JSON"):
            assert name in f.errors[0]
    assert res.files[0].errors[0].startswith(f"{text}: unknown format")
    assert "keys ['replicas', 'service']" in res.files[1].errors[0]


def test_missing_file_is_reported(tmp_path, con):
    res = load_paths(con, [tmp_path / "nope.json"])
    assert res.files[0].errors == [f"{tmp_path / 'nope.json'}: cannot open (No such file or directory)"]


def test_truncated_protobuf_single_message(tmp_path, con):
    data = to_otlp_proto(record_spans())
    path = tmp_path / "cut.binpb"
    path.write_bytes(data[: len(data) - 7])
    res = load_paths(con, [path])
    assert len(res.files[0].errors) == 1
    assert "not a valid OTLP protobuf message" in res.files[0].errors[0]
    assert "truncated" in res.files[0].errors[0]
    assert _count(con) == 0


def test_truncated_protobuf_framed_keeps_the_frames_before(tmp_path, con):
    spans = record_spans()
    data = to_otlp_proto_framed(spans, per_message=2)  # 3 frames of 2 spans
    path = tmp_path / "cut.proto.gz"
    path.write_bytes(gzip.compress(data[:-5]))
    res = load_paths(con, [path])
    f = res.files[0]
    assert f.format == "otlp-proto"
    assert len(f.errors) == 1 and f.errors[0].startswith(f"{path}:frame 3 (byte ")
    assert "truncated" in f.errors[0]
    assert f.spans_loaded == 4 == _count(con)


@needs_real
def test_invalid_zipkin_ids_name_the_record_and_the_rest_loads(tmp_path, con):
    records = json.loads(YELP.read_text())
    leaf_ids = {r["id"] for r in records} - {r.get("parentId") for r in records}
    victim = next(i for i, r in enumerate(records) if r["id"] in leaf_ids and not r.get("shared")
                  and sum(x["id"] == r["id"] for x in records) == 1)
    records[victim]["id"] = "not-hex!"
    path = tmp_path / "yelp-bad.json"
    path.write_text(json.dumps(records))
    res = load_paths(con, [path])
    f = res.files[0]
    assert f.spans_rejected == 1
    assert len(f.errors) == 1 and f.errors[0].startswith(f"{path}:record {victim + 1}: span 'not-hex!'")
    assert f.spans_loaded == 15 == _count(con)


def _otlp_json_lines(spans) -> list[dict]:
    """The spans as the Collector file exporter writes them: one ResourceSpans per line, hex ids."""
    doc = json_format.MessageToDict(ExportTraceServiceRequest.FromString(to_otlp_proto(spans)))
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in s:
                        s[key] = base64.b64decode(s[key]).hex()
    return [{"resourceSpans": [rs]} for rs in doc["resourceSpans"]]


def test_invalid_otlp_json_span_ids_cost_only_those_spans(tmp_path, con):
    spans = record_spans()
    lines = _otlp_json_lines(spans)
    lines[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "xyz"  # not an id
    victim = lines[-1]["resourceSpans"][0]["scopeSpans"][0]["spans"][-1]
    victim["startTimeUnixNano"] = "yesterday"  # not a number: the decoder rejects this span
    path = tmp_path / "otlp.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    res = load_paths(con, [path])
    f = res.files[0]
    assert f.spans_rejected == 2
    assert len(f.errors) == 2
    assert f.errors[0].startswith(f"{path}:1: resourceSpans[0]: span ")
    assert f.errors[0].endswith("span id 'xyz' is neither 16 hex digits nor base64")
    assert f.errors[1].startswith(f"{path}:{len(lines)}: resourceSpans[0].scopeSpans[0].spans[")
    assert f"span {victim['spanId']} ({victim['name']!r}) is not valid OTLP JSON" in f.errors[1]
    assert f.spans_loaded == len(spans) - 2 == _count(con)


@needs_real
def test_loading_the_same_file_twice_counts_each_span_once(tmp_path, con):
    first = load_paths(con, [OTEL_TUI])
    second = load_paths(con, [OTEL_TUI])
    assert (first.spans_loaded, first.duplicates_skipped) == (547, 0)
    assert (second.spans_loaded, second.duplicates_skipped) == (0, 547)
    assert second.ok
    assert _count(con) == 547
    assert store.scalar(con, "SELECT count(*) FROM span_links") == 53


@needs_real
def test_a_bad_file_after_a_good_one_leaves_the_good_spans(tmp_path, con):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"traceId": "abc", "id": ')
    res = load_paths(con, [YELP, broken])
    assert res.files[0].ok and res.files[0].spans_loaded == 16
    assert not res.files[1].ok
    assert res.files[1].errors[0].startswith(f"{broken}:1: not valid JSON")
    assert _count(con) == 16
    assert store.scalar(con, "SELECT count(*) FROM spans WHERE source = ?", [str(YELP)]) == 16


@needs_real
def test_forced_format_that_does_not_match_is_an_error(tmp_path, con):
    res = load_paths(con, [YELP], fmt="jaeger")
    assert res.files[0].errors == [f"{YELP}: this is zipkin, not jaeger as requested; skipped. Use --format auto"]
    assert _count(con) == 0
