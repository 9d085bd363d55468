"""The parse workers see exactly what the serial loader sees: JSON lines sent to them as bytes
(CRLF, a lone CR, a BOM, bad UTF-8, no final newline, lines cut into many tasks) and OTLP
protobuf (frames in groups, a single message in groups of ResourceSpans) store the rows, links
and messages of the serial load; the insert that skips the duplicate check first still stores
a span sent twice once, and a re-load stores nothing."""

from __future__ import annotations

import gzip
import json
import struct

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from receiver_fixtures import make_spans

from choreoscope.collector import loaders, store
from choreoscope.collector.loaders import load_paths, otlp_json_arrow, otlp_proto
from choreoscope.sample_traces.generate import ids_to_hex

COLUMNS = ", ".join(c for c in store.SPAN_COLUMN_NAMES if c != "source")


@pytest.fixture(scope="module")
def spans():
    out = []
    for i, service in enumerate(("checkout", "billing", "shipping")):
        out += make_spans(service=service, n_traces=3, tag=f"-{i}")
    return out


def _json_line(spans) -> str:
    return json.dumps(ids_to_hex(json_format.MessageToDict(encode_spans(spans))), ensure_ascii=False)


def _state(con) -> tuple:
    return (con.execute(f"SELECT {COLUMNS} FROM spans ORDER BY trace_id, span_id").fetchall(),
            con.execute("SELECT * FROM span_links ORDER BY ALL").fetchall())


def _load_both(tmp_path, path, monkeypatch, **kw):
    """The file loaded serially and by two workers in tiny tasks (many tasks, several chunks).
    Plain OTLP JSON lines are decoded by columns in threads either way: the workers' walk of
    them (the columnar decode turned off) and their columnar decode in the workers (as for files
    beyond THREADED_MAX_BYTES) are loaded too, and must give the same."""
    monkeypatch.setattr(loaders, "TASK_BYTES", 300)
    monkeypatch.setattr(otlp_proto, "TASK_BYTES", 300)
    out = []
    runs = (("serial", 0, "columns"), ("parallel", 2, "columns"), ("walked", 2, "walk"), ("processes", 2, "processes"))
    for name, workers, how in runs:
        with monkeypatch.context() as m:
            if how == "walk":
                m.setattr(otlp_json_arrow, "decode_lines", lambda *a: None)
            if how == "processes":  # decoded by columns in the worker processes (large files)
                m.setattr(loaders, "THREADED_MAX_BYTES", 0)
            con = store.connect(tmp_path / f"{path.name}-{name}.duckdb")
            res = load_paths(con, [path], workers=workers, chunk_spans=5, **kw)
            out.append((res.files[0], _state(con)))
            con.close()
    (parallel, rows), *others = out[1:]
    for other, other_rows in others:
        assert (other.errors, other.spans_loaded, other.duplicates_skipped, other.spans_rejected, other_rows) == (
            parallel.errors, parallel.spans_loaded, parallel.duplicates_skipped, parallel.spans_rejected, rows)
    return out[:2]


def test_json_lines_as_bytes_give_the_serial_rows_lines_and_messages(tmp_path, spans, monkeypatch):
    head = spans[:-1]
    lines = [_json_line(head[i:i + 2]) for i in range(0, len(head), 2)]
    lines[2] = lines[2][: len(lines[2]) // 2]  # a line cut in half
    last = ids_to_hex(json_format.MessageToDict(encode_spans(spans[-1:])))
    last["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] = "bad \udcff byte"  # 0xff, below
    bad_utf8 = json.dumps(last, ensure_ascii=False)
    body = ("\r\n".join(lines[:4]) + "\r" + "\n".join(lines[4:]) + "\n" + bad_utf8).encode(
        "utf-8", "surrogateescape")
    dump = tmp_path / "mixed.jsonl"
    dump.write_bytes(b"\xef\xbb\xbf" + body)  # a BOM, CRLF, a lone CR, LF, no final newline
    (serial, rows_serial), (parallel, rows_parallel) = _load_both(tmp_path, dump, monkeypatch)
    assert parallel.errors == serial.errors
    assert [e.split(":")[1] for e in serial.errors] == ["3"]
    assert (parallel.spans_loaded, parallel.duplicates_skipped) == (serial.spans_loaded, serial.duplicates_skipped)
    assert serial.spans_loaded == len(spans) - 2  # all but the cut line's two
    assert rows_parallel == rows_serial
    assert any("\ufffd" in row[4] for row in rows_serial[0])  # the bad byte became U+FFFD


def test_lf_only_lines_read_as_bytes_give_the_serial_rows_lines_and_messages(tmp_path, spans, monkeypatch):
    """Without a CR the workers parse the lines' bytes: a bad byte, a line blank only as text
    (U+0085, U+2028) and a broken line still give what the text reader gives."""
    head = spans[:-1]
    lines = [_json_line(head[i:i + 2]) for i in range(0, len(head), 2)]
    lines[1] = lines[1][: len(lines[1]) // 2]  # a line cut in half
    last = ids_to_hex(json_format.MessageToDict(encode_spans(spans[-1:])))
    last["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] = "bad \udcff byte"  # 0xff, below
    body = "\n".join([*lines[:3], "\u0085\u2028 ", *lines[3:], json.dumps(last, ensure_ascii=False)]) + "\n"
    dump = tmp_path / "lf.jsonl"
    dump.write_bytes(body.encode("utf-8", "surrogateescape"))
    (serial, rows_serial), (parallel, rows_parallel) = _load_both(tmp_path, dump, monkeypatch)
    assert parallel.errors == serial.errors
    assert [e.split(":")[1] for e in serial.errors] == ["2"]
    assert parallel.spans_loaded == serial.spans_loaded == len(spans) - 2
    assert rows_parallel == rows_serial
    assert any("\ufffd" in row[4] for row in rows_serial[0])


def _framed(messages: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(m)) + m for m in messages)


def test_protobuf_frames_and_single_messages_in_workers_give_the_serial_rows(tmp_path, spans, monkeypatch):
    messages = [encode_spans(spans[i:i + 2]).SerializeToString() for i in range(0, len(spans), 2)]
    framed = tmp_path / "framed.binpb"
    corrupt = b"\x0a\xff\xff\xff\xff\x0f"  # a field longer than the message
    framed.write_bytes(_framed(messages[:3] + [corrupt] + messages[3:]) + b"\x00\x00")  # then cut in a prefix
    single = tmp_path / "single.binpb"
    whole = TracesData()
    for m in messages:
        whole.MergeFromString(m)
    single.write_bytes(whole.SerializeToString())
    for path, n_errors in ((framed, 2), (single, 0)):
        (serial, rows_serial), (parallel, rows_parallel) = _load_both(tmp_path, path, monkeypatch)
        assert parallel.format == serial.format == "otlp-proto"
        assert parallel.errors == serial.errors and len(serial.errors) == n_errors, serial.errors
        assert parallel.spans_loaded == serial.spans_loaded == len(spans)
        assert rows_parallel == rows_serial and rows_serial[1], "the spans carry links"
        if path == framed:
            assert ":frame 4 (byte" in serial.errors[0] and "not a valid OTLP protobuf" in serial.errors[0]
            assert "ends inside a length prefix" in serial.errors[1]


def test_a_span_twice_is_stored_once_and_a_reload_stores_nothing(tmp_path, spans):
    dump = tmp_path / "twice.jsonl"
    dump.write_text("\n".join([_json_line(spans), _json_line(spans[:3])]) + "\n")
    con = store.connect(tmp_path / "twice.duckdb")
    first = load_paths(con, [dump], workers=0, chunk_spans=len(spans) + 3)  # the repeats in one chunk
    assert (first.spans_loaded, first.duplicates_skipped, first.errors) == (len(spans), 3, [])
    rows = _state(con)
    again = load_paths(con, [dump], workers=2)
    assert (again.spans_loaded, again.duplicates_skipped, again.errors) == (0, len(spans) + 3, [])
    assert _state(con) == rows
    assert con.execute("SELECT count(*) FROM span_keys").fetchone()[0] == len(spans)
    con.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_load_deduplicated_afterwards_keeps_the_rows_of_the_checked_load(tmp_path, spans, monkeypatch, workers):
    """`dedup_after` (the analysis's store of dumps): no keys while loading, the same rows after,
    a span repeated in the file and across files counted once."""
    monkeypatch.setattr(loaders, "TASK_BYTES", 300)
    dump = tmp_path / "twice.jsonl"
    dump.write_text("\n".join([_json_line(spans), _json_line(spans[:3])]) + "\n")
    other = tmp_path / "other.jsonl"
    other.write_text(_json_line(spans[-2:]) + "\n")
    checked = store.connect(tmp_path / "checked.duckdb")
    expected = load_paths(checked, [dump, other], workers=0)
    con = store.connect(":memory:")
    res = load_paths(con, [dump, other], workers=workers, chunk_spans=5, dedup_after=True)
    assert (res.spans_loaded, res.duplicates_skipped, res.errors) == (len(spans), 5, []) == (
        expected.spans_loaded, expected.duplicates_skipped, expected.errors)
    assert _state(con) == _state(checked) and _state(con)[1], "the spans carry links"
    assert store.scalar(con, "SELECT count(*) FROM span_keys") == 0


def test_a_truncated_gz_keeps_the_lines_the_workers_were_given(tmp_path, spans, monkeypatch):
    monkeypatch.setattr(loaders, "TASK_BYTES", 300)
    lines = [_json_line(spans[i:i + 1]) + "\n" for i in range(len(spans))]
    packed = gzip.compress("".join(lines).encode())
    dump = tmp_path / "cut.jsonl.gz"
    dump.write_bytes(packed[: len(packed) * 2 // 3])
    con = store.connect(tmp_path / "cut.duckdb")
    res = load_paths(con, [dump], workers=2).files[0]
    assert res.errors and "read failed" in res.errors[-1], res.errors
    assert 0 < res.spans_loaded < len(spans)
    assert con.execute("SELECT count(*) FROM spans").fetchone()[0] == res.spans_loaded
    con.close()


def test_stored_spans_met_while_the_workers_insert_are_counted_once(tmp_path, spans, monkeypatch):
    """Line 1 is new, the lines after it were stored before: the inserts that run while the
    workers parse meet the duplicates in their transaction, which is redone with the check."""
    monkeypatch.setattr(loaders, "TASK_BYTES", 300)
    later = [_json_line(spans[i:i + 2]) for i in range(2, len(spans), 2)]
    old = tmp_path / "old.jsonl"
    old.write_text("\n".join(later) + "\n")
    new = tmp_path / "new.jsonl"
    new.write_text("\n".join([_json_line(spans[:2]), *later]) + "\n")
    con = store.connect(tmp_path / "mixed.duckdb")
    assert load_paths(con, [old], workers=0).spans_loaded == len(spans) - 2
    res = load_paths(con, [new], workers=2)
    assert (res.spans_loaded, res.duplicates_skipped, res.errors) == (2, len(spans) - 2, [])
    assert con.execute("SELECT count(*) FROM spans").fetchone()[0] == len(spans)
    serial = store.connect(tmp_path / "serial.duckdb")
    load_paths(serial, [new], workers=0)
    assert _state(con) == _state(serial)
    con.close()
    serial.close()
