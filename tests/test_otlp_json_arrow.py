"""The columnar decode of OTLP JSON lines (collector/loaders/otlp_json_arrow.py) against the walk it
stands in for: the same span and link rows on every OTLP JSON-lines capture of real
instrumentations, the independent sets and a bench dump; lines of every odd kind either decoded
to the walk's rows or handed to the walk (and then loaded, messages and all, as before)."""

from __future__ import annotations

import copy
import gzip
import importlib.util
import io
import json
from pathlib import Path

import pyarrow as pa
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from receiver_fixtures import make_spans

from choreoscope.collector import store
from choreoscope.collector.export_decode import from_ipc
from choreoscope.collector.loaders import _tasks, load_paths, otlp_json_arrow, parse_lines_task
from choreoscope.sample_traces.generate import ids_to_hex

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gen_dump", ROOT / "bench" / "gen_dump.py")
gen_dump = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_dump)
CORPUS = sorted(p for p in (ROOT / "sample_traces").rglob("*.jsonl*") if p.suffix in (".jsonl", ".gz"))
COLUMNS = ", ".join(c for c in store.SPAN_COLUMN_NAMES if c != "source")


def _walked(block: bytes, path: str, monkeypatch) -> tuple[pa.Table, pa.Table, list]:
    with monkeypatch.context() as m:
        m.setattr(otlp_json_arrow, "decode_lines", lambda *a: None)
        chunks, errors, _, _ = parse_lines_task(path, "auto", 20_000, 1, block)
    spans = pa.concat_tables([from_ipc(s) for s, _ in chunks]) if chunks else store.SPAN_ARROW_SCHEMA.empty_table()
    links = pa.concat_tables([from_ipc(k) for _, k in chunks]) if chunks else store.LINK_ARROW_SCHEMA.empty_table()
    return spans, links, errors


def _assert_same(got: tuple[pa.Table, pa.Table], walked: tuple) -> None:
    spans, links, errors = walked
    assert not errors
    for name in spans.column_names:
        assert got[0].column(name).to_pylist() == spans.column(name).to_pylist(), name
    assert got[0].equals(spans)
    assert got[1].equals(links)


def _text(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def test_the_corpus_is_here():
    names = {p.parent.name for p in CORPUS}
    assert {"celery_redis", "node_amqplib_pg", "rabbitmq_pika", "sns_sqs_moto", "claims_rebalance"} <= names


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_block_of_the_corpus_decodes_to_the_walks_rows(path, monkeypatch):
    """The captures of real instrumentations (Celery, amqplib and pg, pika, boto3 SNS/SQS), the
    independent sets and the demo dumps: plain OTLP JSON, every block of it decoded by columns."""
    blocks = list(_tasks(io.BytesIO(_text(path)), 1))
    for _, _, block in blocks:
        got = otlp_json_arrow.decode_lines(block, str(path))
        assert got is not None
        _assert_same(got, _walked(block, str(path), monkeypatch))


def test_a_bench_dump_decodes_to_the_walks_rows(tmp_path, monkeypatch):
    """Random W3C ids, consumers in new traces with links, message-id-only hops, fan-outs, mixed
    conventions (bench/gen_dump.py), in 2 MB blocks as the parse workers get them."""
    dump = tmp_path / "bench.jsonl"
    gen_dump.generate(str(dump), 6_000)
    decoded = 0
    for _, _, block in _tasks(io.BytesIO(dump.read_bytes()), 1):
        got = otlp_json_arrow.decode_lines(block, str(dump))
        assert got is not None
        _assert_same(got, _walked(block, str(dump), monkeypatch))
        decoded += got[0].num_rows
    assert decoded >= 6_000


# --- odd lines: decoded exactly, or walked ---------------------------------------------------

@pytest.fixture(scope="module")
def line() -> dict:
    """An OTLP JSON line of SDK spans: parents, kinds, status, events, links, trace states, typed
    attributes (strings, ints, doubles, bools, arrays) on spans, events, links and the resource."""
    return ids_to_hex(json_format.MessageToDict(encode_spans(make_spans(service="checkout", n_traces=3))))


def _spans(obj: dict) -> list[dict]:
    return [s for rs in obj["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


def _attr(span: dict, key: str, value: dict) -> None:
    span.setdefault("attributes", []).append({"key": key, "value": value})


_KINDS = ["SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT",
          "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER"]


def _kind_numbers(obj):  # the SDK's JSON names enums; numbers are OTLP JSON too (7: out of range)
    for i, s in enumerate(_spans(obj)):
        s["kind"] = _KINDS.index(s["kind"]) if i else 7
        s.setdefault("status", {})["code"] = 2


def _status_names(obj):
    for s in _spans(obj):
        s.setdefault("status", {})["code"] = "STATUS_CODE_ERROR"


def _numbers(obj):  # integers as JSON numbers (OTLP JSON writes int64 as text; readers accept both)
    for s in _spans(obj):
        s["startTimeUnixNano"] = int(s["startTimeUnixNano"])
        s["endTimeUnixNano"] = int(s["endTimeUnixNano"])
        for kv in s.get("attributes", []):
            if "intValue" in kv["value"]:
                kv["value"]["intValue"] = int(kv["value"]["intValue"])


def _double_as_integer(obj):
    for s in _spans(obj):
        _attr(s, "ratio.whole", {"doubleValue": 3})


def _arrays(obj):
    s = _spans(obj)[0]
    _attr(s, "mixed", {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "2"}, {"boolValue": True},
                                                  {"doubleValue": 0.5}]}})
    _attr(s, "empty.array", {"arrayValue": {}})


def _sparse(obj):  # fields left out: proto3 defaults
    spans = _spans(obj)
    spans[0].pop("status", None)
    spans[1].pop("attributes", None)
    spans[2].pop("events", None)
    spans[2].pop("kind", None)
    obj["resourceSpans"][0]["scopeSpans"][0]["scope"].pop("version", None)


def _no_resource(obj):
    obj["resourceSpans"][0].pop("resource", None)


def _repeated_key(obj):
    s = _spans(obj)[0]
    _attr(s, "dup", {"stringValue": "first"})
    _attr(s, "other", {"intValue": "1"})
    _attr(s, "dup", {"intValue": "2"})


def _escapes(obj):
    s = _spans(obj)[0]
    s["name"] = 'quote " backslash \\ tab \t newline \n bell \x07 é ✓ 🚀'
    _attr(s, "text", {"stringValue": "ctl \x01\x1f del \x7f \u2028 end"})


def _statements(obj):
    for i, s in enumerate(_spans(obj)):
        _attr(s, "db.system", {"stringValue": "postgresql"})
        _attr(s, "db.statement", {"stringValue": f"SELECT * FROM orders WHERE id = {i % 2}"})
    _attr(_spans(obj)[0], "db.namespace", {"stringValue": "shop"})


def _destinations(obj):
    spans = _spans(obj)
    _attr(spans[0], "messaging.system", {"stringValue": "aws_sqs"})
    _attr(spans[0], "messaging.url", {"stringValue": "https://sqs.eu-west-1.amazonaws.com/1/orders"})
    _attr(spans[1], "messaging.destination.name", {"stringValue": "arn:aws:sns:eu-west-1:1:events"})
    _attr(spans[2], "messaging.destination.temporary", {"boolValue": True})


def _operation_case(obj):
    _attr(_spans(obj)[1], "messaging.operation", {"stringValue": "RECEIVE"})


def _dropped_counts(obj):
    s = _spans(obj)[0]
    s["droppedAttributesCount"] = 3
    s["droppedEventsCount"] = 4000000000
    s["droppedLinksCount"] = 1


def _empty_span_list(obj):
    obj["resourceSpans"].append({"resource": {"attributes": []}, "scopeSpans": [{"scope": {}, "spans": []}]})


DECODED = [_kind_numbers, _status_names, _numbers, _double_as_integer, _arrays, _sparse, _no_resource, _repeated_key, _escapes,
           _statements, _destinations, _operation_case, _dropped_counts, _empty_span_list]


def _set(field, value):
    def mutate(obj):
        _spans(obj)[1][field] = value
    mutate.__name__ = f"_{field}_{value!r}"[:40]
    return mutate


def _value(value):
    def mutate(obj):
        _attr(_spans(obj)[0], "odd", value)
    mutate.__name__ = f"_value_{json.dumps(value)}"[:40]
    return mutate


def _old_names(obj):
    rs = obj["resourceSpans"][0]
    rs["instrumentationLibrarySpans"] = [
        {("instrumentationLibrary" if k == "scope" else k): v for k, v in ss.items()} for ss in rs.pop("scopeSpans")]


def _envelope(obj):
    obj["result"] = {"resourceSpans": obj.pop("resourceSpans")}


def _numeric_name(obj):
    _spans(obj)[0]["name"] = 7


WALKED = [
    _set("traceId", "AB" * 16), _set("spanId", "q83vEjRWeJA="), _set("traceId", "00" * 16), _set("spanId", ""),
    _set("parentSpanId", "abc"), _set("kind", "SPAN_KIND_BOGUS"), _set("kind", True),
    _set("startTimeUnixNano", "-5"), _set("endTimeUnixNano", str(2**63)), _set("startTimeUnixNano", "1.5"),
    _set("droppedEventsCount", -1), _set("traceState", 5),
    _value({"kvlistValue": {"values": [{"key": "a", "value": {"stringValue": "b"}}]}}),
    _value({"bytesValue": "AAEC"}), _value({}), _value({"intValue": "1.5"}), _value({"stringValue": 5}),
    _value({"arrayValue": {"values": [{"arrayValue": {"values": []}}]}}), _value({"doubleValue": "NaN"}),
    _value({"stringValue": "a", "intValue": "1"}), _value({"boolValue": "yes"}),
    _old_names, _envelope, _numeric_name,
]


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    dump = tmp_path / f"{name.strip('_')}.jsonl"
    dump.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return dump


def _loaded(path: Path, monkeypatch, columnar: bool) -> tuple:
    with monkeypatch.context() as m:
        if not columnar:
            m.setattr(otlp_json_arrow, "decode_lines", lambda *a: None)
        con = store.connect(path.with_suffix(f".{columnar}.duckdb"))
        res = load_paths(con, [path], workers=0).files[0]
        state = (con.execute(f"SELECT {COLUMNS} FROM spans ORDER BY trace_id, span_id").fetchall(),
                 con.execute("SELECT * FROM span_links ORDER BY ALL").fetchall())
        con.close()
    return res.errors, res.spans_loaded, res.spans_rejected, res.format, state


def _check_file(tmp_path, monkeypatch, name: str, text: str | bytes, *, columnar: bool) -> None:
    """Lines 2.. of the file are one block (line 1 is the loading process's own): decoded by
    columns or not as expected, and the file loads the same either way."""
    dump = _write(tmp_path, name, text)
    block = dump.read_bytes().split(b"\n", 1)[1]
    got = otlp_json_arrow.decode_lines(block, str(dump))
    assert (got is not None) == columnar
    if got is not None:
        _assert_same(got, _walked(block, str(dump), monkeypatch))
    assert _loaded(dump, monkeypatch, True) == _loaded(dump, monkeypatch, False)


@pytest.mark.parametrize("mutate", DECODED, ids=lambda f: f.__name__.strip("_"))
def test_lines_the_columns_take_give_the_walks_rows(tmp_path, monkeypatch, line, mutate):
    odd = copy.deepcopy(line)
    mutate(odd)
    odd_line = json.dumps(odd, separators=(",", ":"), ensure_ascii=False)
    lines = [json.dumps(line, separators=(",", ":")), odd_line, odd_line]  # (a field's type is one per block)
    _check_file(tmp_path, monkeypatch, mutate.__name__, "\n".join(lines) + "\n", columnar=True)


@pytest.mark.parametrize("mutate", WALKED, ids=lambda f: f.__name__.strip("_"))
def test_lines_the_columns_do_not_take_are_walked_as_before(tmp_path, monkeypatch, line, mutate):
    odd = copy.deepcopy(line)
    mutate(odd)
    lines = [json.dumps(line)] * 2 + [json.dumps(odd)]
    _check_file(tmp_path, monkeypatch, mutate.__name__, "\n".join(lines) + "\n", columnar=False)


def _texts(line: dict) -> dict[str, str | bytes]:
    plain = json.dumps(line, separators=(",", ":"))
    with_null = copy.deepcopy(line)
    _spans(with_null)[0]["traceState"] = None
    return {
        "null": plain + "\n" + json.dumps(with_null) + "\n",
        "blank_line": plain + "\n" + plain + "\n\n" + plain + "\n",
        "spaces_line": plain + "\n" + plain + "\n  \t\n" + plain + "\n",
        "last_line_spaces": plain + "\n" + plain + "\n   ",
        "cr": plain + "\r\n" + plain + "\r\n",
        "bad_utf8": (plain + "\n" + plain.replace("POST", "P\udcffST", 1) + "\n").encode("utf-8", "surrogateescape"),
        "surrogate_escape": plain + "\n" + plain.replace("POST", "P\\ud800ST", 1) + "\n",
        "two_objects_one_line": plain + "\n" + plain + " " + plain + "\n",
        "not_json": plain + "\n" + plain[: len(plain) // 2] + "\n",
        "key_twice": plain + "\n" + plain.replace('"name":', '"name":"x","name":', 1) + "\n",
        "type_change": plain + "\n" + plain + "\n" + plain.replace('"intValue":"201"', '"intValue":201', 1) + "\n",
        "metrics_line": plain + "\n" + plain + "\n" + '{"resourceMetrics":[]}' + "\n",
        "empty_object_line": plain + "\n" + plain + "\n{}\n",
        "array_line": plain + "\n" + "[1, 2]\n",
    }


@pytest.mark.parametrize("name", ["null", "blank_line", "spaces_line", "last_line_spaces", "cr", "bad_utf8",
                                  "surrogate_escape", "two_objects_one_line", "not_json", "key_twice",
                                  "type_change", "metrics_line", "empty_object_line", "array_line"])
def test_files_the_columns_do_not_take_are_walked_as_before(tmp_path, monkeypatch, line, name):
    _check_file(tmp_path, monkeypatch, name, _texts(line)[name], columnar=False)


def test_null_inside_a_string_only_costs_a_walk_and_no_final_newline_is_taken(tmp_path, monkeypatch, line):
    plain = json.dumps(line, separators=(",", ":"))
    named = plain.replace('"name":"POST', '"name":"null POST', 1)
    _check_file(tmp_path, monkeypatch, "null_in_text", plain + "\n" + named + "\n" + plain, columnar=True)
