"""The fast loading paths give the receiver's rows: JSON lines parsed by worker processes (and
orjson), the same spans exported live by the real OTel SDK to a real receiver, and the serial
loader all store identical rows and links; a broken line in a parallel load is still named by
file and line, in file order, and costs only itself."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from receiver_fixtures import make_spans, running_receiver, span_count

from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from choreoscope.sample_traces.generate import ids_to_hex

COLUMNS = [c for c in store.SPAN_COLUMN_NAMES if c != "source"]


def _line(spans) -> str:
    """One Collector file-exporter line: the SDK's own encoding in OTLP JSON (hex ids)."""
    return json.dumps(ids_to_hex(json_format.MessageToDict(encode_spans(spans)))) + "\n"


@pytest.fixture(scope="module")
def spans():
    out = []
    for i, service in enumerate(("checkout", "billing", "shipping", "stock")):
        out += make_spans(service=service, n_traces=3, tag=f"-{i}")
    return out


def _rows(con) -> tuple[list, list]:
    rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM spans ORDER BY trace_id, span_id").fetchall()
    links = con.execute("SELECT * FROM span_links ORDER BY ALL").fetchall()
    return rows, links


def _load(tmp_path, name, path, **kw):
    con = store.connect(tmp_path / f"{name}.duckdb")
    res = load_paths(con, [path], **kw)
    return con, res


def test_parallel_serial_and_receiver_store_identical_rows(tmp_path, spans):
    with running_receiver(tmp_path) as rec:
        exporter = OTLPSpanExporter(endpoint=rec.http_url)
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
        assert span_count(rec.con) == len(spans)
        received = _rows(rec.con)
    dump = tmp_path / "dump.jsonl"
    dump.write_text("".join(_line(spans[i:i + 3]) for i in range(0, len(spans), 3)))
    # chunk_spans=4: several stored chunks per task; workers=2: the process pool even for a small file
    par, res_par = _load(tmp_path, "parallel", dump, workers=2, chunk_spans=4)
    ser, res_ser = _load(tmp_path, "serial", dump, workers=0)
    assert res_par.ok and res_ser.ok, (res_par.errors, res_ser.errors)
    assert res_par.files[0].format == res_ser.files[0].format == "otlp-json"
    assert res_par.spans_loaded == res_ser.spans_loaded == len(spans)
    assert received[1], "the spans carry links"
    assert _rows(par) == _rows(ser) == received
    sources = {s for (s,) in par.execute("SELECT DISTINCT source FROM spans").fetchall()}
    assert sources == {str(dump)}
    par.close()
    ser.close()


def test_parallel_load_names_broken_lines_in_file_order_and_loads_the_rest(tmp_path, spans):
    lines = [_line(spans[i:i + 2]) for i in range(0, len(spans), 2)]
    n_lines = len(lines)
    lines[3] = lines[3][: len(lines[3]) // 2] + "\n"  # cut in half, as a crashed writer leaves it
    lines[n_lines - 2] = '{"resourceSpans": [{"scopeSpans": "not a list"}]}\n'
    lines.insert(5, '{"neither": "traces nor anything"}\n')
    # NaN is JSON that orjson refuses and json reads: the line still loads
    nan_span = json.loads(lines[6])
    nan_span["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append(
        {"key": "ratio", "value": {"doubleValue": float("nan")}})
    lines[6] = json.dumps(nan_span) + "\n"
    dump = tmp_path / "broken.jsonl"
    dump.write_text("".join(lines))
    par, res_par = _load(tmp_path, "parallel", dump, workers=2, chunk_spans=3)
    ser, res_ser = _load(tmp_path, "serial", dump, workers=0, chunk_spans=3)
    errors = res_par.files[0].errors
    assert errors == res_ser.files[0].errors
    assert [e.split(":")[1] for e in errors] == ["4", "6", str(n_lines)]  # file order, 1-based lines
    assert errors[0].startswith(f"{dump}:4: not valid JSON")
    assert "not a trace dump" in errors[1]
    assert res_par.spans_loaded == res_ser.spans_loaded == len(spans) - 4 == span_count(par)
    assert _rows(par) == _rows(ser)
    assert par.execute("SELECT count(*) FROM spans WHERE attributes LIKE '%NaN%'").fetchone()[0] == 1
    par.close()
    ser.close()
