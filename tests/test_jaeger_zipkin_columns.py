"""The Jaeger and Zipkin loaders' columnar path (collector/loaders/walked_arrow.py) stores exactly
the rows, links and messages of the span-by-span walk: on every real Jaeger or Zipkin dump, on
SDK-recorded spans in Jaeger JSON, and on odd records; a run of spans it cannot reproduce is
walked in its place, so a broken record is still named by file and place and the rest loads."""

from __future__ import annotations

import json

import pytest

from choreoscope.collector import store
from choreoscope.collector.loaders import jaeger, load_paths, walked_arrow, zipkin
from tests.paths import REAL_TRACES
from tests.sdk_dumps import record_spans, to_jaeger_json


def _real_dumps() -> list:
    """The real dumps in Jaeger or Zipkin format (the others are OTLP)."""
    out = []
    for path in sorted(REAL_TRACES.rglob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            continue
        if jaeger.traces_of(doc) is not None or zipkin.spans_of(doc) is not None:
            out.append(path)
    return out


class _Counted:
    """Counts the runs ColumnBatch.tables made (`taken`) and refused (`refused`)."""

    def __init__(self, monkeypatch) -> None:
        self.taken = self.refused = 0
        tables = walked_arrow.ColumnBatch.tables

        def counted(batch):
            try:
                out = tables(batch)
            except BaseException:
                self.refused += 1
                raise
            self.taken += 1
            return out

        monkeypatch.setattr(walked_arrow.ColumnBatch, "tables", counted)


def _load(tmp_path, name: str, path, **kw) -> tuple:
    con = store.connect(tmp_path / f"{name}.duckdb")
    try:
        res = load_paths(con, [path], workers=0, **kw)
        spans = con.execute("SELECT * FROM spans ORDER BY rowid").fetchall()
        links = con.execute("SELECT * FROM span_links ORDER BY rowid").fetchall()
    finally:
        con.close()
    f = res.files[0]
    return spans, links, f.errors, (f.format, f.spans_loaded, f.spans_rejected, f.duplicates_skipped)


def _both(tmp_path, monkeypatch, path, **kw) -> tuple[tuple, _Counted]:
    """(what the walk stores, how the columnar load went), after checking both store the same."""
    with monkeypatch.context() as m:
        m.setattr(walked_arrow, "COLUMNAR", False)
        walked = _load(tmp_path, "walked", path, **kw)
    counted = _Counted(monkeypatch)
    columnar = _load(tmp_path, "columnar", path, **kw)
    assert columnar[2] == walked[2]  # the messages, in order
    assert columnar[3] == walked[3]
    assert columnar[1] == walked[1]
    assert columnar[0] == walked[0]
    return walked, counted


def test_there_are_real_zipkin_dumps():
    assert len(_real_dumps()) >= 5


@pytest.mark.parametrize("path", _real_dumps(), ids=lambda p: p.name)
def test_a_real_dump_stores_the_walks_rows(tmp_path, monkeypatch, path):
    walked, counted = _both(tmp_path, monkeypatch, path)
    assert walked[3][1] > 0 and not walked[2]
    assert counted.taken + counted.refused >= 1


def test_most_real_dumps_take_the_columnar_path(tmp_path, monkeypatch):
    taken = 0
    for path in _real_dumps():
        counted = _Counted(monkeypatch)
        _load(tmp_path, path.stem, path)
        taken += counted.taken > 0 and not counted.refused
        monkeypatch.undo()
    assert taken >= len(_real_dumps()) - 1  # smartthings-mobile has "null" in a tag: walked


@pytest.mark.parametrize("indent", [None, 2], ids=["one-line", "pretty"])
def test_sdk_spans_in_jaeger_json_store_the_walks_rows_by_columns(tmp_path, monkeypatch, indent):
    path = tmp_path / "sdk.json"
    path.write_text(json.dumps(to_jaeger_json(record_spans()), indent=indent))
    walked, counted = _both(tmp_path, monkeypatch, path)
    assert walked[3][:3] == ("jaeger", len(record_spans()), 0)
    assert counted.taken == 1 and not counted.refused


def _tag(key, value, kind="string"):
    return {"key": key, "type": kind, "value": value}


def _jaeger_span(i: int, trace: str = "a" * 32, **extra) -> dict:
    span = {
        "traceID": trace, "spanID": f"{i + 1:016x}", "operationName": f"op {i}", "startTime": 1_700_000_000_000_000 + i,
        "duration": 250, "processID": "p1", "references": [], "logs": [],
        "tags": [_tag("span.kind", "server"), _tag("http.method", "GET"), _tag("http.status_code", 200, "int64")],
    }
    span.update(extra)
    return span


def _jaeger_doc(spans: list, processes: dict | None = None) -> dict:
    processes = processes or {"p1": {"serviceName": "api", "tags": [_tag("host.name", "h1")]}}
    return {"data": [{"traceID": s["traceID"] if isinstance(s, dict) and "traceID" in s else "a" * 32,
                      "spans": [s], "processes": processes} for s in spans]}


# Spans the columnar path takes as the walk does, each shape of the mapping once.
_JAEGER_VARIANTS = [
    _jaeger_span(0),
    _jaeger_span(1, trace="00000000000000001234567890abcdef"[16:].lstrip("0")),  # 64-bit, zeros dropped
    _jaeger_span(2, trace="B" * 32, spanID="C" * 16),  # upper case
    _jaeger_span(3, references=[{"refType": "CHILD_OF", "traceID": "a" * 32, "spanID": f"{1:016x}"}]),
    _jaeger_span(4, references=[{"refType": "follows_from", "traceID": "a" * 32, "spanID": f"{1:016x}"},
                                {"refType": "FOLLOWS_FROM", "traceID": "d" * 32, "spanID": "e" * 16}]),
    _jaeger_span(5, references=[{"refType": "CHILD_OF", "traceID": "a" * 32, "spanID": "0" * 16}]),
    _jaeger_span(6, references=[{"refType": "CHILD_OF", "traceID": "a" * 32, "spanID": "1234"}]),
    _jaeger_span(7, tags=[_tag("f", 1, "float64"), _tag("g", 2.5, "float64"), _tag("b", True, "bool"),
                          _tag("s", "TRUE", "bool"), _tag("i", "12", "int64"), _tag("n", 3), _tag("k", "x", "STRING"),
                          _tag("u", "ünïcödé ✓ \u0001"), _tag("http.route", "/a/{id}"), _tag("k", "again")]),
    _jaeger_span(8, tags=[_tag("error", True, "bool"), _tag("otel.status_description", "boom"),
                          _tag("otel.scope.name", "lib"), _tag("otel.scope.version", "1.2"),
                          _tag("w3c.tracestate", "k=v"), _tag("span.kind", "PRODUCER"),
                          _tag("messaging.system", "kafka"), _tag("messaging.destination.name", "orders")]),
    _jaeger_span(9, tags=[_tag("error", "a message"), _tag("otel.status_code", "ok")]),
    _jaeger_span(10, tags=[_tag("otel.dropped_attributes_count", 3, "int64"),
                           _tag("otel.dropped_events_count", "2"), _tag("db.statement", "SELECT * FROM orders")]),
    _jaeger_span(11, logs=[{"timestamp": 1_700_000_000_000_100, "fields": [_tag("event", "retry"),
                                                                          _tag("attempt", 2, "int64")]},
                           {"timestamp": 1_700_000_000_000_200, "fields": []}]),
    _jaeger_span(12, processID=None, process={"serviceName": "embedded", "tags": [_tag("v", 1, "int64")]}),
    _jaeger_span(13, processID="unknown"),
    _jaeger_span(14, startTime="1700000000000014", duration=None),
    _jaeger_span(15, tags={"http.method": "POST", "peer.service": "db"}),
    _jaeger_span(16, tags=[_tag("aws.queue_url", "https://sqs.eu-west-1.amazonaws.com/1/q"),
                           _tag("messaging.system", "aws_sqs")]),
]

# Spans the walk rejects or stores its own way: their run is walked.
_JAEGER_ODD = [
    _jaeger_span(20, trace="0" * 32),
    _jaeger_span(21, spanID="not hex"),
    {k: v for k, v in _jaeger_span(22).items() if k != "startTime"},
    _jaeger_span(23, startTime=-5),
    _jaeger_span(24, startTime=2**62),
    _jaeger_span(25, operationName=5),
    _jaeger_span(26, tags=[_tag("n", None)]),
    _jaeger_span(27, tags=[_tag("i", "abc", "int64")]),
    _jaeger_span(28, tags=[_tag("bin", "aGVsbG8=", "binary")]),
    _jaeger_span(29, tags=[_tag("list", [1, 2])]),
    _jaeger_span(30, tags=[_tag("big", 2**70, "int64")]),
    _jaeger_span(31, tags=[_tag("t", "null")]),
    _jaeger_span(32, tags=[_tag(f"k{i}", i, "int64") for i in range(200)]),
    _jaeger_span(33, tags=[_tag("long", "x" * 30_000)]),
    _jaeger_span(34, logs=[{"timestamp": 1_700_000_000_000_000 + i, "fields": []} for i in range(200)]),
    _jaeger_span(35, references=[{"refType": "FOLLOWS_FROM", "traceID": "d" * 32, "spanID": "e" * 16}] * 2),
    _jaeger_span(36, references=["not a reference", {"traceID": "a" * 32}]),
    _jaeger_span(37, process="a string"),
    _jaeger_span(38, logs=[{"fields": []}]),
    _jaeger_span(39, tags=[_tag("w3c.tracestate", 7, "int64")]),
    _jaeger_span(40, tags=[_tag(5, "a key that is a number")]),
    _jaeger_span(41, tags={"nested": {"a": [1, {"b": 2}]}}),
    _jaeger_span(42, tags=[_tag("d", float("nan"), "float64")]),
    _jaeger_span(43, tags=[{"type": "string", "value": "no key"}]),
    "not a span",
]


def test_jaeger_variants_take_the_columnar_path_with_the_walks_rows(tmp_path, monkeypatch):
    path = tmp_path / "variants.json"
    path.write_text(json.dumps(_jaeger_doc(_JAEGER_VARIANTS)))
    walked, counted = _both(tmp_path, monkeypatch, path)
    assert walked[3] == ("jaeger", len(_JAEGER_VARIANTS), 0, 0) and not walked[2]
    assert counted.taken == 1 and not counted.refused


@pytest.mark.parametrize("odd", range(len(_JAEGER_ODD)))
def test_an_odd_jaeger_span_is_walked_in_its_run_and_the_rest_go_by_columns(tmp_path, monkeypatch, odd):
    spans = [*_JAEGER_VARIANTS[:4], _JAEGER_ODD[odd], *_JAEGER_VARIANTS[4:]]
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(_jaeger_doc(spans)))
    # chunk_spans=3: runs of 3 traces (one span each), the odd one's run walked
    walked, counted = _both(tmp_path, monkeypatch, path, chunk_spans=3)
    assert counted.taken == len(walked_arrow.runs([1] * len(spans), 3)) - 1
    for message in walked[2]:
        assert message.startswith(f"{path}:"), message


def test_a_broken_jaeger_span_is_named_and_the_rest_of_the_file_loads(tmp_path, monkeypatch):
    spans = [_jaeger_span(i) for i in range(10)]
    spans[6]["spanID"] = "not hex"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(_jaeger_doc(spans)))
    walked, counted = _both(tmp_path, monkeypatch, path, chunk_spans=2)
    assert walked[3][1:3] == (9, 1)
    assert len(walked[2]) == 1 and walked[2][0].startswith(f"{path}:1: trace 6 span 0 (span 'not hex', 'op 6')")
    assert counted.taken == 4 and counted.refused == 1


def _zipkin(i: int, **extra) -> dict:
    rec = {"traceId": "f" * 32, "id": f"{i + 1:016x}", "name": f"get /{i}", "kind": "SERVER",
           "timestamp": 1_700_000_000_000_000 + i, "duration": 120,
           "localEndpoint": {"serviceName": "web", "ipv4": "10.0.0.1"}, "tags": {"http.method": "GET"}}
    rec.update(extra)
    return rec


_ZIPKIN_VARIANTS = [
    _zipkin(0),
    _zipkin(1, parentId=f"{1:016x}", kind="CLIENT", remoteEndpoint={"serviceName": "db", "ipv6": "::1", "port": 5432},
            tags={"sql.query": "SELECT * FROM orders WHERE id = ?"}),
    _zipkin(2, traceId="1234567890abcdef", id="ABCDEF"),  # 64-bit, short, upper case
    _zipkin(3, kind=None, tags={"error": "", "lc": "async"}),
    _zipkin(4, kind="PRODUCER", tags={"kafka.topic": "orders", "kafka.key": "k1"}, remoteEndpoint={"serviceName": "kafka"}),
    _zipkin(5, kind="CONSUMER", tags={"rabbit.exchange": "", "rabbit.queue": "q1", "rabbit.routing_key": "rk"}),
    _zipkin(6, annotations=[{"timestamp": 1_700_000_000_000_010, "value": "ws"},
                            {"timestamp": 1_700_000_000_000_010, "value": "ws"},
                            {"timestamp": 1_700_000_000_000_005, "value": 7}]),
    _zipkin(7, timestamp=1_700_000_000_000_007.5, duration=0.5),
    _zipkin(8, tags={"n": 3, "b": True, "f": 1.25, "u": "ünïcödé"}, kind="WEIRD"),
    # a shared span: the client half, the server half, and a kindless part of the server's service
    _zipkin(9, id="9" * 16, kind="CLIENT", localEndpoint={"serviceName": "front"}),
    _zipkin(10, id="9" * 16, kind="SERVER", shared=True, localEndpoint={"serviceName": "back"}),
    _zipkin(11, id="9" * 16, kind=None, localEndpoint={"serviceName": "back"}, tags={"extra": "x"}),
    _zipkin(12, parentId="9" * 16, kind="CLIENT", localEndpoint={"serviceName": "back"}),
    # SmartThings' Kafka hop recorded as an RPC
    _zipkin(13, id="8" * 16, kind="CLIENT", name="send events", localEndpoint={"serviceName": "a"}),
    _zipkin(14, id="8" * 16, kind="SERVER", shared=True, name="receive events",
            tags={"kafka.partition": "3"}, localEndpoint={"serviceName": "b"}),
]

_ZIPKIN_ODD = [
    _zipkin(20, timestamp=None),
    _zipkin(21, id="0" * 16),
    _zipkin(22, traceId="not hex"),
    _zipkin(23, name=5),
    _zipkin(24, tags=["a", "list"]),
    _zipkin(25, tags={"t": "null"}),
    _zipkin(26, tags={f"k{i}": "v" for i in range(200)}),
    _zipkin(27, tags={"long": "x" * 30_000}),
    _zipkin(28, tags={"nested": {"a": 1}}),
    _zipkin(29, timestamp=-3),
    _zipkin(30, timestamp=2**62),
    _zipkin(31, timestamp="soon"),
    _zipkin(32, annotations=[{"timestamp": 1_700_000_000_000_000 + i, "value": "a"} for i in range(200)]),
    _zipkin(33, localEndpoint={"serviceName": 5, "ipv4": "10.0.0.2"}),
    "not a record",
]


def test_zipkin_variants_take_the_columnar_path_with_the_walks_rows(tmp_path, monkeypatch):
    path = tmp_path / "zipkin.json"
    path.write_text(json.dumps(_ZIPKIN_VARIANTS))
    walked, counted = _both(tmp_path, monkeypatch, path)
    assert walked[3][0] == "zipkin" and walked[3][1] == len(_ZIPKIN_VARIANTS) - 1  # a part merged
    assert not walked[2]
    assert counted.taken == 1 and not counted.refused


@pytest.mark.parametrize("odd", range(len(_ZIPKIN_ODD)))
def test_an_odd_zipkin_record_is_walked_in_its_run_and_the_rest_go_by_columns(tmp_path, monkeypatch, odd):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps([*_ZIPKIN_VARIANTS[:4], _ZIPKIN_ODD[odd], *_ZIPKIN_VARIANTS[4:]]))
    walked, counted = _both(tmp_path, monkeypatch, path, chunk_spans=3)
    # runs are of the spans assembled (a record refused before is in none, a merged part is one)
    assert counted.taken >= 3 and counted.refused <= 1
    for message in walked[2]:
        assert message.startswith(f"{path}:"), message


def test_the_walk_alone_is_still_there_when_the_columnar_path_is_off(tmp_path, monkeypatch):
    path = tmp_path / "zipkin.json"
    path.write_text(json.dumps(_ZIPKIN_VARIANTS))
    monkeypatch.setattr(walked_arrow, "COLUMNAR", False)
    counted = _Counted(monkeypatch)
    spans, _, errors, _ = _load(tmp_path, "walk", path)
    assert len(spans) == len(_ZIPKIN_VARIANTS) - 1 and not errors
    assert counted.taken == counted.refused == 0


def test_runs_cut_items_into_runs_of_at_least_the_chunk():
    assert walked_arrow.runs([1, 1, 1, 1, 1], 2) == [(0, 2), (2, 4), (4, 5)]
    assert walked_arrow.runs([5, 1, 3], 4) == [(0, 1), (1, 3)]
    assert walked_arrow.runs([], 4) == []
