"""`choreoscope compare`: two runs of the ecommerce scenario made by the real SDK, one with a
consumer switched off, compare to exactly that consumer's steps and edges; `--split` cuts one
input by service version or time; `--fail-on` exits 1 only on a matching new finding; bad input
exits 2."""

from __future__ import annotations

import json

import pytest

from choreoscope.cli import main
from choreoscope.sample_traces.generate import generate_spans, write_otlp_jsonl

NOTIFICATION_EDGES = {
    ("order-service producer orders.placed", "notification-service consumer orders.placed", "event", "orders.placed"),
    ("notification-service consumer orders.placed", "notification-service client POST /v3/mail/send", "call", None),
    ("notification-service client POST /v3/mail/send", "mail.example.net virtual POST /v3/mail/send", "call", None),
}
ORDERS = "storefront server POST /orders"


def _without(spans, service):
    return [s for s in spans if s.resource.attributes.get("service.name") != service]


@pytest.fixture(scope="module")
def dumps(tmp_path_factory) -> dict[str, str]:
    """ecommerce as is, without notification-service, without shipping-service (same seed)."""
    root = tmp_path_factory.mktemp("compare")
    spans = generate_spans("ecommerce", seed=7)
    paths = {"full": root / "full.otlp.jsonl", "no_notification": root / "no-notification.otlp.jsonl",
             "no_shipping": root / "no-shipping.otlp.jsonl"}
    write_otlp_jsonl(spans, paths["full"])
    write_otlp_jsonl(_without(spans, "notification-service"), paths["no_notification"])
    write_otlp_jsonl(_without(spans, "shipping-service"), paths["no_shipping"])
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def reports(dumps, tmp_path_factory) -> dict[str, str]:
    """The JSON report of each dump (`analyze --format json`): comparing them needs no analysis."""
    root = tmp_path_factory.mktemp("compare-reports")
    paths = {}
    for name, dump in dumps.items():
        paths[name] = str(root / f"{name}.json")
        assert main(["analyze", dump, "--format", "json", "--out", paths[name]]) == 0
    return paths


def _compare_json(capsys, *argv) -> tuple[int, dict]:
    code = main(["compare", *argv, "--format", "json"])
    out = capsys.readouterr().out
    return code, (json.loads(out) if code != 2 else {})


def _edge_keys(edges):
    return {(e["source"], e["target"], e["via"], e["event"]) for e in edges}


def test_switching_a_consumer_off_removes_its_edges_and_nothing_else(dumps, reports, capsys):
    code, diff = _compare_json(capsys, dumps["full"], dumps["no_notification"])
    assert code == 0
    # The reports of the same dumps compare the same: dumps are analysed into reports first.
    code, from_reports = _compare_json(capsys, reports["full"], reports["no_notification"])
    assert code == 0 and (from_reports["before"], from_reports["after"]) == (reports["full"], reports["no_notification"])
    assert {k: v for k, v in from_reports.items() if k not in ("before", "after")} == {
        k: v for k, v in diff.items() if k not in ("before", "after")}
    assert diff["workflows_added"] == [] and diff["workflows_removed"] == []
    assert [w["id"] for w in diff["workflows_changed"]] == [ORDERS]
    wf = diff["workflows_changed"][0]
    assert _edge_keys(wf["edges_removed"]) == NOTIFICATION_EDGES
    assert {s["id"] for s in wf["steps_removed"]} == {
        "notification-service consumer orders.placed", "notification-service client POST /v3/mail/send",
        "mail.example.net virtual POST /v3/mail/send"}
    assert wf["edges_added"] == [] and wf["steps_added"] == [] and wf["edges_changed"] == []
    assert wf["instances"]["change"] == 0 and wf["pattern"] is None
    # notification-service takes part in no finding of the scenario: none resolved, none new.
    assert diff["findings_new"] == [] and diff["findings_resolved"] == []
    assert diff["findings_unchanged"] > 0
    assert diff["summary"]["before"]["services"] == diff["summary"]["after"]["services"] + 1


def test_markdown_names_the_removed_edge(reports, capsys, tmp_path):
    out = tmp_path / "diff.md"
    assert main(["compare", reports["full"], reports["no_notification"], "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# choreoscope compare")
    assert ("- edge removed: `order-service producer orders.placed` → `notification-service consumer "
            "orders.placed` (event `orders.placed`)") in text
    assert "0 added, 0 removed, 1 changed" in text and "0 new, 0 resolved" in text
    assert "edge added" not in text and "New findings" not in text and "Resolved findings" not in text


def test_resolved_and_new_findings_by_key(reports, capsys):
    code, diff = _compare_json(capsys, reports["full"], reports["no_shipping"])
    assert code == 0  # no --fail-on: resolved or new, the comparison itself never fails
    resolved = {(f["kind"], tuple(f["services"])) for f in diff["findings_resolved"]}
    assert {("implicit_ordering", ("inventory-service", "shipping-service")),
            ("callback_coupling", ("shipping-service", "order-service")),
            ("retry_loop", ("shipping-service",)),
            ("shared_data_coupling", ("inventory-service", "shipping-service"))} <= resolved
    wf = next(w for w in diff["workflows_changed"] if w["id"] == ORDERS)
    assert ("order-service producer orders.placed", "shipping-service consumer orders.placed", "event",
            "orders.placed") in _edge_keys(wf["edges_removed"])
    # The other way round, those findings are new, with the same keys.
    _, back = _compare_json(capsys, reports["no_shipping"], reports["full"])
    assert {f["id"] for f in back["findings_new"]} == {f["id"] for f in diff["findings_resolved"]}
    assert {f["id"] for f in back["findings_resolved"]} == {f["id"] for f in diff["findings_new"]}


def test_fail_on_exit_codes(reports, capsys):
    # Only resolved findings: nothing new can fail, whatever --fail-on says.
    assert main(["compare", reports["full"], reports["no_notification"], "--fail-on", "info"]) == 0
    assert "Result: pass" in capsys.readouterr().out
    # Shipping switched back on: implicit_ordering (critical) is new.
    assert main(["compare", reports["no_shipping"], reports["full"], "--fail-on", "critical"]) == 1
    assert "Result: FAIL" in capsys.readouterr().out
    assert main(["compare", reports["no_shipping"], reports["full"], "--fail-on", "implicit_ordering,retry_loop"]) == 1
    capsys.readouterr()
    assert main(["compare", reports["no_shipping"], reports["full"], "--fail-on", "event_cycle"]) == 0
    capsys.readouterr()
    code, diff = _compare_json(capsys, reports["no_shipping"], reports["full"], "--fail-on", "critical")
    assert code == 1 and diff["failing"] and set(diff["failing"]) <= {f["id"] for f in diff["findings_new"]}


def test_split_by_service_version(dumps, capsys, tmp_path):
    store = tmp_path / "shop.duckdb"
    assert main(["load", dumps["full"], "--db", str(store), "--no-progress"]) == 0
    capsys.readouterr()
    # A store here; test_split_by_time splits a dump.
    code, diff = _compare_json(capsys, str(store), "--split", "service.version=1.4.0..1.5.0")
    assert code == 0
    before, after = diff["summary"]["before"], diff["summary"]["after"]
    # order-service 1.4.0 handled the first half of the orders, 1.5.0 the second; the
    # catalog instances (no order-service span) are on both sides.
    assert "instance(s) with spans at service.version=1.4.0" in diff["before"]
    assert "instance(s) with spans at service.version=1.5.0" in diff["after"]
    assert any("on both sides" in n for n in diff["notes"])
    assert before["workflow_instances"] > 0 and after["workflow_instances"] > 0
    assert diff["workflows_added"] == [] and diff["workflows_removed"] == []
    for wf in diff["workflows_changed"]:  # the versions differ in payloads, not in steps
        assert wf["steps_added"] == [] and wf["steps_removed"] == []
    # schema drift needs both versions: on neither side alone.
    assert not any(f["kind"] == "schema_drift" for f in diff["findings_new"] + diff["findings_resolved"])


def test_split_by_time(dumps, reports, capsys):
    with open(reports["full"], encoding="utf-8") as fh:
        total = json.load(fh)["summary"]["workflow_instances"]
    code, diff = _compare_json(capsys, dumps["full"], "--split", "time=2025-01-15T09:00:30Z")
    assert code == 0
    assert diff["summary"]["before"]["workflow_instances"] + diff["summary"]["after"]["workflow_instances"] == total
    assert "started before 2025-01-15T09:00:30+00:00" in diff["before"]
    assert "started at or after 2025-01-15T09:00:30+00:00" in diff["after"]


@pytest.mark.parametrize("argv, message", [
    (["{full}"], "needs two inputs"),
    (["{full}", "{full}", "{full}"], "needs two inputs"),
    (["{full}", "{missing}"], "no such file"),
    (["{full}", "--split", "service.version=1.4.0"], "expected KEY=BEFORE..AFTER"),
    (["{full}", "--split", "time=yesterday"], "not an ISO 8601 instant"),
    (["{full}", "--split", "service.version=1.4.0..9.9.9"], "has service.version=9.9.9"),
    (["{full}", "--split", "time=2000-01-01T00:00:00Z"], "no workflow instance"),
    (["{full}", "{full}", "--split", "time=2025-01-15T09:00:30Z"], "one input"),
    (["{full}", "{full}", "--fail-on", "bogus"], "--fail-on 'bogus'"),
    (["{old_report}", "{full}"], "schema_version 0"),
    (["{bad_report}", "{full}"], "not a valid choreoscope report at (top): 'summary' is a required property"),
    (["{not_traces}", "{full}"], "no spans could be loaded"),
    (["{bad_report}", "--split", "time=2025-01-15T09:00:30Z"], "a report has no spans"),
])
def test_bad_input_exits_2(dumps, capsys, tmp_path, argv, message):
    bad_report = tmp_path / "bad.json"
    bad_report.write_text(json.dumps({"schema_version": 1, "workflows": [], "findings": [{"kind": "x"}]}))
    old_report = tmp_path / "old.json"
    old_report.write_text(json.dumps({"schema_version": 0, "workflows": [], "findings": []}))
    not_traces = tmp_path / "notes.json"
    not_traces.write_text(json.dumps({"hello": "world"}))
    paths = {"full": dumps["full"], "missing": str(tmp_path / "nope.jsonl"), "bad_report": str(bad_report),
             "not_traces": str(not_traces), "old_report": str(old_report)}
    assert main(["compare", *(a.format(**paths) for a in argv)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
