"""The CLI and its outputs on odd inputs a user will eventually feed it: service, operation and
event names with line breaks, pipes, quotes, backticks, HTML and thousands of characters; thousands
of workflow types. Each test writes a small OTLP JSON dump, runs the real command over it, and
checks the output still parses as what it claims to be."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from choreoscope.analysis.report import validate_report
from choreoscope.cli import main
from choreoscope.collector import store

T0 = 1736931600000000000
ODD_NAMES = ['we"ird', "pi|pe", "new\nline", "`tick`", "<b>html</b>", "#x;y", "100%", "a" * 3000]


def _str(v: str) -> dict:
    return {"stringValue": v}


def _attr(key: str, value: str) -> dict:
    return {"key": key, "value": _str(value)}


def _span(trace: int, span: int, name: str, kind: int, start: int, parent: int | None = None,
          attrs: tuple = (), link: tuple[int, int] | None = None) -> dict:
    out = {"traceId": f"{trace:032x}", "spanId": f"{span:016x}", "name": name, "kind": kind,
           "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 1_000_000),
           "attributes": list(attrs), "status": {}}
    if parent is not None:
        out["parentSpanId"] = f"{parent:016x}"
    if link is not None:
        out["links"] = [{"traceId": f"{link[0]:032x}", "spanId": f"{link[1]:016x}"}]
    return out


def _resource(service: str, spans: list[dict]) -> dict:
    return {"resource": {"attributes": [_attr("service.name", service)]},
            "scopeSpans": [{"scope": {"name": "odd"}, "spans": spans}]}


def _messaging(dest: str, op: str) -> tuple:
    return (_attr("messaging.system", "kafka"), _attr("messaging.destination.name", dest),
            _attr("messaging.operation.type", op))


def odd_names_dump(path: Path, names: list[str] = ODD_NAMES) -> Path:
    """Per name: service `name` handles `name op`, sends event `name`; service `name-c` consumes it
    (linked, new trace) and reads table `name`."""
    resources = []
    for i, n in enumerate(names):
        producer, consumer = 100 + i, 500 + i
        resources.append(_resource(n, [
            _span(producer, 1, f"{n} op", 2, T0),
            _span(producer, 2, f"send {n}", 4, T0 + 1000, parent=1, attrs=_messaging(n, "send"))]))
        resources.append(_resource(f"{n}-c", [
            _span(consumer, 3, f"process {n}", 5, T0 + 5_000_000, attrs=_messaging(n, "process"),
                  link=(producer, 2)),
            _span(consumer, 4, n, 3, T0 + 5_000_100, parent=3,
                  attrs=(_attr("db.system.name", "postgresql"), _attr("db.collection.name", n),
                         _attr("db.operation.name", "SELECT")))]))
    path.write_text(json.dumps({"resourceSpans": resources}))
    return path


@pytest.fixture(scope="module")
def odd_dump(tmp_path_factory) -> Path:
    return odd_names_dump(tmp_path_factory.mktemp("odd") / "odd.otlp.json")


def _run(args: list[str], out: Path) -> str:
    assert main(args + ["--out", str(out)]) == 0
    return out.read_text(encoding="utf-8")


def test_json_report_of_odd_names_validates(odd_dump, tmp_path):
    report = json.loads(_run(["analyze", str(odd_dump), "--format", "json"], tmp_path / "r.json"))
    validate_report(report)
    assert {wf["entry"]["service"] for wf in report["workflows"]} == set(ODD_NAMES)


def test_markdown_keeps_odd_names_on_one_line_and_in_their_table_cell(odd_dump, tmp_path):
    text = _run(["analyze", str(odd_dump), "--format", "md"], tmp_path / "r.md")
    lines = text.splitlines()
    headings = [line for line in lines if line.startswith("### ")]
    assert len(headings) == len(ODD_NAMES)  # a line break in a name does not split its heading
    assert not any(line.startswith("line") for line in lines)
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| from")]
    for row in rows:  # 7 columns: 8 unescaped pipes, whatever the names hold
        assert len(re.findall(r"(?<!\\)\|", row)) == 8, row
    tick_row = next(r for r in rows if "tick" in r)
    assert "event `` `tick` ``" in tick_row  # a longer fence keeps the backticks inside the code span


MERMAID_NODE = re.compile(r'^  n\d+(\["[^"`<>\n]*"\]|\[\["[^"`<>\n]*"\]\])$')
MERMAID_EDGE = re.compile(r'^  n\d+ (-->|-\.->)\|"[^"`<>|\n]*"\| n\d+$')


def test_mermaid_labels_are_escaped_so_every_diagram_parses(odd_dump, tmp_path):
    text = _run(["analyze", str(odd_dump), "--format", "mermaid"], tmp_path / "r.mmd")
    diagrams = [d for d in text.split("\n\n") if d.strip()]
    assert len(diagrams) == len(ODD_NAMES)
    for diagram in diagrams:
        comment, header, *body = diagram.strip("\n").split("\n")
        assert comment.startswith("%% ") and header == "flowchart LR", diagram[:200]
        for line in body:
            plain = line.replace("<br/>", " ")  # the one tag we put between service and operation
            assert MERMAID_NODE.match(plain) or MERMAID_EDGE.match(plain), line[:200]
    assert "#lt;b#gt;html#lt;/b#gt;" in text and "#96;tick#96;" in text
    assert "#35;x;y" in text  # "#" escaped first: "#x;" is not read as an entity code


def test_dot_quotes_odd_names(odd_dump, tmp_path):
    text = _run(["analyze", str(odd_dump), "--format", "dot"], tmp_path / "r.dot")
    assert 'label="we\\"ird' in text
    assert text.count("digraph ") == len(ODD_NAMES)


def test_export_asyncapi_of_a_very_long_service_name_round_trips(odd_dump, tmp_path, capsys):
    """A 3000-character service name made `export asyncapi` fail (file name too long) halfway,
    leaving a partial catalog; its own catalog must re-import with no drift."""
    catalog = tmp_path / "catalog"
    assert main(["export", "asyncapi", str(odd_dump), "--out", str(catalog)]) == 0
    files = sorted(catalog.glob("*.yaml"))
    assert len(files) == 2 * len(ODD_NAMES)
    assert max(len(f.name) for f in files) <= 110
    capsys.readouterr()
    assert main(["check", str(odd_dump), "--intended", str(catalog),
                 "--fail-on", "undeclared_edge", "missing_edge"]) == 0


def test_long_names_sharing_a_prefix_get_distinct_documents(tmp_path):
    dump = odd_names_dump(tmp_path / "long.otlp.json", ["b" * 300 + "1", "b" * 300 + "2"])
    catalog = tmp_path / "catalog"
    assert main(["export", "asyncapi", str(dump), "--out", str(catalog)]) == 0
    assert len(list(catalog.glob("*.yaml"))) == 4


def test_thousands_of_workflow_types_are_all_written_with_their_pattern(tmp_path, capsys):
    """One row per workflow type was inserted with executemany (seconds per thousand types)."""
    n = 1500
    words = [f"{a}{b}{c}" for a in "abcdefghijklmnop" for b in "abcdefghijklmnop" for c in "abcdefgh"][:n]
    dump = tmp_path / "types.otlp.json"
    dump.write_text(json.dumps({"resourceSpans": [_resource("svc", [
        _span(10_000 + i, i + 1, f"op {w}", 2, T0 + i) for i, w in enumerate(words)])]}))
    db = tmp_path / "types.duckdb"
    assert main(["load", str(dump), "--db", str(db), "--no-progress"]) == 0
    report = json.loads(_run(["analyze", str(db), "--format", "json"], tmp_path / "r.json"))
    assert len(report["workflows"]) == n
    assert {wf["pattern"] for wf in report["workflows"]} == {"orchestration"}
    con = store.connect(db, read_only=True)
    try:
        assert store.scalar(con, "SELECT count(*) FROM workflows LEFT JOIN workflow_patterns USING (workflow_id) WHERE pattern IS NULL") == 0
        assert store.scalar(con, "SELECT count(DISTINCT name) FROM workflows") == n
    finally:
        con.close()


def _call(trace: int, caller_start: int, callee_start: int) -> tuple[dict, dict, dict]:
    """p's server span, its client span to q, and q's server span (10 ms, 8 ms, 6 ms long)."""
    return (_span(trace, 1, "GET /p", 2, caller_start) | {"endTimeUnixNano": str(caller_start + 10_000_000)},
            _span(trace, 2, "GET /q", 3, caller_start + 1_000_000, parent=1)
            | {"endTimeUnixNano": str(caller_start + 9_000_000)},
            _span(trace, 3, "GET /q", 2, callee_start, parent=2) | {"endTimeUnixNano": str(callee_start + 6_000_000)})


def _skew_report(tmp_path: Path, p_spans: list[dict], q_spans: list[dict]) -> dict:
    dump = tmp_path / "skew.otlp.json"
    dump.write_text(json.dumps({"resourceSpans": [_resource("p", p_spans), _resource("q", q_spans)]}))
    return json.loads(_run(["analyze", str(dump), "--format", "json"], tmp_path / "r.json"))


def test_a_span_at_epoch_zero_is_not_read_as_a_decades_long_clock_offset(tmp_path, capsys):
    """q's only call has q's span at t=0 (a broken timestamp); q also has a span in 2255. The
    offset (-55 years) made the correction overflow BIGINT and the whole analysis fail."""
    p_server, p_client, q_server = _call(1, T0, 0)
    late = _span(2, 4, "GET /late", 2, 9_000_000_000_000_000_000)
    report = _skew_report(tmp_path, [p_server, p_client], [q_server, late])
    assert report["clock_offsets_ms"] == {"p": 0.0, "q": 0.0}
    assert report["summary"]["spans"] == 4


def test_corrected_times_saturate_at_the_bigint_range(tmp_path, capsys):
    """q's clock is 4 ms behind (its spans sit 4 ms early in p's calls); a q span at the very top of
    the BIGINT range moved 4 ms later overflowed."""
    p_spans, q_spans = [], []
    for k in range(5):
        p_server, p_client, q_server = _call(10 + k, T0 + k * 10**9, T0 + k * 10**9 + 2_000_000 - 4_000_000)
        p_spans += [p_server, p_client]
        q_spans.append(q_server)
    top = 2**63 - 1
    q_spans.append(_span(20, 5, "GET /top", 2, top - 1_000_000) | {"endTimeUnixNano": str(top)})
    report = _skew_report(tmp_path, p_spans, q_spans)
    assert report["clock_offsets_ms"]["q"] == pytest.approx(-4.0)
    assert report["summary"]["spans"] == 16


def test_an_empty_intended_directory_is_an_error_not_a_wall_of_undeclared_edges(odd_dump, tmp_path, capsys):
    """An empty (or mistyped) catalog declared nothing, so `check` failed on every observed edge."""
    empty = tmp_path / "catalog"
    empty.mkdir()
    (empty / "notes.json").write_text('{"not": "intended"}')
    assert main(["check", str(odd_dump), "--intended", str(empty), "--fail-on", "undeclared_edge"]) == 2
    err = capsys.readouterr().err
    assert "no AsyncAPI or choreoscope intended-workflow documents found" in err and "notes.json" in err


def test_a_binary_intended_file_is_reported_not_a_traceback(odd_dump, tmp_path, capsys):
    binary = tmp_path / "catalog.yaml"
    binary.write_bytes(b"\x00\xff\xfe\x00")
    assert main(["check", str(odd_dump), "--intended", str(binary)]) == 2
    assert "catalog.yaml: not UTF-8 text" in capsys.readouterr().err


def test_junit_xml_stays_well_formed_with_control_characters_in_names(tmp_path, capsys):
    """A service named with a control character made `--junit` write XML no CI could parse."""
    import xml.etree.ElementTree as ET

    dump = odd_names_dump(tmp_path / "ctrl.otlp.json", ["ctl\x01\x1bx"])
    doc = json.loads(dump.read_text())
    doc["resourceSpans"] = doc["resourceSpans"][:1]  # no consumer: a dead_event names the service
    dump.write_text(json.dumps(doc))
    junit = tmp_path / "check.xml"
    assert main(["check", str(dump), "--fail-on", "info", "--junit", str(junit)]) == 1
    cases = list(ET.parse(junit).iter("testcase"))
    assert [c.get("name").split(":")[0] for c in cases] == ["dead_event"]
    assert "ctl\ufffd\ufffdx" in cases[0].get("name")


def test_a_span_ending_before_it_starts_gives_no_negative_call_latency(tmp_path, capsys):
    p_server, p_client, q_server = _call(1, T0, T0 + 8_000_000)
    q_server["endTimeUnixNano"] = str(T0 + 2_000_000)  # ends 6 ms before it starts
    report = _skew_report(tmp_path, [p_server, p_client], [q_server])
    steps = {s["id"]: s for s in report["workflows"][0]["steps"]}
    call = next(e for e in report["workflows"][0]["edges"]
                if steps[e["source"]]["service"] == "p" and steps[e["target"]]["service"] == "q")
    assert call["latency_ms"] == {"p50": None, "p95": None}
    assert main(["analyze", str(tmp_path / "skew.otlp.json"), "--format", "md", "--out", str(tmp_path / "r.md")]) == 0
    assert "| call | 1 | – | – |" in (tmp_path / "r.md").read_text()


def _reject_constant(name: str):
    raise AssertionError(f"{name} in the JSON report: not JSON")


def test_json_report_has_no_nan_when_a_correlation_is_over_constant_times(tmp_path, capsys):
    """svc-a always ends 15 ms into the instance and svc-b's retry always starts at 20 ms: the
    follow correlation is NaN, and the implicit_ordering evidence carried it into the report as
    `NaN`, which jq and browsers refuse to parse."""
    ms = 1_000_000
    api, a_spans, b_spans = [], [], []
    for k in range(8):
        t, trace = T0 + k * 10**9, 100 + k
        api += [_span(trace, 1, "POST /x", 2, t),
                _span(trace, 2, "send ev", 4, t + ms, parent=1, attrs=_messaging("ev", "send"))]
        a_spans.append(_span(trace, 3, "process ev", 5, t + 5 * ms, parent=2, attrs=_messaging("ev", "process"))
                       | {"endTimeUnixNano": str(t + 15 * ms)})
        b_spans += [_span(trace, 4, "process ev", 5, t + 6 * ms, parent=2, attrs=_messaging("ev", "process"))
                    | {"status": {"code": 2}},
                    _span(trace, 5, "process ev", 5, t + 20 * ms, parent=2,
                          attrs=_messaging("ev", "process") + (_attr("messaging.retry.attempt", "1"),))]
    dump = tmp_path / "constant.otlp.json"
    dump.write_text(json.dumps({"resourceSpans": [_resource("api", api), _resource("svc-a", a_spans),
                                                  _resource("svc-b", b_spans)]}))
    text = _run(["analyze", str(dump), "--format", "json"], tmp_path / "r.json")
    report = json.loads(text, parse_constant=_reject_constant)
    ordering = next(f for f in report["findings"] if f["kind"] == "implicit_ordering")
    assert ordering["services"] == ["svc-a", "svc-b"]
    assert ordering["evidence"]["follow_corr"] is None


def test_check_summary_keeps_each_failing_finding_on_one_line(tmp_path, capsys):
    dump = odd_names_dump(tmp_path / "nl.otlp.json", ["new\nline"])
    doc = json.loads(dump.read_text())
    doc["resourceSpans"] = doc["resourceSpans"][:1]  # no consumer: a dead_event names the service
    dump.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["check", str(dump), "--fail-on", "info"]) == 1
    out = capsys.readouterr().out
    failing = out.split("## Failing", 1)[1].strip().splitlines()
    assert failing[0].startswith("- **info**") and "dead_event: new line" in failing[0]
    assert not any(line.startswith("line") for line in out.splitlines())


def test_dashboard_on_a_trace_dump_says_to_load_it_first(odd_dump, capsys):
    """It failed inside DuckDB with "Cannot launch in-memory database in read-only mode!" (exit 1)."""
    assert main(["dashboard", str(odd_dump), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "is not a DuckDB store" in err and f"choreoscope load {odd_dump}" in err


def test_schema_drift_over_many_versions_stays_one_readable_sentence(tmp_path, capsys):
    """300 versions with shifting attribute sets wrote a 150,000-character summary."""
    resources = []
    for v in range(12):
        spans = []
        for k in range(3):
            trace, t = 1 + v * 3 + k, T0 + (v * 3 + k) * 10**8
            attrs = _messaging("ev", "send") + tuple(_attr(f"field.v{v}.n{i}", "x") for i in range(20))
            spans += [_span(trace, 1, "POST /x", 2, t), _span(trace, 2, "send ev", 4, t + 1000, parent=1, attrs=attrs)]
        resources.append({"resource": {"attributes": [_attr("service.name", "prod"),
                                                      _attr("service.version", f"1.{v}.0")]},
                          "scopeSpans": [{"scope": {"name": "odd"}, "spans": spans}]})
    dump = tmp_path / "drift.otlp.json"
    dump.write_text(json.dumps({"resourceSpans": resources}))
    report = json.loads(_run(["analyze", str(dump), "--format", "json"], tmp_path / "r.json"))
    drift = next(f for f in report["findings"] if f["kind"] == "schema_drift")
    assert len(drift["summary"]) < 1000
    assert "8 earlier change(s)" in drift["summary"] and "and 14 more" in drift["summary"]
    assert len(drift["evidence"]["changes"]) == 11  # the evidence keeps every change


# --- store boundary: timestamps, non-scalar attribute values, destination templates -----------

def _load_one(tmp_path: Path, resources: list[dict]):
    from choreoscope.collector.loaders import load_paths

    path = tmp_path / "d.otlp.json"
    path.write_text(json.dumps({"resourceSpans": resources}))
    con = store.connect(tmp_path / "s.duckdb")
    return con, load_paths(con, [str(path)])


def test_a_timestamp_beyond_int64_is_rejected_and_the_rest_of_the_file_stored(tmp_path):
    bad = _span(1, 1, "bad", 2, T0)
    bad["endTimeUnixNano"] = "18446744073709551615"  # OTLP's fixed64 allows it; BIGINT does not
    con, result = _load_one(tmp_path, [_resource("svc", [bad, _span(1, 2, "good", 2, T0)])])
    assert result.spans_loaded == 1 and result.spans_rejected == 1
    assert any("outside the range" in e for e in result.errors)
    assert con.execute("SELECT name FROM spans").fetchall() == [("good",)]


def test_array_and_map_values_do_not_land_in_typed_columns_as_python_repr(tmp_path):
    attrs = [{"key": "messaging.destination.name", "value": {"arrayValue": {"values": [_str("q")]}}},
             _attr("messaging.system", "kafka")]
    resource = _resource("svc", [_span(1, 1, "send", 4, T0, attrs=tuple(attrs))])
    resource["resource"]["attributes"].append({"key": "service.version", "value": {"kvlistValue": {}}})
    con, _ = _load_one(tmp_path, [resource])
    row = con.execute("SELECT messaging_destination, service_version, attributes FROM spans").fetchall()[0]
    assert row[0] is None and row[1] is None
    assert json.loads(row[2])["messaging.destination.name"] == ["q"]


def test_destination_template_and_temporary_queues_group_per_request_destinations(tmp_path):
    spans = []
    for i in range(3):
        spans.append(_span(1, 10 + i, "send", 4, T0, attrs=(
            _attr("messaging.destination.name", f"reply.{i:08d}-aaaa"),
            _attr("messaging.destination.template", "reply.{id}"), _attr("messaging.system", "rabbitmq"))))
        spans.append(_span(1, 20 + i, "send", 4, T0, attrs=(
            _attr("messaging.destination.name", f"amq.gen-{i}"), _attr("messaging.system", "rabbitmq"),
            {"key": "messaging.destination.temporary", "value": {"boolValue": True}})))
    con, _ = _load_one(tmp_path, [_resource("svc", spans)])
    assert sorted(con.execute("SELECT DISTINCT messaging_destination FROM spans").fetchall()) == [
        ("(temporary)",), ("reply.{id}",)]


# --- commands on stores and paths that are not what they should be -----------------------------

def test_analyze_refuses_a_duckdb_file_that_is_not_a_store_and_leaves_it_alone(tmp_path, capsys):
    import duckdb

    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.close()
    assert main(["analyze", str(other)]) == 2
    assert "not a choreoscope store" in capsys.readouterr().err
    con = duckdb.connect(str(other), read_only=True)
    assert [t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()] == [
        "invoices"]


def test_analyze_to_an_unwritable_place_exits_2_with_a_message(odd_dump, tmp_path, capsys):
    assert main(["analyze", str(odd_dump), "--out", str(tmp_path / "no" / "such" / "r.md")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_analysing_again_without_intended_drops_the_old_conformance(tmp_path, capsys):
    from choreoscope.sample_traces.generate import DUMPS_DIR, scenario_dir

    db = tmp_path / "s.duckdb"
    assert main(["load", str(DUMPS_DIR / "hybrid_billing.otlp.jsonl"), "--db", str(db), "--no-progress"]) == 0
    intended = str(scenario_dir("hybrid_billing") / "intended.yaml")
    with_intended = json.loads(_run(["analyze", str(db), "--intended", intended, "--format", "json"],
                                    tmp_path / "a.json"))
    assert "conformance" in with_intended
    without = json.loads(_run(["analyze", str(db), "--format", "json"], tmp_path / "b.json"))
    assert "conformance" not in without
    assert not {f["kind"] for f in without["findings"]} & {"missing_edge", "undeclared_edge", "ordering_violation"}


def test_a_text_file_in_a_loaded_directory_is_named_as_not_a_trace_dump(tmp_path, capsys):
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps" / "NOTES.md").write_text("# notes\nnothing to see\n")
    assert main(["load", str(tmp_path / "dumps"), "--db", str(tmp_path / "s.duckdb"), "--no-progress"]) == 1
    assert "unknown format: text that is not JSON, not a trace dump" in capsys.readouterr().err


def test_stats_keeps_each_service_on_one_bounded_line(odd_dump, tmp_path, capsys):
    db = tmp_path / "s.duckdb"
    assert main(["load", str(odd_dump), "--db", str(db), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["stats", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    table = out.split("\n\n", 1)[1].splitlines()
    assert len(table) == 2 + 2 * len(ODD_NAMES)  # header, rule, one line per service
    assert max(len(line) for line in table) <= 60 + 41
