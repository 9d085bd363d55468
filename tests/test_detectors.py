"""Each detector's evidence on the sample scenarios (real dumps, real pipeline, real DuckDB files),
what run_all does when a detector fails, and a store built from an SDK run with a service missing."""

from __future__ import annotations

import json
import shutil

import duckdb
import pytest

from choreoscope.analysis import detectors
from choreoscope.analysis.findings import KINDS, SEVERITIES, load_findings
from choreoscope.analysis.pipeline import run_pipeline
from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from choreoscope.sample_traces import SCENARIOS
from choreoscope.sample_traces.generate import generate_spans, write_otlp_jsonl
from tests.detector_fixtures import finding, truth
from tests.paths import REAL_TRACES


def _truth_finding(scenario: str, kind: str) -> dict:
    return next(f for f in truth(scenario)["findings"] if f["kind"] == kind)


def test_every_finding_is_well_formed_and_cites_real_traces(analysed):
    for name in SCENARIOS:
        result = analysed[name]
        con = result.connect()
        try:
            traces = {t for (t,) in con.execute("SELECT DISTINCT trace_id FROM spans").fetchall()}
        finally:
            con.close()
        for f in result.findings:
            assert f.kind in KINDS and f.severity in SEVERITIES
            assert 0.5 <= f.confidence <= 1.0, f          # the samples hold claims, not hints
            assert f.summary.endswith(".") and f.recommendation and f.evidence
            assert f.trace_ids and set(f.trace_ids) <= traces, (f.kind, f.trace_ids)
            json.dumps(f.evidence)                         # storable as JSON as is


def test_implicit_ordering_names_the_event_the_harm_and_the_shared_table(analysed):
    f = finding(analysed["ecommerce"], "implicit_ordering")
    assert f.services == ["inventory-service", "shipping-service"] and f.event == "orders.placed"
    ev = f.evidence
    assert ev["instances"] == 40 and ev["supporting"] == 40 and ev["contradicting"] == 0
    # shipping ran first in some instances and failed every time it did
    assert ev["started_early"] > 0 and ev["early_errors"] == ev["started_early"]
    assert ev["follow_corr"] > 0.9 and 0.8 < ev["follow_slope"] < 1.2
    assert ev["shared_resources"] == ["reservations"] and "reservations" in f.summary
    assert f.severity == "critical"


def test_shared_data_coupling_counts_reads_before_the_write(analysed):
    f = finding(analysed["ecommerce"], "shared_data_coupling")
    assert f.resource == "reservations" and f.evidence["writer_operations"] == ["INSERT"]
    assert f.evidence["reader_operations"] == ["SELECT"]
    # every read that came before inventory's insert failed (the redelivered attempts)
    assert f.evidence["accesses_before_write"] == f.evidence["failed_before_write"] > 0


def test_retry_loop_reports_the_step_the_loop_and_its_error(analysed):
    f = finding(analysed["ecommerce"], "retry_loop")
    ev = f.evidence
    assert ev["step"] == "shipping-service consumer orders.placed"
    assert ev["recovered_instances"] == ev["retried_instances"] > 0 and ev["looped_instances"] > 0
    assert list(ev["errors"]) == ["reservation not found"]


def test_a_single_resend_of_a_transient_error_is_not_a_retry_loop(analysed):
    con = analysed["hybrid_billing"].connect()
    try:   # the data has resends: tax-service's 503 answered by one resend
        assert con.execute("SELECT count(*) FROM span_steps WHERE retry_attempt > 0").fetchall()[0][0] > 0
    finally:
        con.close()
    assert not [f for f in analysed["hybrid_billing"].findings if f.kind == "retry_loop"]


def test_callback_coupling_names_the_call_back(analysed):
    f = finding(analysed["ecommerce"], "callback_coupling")
    assert f.evidence["operations"] == ["GET /orders/{id}"]
    assert f.evidence["instances_with_callback"] == f.evidence["instances_handled"] == 40


def test_schema_drift_reports_added_and_removed_attributes_and_the_version(analysed):
    f = finding(analysed["ecommerce"], "schema_drift")
    expected = _truth_finding("ecommerce", "schema_drift")
    assert f.evidence["added"] == expected["added"] and f.evidence["removed"] == expected["removed"]
    assert f.evidence["from_version"] == expected["from_version"]
    assert f.evidence["versions"] == ["1.4.0", "1.5.0"]
    assert not any(a.startswith("messaging.") for c in f.evidence["changes"] for a in c["added"] + c["removed"])


def test_dead_and_orphan_events(analysed):
    dead = finding(analysed["ecommerce"], "dead_event")
    assert dead.event == "inventory.low" and dead.evidence["consumers"] == 0
    orphan = finding(analysed["ecommerce"], "orphan_event")
    assert orphan.event == "prices.updated" and orphan.evidence["consumed"] == 10


def test_god_coordinator_lists_the_callees_operations(analysed):
    f = finding(analysed["loan_saga"], "god_coordinator")
    assert f.evidence["operations"] == sorted(_truth_finding("loan_saga", "god_coordinator")["operations"])
    assert "credit-service" not in f.evidence["other_callees"] and len(f.evidence["other_callees"]) >= 4


def test_missing_compensation_names_the_step_and_its_compensation(analysed):
    f = finding(analysed["loan_saga"], "missing_compensation")
    expected = _truth_finding("loan_saga", "missing_compensation")
    [step] = f.evidence["steps"]
    assert step["target"] == expected["step"]["service"] and step["step"] == expected["step"]["operation"]
    assert step["compensated_by"] == expected["compensated_by"]["operation"]
    # the scenario forgets the release when disbursement fails and (i // 9) % 2 == 0: i = 5 and 23
    forgot = [i for i in range(40) if i % 9 == 5 and (i // 9) % 2 == 0 and i % 7 != 3 and i % 11 != 8]
    assert step["uncompensated"] == len(forgot) == len(f.trace_ids)
    assert step["compensated"] > step["uncompensated"]


def test_event_cycle_events_and_instances_match_the_truth(analysed):
    f = finding(analysed["event_router"], "event_cycle")
    expected = _truth_finding("event_router", "event_cycle")
    assert f.services == expected["services"]            # in travel order, from where messages enter
    assert sorted(f.evidence["events"]) == sorted(expected["events"])
    assert f.evidence["instances"] == expected["instances"]


def test_implicit_orchestrator_evidence(analysed):
    f = finding(analysed["event_router"], "implicit_orchestrator")
    ev = f.evidence
    assert ev["handoff_share"] == 1.0 and ev["emits_per_consume"] == 1.0
    assert ev["upstream"] == ["archive-service", "classifier-service", "ocr-service", "upload-api"]
    assert "search-indexer" in ev["downstream"]


def test_findings_are_the_same_when_run_again(analysed):
    con = analysed["ecommerce"].connect()
    try:
        first = [(f.key, f.confidence, f.summary) for f in detectors.run_all(con)]
        second = [(f.key, f.confidence, f.summary) for f in detectors.run_all(con)]
    finally:
        con.close()
    assert first == second and len(first) == len(analysed["ecommerce"].findings)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_detector_is_reported_and_the_others_still_run(analysed, tmp_path, workers):
    """One at a time and several at once (each on a cursor): the same errors and findings."""
    copy = tmp_path / "broken.duckdb"
    shutil.copy(analysed["ecommerce"].db_path, copy)
    con = duckdb.connect(str(copy))
    try:
        con.execute("DROP TABLE step_orderings")       # implicit_ordering reads it
        errors: list[str] = []
        timings: dict[str, float] = {}
        found = detectors.run_all(con, errors=errors, timings=timings, workers=workers)
    finally:
        con.close()
    assert len(errors) == 1 and errors[0].startswith("detector implicit_ordering:")
    assert "step_orderings" in errors[0]
    assert {f.kind for f in found} == {f.kind for f in analysed["ecommerce"].findings} - {"implicit_ordering"}
    assert set(timings) == {f"detector {name}" for name, _ in detectors.DETECTORS}


def test_consumers_whose_producer_is_missing_from_the_data_are_orphans(tmp_path):
    """An SDK run with order-service's spans left out: its consumers' producer is never seen and
    analytics-service's links point at spans that are not in the data."""
    spans = [s for s in generate_spans("ecommerce", instances=4)
             if s.resource.attributes["service.name"] != "order-service"]
    dump = write_otlp_jsonl(spans, tmp_path / "partial.otlp.jsonl")
    con = store.connect(tmp_path / "partial.duckdb")
    try:
        assert load_paths(con, [dump]).ok
        run_pipeline(con)
        findings = load_findings(con)
    finally:
        con.close()
    orphans = {(f.services[0], f.event): f for f in findings if f.kind == "orphan_event"}
    assert set(orphans) >= {(s, "orders.placed") for s in
                            ("inventory-service", "shipping-service", "payment-service", "analytics-service")}
    assert orphans[("analytics-service", "orders.placed")].evidence["dangling_links"] == 4
    assert orphans[("inventory-service", "orders.placed")].evidence["dangling_links"] == 0
    # payments.completed has no consumer any more: order-service was its only consumer
    assert any(f.kind == "dead_event" and f.event == "payments.completed" for f in findings)




@pytest.mark.skipif(not REAL_TRACES.is_dir(), reason=f"{REAL_TRACES} (the real dumps) is not on this machine")
def test_every_detector_runs_cleanly_on_the_real_dumps(tmp_path):
    """Real dumps have missing peers, null operations, Zipkin messaging spans: no detector may fail."""
    dumps = sorted(p for p in REAL_TRACES.glob("*/*.json") if not p.name.endswith(".manifest.json"))
    assert dumps
    for i, dump in enumerate(dumps):
        con = store.connect(tmp_path / f"real{i}.duckdb")
        try:
            load_paths(con, [dump])
            ctx = run_pipeline(con)
            findings = load_findings(con)
        finally:
            con.close()
        assert not ctx.errors, (dump, ctx.errors)
        assert all(f.services and None not in f.services for f in findings), dump
